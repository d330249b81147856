#!/usr/bin/env bash
#! Fetches a Debian kernel and busybox-static for ARCH (apt-get download,
#! nothing is installed) and builds the test guest from them:
#!   target/guest/<arch>-<kernel release>/
#!     vmlinuz            bzImage (x86_64) or raw arm64 Image (aarch64)
#!     vmlinux            x86_64 only: the ELF cut out of the bzImage (PVH boot)
#!     config             the kernel's config
#!     busybox            static busybox for ARCH
#!     modules/*.ko       uncompressed modules: the nested guest's virtio set and
#!                        (x86_64) the KVM modules an emulated host loads
#!     modules/{guest,host,host-extra}.order   load order, dependencies first
#!     initramfs.cpio.gz  the nested guest: busybox + virtio modules + /init
#! Cached: rebuilt only when the package versions or this script change.
#! Usage: ci/guest-assets.sh x86_64|aarch64 [--kernel-version 6.1|6.12|6.12-16k|RELEASE]
#!   6.1 (default) is bookworm's kernel; 6.12 the bookworm-backports -unsigned
#!   one; 6.12-16k the arm64 16K-page flavour; RELEASE an exact name such as
#!   6.1.0-56-amd64. Progress goes to stderr; the last stdout line is the
#!   output directory.
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=guest-assets
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

GUEST_ROOT=$ROOT/target/guest
DEB_CACHE=$GUEST_ROOT/debs
# The nested guest's /init, and its extra checks (tandem.mode=checks).
GUEST_INIT=$ROOT/ci/initramfs/guest-init
CHECKS_SRC=$ROOT/ci/guest-checks.d

# What the nested guest loads; their dependencies are added automatically.
GUEST_MODULES=(virtio_ring virtio virtio_mmio virtio_pci virtio_blk failover net_failover
               virtio_net virtio_console virtio_rng vmw_vsock_virtio_transport
               virtio_balloon)
# What an emulated x86 KVM host loads (arm64 Debian kernels build KVM in).
# shellcheck disable=SC2034 # read through a nameref (build_assets)
HOST_MODULES_x86_64=(irqbypass ccp kvm kvm_amd)
# shellcheck disable=SC2034
HOST_MODULES_aarch64=()
# Loaded only on request by an emulated host (emulated-host.sh --share-root
# and host scripts): 9p over virtio-pci for sharing this machine's root, and
# tun for TAP devices.
HOST_EXTRA_MODULES=(tun virtio_pci 9pnet_virtio 9p)

deb_arch() {
    check_arch "$1"
    case $1 in x86_64) echo amd64 ;; aarch64) echo arm64 ;; esac
}

# The kernel package for a version alias or an exact release.
resolve_kernel_package() {
    local arch=$1 version=$2 da meta pkg suite=""
    da=$(deb_arch "$arch")
    case $version in
        6.1) meta=linux-image-$da ;;
        6.12) meta=linux-image-$da suite=/bookworm-backports ;;
        6.12-16k)
            [ "$arch" = aarch64 ] || die "6.12-16k is an arm64 flavour"
            meta=linux-image-arm64-16k suite=/bookworm-backports ;;
        *)
            pkg=linux-image-$version
            apt-cache show "$pkg:$da" >/dev/null 2>&1 || pkg=$pkg-unsigned
            apt-cache show "$pkg:$da" >/dev/null 2>&1 ||
                die "no package linux-image-$version or linux-image-$version-unsigned for $da"
            echo "$pkg"; return ;;
    esac
    pkg=$(apt-cache depends "$meta:$da$suite" 2>/dev/null |
          awk '/Depends: linux-image-/ { sub(/:.*/, "", $2); print $2; exit }')
    [ -n "$pkg" ] || die "apt-cache depends $meta:$da$suite names no kernel (apt-get update? ci/setup-host.sh?)"
    # The backports metapackages depend on the signed image; its -unsigned
    # twin is the same kernel without the signing shim dependency chain.
    [ -z "$suite" ] || pkg=$pkg-unsigned
    echo "$pkg"
}

candidate_version() {
    local v
    v=$(apt-cache policy "$1" | awk '/Candidate:/ { print $2 }')
    if [ -z "$v" ] || [ "$v" = "(none)" ]; then die "no candidate version of $1"; fi
    echo "$v"
}

