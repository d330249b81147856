#!/usr/bin/env bash
#! Builds the hostile guest program (hostile/, binary tandem-hostile) static
#! for ARCH and packs it as a small gzip'd cpio holding /bin/tandem-hostile.
#! Appended to the test guest's initramfs (Linux unpacks concatenated
#! archives in order), it gives the guest's tandem.mode=hostile its program.
#! Usage: ci/hostile-initramfs.sh x86_64|aarch64
#! Prints the archive's path: target/<arch>-unknown-linux-gnu/release/hostile.cpio.gz
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=hostile-initramfs
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
            cargo build --release --quiet --target x86_64-unknown-linux-gnu -p tandem-hostile
    else
        # .cargo/config.toml sets the linker and +crt-static for this target.
        cargo build --release --quiet --target aarch64-unknown-linux-gnu -p tandem-hostile
    fi
    out=$ROOT/target/$arch-unknown-linux-gnu/release
    STAGE=$(mktemp -d "$ROOT/target/hostile-cpio.XXXXXX")
    local stage=$STAGE
    trap 'rm -rf "$STAGE"' EXIT
    mkdir -p "$stage/bin"
    install -m 755 "$out/tandem-hostile" "$stage/bin/tandem-hostile"
    find "$stage" -exec touch -h -d @0 {} +
    # Only bin/tandem-hostile: bin itself exists in the main archive.
    (cd "$stage" && printf '%s\n' bin/tandem-hostile |
        cpio --quiet -o -H newc --owner=0:0 --reproducible) | gzip -9 -n >"$out/hostile.cpio.gz.new"
    mv "$out/hostile.cpio.gz.new" "$out/hostile.cpio.gz"
    echo "$out/hostile.cpio.gz"
}

main "$@"; exit
