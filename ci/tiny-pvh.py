#!/usr/bin/env python3
"""Writes a tiny x86_64 "vmlinux" for control-plane tests of tandem and its peers.

An ELF64 x86_64 executable with one PT_LOAD at 16 MiB and a PT_NOTE holding
the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18, name "Xen"), so a
VMM that boots PVH kernels (tandem, Firecracker, QEMU microvm) enters its
32-bit code directly. The code writes one byte to the serial port 0x3f8 and
then spins forever (`jmp .`), or halts in a loop with --halt:

    mov $BYTE,%al; mov $0x3f8,%dx; out %al,(%dx); 1: jmp 1b

The byte appearing on the VMM's serial output is the first guest instruction
having run. Same layout as tandem's arch/src/test_payloads.rs elf_kernel().

With --count it instead counts in guest RAM at 2 MiB and writes each count's
low byte to 0x3f8 with a short delay loop in between (1, 2, 3, …; tandem's
TinyKernel::Counter): output that goes on shows a restored guest running.

With --exits N it writes N times to the UART's scratch register (--via pio)
or to a virtio-mmio QueueSel register (--via mmio, tandem's first transport
with --rng), then powers off through the ACPI sleep port: each write is one
exit to the VMM (ci/bench-exit.sh).

Usage: ci/tiny-pvh.py OUTPUT [--byte R|0xNN] [--halt | --count | --exits N [--via pio|mmio]]
"""
import argparse
import re
import struct
import sys

LOAD = 0x100_0000
PT_LOAD, PT_NOTE, PF_R_X = 1, 4, 5
XEN_ELFNOTE_PHYS32_ENTRY = 18


def code(byte: int, halt: bool) -> bytes:
    out = bytes([0xB0, byte, 0x66, 0xBA, 0xF8, 0x03, 0xEE])  # mov $b,%al; mov $0x3f8,%dx; out
    return out + (bytes([0xF4, 0xEB, 0xFD]) if halt else bytes([0xEB, 0xFE]))  # hlt; jmp -3 | jmp .


# mov $0x3f8,%edx; 1: incl 0x200000; mov 0x200000,%eax; out %al,(%dx);
# mov $0x4000,%ecx; 2: loop 2b; jmp 1b
COUNTER = bytes([0xBA, 0xF8, 0x03, 0x00, 0x00, 0xFF, 0x05, 0x00, 0x00, 0x20, 0x00, 0xA1, 0x00,
                 0x00, 0x20, 0x00, 0xEE, 0xB9, 0x00, 0x40, 0x00, 0x00, 0xE2, 0xFE, 0xEB, 0xEB])


# The UART's scratch register (a claimed port that only stores the byte)
# and a virtio-mmio transport's QueueSel (tandem's first slot with --rng).
EXIT_PORT = 0x3FF
EXIT_MMIO = 0xD000_0030
POWER_OFF = bytes([0xB0, 0x34, 0x66, 0xBA, 0x00, 0x06, 0xEE, 0xF4, 0xEB, 0xFD])  # S5 on 0x600


def exits(count: int, via: str) -> bytes:
    """`count` write exits through a port or an MMIO address, then power-off."""
    out = bytes([0x31, 0xC0])  # xor %eax,%eax
    if count:
        out += bytes([0xB9]) + struct.pack("<I", count)  # mov $count,%ecx
        if via == "pio":
            out += bytes([0xBA]) + struct.pack("<I", EXIT_PORT)  # mov $port,%edx
            out += bytes([0xEE, 0x49, 0x75, 0xFC])  # 1: out %al,(%dx); dec %ecx; jnz 1b
        else:
            out += bytes([0xA3]) + struct.pack("<I", EXIT_MMIO)  # 1: mov %eax,addr
            out += bytes([0x49, 0x75, 0xF8])  # dec %ecx; jnz 1b
    return out + POWER_OFF


def elf(text: bytes, paddr: int = LOAD) -> bytes:
    note = struct.pack("<III", 4, 4, XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + struct.pack("<I", paddr)
    phnum = 2
    note_off = 64 + 56 * phnum
    code_off = (note_off + len(note) + 15) // 16 * 16
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, paddr, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", PT_LOAD, PF_R_X, code_off, paddr, paddr, len(text), len(text), 16)
    phdrs += struct.pack("<IIQQQQQQ", PT_NOTE, 4, note_off, 0, 0, len(note), len(note), 4)
    image = ehdr + phdrs + note
    return image + bytes(code_off - len(image)) + text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output")
    ap.add_argument("--byte", default="R",
                    help="the byte written to 0x3f8: one ASCII character or 0xNN (default R)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--halt", action="store_true", help="hlt in a loop instead of spinning")
    mode.add_argument("--count", action="store_true", help="count on the serial port forever")
    mode.add_argument("--exits", type=int, metavar="N",
                      help="N write exits (see --via), then power off through the ACPI sleep port")
    ap.add_argument("--via", choices=["pio", "mmio"], default="pio",
                    help="--exits: the UART scratch register 0x3ff, or virtio-mmio QueueSel at 0xd0000030")
    args = ap.parse_args()
    if re.fullmatch(r"0x[0-9a-fA-F]{1,2}", args.byte):
        byte = int(args.byte, 16)
    elif len(args.byte.encode()) == 1:
        byte = args.byte.encode()[0]
    else:
        ap.error("--byte takes one ASCII character or 0xNN")
    with open(args.output, "wb") as f:
        if args.exits is not None:
            f.write(elf(exits(args.exits, args.via)))
        else:
            f.write(elf(COUNTER if args.count else code(byte, args.halt)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
