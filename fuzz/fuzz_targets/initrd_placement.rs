//! Feeds the host architecture's initrd placement with arbitrary sizes,
//! through `arch::Host::fuzz_place_initrd`: x86_64's `place_initrd` (as
//! high as the kernel's `initrd_addr_max` and low RAM allow, above the
//! kernel; arch/src/x86_64/loader.rs) or aarch64's `place_boot_data`
//! (below the FDT and the 32 GiB window; arch/src/aarch64/layout.rs).
//! Input: four little-endian u64s: RAM size, kernel end, ceiling, initrd
//! size.
//!
//! Checks: a placed initrd is page-aligned, starts at or after the
//! kernel's end and ends inside RAM (and below the ceiling on x86_64).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: [u8; 32]| {
    let word = |i: usize| u64::from_le_bytes(data[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let (memory_size, kernel_end, ceiling, size) = (word(0), word(1), word(2), word(3));
    // Real VMs have at least 2 MiB and at most what the address space
    // holds; sizes are page multiples.
    let memory_size = (memory_size % (1 << 46)).max(1 << 21) & !0xfff;
    if let Ok(base) = arch::Host::fuzz_place_initrd(memory_size, kernel_end, ceiling, size) {
        assert_eq!(base % 4096, 0, "initrd at {base:#x} not page-aligned");
        assert!(
            base >= kernel_end,
            "initrd at {base:#x} below the kernel end {kernel_end:#x}"
        );
        let end = base.checked_add(size).expect("initrd end overflows");
        // The one use of cfg(target_arch) in fuzz/: the two back ends
        // bound the initrd differently.
        if cfg!(target_arch = "x86_64") {
            assert!(
                end <= ceiling,
                "initrd end {end:#x} above the ceiling {ceiling:#x}"
            );
            assert!(end <= memory_size, "initrd end {end:#x} past RAM");
        } else {
            let ram_end = 0x8000_0000 + memory_size;
            assert!(end <= ram_end, "initrd end {end:#x} past RAM");
        }
    }
});
