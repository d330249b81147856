//! Finding the virtio-mmio register windows: `/proc/iomem` parsed into
//! regions, and the ones a virtio-mmio transport sits behind picked by
//! name (`LNRO0005:NN`: ACPI platform devices, x86_64, are listed there
//! without a driver); device-tree platform devices (aarch64) are not, so
//! their names in /sys/bus/platform/devices (`a000000.virtio_mmio`) give
//! the addresses. Pure text handling, unit-tested.

/// One line of `/proc/iomem`: an inclusive physical range and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive, as the kernel prints it).
    pub end: u64,
    /// The owner's name.
    pub name: String,
}

impl Region {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// Parses `/proc/iomem` text (nested lines included; unparsable lines are
/// skipped).
pub fn parse(text: &str) -> Vec<Region> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Region> {
    let (range, name) = line.trim_start().split_once(" : ")?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    (start <= end).then(|| Region {
        start,
        end,
        name: name.trim().to_string(),
    })
}

/// The regions that name a virtio-mmio transport, lowest address first,
/// each once.
pub fn virtio_windows(regions: &[Region]) -> Vec<Region> {
    let mut found: Vec<Region> = regions
        .iter()
        .filter(|r| r.name.contains("LNRO0005") || r.name.contains("virtio_mmio"))
        .cloned()
        .collect();
    found.sort_by_key(|r| r.start);
    found.dedup_by_key(|r| r.start);
    found
}

/// The window addresses in device-tree platform device names
/// (`<hex address>.virtio_mmio`), lowest first.
pub fn platform_windows<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<u64> {
    let mut found: Vec<u64> = names
        .into_iter()
        .filter_map(|name| name.strip_suffix(".virtio_mmio"))
        .filter_map(|hex| u64::from_str_radix(hex, 16).ok())
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Whether `addr` lies in any region (RAM, devices, bridges).
pub fn is_claimed(regions: &[Region], addr: u64) -> bool {
    regions.iter().any(|r| r.start <= addr && addr <= r.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
00100000-0fffffff : System RAM
  01000000-01e00fff : Kernel code
d0000000-d00001ff : LNRO0005:00
d0001000-d00011ff : LNRO0005:01
fec00000-fec003ff : IOAPIC 0
garbage line
";

    const ARM: &str = "\
09000000-09000fff : 9000000.uart
  09000000-09000fff : 9000000.uart uart@9000000
0a000000-0a0001ff : virtio_mmio@a000000
0a010000-0a0101ff : virtio_mmio@a010000
80000000-8fffffff : System RAM
";

    #[test]
    fn acpi_windows_are_found_on_x86() {
        let regions = parse(X86);
        assert_eq!(regions.len(), 7);
        let windows = virtio_windows(&regions);
        let starts: Vec<u64> = windows.iter().map(|r| r.start).collect();
        assert_eq!(starts, vec![0xd000_0000, 0xd000_1000]);
        assert_eq!(windows[0].len(), 0x200);
    }

    #[test]
    fn device_tree_windows_are_found_on_arm() {
        let windows = virtio_windows(&parse(ARM));
        let starts: Vec<u64> = windows.iter().map(|r| r.start).collect();
        assert_eq!(starts, vec![0x0a00_0000, 0x0a01_0000]);
    }

    #[test]
    fn device_tree_platform_names_give_addresses() {
        let names = [
            "a010000.virtio_mmio",
            "9000000.uart",
            "a000000.virtio_mmio",
            "x.virtio_mmio",
        ];
        assert_eq!(platform_windows(names), vec![0x0a00_0000, 0x0a01_0000]);
    }

    #[test]
    fn nested_lines_count_and_claims_are_seen() {
        let regions = parse(ARM);
        assert!(is_claimed(&regions, 0x0900_0010));
        assert!(is_claimed(&regions, 0x8000_0000));
        assert!(!is_claimed(&regions, 0x1000_0000));
        assert!(parse("fff-1 : backwards").is_empty());
    }
}
