#!/usr/bin/env bash
#! Third-party client check: a Firecracker client from PyPI, pinned and
#! unmodified, drives a VMM through its HTTP API (ci/api-client-flow.py):
#! create → machine-config + boot-source → InstanceStart (the tiny PVH
#! payload's 'R' on the VMM's stdout) → pause → resume → SIGTERM. Only its
#! low-level `firecracker.api.Api` class is used, given the socket path: its
#! high-level MicroVM insists on a rootfs, a TAP with NAT rules it creates, and
#! /usr/local/bin/firecracker under /var/lib/firecracker (see docs/benchmarks.md).
#! The client is installed into a venv in the cache, outside the repo.
#! Usage: ci/api-client-flow.sh --vmm PATH|firecracker|tandem [options]
#!   --vmm firecracker     Firecracker v1.16.1 built by ci/peer-firecracker.sh
#!   --vmm tandem          ci/build-static.sh's x86_64 tandem
#!   --client DIST==VER    the client (default hysn-firecracker-python==1.0.7;
#!                         firecracker-python==0.0.5 works the same way)
#!   --extra "ARGS"        more VMM arguments, e.g. --no-seccomp
#! Environment: TANDEM_PEERS_CACHE (default /var/cache/tandem-peers).
#! Prints each step and `api-client-flow: PASS` or `api-client-flow: FAIL: why`.
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=api-client-flow
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

CACHE=${TANDEM_PEERS_CACHE:-/var/cache/tandem-peers}
CLIENT=hysn-firecracker-python==1.0.7 VMM="" EXTRA=""

while [ $# -gt 0 ]; do
    case $1 in
        --vmm) VMM=$2; shift ;;
        --client) CLIENT=$2; shift ;;
        --extra) EXTRA=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (--help)" ;;
    esac
    shift
done
VMM=$(resolve_vmm "$VMM")
[[ $CLIENT == *==* ]] || die "--client wants DIST==VERSION (pinned)"
[ -c /dev/kvm ] || skip_or_fail "no /dev/kvm on this machine"

# A venv per pinned client; python3-venv comes from Debian when missing.
VENV=$CACHE/venv-${CLIENT/==/-}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/pip" show -q "${CLIENT%%==*}" >/dev/null 2>&1; then
    mkdir -p "$CACHE"
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    log "installing $CLIENT into $VENV"
    timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check "$CLIENT" >&2
fi

WORK=$(mktemp -d /tmp/tandem-api-client-flow.XXXXXX) FLOW_PID=""
# api-client-flow.py kills its VMM on every path, SIGTERM included; timeout
# leads its own process group, to which the trap passes a signal on.
trap '[ -z "$FLOW_PID" ] || kill -TERM -- "-$FLOW_PID" 2>/dev/null || true; wait; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
"$VENV/bin/python" "$ROOT/ci/tiny-pvh.py" "$WORK/tiny-pvh.elf" --byte R
timeout --kill-after=10 120 "$VENV/bin/python" "$ROOT/ci/api-client-flow.py" \
    --vmm "$VMM" --kernel "$WORK/tiny-pvh.elf" --marker R --extra "$EXTRA" &
FLOW_PID=$!
status=0
wait "$FLOW_PID" || status=$?
FLOW_PID=""
exit "$status"
