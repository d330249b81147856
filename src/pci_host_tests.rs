//! The host bridge against a recorder: configuration accesses through
//! ECAM and the 0xcf8/0xcfc ports reach the right function, and BAR0 with
//! its notify ioeventfds is mapped while memory decoding is on, moves
//! with the BAR and disappears when decoding goes off.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use arch::MsiRouting;
use devices::virtio::pci::layout::{BAR_SIZE, NOTIFY};
use devices::virtio::pci::VirtioPci;
use devices::virtio::Rng;
use devices::{BusDevice, IrqTrigger};
use guest_memory::GuestMemoryMmap;
use vm_memory::GuestAddress;

use super::*;
use crate::msi::{KvmMsiSink, MsiRouter};
use crate::pci_bars::{BarMap, BarWindow};
use crate::pci_function::VirtioFunction;
use crate::vm_wiring::recorder::{Call, Recorder};

const MMIO32: std::ops::Range<u64> = 0xc000_0000..0xd000_0000;
const MMIO64: std::ops::Range<u64> = 0x1_0000_0000..0x2_0000_0000;

struct Fixture {
    host: Arc<Mutex<PciHost>>,
    bars: Arc<BarMap>,
    vm: Arc<Recorder>,
    /// The rng's queue kick, by fd number.
    kick: i32,
}

/// A host bridge with a virtio-rng in slot 1, BAR0 pre-assigned at the
/// 64-bit window's start.
fn fixture() -> Fixture {
    let vm = Arc::new(Recorder::default());
    let bars = Arc::new(BarMap::new(vec![MMIO32, MMIO64]));
    let mut host = PciHost::new(vm.clone(), bars.clone());
    let routing = MsiRouting {
        irqchip_routes: Vec::new(),
        first_msi_gsi: 24,
        requester_id: false,
    };
    let router = Arc::new(MsiRouter::new(vm.clone(), routing));
    let msi = Arc::new(KvmMsiSink::new(router, 8, 2).unwrap());
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let rng = Box::new(Rng::new().unwrap());
    let pci = VirtioPci::new(mem, IrqTrigger::new().unwrap(), msi.clone(), rng).unwrap();
    let kick = pci.notify_events()[0].2.as_raw_fd();
    let function = VirtioFunction::new(Arc::new(Mutex::new(pci)), msi).unwrap();
    function.assign_bar(MMIO64.start);
    assert_eq!(host.next_slot(), Some(1));
    assert_eq!(host.add(function).unwrap(), 1);
    let host = Arc::new(Mutex::new(host));
    Fixture {
        host,
        bars,
        vm,
        kick,
    }
}

/// The ECAM offset of slot `slot`'s register `register`.
fn ecam(slot: u64, register: u64) -> u64 {
    slot << 15 | register
}

fn read(device: &mut dyn BusDevice, offset: u64, len: usize) -> u32 {
    let mut data = [0u8; 4];
    device.read(offset, &mut data[..len]);
    u32::from_le_bytes(data)
}

impl Fixture {
    fn ecam_read(&self, offset: u64, len: usize) -> u32 {
        read(&mut *self.host.lock().unwrap(), offset, len)
    }

    fn ecam_write(&self, offset: u64, value: u32, len: usize) {
        let bytes = value.to_le_bytes();
        self.host.lock().unwrap().write(offset, &bytes[..len]);
    }

    /// The addresses with an ioeventfd now, from every call; each is the
    /// queue's kick (a duplicate of its fd, made once).
    fn ioevents(&self) -> BTreeSet<u64> {
        let mut set = BTreeSet::new();
        let mut fds = BTreeSet::new();
        for call in self.vm.0.lock().unwrap().iter() {
            match *call {
                Call::Ioevent(fd, addr) => {
                    fds.insert(fd);
                    assert!(set.insert((fd, addr)), "twice")
                }
                Call::NoIoevent(fd, addr) => assert!(set.remove(&(fd, addr)), "never set"),
                _ => {}
            }
        }
        assert!(fds.len() <= 1, "one queue, one kick: {fds:?}");
        assert!(!fds.contains(&self.kick) || fds.len() == 1);
        set.into_iter().map(|(_, addr)| addr).collect()
    }
}

