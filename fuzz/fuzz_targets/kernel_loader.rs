//! Feeds the host architecture's kernel loader, through
//! `arch::Host::fuzz_load_payload` (the boot-payload half of
//! `Arch::configure_boot`, without KVM): on x86_64 the bzImage and ELF
//! (PVH note or 64-bit entry) loaders with magic detection, initrd
//! placement and the command line (arch/src/x86_64/loader.rs); on aarch64
//! the Image header check, the Image loader and the boot data placement
//! (arch/src/aarch64/image.rs, layout.rs). The kernel file is the fuzz
//! input (at most 1 MiB); the initrd a sparse file of a fuzzed size.
//!
//! Checks: errors, not panics; a loaded kernel's entry point and initrd
//! lie in guest RAM.
#![no_main]

use std::fs::File;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tandem_fuzz::scratch_file;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest RAM for either architecture: 32 MiB at 0 (x86_64) and 32 MiB at
/// 2 GiB (aarch64's RAM_BASE). Mapped once, lazily backed.
const RAM_SIZE: usize = 32 << 20;
const AARCH64_RAM_BASE: u64 = 0x8000_0000;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// The initrd's size: none, or up to 256 KiB.
    initrd: Option<u32>,
    cmdline: &'a str,
    /// The kernel image: a template's header with fuzzed bytes over it.
    template: Template,
    patches: Vec<(u16, u64)>,
    kernel: &'a [u8],
}

/// Starts the image with a valid magic, so the loaders get past it.
#[derive(Arbitrary, Debug)]
enum Template {
    Raw,
    BzImage,
    Elf64,
    Arm64Image,
}

struct Files {
    kernel: (File, std::path::PathBuf),
    initrd: (File, std::path::PathBuf),
    mem: GuestMemoryMmap,
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| Files {
        kernel: scratch_file("kernel"),
        initrd: scratch_file("initrd"),
        mem: GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), RAM_SIZE),
            (GuestAddress(AARCH64_RAM_BASE), RAM_SIZE),
        ])
        .expect("guest memory"),
    })
}

fn image(input: &Input<'_>) -> Vec<u8> {
    let mut image = vec![0u8; 0x400];
    match input.template {
        Template::Raw => image.clear(),
        Template::BzImage => {
            image[0x1f1] = 4; // setup_sects
            image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
            image[0x202..0x206].copy_from_slice(b"HdrS");
            image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
            image[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
            image.resize(0x1000, 0);
        }
        Template::Elf64 => {
            image[..4].copy_from_slice(b"\x7fELF");
            image[4] = 2; // ELFCLASS64
            image[5] = 1; // little-endian
            image[6] = 1;
            image[0x10] = 2; // ET_EXEC
            image[0x12] = 62; // EM_X86_64
            image[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
            image[0x34] = 0x40; // e_ehsize
            image[0x36] = 0x38; // e_phentsize
            image[0x38] = 1; // e_phnum
        }
        Template::Arm64Image => {
            image.truncate(0x40);
            image[16..24].copy_from_slice(&0x10_0000u64.to_le_bytes()); // image_size
            image[56..60].copy_from_slice(b"ARM\x64");
        }
    }
    image.extend_from_slice(input.kernel);
    for &(at, value) in &input.patches {
        let at = usize::from(at);
        if at + 8 <= image.len() {
            image[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
    }
    image.truncate(1 << 20);
    image
}

fuzz_target!(|input: Input<'_>| {
    let files = files();
    let (kernel, kernel_path) = &files.kernel;
    kernel.set_len(0).expect("truncate");
    std::os::unix::fs::FileExt::write_all_at(kernel, &image(&input), 0).expect("write kernel");
    let initrd = input.initrd.map(|size| {
        let (file, path) = &files.initrd;
        file.set_len(0).expect("truncate");
        file.set_len(u64::from(size % (256 << 10))).expect("size");
        path.as_path()
    });
    let result = arch::Host::fuzz_load_payload(
        &files.mem,
        RAM_SIZE as u64,
        kernel_path,
        initrd,
        input.cmdline,
    );
    if let Ok((entry, placed)) = result {
        assert!(
            files.mem.address_in_range(GuestAddress(entry)),
            "entry {entry:#x}"
        );
        if let Some((base, size)) = placed {
            let last = base + size.max(1) - 1;
            assert!(
                files.mem.address_in_range(GuestAddress(base)),
                "initrd at {base:#x}"
            );
            assert!(
                files.mem.address_in_range(GuestAddress(last)),
                "initrd end {last:#x}"
            );
        }
    }
});
