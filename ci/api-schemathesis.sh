#!/usr/bin/env bash
#! Property-based API conformance: schemathesis (pinned, in a venv in the
#! cache) fuzzes a VMM's Firecracker-compatible HTTP API, in two parts, each
#! against a fresh VMM (`BIN --api-sock SOCK --id ID`):
#!   spec  the VMM's own OpenAPI file (tandem's: docs/api/tandem-api.yaml;
#!         skipped when that default file does not exist yet)
#!   peer  Firecracker's swagger file (../shared/peers/firecracker-v1.16.1.yaml)
#!         cut down to the operations listed in --endpoints (default
#!         ci/api-endpoints-tandem.txt, the ones tandem serves)
#! schemathesis speaks TCP only, so socat exposes the socket on 127.0.0.1.
#! Checks: no 5xx (not_a_server_error), status codes, content types and bodies
#! as the schema says; then the VMM must still be alive and answer `GET /`.
#! The VMM runs in its own mount and network namespaces: every mount but
#! /proc and /sys is read-only there except its scratch folder (its cwd), so
#! fuzzed paths (kernel, drives, logger, metrics) cannot touch real files, and
#! fuzzed TAP names live in an empty network namespace.
#! Usage: ci/api-schemathesis.sh --vmm PATH|firecracker|tandem [options] [-- ST-ARGS...]
#!   --spec FILE          part "spec" against FILE (default docs/api/tandem-api.yaml)
#!   --peer-spec FILE     part "peer" base file (default ../shared/peers/firecracker-v1.16.1.yaml)
#!   --endpoints LIST     file of `METHOD PATH` lines, or "GET /,PUT /actions"
#!   --parts "P..."       spec and/or peer (default both)
#!   --max-examples N     schemathesis examples per operation (default 100)
#!   --seed N             schemathesis seed (default 1)
#!   --time-limit S       wall-clock cap per part in seconds (default 170)
#!   --checks LIST        schemathesis checks (default: the four above)
#!   --extra "ARGS"       more VMM arguments
#!   --no-isolation       run the VMM without the namespaces (unsafe: fuzzed
#!                        paths then reach the real file system)
#!   ST-ARGS              more `st run` arguments (run in a scratch folder:
#!                        give absolute paths, e.g. --report junit --report-dir /abs)
#! Environment: TANDEM_PEERS_CACHE (default /var/cache/tandem-peers).
#! Prints schemathesis's output (full log in target/api-schemathesis/PART.log)
#! and `api-schemathesis: PASS` or `api-schemathesis: FAIL` (exit status 1).
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=api-schemathesis
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

ST_VERSION=4.32.5
CACHE=${TANDEM_PEERS_CACHE:-/var/cache/tandem-peers}
VMM="" EXTRA="" SPEC="" PARTS="spec peer" MAX_EXAMPLES=100 SEED=1 TIME_LIMIT=170 ISOLATE=1
PEER_SPEC=$ROOT/../shared/peers/firecracker-v1.16.1.yaml
ENDPOINTS=$ROOT/ci/api-endpoints-tandem.txt
ST_ARGS=()
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance

while [ $# -gt 0 ]; do
    case $1 in
        --vmm) VMM=$2; shift ;;
        --spec) SPEC=$2; shift ;;
        --peer-spec) PEER_SPEC=$2; shift ;;
        --endpoints) ENDPOINTS=$2; shift ;;
        --parts) PARTS=$2; shift ;;
        --max-examples) MAX_EXAMPLES=$2; shift ;;
        --seed) SEED=$2; shift ;;
        --time-limit) TIME_LIMIT=$2; shift ;;
        --extra) EXTRA=$2; shift ;;
        --checks) CHECKS=$2; shift ;;
        --no-isolation) ISOLATE=0 ;;
        --) shift; ST_ARGS=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (--help)" ;;
    esac
    shift