# Downloads PKG:ARCH=VERSION into the .deb cache (once); prints its path.
fetch_deb() {
    local pkg=$1 da=$2 version=$3 file
    file=$DEB_CACHE/${pkg}_${version//:/%3a}_$da.deb
    if [ ! -s "$file" ]; then
        log "downloading $pkg:$da $version"
        (cd "$DEB_CACHE" && apt-get download -q -o APT::Sandbox::User=root \
            "$pkg:$da=$version" >&2) || die "apt-get download $pkg:$da=$version failed"
    fi
    [ -s "$file" ] || die "download of $pkg did not produce $file"
    echo "$file"
}

module_name() { local n=${1##*/}; n=${n%%.ko*}; echo "${n//-/_}"; }

# Copies a module, decompressing .ko.xz/.ko.zst/.ko.gz.
copy_module() {
    case $1 in
        *.ko) cp "$1" "$2" ;;
        *.ko.xz) xz -dc "$1" >"$2" ;;
        *.ko.zst) zstd -qdc "$1" >"$2" ;;
        *.ko.gz) gzip -dc "$1" >"$2" ;;
        *) die "unknown module format: $1" ;;
    esac
}

module_depends() { tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | tr ',' ' '; }

WORK_DIR=""
trap 'rm -rf "$WORK_DIR"' EXIT
declare -A KO_PATH VISITED
LOAD_ORDER=()

index_modules() {
    local f
    while IFS= read -r f; do KO_PATH[$(module_name "$f")]=$f; done \
        < <(find "$1" -name '*.ko*' -type f)
}

