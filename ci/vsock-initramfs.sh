#!/usr/bin/env bash
#! Builds the vsock rows' program (vsock-e2e/, binary tandem-vsock-e2e)
#! static for ARCH, and packs it as a small gzip'd cpio holding
#! /bin/tandem-vsock-e2e. Appended to the test guest's initramfs (Linux
#! unpacks concatenated archives in order) it gives the guest's vsock check
#! its program; the emulated host runs the same binary for the host end.
#! Usage: ci/vsock-initramfs.sh x86_64|aarch64
#! Prints the archive's path: target/<arch>-unknown-linux-gnu/release/vsock.cpio.gz
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=vsock-initramfs
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

main() {
    local arch=${1:-} out
    case $arch in -h|--help) usage; exit 0 ;; esac
    check_arch "$arch"
    cd "$ROOT"
    if [ "$arch" = x86_64 ]; then
        # As ci/build-static.sh builds tandem.
        RUSTFLAGS="-C target-feature=+crt-static" \
            cargo build --release --quiet --target x86_64-unknown-linux-gnu -p tandem-vsock-e2e
    else
        # .cargo/config.toml sets the linker and +crt-static for this target.
        cargo build --release --quiet --target aarch64-unknown-linux-gnu -p tandem-vsock-e2e
    fi
    out=$ROOT/target/$arch-unknown-linux-gnu/release
    STAGE=$(mktemp -d "$ROOT/target/vsock-cpio.XXXXXX")
    local stage=$STAGE
    trap 'rm -rf "$STAGE"' EXIT
    mkdir -p "$stage/bin"
    install -m 755 "$out/tandem-vsock-e2e" "$stage/bin/tandem-vsock-e2e"
    find "$stage" -exec touch -h -d @0 {} +
    # Only bin/tandem-vsock-e2e: bin itself exists in the main archive.
    (cd "$stage" && printf '%s\n' bin/tandem-vsock-e2e |
        cpio --quiet -o -H newc --owner=0:0 --reproducible) | gzip -9 -n >"$out/vsock.cpio.gz.new"
    mv "$out/vsock.cpio.gz.new" "$out/vsock.cpio.gz"
    echo "$out/vsock.cpio.gz"
}

main "$@"; exit