done
VMM=$(resolve_vmm "$VMM")
[ -c /dev/kvm ] || skip_or_fail "no /dev/kvm on this machine"
SPEC_GIVEN=1
[ -n "$SPEC" ] || { SPEC=$ROOT/docs/api/tandem-api.yaml SPEC_GIVEN=0; }
SPEC=$(realpath -m "$SPEC") PEER_SPEC=$(realpath -m "$PEER_SPEC")
[ ! -f "$ENDPOINTS" ] || ENDPOINTS=$(realpath "$ENDPOINTS")

install_tools() {
    local need=()
    command -v socat >/dev/null || need+=(socat)
    command -v unshare >/dev/null || need+=(util-linux)
    command -v pgrep >/dev/null || need+=(procps)
    python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]}"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    fi
    VENV=$CACHE/venv-schemathesis-$ST_VERSION
    if [ ! -x "$VENV/bin/st" ]; then
        mkdir -p "$CACHE"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        log "installing schemathesis==$ST_VERSION into $VENV"
        timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$ST_VERSION" >&2
    fi
}

WORK="" PGIDS=() VMM_PID=""
# Kills the VMM before its parent (unshare), so that unshare reaps it rather
# than leaving a zombie to an init that may not reap; then the whole group.
stop_vmm() {
    [ -n "$VMM_PID" ] || return 0
    local kid _
    for kid in $(pgrep -P "$VMM_PID" || true); do kill -KILL "$kid" 2>/dev/null || true; done
    for _ in $(seq 20); do
        kill -0 "$VMM_PID" 2>/dev/null || break
        [ -n "$(pgrep -P "$VMM_PID" || true)" ] || break
        sleep 0.1
    done
    { kill -KILL -- "-$VMM_PID"; wait "$VMM_PID"; } 2>/dev/null || true
    VMM_PID=""
}
cleanup() {
    local pgid
    stop_vmm
    for pgid in ${PGIDS[@]+"${PGIDS[@]}"}; do
        { kill -KILL -- "-$pgid"; wait "$pgid"; } 2>/dev/null || true
    done
    [ -z "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs "$@" in fresh mount and network namespaces with every mount read-only
# except DIR (bind-mounted onto itself, so files it creates there, like the
# API socket, are seen outside too), /proc and /sys; cwd DIR.
# shellcheck disable=SC2016
ISOLATED='set -eu
dir=$1; shift
mount --bind "$dir" "$dir"
findmnt -rn -o TARGET | while read -r m; do
    case $m in /proc|/proc/*|/sys|/sys/*|"$dir") ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;; esac
done
if : 2>/dev/null >/.tandem-rw-probe; then rm -f /.tandem-rw-probe; echo "isolation failed: / is writable" >&2; exit 1; fi
cd "$dir"
exec "$@"'

# Starts the VMM for PART; sets SOCK.
start_vmm() {
    local part=$1 dir=$WORK/$1 args
    mkdir -p "$dir"
    SOCK=$dir/api.sock
    read -r -a args <<<"$EXTRA"
    if [ "$ISOLATE" = 1 ]; then
        setsid unshare --mount --net --fork --kill-child -- bash -c "$ISOLATED" isolated "$dir" \
            "$VMM" --api-sock "$SOCK" --id "schemathesis-$part" ${args[@]+"${args[@]}"} \
            </dev/null >"$dir/vmm.out" 2>&1 &
    else
        (cd "$dir" && exec setsid "$VMM" --api-sock "$SOCK" --id "schemathesis-$part" \
            ${args[@]+"${args[@]}"}) </dev/null >"$dir/vmm.out" 2>&1 &
    fi
    PGIDS+=("$!")
    VMM_PID=$!
    local _
    for _ in $(seq 100); do
        [ -S "$SOCK" ] && return 0
        kill -0 "$VMM_PID" 2>/dev/null || break
        sleep 0.1
    done
    sed 's/^/  vmm: /' "$dir/vmm.out" >&2
    die "the VMM did not create $SOCK"
}

# One GET / on the Unix socket; prints the status line, fails unless 200.
get_root() {
    "$VENV/bin/python" - "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n")
data = s.recv(4096).decode(errors="replace")
print(data.splitlines()[0] if data else "(no answer)", data.split("\r\n\r\n", 1)[-1][:200])
sys.exit(0 if data.startswith("HTTP/1.1 200") else 1)
EOF
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run_part NAME SPEC-FILE: 0 when schemathesis passed and the VMM survived.
run_part() {
    local part=$1 spec=$2 port log=$OUT_DIR/$1.log st_status=0 status=0
    start_vmm "$part"
    port=$(free_port)
    setsid socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$SOCK" &
    PGIDS+=("$!")
    local _
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    log "part $part: schemathesis $ST_VERSION on $spec via 127.0.0.1:$port -> $SOCK"
    # In the background, so that a signal to this script runs its trap at
    # once; timeout leads its own process group, which the trap kills.
    # cwd: the scratch folder, for anything schemathesis writes; no example
    # database, so that a run depends on its seed alone.
    (cd "$WORK/$part" && NO_COLOR=1 exec timeout --kill-after=10 "$TIME_LIMIT" "$VENV/bin/st" run "$spec" \
        --url "http://127.0.0.1:$port" --checks "$CHECKS" --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" --workers 1 --request-timeout 5 --phases examples,coverage,fuzzing \
        --generation-database none --suppress-health-check all \
        ${ST_ARGS[@]+"${ST_ARGS[@]}"}) >"$log" 2>&1 &
    PGIDS+=("$!")
    wait "$!" || st_status=$?
    cat "$log"
    case $st_status in
        0) log "part $part: schemathesis passed" ;;
        124|137) log "part $part: schemathesis hit the ${TIME_LIMIT}s limit"; status=1 ;;
        *) log "part $part: schemathesis found failures (exit $st_status)"; status=1 ;;
    esac
    if kill -0 "$VMM_PID" 2>/dev/null && get_root "$SOCK" >"$WORK/$part/alive" 2>&1; then
        log "part $part: VMM alive afterwards, GET / -> $(cat "$WORK/$part/alive")"
    else
        log "part $part: VMM dead or not answering GET / afterwards: $(cat "$WORK/$part/alive" 2>/dev/null)"
        sed 's/^/  vmm: /' "$WORK/$part/vmm.out" | tail -n 20 >&2
        status=1
    fi
    cp "$WORK/$part/vmm.out" "$OUT_DIR/$part.vmm.log"
    stop_vmm
    return "$status"
}

install_tools
WORK=$(mktemp -d /tmp/tandem-api-schemathesis.XXXXXX)
OUT_DIR=$ROOT/target/api-schemathesis
mkdir -p "$OUT_DIR"
log "vmm $VMM ${EXTRA}; schemathesis $ST_VERSION; checks $CHECKS; max-examples $MAX_EXAMPLES, seed $SEED"
result=PASS
for part in $PARTS; do
    case $part in
        spec)
            if [ ! -r "$SPEC" ]; then
                [ "$SPEC_GIVEN" = 0 ] || die "no such spec: $SPEC"
                log "part spec: skipped, $SPEC does not exist yet"
                continue
            fi
            run_part spec "$SPEC" || result=FAIL ;;
        peer)
            [ -r "$PEER_SPEC" ] || die "no such file: $PEER_SPEC (the peers' folder, ../shared/peers)"
            "$VENV/bin/python" "$ROOT/ci/api-spec-subset.py" "$PEER_SPEC" "$ENDPOINTS" "$WORK/peer-subset.json"
            run_part peer "$WORK/peer-subset.json" || result=FAIL ;;
        *) die "unknown part $part (spec, peer)" ;;
    esac
done
echo "api-schemathesis: $result"
[ "$result" = PASS ]
