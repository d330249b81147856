#!/usr/bin/env bash
#! Builds Firecracker v1.16.1, the peer tandem's control plane is measured
#! against, from the unmodified source in ../shared/peers (this repo's sibling
#! folder; CI has it too), into a cache outside the repo, and prints the
#! binary's path as the last line of stdout. Idempotent: when the binary is
#! already there it only prints the path. About 5 minutes on 2 cores, niced.
#! Follows ../shared/peers/README.md: micro-http patched in by path, toolchain
#! 1.95.0 (Firecracker's rust-toolchain.toml pin), target x86_64-unknown-linux-gnu
#! (no default seccomp policy for that target, so the binary runs without
#! filters unless given some). Installs its apt needs (libclang-dev
#! libseccomp-dev) when they are missing.
#! Usage: ci/peer-firecracker.sh [--static] [--rebuild]
#!   --static    link statically (RUSTFLAGS=-C target-feature=+crt-static), for
#!               an emulated host; cached apart from the dynamic build
#!   --rebuild   build again even when the binary exists
#! Environment:
#!   TANDEM_PEERS_CACHE  cache folder (default /var/cache/tandem-peers)
#!   TANDEM_PEERS_DIR    peers' folder (default <repo>/../shared/peers)
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=peer-firecracker
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

VERSION=v1.16.1 MICRO_HTTP=micro-http-876f3fe TOOLCHAIN=1.95.0 TARGET=x86_64-unknown-linux-gnu
PEERS=${TANDEM_PEERS_DIR:-$ROOT/../shared/peers}
CACHE=${TANDEM_PEERS_CACHE:-/var/cache/tandem-peers}
STATIC=0 REBUILD=0

while [ $# -gt 0 ]; do
    case $1 in
        --static) STATIC=1 ;;
        --rebuild) REBUILD=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (--help)" ;;
    esac
    shift
done

[ "$(uname -m)" = x86_64 ] || die "builds for x86_64 hosts only (got $(uname -m))"
flavour=gnu
[ "$STATIC" = 0 ] || flavour=gnu-static
BIN_DIR=$CACHE/firecracker-$VERSION-$flavour
BIN=$BIN_DIR/firecracker

if [ "$REBUILD" = 0 ] && [ -x "$BIN" ]; then
    log "cached: $BIN"
    echo "$BIN"
    exit 0
fi

for f in "firecracker-$VERSION.tar.xz" "$MICRO_HTTP.tar.xz"; do
    [ -r "$PEERS/$f" ] || die "missing $PEERS/$f (the peers' folder, ../shared/peers)"
done

missing=()
for pkg in libclang-dev libseccomp-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
command -v cargo >/dev/null || die "cargo not found (rustup with toolchain $TOOLCHAIN)"
if command -v rustup >/dev/null && ! rustup toolchain list | grep -q "^$TOOLCHAIN-"; then
    log "installing Rust $TOOLCHAIN (Firecracker's pin)"
    rustup toolchain install "$TOOLCHAIN" --profile minimal >&2
fi

# One build at a time per cache (another caller may be building right now).
mkdir -p "$CACHE"
exec 9>"$CACHE/firecracker-$VERSION-$flavour.lock"
flock 9
if [ "$REBUILD" = 0 ] && [ -x "$BIN" ]; then
    log "built meanwhile: $BIN"
    echo "$BIN"
    exit 0
fi

# A fresh source tree every build: the tarballs are the truth, the tree is scratch.
SRC=$CACHE/src-$VERSION-$flavour
rm -rf "$SRC"
mkdir -p "$SRC"
tar -xJf "$PEERS/firecracker-$VERSION.tar.xz" -C "$SRC"
tar -xJf "$PEERS/$MICRO_HTTP.tar.xz" -C "$SRC"
cat >>"$SRC/firecracker-$VERSION/Cargo.toml" <<'TOML'

[patch."https://github.com/firecracker-microvm/micro-http"]
micro_http = { path = "../micro-http" }
TOML

rustflags=${RUSTFLAGS:-}
[ "$STATIC" = 0 ] || rustflags="$rustflags -C target-feature=+crt-static"
log "building Firecracker $VERSION ($flavour; about 5 minutes on 2 cores)"
(
    cd "$SRC/firecracker-$VERSION"
    RUSTUP_TOOLCHAIN=$TOOLCHAIN RUSTFLAGS=$rustflags CARGO_TARGET_DIR=$CACHE/target-$flavour \
        nice -n 10 cargo build --release -p firecracker --target "$TARGET" -j 2 >&2
)
mkdir -p "$BIN_DIR"
install -m 0755 "$CACHE/target-$flavour/$TARGET/release/firecracker" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
rm -rf "$SRC"
log "built: $BIN ($("$BIN" --version 2>/dev/null | head -n 1 || echo '?'))"
echo "$BIN"
