#!/usr/bin/env bash
# kubevipd's one entry point for newcomers and CI (run as root on Debian 12):
#   ./dev.sh demo    set up, then run the main job
#   ./dev.sh test    set up, then run lint and types once and every test twice: on Debian 12's
#                    libraries (the .deb's floor) and on the newest releases pyproject admits
#   ./dev.sh bench   set up, then measure failover against keepalived and a polling elector (bench/README.md)
#   ./dev.sh setup   only install what the project needs
# It installs everything itself (apt-get, pip) and is safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv            # Debian's python3 + Debian's python3-* libraries (our floor) + test tools
TOOLS=$ROOT/.venv-tools     # tools whose own dependencies would shadow Debian's (kubernetes-validate)
# Debian's python3 WITHOUT system site packages: pip puts in the newest release of every library
# that pyproject.toml admits (its ceilings must be releases CI has passed on). Under .tools/,
# which git ignores, so packaging/deb/build.sh does not copy it into the .deb's source tree.
LATEST=$ROOT/.tools/venv-latest
# Debian's kubectl (package kubernetes-client), unpacked here rather than installed: on some
# machines another package already owns /usr/bin/kubectl and dpkg refuses to overwrite it.
KUBECTL_DIR=$ROOT/.tools/kubernetes-client
# Debian's python, never a pyenv shim: the .deb runs on /usr/bin/python3 and Debian's libraries.
SYS_PY=/usr/bin/python3
CLEAN_PATH=/usr/sbin:/usr/bin:/sbin:/bin

# The libraries whose versions each test leg prints (runtime dependencies, then the test tools).
KEY_LIBS=(kubernetes pyroute2 scapy ruamel.yaml jsonschema prometheus-client sdnotify urllib3
  cryptography PyYAML dnspython pydantic pytest hypothesis)

APT_PACKAGES=(
  python3 python3-venv python3-pip
  python3-ruamel.yaml python3-jsonschema python3-pyroute2 python3-scapy python3-kubernetes
  python3-sdnotify python3-prometheus-client python3-dnspython
  python3-urllib3 python3-yaml python3-cryptography
  iproute2 iputils-ping systemd
  # the BGP lab (kubevipd/lab/routers.py): BIRD 2 and GoBGP as routers, ExaBGP as the nodes'
  # speaker. The lab runs its own instances in namespaces, with files under its work directory.
  bird2 gobgpd exabgp
  # building and checking the Debian package (packaging/deb/build.sh)
  debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools lintian
)

log() { printf '==> %s\n' "$*" >&2; }

setup() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    env PATH=$CLEAN_PATH apt-get update -qq
    # Debian's bird2 enables bird.service and, where systemd runs, starts it with Debian's
    # /etc/bird/bird.conf (gobgpd's and exabgp's units want configs that do not exist; without
    # systemd, invoke-rc.d finds no runlevel to start bird's init script in). Masked in /run for
    # the install only: no router of the host's starts, and dev.sh writes nothing under /etc.
    # Debian's enabling stays: bird.service starts at the next boot unless it is disabled.
    local masked= rc=0
    if [[ " ${missing[*]} " == *" bird2 "* ]] && [ -d /run/systemd/system ]; then
      env PATH=$CLEAN_PATH systemctl mask --runtime --quiet bird.service && masked=1
    fi
    env PATH=$CLEAN_PATH DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || rc=$?
    [ -z "$masked" ] || env PATH=$CLEAN_PATH systemctl unmask --runtime --quiet bird.service
    [ "$rc" -eq 0 ] || return "$rc"
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV (system site packages: Debian's libraries are what the .deb runs on)"
    env PATH=$CLEAN_PATH $SYS_PY -m venv --system-site-packages "$VENV"
  fi
  # pip runs again only when pyproject.toml changed (leg 2: or on a new day, so that a venv kept
  # on a developer's machine still gets new releases; CI's clone always starts without one).
  local key
  key=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$VENV/.kubevipd-setup" 2>/dev/null)" != "$key" ]; then
    log "installing kubevipd (editable) and the test tools into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]"
    echo "$key" >"$VENV/.kubevipd-setup"
  fi
  if [ ! -x "$LATEST/bin/python" ]; then
    log "creating $LATEST (no system site packages: the newest releases pyproject admits)"
    mkdir -p "$(dirname "$LATEST")"
    env PATH=$CLEAN_PATH $SYS_PY -m venv "$LATEST"
  fi
  if [ "$(cat "$LATEST/.kubevipd-setup" 2>/dev/null)" != "$key $(date +%F)" ]; then
    log "installing kubevipd (editable) with the newest releases pyproject admits into $LATEST"
    "$LATEST/bin/pip" install -q --disable-pip-version-check --upgrade --upgrade-strategy eager \
      -e ".[test]"
    echo "$key $(date +%F)" >"$LATEST/.kubevipd-setup"
  fi
  if [ ! -x "$TOOLS/bin/kubernetes-validate" ]; then
    log "installing kubernetes-validate into $TOOLS"
    env PATH=$CLEAN_PATH $SYS_PY -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q --disable-pip-version-check "kubernetes-validate>=1.30"
  fi
  if [ ! -x "$KUBECTL_DIR/usr/bin/kubectl" ]; then
    log "unpacking Debian's kubernetes-client (kubectl) into $KUBECTL_DIR"
    local dl
    dl=$(mktemp -d)
    chmod 755 "$dl"   # apt's _apt user downloads into it
    (cd "$dl" && env PATH=$CLEAN_PATH apt-get download -qq kubernetes-client 2>/dev/null \
      || { env PATH=$CLEAN_PATH apt-get update -qq && env PATH=$CLEAN_PATH apt-get download -qq kubernetes-client; })
    mkdir -p "$KUBECTL_DIR"
    dpkg-deb -x "$dl"/kubernetes-client_*.deb "$KUBECTL_DIR"
    rm -rf "$dl"
  fi
}

