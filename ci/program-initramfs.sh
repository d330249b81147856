#!/usr/bin/env bash
#! Builds one of the project's guest programs static for ARCH and packs it
#! as a small gzip'd cpio holding /bin/PROGRAM. Appended to the test
#! guest's initramfs (Linux unpacks concatenated archives in order), it
#! puts the program in the guest: tandem-hostile (hostile/, the attacks of
#! tandem.mode=hostile) or tandem-vsock-e2e (vsock-e2e/, the vsock rows'
#! guest end; the emulated host runs the same binary).
#! Usage: ci/program-initramfs.sh PROGRAM x86_64|aarch64
#! Prints the archive's path: target/<arch>-unknown-linux-gnu/release/PROGRAM.cpio.gz
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX="program-initramfs"
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

main() {
    local program=${1:-} arch=${2:-} out
    case $program in
        -h|--help) usage; exit 0 ;;
        tandem-hostile|tandem-vsock-e2e) ;;
        *) die "unknown program '$program' (tandem-hostile or tandem-vsock-e2e)" ;;
    esac
    check_arch "$arch"
    cd "$ROOT"
    if [ "$arch" = x86_64 ]; then
        # As ci/build-static.sh builds tandem.
        RUSTFLAGS="-C target-feature=+crt-static" \
            cargo build --release --quiet --target x86_64-unknown-linux-gnu -p "$program"
    else
        # .cargo/config.toml sets the linker and +crt-static for this target.
        cargo build --release --quiet --target aarch64-unknown-linux-gnu -p "$program"
    fi
    out=$ROOT/target/$arch-unknown-linux-gnu/release
    STAGE=$(mktemp -d "$ROOT/target/$program-cpio.XXXXXX")
    local stage=$STAGE
    trap 'rm -rf "$STAGE"' EXIT
    mkdir -p "$stage/bin"
    install -m 755 "$out/$program" "$stage/bin/$program"
    find "$stage" -exec touch -h -d @0 {} +
    # Only bin/PROGRAM: bin itself exists in the main archive.
    (cd "$stage" && printf '%s\n' "bin/$program" |
        cpio --quiet -o -H newc --owner=0:0 --reproducible) | gzip -9 -n >"$out/$program.cpio.gz.new"
    mv "$out/$program.cpio.gz.new" "$out/$program.cpio.gz"
    echo "$out/$program.cpio.gz"
}

main "$@"; exit
