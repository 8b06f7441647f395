#!/usr/bin/env bash
# kubevipd's one entry point for newcomers and CI (run as root on Debian 12):
#   ./dev.sh demo    set up, then run the main job
#   ./dev.sh test    set up, then run lint, types and every test
#   ./dev.sh bench   set up, then measure failover against keepalived and a polling elector (bench/README.md)
#   ./dev.sh setup   only install what the project needs
# It installs everything itself (apt-get, pip) and is safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv            # Debian's python3 + Debian's python3-* libraries (our floor) + test tools
TOOLS=$ROOT/.venv-tools     # tools whose own dependencies would shadow Debian's (kubernetes-validate)
# Debian's kubectl (package kubernetes-client), unpacked here rather than installed: on some
# machines another package already owns /usr/bin/kubectl and dpkg refuses to overwrite it.
KUBECTL_DIR=$ROOT/.tools/kubernetes-client
# Debian's python, never a pyenv shim: the .deb runs on /usr/bin/python3 and Debian's libraries.
SYS_PY=/usr/bin/python3
CLEAN_PATH=/usr/sbin:/usr/bin:/sbin:/bin

APT_PACKAGES=(
  python3 python3-venv python3-pip
  python3-ruamel.yaml python3-jsonschema python3-pyroute2 python3-scapy python3-kubernetes
  python3-sdnotify python3-prometheus-client python3-dnspython
  python3-urllib3 python3-yaml python3-cryptography
  iproute2 iputils-ping systemd
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
    env PATH=$CLEAN_PATH DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV (system site packages: Debian's libraries are what the .deb runs on)"
    env PATH=$CLEAN_PATH $SYS_PY -m venv --system-site-packages "$VENV"
  fi
  log "installing kubevipd (editable) and the test tools into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]"
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

run_tests() {
  export KUBEVIPD_K8S_VALIDATE=$TOOLS/bin/kubernetes-validate
  export KUBEVIPD_KUBECTL=$KUBECTL_DIR/usr/bin/kubectl
  # Build the .deb, install it with apt, run it, purge it (tests/integration/test_package.py).
  export KUBEVIPD_PACKAGE_TEST=1
  local rc=0
  log "ruff check";         "$VENV/bin/ruff" check . || rc=1
  log "ruff format --check"; "$VENV/bin/ruff" format --check . || rc=1
  log "mypy (strict)";      "$VENV/bin/mypy" || rc=1
  log "docs/config.md up to date"; "$VENV/bin/python" docs/gen_config_md.py --check || rc=1
  log "pytest";             "$VENV/bin/python" -m pytest -q "$@" || rc=1
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
  log "bench/failover.py ${args[*]} (about 15 minutes for 10 rounds)"
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