#[test]
fn ecam_reaches_the_bridge_the_function_and_nothing_else() {
    let f = fixture();
    assert_eq!(f.ecam_read(ecam(0, 0), 4), 0x0008_1b36, "host bridge");
    assert_eq!(f.ecam_read(ecam(0, 8), 4) >> 8, 0x06_00_00, "class");
    assert_eq!(f.ecam_read(ecam(0, 0x0e), 1) & 0x7f, 0, "type-0 header");
    assert_eq!(f.ecam_read(ecam(1, 0), 4), 0x1044_1af4, "virtio-rng");
    assert_eq!(f.ecam_read(ecam(1, 2), 2), 0x1044);
    assert_eq!(f.ecam_read(ecam(2, 0), 4), u32::MAX, "empty slot");
    assert_eq!(f.ecam_read(ecam(1, 0) | 1 << 12, 4), u32::MAX, "function 1");
    assert_eq!(f.ecam_read(1 << 20, 4), u32::MAX, "bus 1");
}

#[test]
fn the_legacy_ports_select_with_0xcf8_and_read_at_0xcfc() {
    let f = fixture();
    let mut ports = ConfigPorts::new(f.host.clone());
    ports.write(0, &0x8000_0800u32.to_le_bytes());
    assert_eq!(
        read(&mut ports, 0, 4),
        0x8000_0800,
        "the address reads back"
    );
    assert_eq!(read(&mut ports, 4, 4), 0x1044_1af4);
    assert_eq!(read(&mut ports, 6, 2), 0x1044, "0xcfe: the upper half");
    assert_eq!(read(&mut ports, 7, 1), 0x10);
    ports.write(0, &0x8000_0000u32.to_le_bytes());
    assert_eq!(read(&mut ports, 4, 4), 0x0008_1b36);
    ports.write(0, &0x0000_0800u32.to_le_bytes());
    assert_eq!(read(&mut ports, 4, 4), u32::MAX, "enable bit clear");
    // A write through the data port reaches the function: the command.
    ports.write(0, &0x8000_0804u32.to_le_bytes());
    ports.write(4, &2u16.to_le_bytes());
    assert_eq!(f.ecam_read(ecam(1, 4), 2) & 2, 2);
    assert_eq!(f.bars.mapped(), vec![(MMIO64.start, BAR_SIZE)]);
}

#[test]
fn bar0_is_pre_assigned_but_mapped_only_while_decoding_is_on() {
    let f = fixture();
    assert_eq!(f.ecam_read(ecam(1, 0x10), 4), 0x4, "64-bit, low half 0");
    assert_eq!(f.ecam_read(ecam(1, 0x14), 4), 1, "at 4 GiB");
    assert!(f.bars.mapped().is_empty());
    assert!(f.ioevents().is_empty());
    f.ecam_write(ecam(1, 4), 2, 2);
    assert_eq!(f.bars.mapped(), vec![(MMIO64.start, BAR_SIZE)]);
    let notify = MMIO64.start + NOTIFY;
    assert_eq!(f.ioevents(), BTreeSet::from([notify]));
    f.ecam_write(ecam(1, 4), 0, 2);
    assert!(f.bars.mapped().is_empty(), "decoding off");
    assert!(f.ioevents().is_empty(), "ioeventfd dropped");
}

#[test]
fn a_bar_write_moves_the_mapping_and_the_ioeventfds() {
    let f = fixture();
    f.ecam_write(ecam(1, 4), 2, 2);
    f.ecam_write(ecam(1, 0x14), 0, 4);
    f.ecam_write(ecam(1, 0x10), 0xc000_8000, 4);
    assert_eq!(f.bars.mapped(), vec![(0xc000_8000, BAR_SIZE)]);
    assert_eq!(f.ioevents(), BTreeSet::from([0xc000_8000 + NOTIFY]));
    // Through the 32-bit window, BAR0 answers: num_queues is 1.
    let mut window = BarWindow::new(MMIO32.start, f.bars.clone());
    assert_eq!(read(&mut window, 0x8012, 2), 1);
    assert_eq!(read(&mut window, 0x12, 2), 0xffff, "the old place is empty");
    // A BAR the guest puts outside the windows (over RAM) is not mapped.
    f.ecam_write(ecam(1, 0x10), 0x0010_0000, 4);
    assert!(f.bars.mapped().is_empty());
    assert!(f.ioevents().is_empty());
}