# Depth-first: a module lands in LOAD_ORDER after everything it depends on.
add_module() {
    local name=${1//-/_} out=$2 dep
    [ -z "${VISITED[$name]:-}" ] || return 0
    VISITED[$name]=1
    if [ -z "${KO_PATH[$name]:-}" ]; then
        log "note: $name is not a module of this kernel (built in?)"
        return 0
    fi
    [ -f "$out/$name.ko" ] || copy_module "${KO_PATH[$name]}" "$out/$name.ko"
    for dep in $(module_depends "$out/$name.ko"); do add_module "$dep" "$out"; done
    LOAD_ORDER+=("$name")
}

# Writes ORDER_FILE: the named modules and their dependencies, in load order.
write_module_set() {
    local out=$1 order_file=$2 m
    shift 2
    VISITED=() LOAD_ORDER=()
    for m in "$@"; do add_module "$m" "$out"; done
    : >"$order_file"
    [ "${#LOAD_ORDER[@]}" -eq 0 ] || printf '%s\n' "${LOAD_ORDER[@]}" >"$order_file"
}

# Cuts the ELF vmlinux out of a bzImage, as scripts/extract-vmlinux does:
# try each compressed-stream magic at each offset until an ELF comes out.
extract_vmlinux() {
    local image=$1 out=$2 magic tool offset
    for magic in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
        tool=${magic%%:*}
        # shellcheck disable=SC2013 # one number per line
        for offset in $(LC_ALL=C grep -obUaP "${magic#*:}" "$image" | cut -d: -f1); do
            tail -c +$((offset + 1)) "$image" | "$tool" -dc >"$out" 2>/dev/null || true
            if [ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
                log "vmlinux: $tool stream at offset $offset"
                return 0
            fi
        done
    done
    die "no compressed ELF found in $image"
}


# Writes a gzip'd newc cpio of DIR that depends only on its contents.
reproducible_cpio_gz() {
    local dir=$1 out=$2
    find "$dir" -exec touch -h -d @0 {} +
    (cd "$dir" && find . -print0 | LC_ALL=C sort -z |
        cpio --quiet --null -o -H newc --owner=0:0 --reproducible) | gzip -9 -n >"$out"
}

build_guest_initramfs() {
    local out=$1 stage=$2 m
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,lib/modules,checks.d}
    cp "$out/busybox" "$stage/bin/busybox"
    ln -s busybox "$stage/bin/sh"
    while read -r m; do cp "$out/modules/$m.ko" "$stage/lib/modules/"; done <"$out/modules/guest.order"
    cp "$out/modules/guest.order" "$stage/lib/modules/order"
    if compgen -G "$CHECKS_SRC/*.sh" >/dev/null; then cp "$CHECKS_SRC"/*.sh "$stage/checks.d/"; fi
    install -m 755 "$GUEST_INIT" "$stage/init"
    chmod -R u=rwX,go=rX "$stage"
    reproducible_cpio_gz "$stage" "$out/initramfs.cpio.gz"
}

# Prints "kernel-package kernel-version busybox-version". apt-cache takes
# about a second per query, so the answer is kept until apt's lists change.
resolve_cached() {
    local arch=$1 version=$2 bpkg=$3 da cache kpkg kver bver
    da=$(deb_arch "$arch")
    cache=$GUEST_ROOT/.resolved-$arch-$version
    if [ -s "$cache" ] && [ "$cache" -nt /var/lib/apt/lists ] && [ "$cache" -nt "$0" ]; then
        cat "$cache"; return
    fi
    kpkg=$(resolve_kernel_package "$arch" "$version")
    kver=$(candidate_version "$kpkg:$da")
    bver=$(candidate_version "$bpkg:$da")
    echo "$kpkg $kver $bver" | tee "$cache"
}

inputs_hash() {
    local files=("$0" "$GUEST_INIT")
    if compgen -G "$CHECKS_SRC/*.sh" >/dev/null; then files+=("$CHECKS_SRC"/*.sh); fi
    cat "${files[@]}" | sha256sum | cut -d' ' -f1
}

build_assets() {
    local arch=$1 out=$2 kernel_deb=$3 busybox_deb=$4 release=$5 work
    local -n host_modules="HOST_MODULES_$arch"
    work=$(mktemp -d "$GUEST_ROOT/.work.XXXXXX")
    WORK_DIR=$work
    mkdir -p "$out/modules"
    log "extracting $(basename "$kernel_deb")"
    dpkg-deb -x "$kernel_deb" "$work/kernel"
    dpkg-deb -x "$busybox_deb" "$work/busybox"
    cp "$work/kernel/boot/vmlinuz-$release" "$out/vmlinuz"
    cp "$work/kernel/boot/config-$release" "$out/config"
    cp "$work/busybox/bin/busybox" "$out/busybox"
    [ "$arch" != x86_64 ] || extract_vmlinux "$out/vmlinuz" "$out/vmlinux"
    index_modules "$work/kernel"
    write_module_set "$out/modules" "$out/modules/guest.order" "${GUEST_MODULES[@]}"
    write_module_set "$out/modules" "$out/modules/host.order" ${host_modules[@]+"${host_modules[@]}"}
    write_module_set "$out/modules" "$out/modules/host-extra.order" "${HOST_EXTRA_MODULES[@]}"
    build_guest_initramfs "$out" "$work/initramfs"
}

main() {
    local arch="" version=6.1 da kpkg kver bpkg=busybox-static bver out stamp want
    while [ $# -gt 0 ]; do
        case $1 in
            --kernel-version) version=${2:?--kernel-version needs a value}; shift 2 ;;
            -h|--help) usage; exit 0 ;;
            -*) die "unknown option $1" ;;
            *) arch=$1; shift ;;
        esac
    done
    [ -n "$arch" ] || die "usage: $0 x86_64|aarch64 [--kernel-version V]"
    da=$(deb_arch "$arch")
    mkdir -p "$DEB_CACHE"
    exec 9>"$GUEST_ROOT/.lock"
    flock 9

    read -r kpkg kver bver < <(resolve_cached "$arch" "$version" "$bpkg")
    [ -n "$bver" ] || die "could not resolve the packages for $arch $version"
    local release=${kpkg#linux-image-}
    release=${release%-unsigned}
    out=$GUEST_ROOT/$arch-$release
    # The kernel build, not the package: a signed image and its -unsigned twin
    # are the same kernel.
    want="linux-$release=$kver $bpkg:$da=$bver inputs=$(inputs_hash)"
    stamp=$out/stamp
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "up to date: $out"
    else
        # Built aside and swapped in, so runs reading the old files are not
        # left with half a directory.
        rm -rf "$out.new" "$out.old"
        build_assets "$arch" "$out.new" "$(fetch_deb "$kpkg" "$da" "$kver")" \
            "$(fetch_deb "$bpkg" "$da" "$bver")" "$release"
        echo "$want" >"$out.new/stamp"
        [ ! -d "$out" ] || mv "$out" "$out.old"
        mv "$out.new" "$out"
        rm -rf "$out.old"
        log "built $out"
    fi
    echo "$out"
}

# On one line, so that bash has read all it will run before main starts: an
# edit to this file while it runs cannot make it run more.
main "$@"; exit
