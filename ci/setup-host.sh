#!/usr/bin/env bash
#! Installs what building and testing tandem needs on a fresh Debian 12 x86_64
#! machine: QEMU (from bookworm-backports), the aarch64 cross toolchain,
#! qemu-user, busybox tooling, and the Rust targets. Idempotent.
set -euo pipefail

SRC=/etc/apt/sources.list.d/bookworm-backports.sources
need_update=0
if [ ! -f "$SRC" ]; then
    cat >"$SRC" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    need_update=1
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    need_update=1
fi

PKGS=(qemu-system-x86 qemu-system-arm qemu-user-static gcc-aarch64-linux-gnu
      libc6-dev-arm64-cross cpio xz-utils zstd file busybox-static
      device-tree-compiler iproute2 e2fsprogs shellcheck)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] || [ "$need_update" = 1 ]; then
    apt-get update -qq
fi
if [ "${#missing[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -t bookworm-backports "${missing[@]}"
fi

for t in aarch64-unknown-linux-gnu; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
