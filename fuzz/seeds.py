#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets whose input is a plain
format (fuzz/corpus/TARGET/seed-*): API requests, command lines, kernel
images and initrd placements. The targets with structured (`arbitrary`)
inputs get their seeds from ci/fuzz-seeds.sh instead. Run from anywhere;
idempotent."""

import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


def api():
    requests = {
        "get-root": ("GET /", ""),
        "get-version": ("GET /version", ""),
        "machine-config": ("PUT /machine-config", '{"vcpu_count": 2, "mem_size_mib": 256}'),
        "machine-config-patch": ("PATCH /machine-config", '{"mem_size_mib": 512}'),
        "boot-source": (
            "PUT /boot-source",
            '{"kernel_image_path": "/k", "boot_args": "console=ttyS0", "initrd_path": "/i"}',
        ),
        "drive": (
            "PUT /drives/rootfs",
            '{"drive_id": "rootfs", "path_on_host": "/d.ext4", "is_root_device": true, "is_read_only": false}',
        ),
        "drive-patch": ("PATCH /drives/rootfs", '{"drive_id": "rootfs", "path_on_host": "/e.ext4"}'),
        "net": (
            "PUT /network-interfaces/eth0",
            '{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "02:00:00:00:00:01"}',
        ),
        "entropy": ("PUT /entropy", "{}"),
        "logger": ("PUT /logger", '{"log_path": "/tmp/log", "level": "Debug", "show_level": true}'),
        "metrics": ("PUT /metrics", '{"metrics_path": "/tmp/m"}'),
        "action": ("PUT /actions", '{"action_type": "InstanceStart"}'),
        "vm-pause": ("PATCH /vm", '{"state": "Paused"}'),
        "vm-config": ("GET /vm/config", ""),
    }
    for name, (line, body) in requests.items():
        write("api_request", name, (line + "\n" + body).encode())


def cli():
    lines = {
        "run": ["run", "--kernel", "/k", "--memory", "512M", "--cpus", "2"],
        "run-devices": [
            "run", "--kernel", "/k", "--initrd", "/i", "--disk", "path=/d.img,readonly=on,id=root",
            "--disk", "path=/e.img", "--net", "tap=tap0,mac=02:00:00:00:00:01", "--rng",
            "--console", "virtio", "--memory", "2GiB", "--virtio-cmdline", "--stats",
        ],
        "run-gic": ["run", "--kernel", "/Image", "--gic", "v2", "--log-level", "debug", "--cmdline", "console=hvc0"],
        "firecracker": ["--api-sock", "/tmp/fc.sock", "--id", "vm0", "--level", "Warning", "--show-level",
                        "--http-api-max-payload-size", "65536", "--seccomp-filter", "x", "--boot-timer"],
        "config-file": ["--config-file", "/vm.json", "--no-api", "--metrics-path", "/m"],
        "api": ["api", "--sock", "/tmp/fc.sock", "PUT", "/actions", '{"action_type":"InstanceStart"}'],
        "sizes": ["1024", "3G", "4KiB", "1T", "0", "18446744073709551615K"],
    }
    for name, args in lines.items():
        write("cli_args", name, "\0".join(args).encode())


def bzimage(version=0x020F, xloadflags=1, init_size=0x10_0000, payload=0x800):
    setup_sects = 1
    image = bytearray(512 * (setup_sects + 1))
    image[0x1F1] = setup_sects
    image[0x1FE:0x200] = b"\x55\xaa"
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, version)
    struct.pack_into("<B", image, 0x211, 1)  # loadflags: LOADED_HIGH
    struct.pack_into("<I", image, 0x214, 0x10_0000)  # code32_start
    struct.pack_into("<I", image, 0x22C, 0x7FFF_FFFF)  # initrd_addr_max
    struct.pack_into("<I", image, 0x230, 0x20_0000)  # kernel_alignment
    struct.pack_into("<B", image, 0x234, 1)  # relocatable_kernel
    struct.pack_into("<H", image, 0x236, xloadflags)
    struct.pack_into("<I", image, 0x238, 2048)  # cmdline_size
    struct.pack_into("<Q", image, 0x258, 0x100_0000)  # pref_address
    struct.pack_into("<I", image, 0x260, init_size)
    return bytes(image) + bytes(range(256)) * (payload // 256)


def elf(pvh):
    """An ELF64 x86_64 executable: one PT_LOAD at 1 MiB, and optionally a
    PT_NOTE with the Xen PVH entry note."""
    code = b"\xf4" * 64  # hlt
    note = b""
    if pvh:
        name = b"Xen\0"
        desc = struct.pack("<I", 0x10_0000)
        note = struct.pack("<III", len(name), len(desc), 18) + name + desc  # XEN_ELFNOTE_PHYS32_ENTRY
    phnum = 2 if pvh else 1
    ehsize, phentsize = 64, 56
    data_off = ehsize + phentsize * phnum
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x10_0000, ehsize, 0, 0, ehsize, phentsize, phnum, 0, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, data_off, 0x10_0000, 0x10_0000, len(code), len(code) + 0x1000, 0x1000)
    phdrs = load
    if pvh:
        phdrs += struct.pack("<IIQQQQQQ", 4, 4, data_off + len(code), 0, 0, len(note), len(note), 4)
    return header + phdrs + code + note


def multiboot(addresses):
    """A multiboot (v1) image: an i386 ELF32 with one PT_LOAD at 4 MiB, or
    (addresses) a raw image whose header gives its load addresses (flag 16)."""
    magic = 0x1BADB002
    code = b"\xf4" * 64  # hlt
    if addresses:
        flags = 1 << 16
        fields = struct.pack("<5I", 0x40_0000, 0x40_0000, 0, 0x40_2000, 0x40_0020)
        header = struct.pack("<3I", magic, flags, (-(magic + flags)) & 0xFFFFFFFF) + fields
        return header + code
    header = struct.pack("<3I", magic, 0, (-magic) & 0xFFFFFFFF)
    ehsize, phentsize = 52, 32
    data_off = ehsize + phentsize + len(header)
    elf = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    elf += struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0x40_0000, ehsize, 0, 0, ehsize, phentsize, 1, 40, 0, 0)
    elf += struct.pack("<8I", 1, data_off, 0x40_0000, 0x40_0000, len(code), len(code) + 0x1000, 5, 0x1000)
    return elf + header + code


def arm64_image(image_size=0x10_0000, flags=0xA, text_offset=0):
    header = struct.pack("<IIQQQQQQI", 0x14000010, 0, text_offset, image_size, flags, 0, 0, 0, 0x644D5241)
    header += b"\0" * 4
    return header + bytes(range(256)) * 8


def kernels():
    no_initrd = struct.pack("<I", 0)
    initrd = struct.pack("<I", 0x2_0000)
    seeds = {
        "bzimage": no_initrd + bzimage(),
        "bzimage-initrd": initrd + bzimage(),
        "bzimage-32bit-only": no_initrd + bzimage(version=0x020A, xloadflags=0),
        "elf": no_initrd + elf(pvh=False),
        "elf-pvh-initrd": initrd + elf(pvh=True),
        "multiboot-elf32-initrd": initrd + multiboot(addresses=False),
        "multiboot-addresses": no_initrd + multiboot(addresses=True),
        "arm64-image": no_initrd + arm64_image(),
        "arm64-image-initrd": initrd + arm64_image(),
        "arm64-image-legacy": no_initrd + arm64_image(image_size=0, flags=0),
    }
    for name, data in seeds.items():
        write("kernel_loader", name, data)


def placements():
    mib, gib = 1 << 20, 1 << 30
    seeds = {
        "small": (256 * mib, 20 * mib, 0x7FFF_FFFF + 1, 4 * mib),
        "large-vm": (8 * gib, 64 * mib, 1 << 64 - 1, 512 * mib),
        "too-big": (64 * mib, 20 * mib, 1 << 32, 60 * mib),
        "tight": (32 * mib, 16 * mib, 32 * mib, 16 * mib),
    }
    for name, words in seeds.items():
        write("initrd_placement", name, struct.pack("<QQQQ", *[w % (1 << 64) for w in words]))


if __name__ == "__main__":
    api()
    cli()
    kernels()
    placements()