versions() {
  # One line per library: version, and where it comes from (Debian's dist-packages or the venv).
  "$1/bin/python" - "${KEY_LIBS[@]}" <<'PY'
import sys
from importlib import metadata

for name in sys.argv[1:]:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        print(f"    {name:18} (not installed)")
        continue
    where = "debian" if "/usr/lib/python3/dist-packages" in str(dist.locate_file("")) else "pip"
    print(f"    {name:18} {dist.version:12} {where}")
PY
}

summary_of() {
  # pytest's closing line in a leg's log ("12 passed, 1 skipped in 3.40s (0:00:03)").
  grep -E '^(=+ )?[0-9]+ [a-z]+.* in [0-9.]+s( \([0-9:]+\))?( =+)?$' "$1" | tail -1 || true
}

run_tests() {
  export KUBEVIPD_K8S_VALIDATE=$TOOLS/bin/kubernetes-validate
  export KUBEVIPD_KUBECTL=$KUBECTL_DIR/usr/bin/kubectl
  local rc=0 logs
  logs=$(mktemp -d)
  log "ruff check";         "$VENV/bin/ruff" check . || rc=1
  log "ruff format --check"; "$VENV/bin/ruff" format --check . || rc=1
  log "mypy (strict)";      "$VENV/bin/mypy" || rc=1
  log "docs/config.md up to date"; "$VENV/bin/python" docs/gen_config_md.py --check || rc=1

  log "pytest, leg 1 of 2: Debian 12's libraries, the .deb's floor ($VENV)"
  versions "$VENV" >&2
  # Leg 1 also builds the .deb, installs it with apt and runs it (test_package.py), and runs it
  # under systemd (test_systemd.py): the package depends on Debian's libraries, not on a venv's.
  KUBEVIPD_PACKAGE_TEST=1 "$VENV/bin/python" -m pytest -q "$@" 2>&1 | tee "$logs/leg1" || rc=1

  log "pytest, leg 2 of 2: the newest releases pyproject.toml admits ($LATEST)"
  versions "$LATEST" >&2
  # Leg 2 leaves out the .deb's tests (package, systemd): the .deb runs on Debian's libraries.
  env -u KUBEVIPD_PACKAGE_TEST "$LATEST/bin/python" -m pytest -q \
    --ignore=tests/integration/test_package.py --ignore=tests/integration/test_systemd.py \
    "$@" 2>&1 | tee "$logs/leg2" || rc=1

  # The closing line stays pytest's: both legs' counts added up, so it says "failed" if either did.
  local s1 s2
  s1=$(summary_of "$logs/leg1")
  s2=$(summary_of "$logs/leg2")
  log "leg 1 (Debian 12): ${s1:-no summary line}"
  log "leg 2 (newest):    ${s2:-no summary line}"
  rm -rf "$logs"
  if [ -z "$s1" ] || [ -z "$s2" ]; then
    return 1
  fi
  $SYS_PY - "$s1" "$s2" <<'PY'
import re
import sys

counts: dict[str, int] = {}
seconds = 0.0
for line in sys.argv[1:]:
    body = line.strip("= ")
    head, _, tail = body.rpartition(" in ")
    seconds += float(re.match(r"[0-9.]+", tail).group())
    for n, kind in re.findall(r"(\d+) (\w+)", head):
        kind = kind.rstrip("s") if kind in ("errors", "warnings") else kind
        counts[kind] = counts.get(kind, 0) + int(n)
order = ["failed", "passed", "skipped", "deselected", "xfailed", "xpassed", "warning", "error"]
parts = [
    f"{n} {k}{'s' if n != 1 and k in ('warning', 'error') else ''}"
    for k, n in sorted(counts.items(), key=lambda kv: (order + [kv[0]]).index(kv[0]))
]
m, s = divmod(int(seconds), 60)
h, m = divmod(m, 60)
print(f"{', '.join(parts)} in {seconds:.2f}s ({h}:{m:02d}:{s:02d})")
PY
  return $rc
}

demo() {
  log "kubevipd demo: three nodes, a VIP, a client pinging it; the leader stops, then the next dies"
  "$VENV/bin/kubevipd" demo "$@"
}

bench() {
  if ! command -v keepalived >/dev/null; then
    log "apt-get install keepalived (the baseline; its service needs a config, so nothing starts)"
    env PATH=$CLEAN_PATH DEBIAN_FRONTEND=noninteractive apt-get install -y -qq keepalived >/dev/null
  fi
  local args=("$@")
  [ "${#args[@]}" -gt 0 ] || args=(--rounds 10)
  log "bench/failover.py ${args[*]} (about 25 minutes for 10 rounds)"
  "$VENV/bin/python" bench/failover.py "${args[@]}" --plot bench/failover.png >bench/results.json
  "$VENV/bin/python" bench/table.py bench/results.json
}

cmd=${1:-test}; shift || true
case "$cmd" in
  setup) setup ;;
  test) setup; run_tests "$@" ;;
  demo) setup; demo "$@" ;;
  bench) setup; bench "$@" ;;
  *) echo "usage: $0 demo|test|bench|setup" >&2; exit 2 ;;
esac
