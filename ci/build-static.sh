#!/usr/bin/env bash
#! Builds the static release binary of tandem for x86_64 and/or aarch64.
#! Usage: ci/build-static.sh [x86_64|aarch64|all]   (default: all)
#! Prints the path of each binary it built.
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
if [ "$which" = x86_64 ] || [ "$which" = all ]; then
    # With an explicit --target, RUSTFLAGS reaches only target crates, so
    # proc-macros still build as host dylibs.
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --quiet --target x86_64-unknown-linux-gnu
    echo "$PWD/target/x86_64-unknown-linux-gnu/release/tandem"
fi
if [ "$which" = aarch64 ] || [ "$which" = all ]; then
    # .cargo/config.toml sets the linker and +crt-static for this target.
    cargo build --release --quiet --target aarch64-unknown-linux-gnu
    echo "$PWD/target/aarch64-unknown-linux-gnu/release/tandem"
fi
