#!/usr/bin/env bash
# Build the native Debian package from this checkout's working tree.
#   packaging/deb/build.sh [OUTDIR]     (default OUTDIR: dist/)
# Needs debhelper, dh-python, pybuild-plugin-pyproject, python3-all (./dev.sh setup installs
# them). Prints the path of the .deb on its last line.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/dist}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/kubevipd/__init__.py")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/kubevipd-$VERSION
mkdir -p "$SRC"
# The tracked files as they are in the working tree (not only what is committed).
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | grep -zv '^packaging/deb/debian/' | xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$SRC"
cp -r "$ROOT/packaging/deb/debian" "$SRC/debian"
cp "$ROOT/systemd/kubevipd.service" "$SRC/debian/kubevipd.service"
cp "$ROOT/systemd/kubevipd-kubeconfig.service" "$SRC/debian/kubevipd.kubevipd-kubeconfig.service"
cp "$ROOT/systemd/kubevipd-kubeconfig.path" "$SRC/debian/kubevipd.kubevipd-kubeconfig.path"
# Debian's python and tools, never a pyenv shim on PATH.
(cd "$SRC" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$WORK" LC_ALL=C.UTF-8 \
  dpkg-buildpackage -us -uc -b >"$WORK/build.log" 2>&1) || { tail -50 "$WORK/build.log" >&2; exit 1; }
deb=$(ls "$WORK"/kubevipd_"$VERSION"_all.deb)
cp "$deb" "$OUT/"
echo "$OUT/$(basename "$deb")"
