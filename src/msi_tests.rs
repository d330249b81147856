//! MSI routing against a recorder: routes follow the guest's table only
//! for unmasked vectors, keep the back end's irqchip routes, carry the
//! requester id where the back end asks, and a message sent before its
//! route is held back until the route is set.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use arch::{IrqchipRoute, MsiRouting};
use devices::virtio::pci::{MsiSink, MsixVectors};
use pci::MsiMessage;

use super::*;
use crate::vm_wiring::recorder::{Call, Recorder};

const CHIP: IrqchipRoute = IrqchipRoute {
    gsi: 5,
    irqchip: 0,
    pin: 5,
};

fn router(requester_id: bool) -> (Arc<Recorder>, Arc<MsiRouter>) {
    let vm = Arc::new(Recorder::default());
    let routing = MsiRouting {
        irqchip_routes: vec![CHIP],
        first_msi_gsi: 24,
        requester_id,
    };
    (vm.clone(), Arc::new(MsiRouter::new(vm, routing)))
}

/// A sink for a two-vector function and its table.
fn function(router: &Arc<MsiRouter>, requester_id: u32) -> (Arc<KvmMsiSink>, MsixVectors) {
    let sink = Arc::new(KvmMsiSink::new(router.clone(), requester_id, 2).unwrap());
    let table = MsixVectors::new(1, sink.clone());
    (sink, table)
}

fn program(table: &MsixVectors, vector: u64, message: MsiMessage, masked: bool) {
    let entry = vector * 16;
    table.write_table(entry, &(message.address as u32).to_le_bytes());
    table.write_table(entry + 4, &((message.address >> 32) as u32).to_le_bytes());
    table.write_table(entry + 8, &message.data.to_le_bytes());
    table.write_table(entry + 12, &u32::from(masked).to_le_bytes());
}

fn fired(sink: &KvmMsiSink, vector: usize) -> u64 {
    let (irqfd, _) = sink.irqfds().nth(vector).unwrap();
    irqfd.event_fd().read().unwrap_or(0)
}

const MESSAGE: MsiMessage = MsiMessage {
    address: 0xfee0_0000,
    data: 0x4041,
};

#[test]
fn each_vector_gets_its_own_gsi_and_functions_do_not_share() {
    let (_, router) = router(false);
    let (a, _) = function(&router, 8);
    let (b, _) = function(&router, 16);
    let gsis = |sink: &KvmMsiSink| sink.irqfds().map(|(_, gsi)| gsi).collect::<Vec<_>>();
    assert_eq!(gsis(&a), vec![24, 25]);
    assert_eq!(gsis(&b), vec![26, 27]);
    let fds: Vec<_> = a
        .irqfds()
        .map(|(fd, _)| fd.event_fd().as_raw_fd())
        .collect();
    assert_ne!(fds[0], fds[1]);
}

#[test]
fn an_unmasked_vector_is_routed_with_the_irqchip_routes_kept() {
    let (vm, router) = router(false);
    let (sink, table) = function(&router, 8);
    program(&table, 1, MESSAGE, true);
    sink.sync(&table);
    assert!(vm.take().is_empty(), "masked: nothing routed yet");
    table.write_table(16 + 12, &0u32.to_le_bytes());
    sink.sync(&table);
    let route = GsiRoute::Msi {
        gsi: 25,
        message: MESSAGE,
        device_id: None,
    };
    assert_eq!(
        vm.take(),
        vec![Call::Routing(vec![GsiRoute::Irqchip(CHIP), route])]
    );
    sink.sync(&table);
    assert!(vm.take().is_empty(), "unchanged: not set again");
    sink.send(1, MESSAGE);
    assert_eq!(fired(&sink, 1), 1);
    assert_eq!(fired(&sink, 0), 0);
}

#[test]
fn a_changed_message_is_routed_again_with_the_requester_id() {
    let (vm, router) = router(true);
    let (sink, table) = function(&router, 0x18);
    program(&table, 0, MESSAGE, false);
    sink.sync(&table);
    let moved = MsiMessage {
        address: 0x0808_0000,
        data: 7,
    };
    program(&table, 0, moved, false);
    sink.sync(&table);
    let calls = vm.take();
    let last = calls.last().unwrap();
    let expected = GsiRoute::Msi {
        gsi: 24,
        message: moved,
        device_id: Some(0x18),
    };
    assert_eq!(
        *last,
        Call::Routing(vec![GsiRoute::Irqchip(CHIP), expected])
    );
}

#[test]
fn a_message_ahead_of_its_route_is_held_back_until_the_route_is_set() {
    let (vm, router) = router(false);
    let (sink, table) = function(&router, 8);
    program(&table, 0, MESSAGE, false);
    // The unmask released it inside the write, before the vCPU's sync.
    sink.send(0, MESSAGE);
    assert_eq!(fired(&sink, 0), 0, "not routed yet: held back");
    sink.sync(&table);
    assert_eq!(fired(&sink, 0), 1, "sent once routed");
    assert_eq!(vm.take().len(), 1);
    sink.sync(&table);
    assert_eq!(fired(&sink, 0), 0, "sent once only");
}

#[test]
fn through_a_v2m_frame_a_message_is_routed_to_the_spi_it_names() {
    let (vm, router) = router(false);
    let window = V2mWindow {
        base: 0x0802_0000,
        first_spi: 96,
        spis: 64,
    };
    router.through_v2m(window).unwrap();
    assert!(router.through_v2m(window).is_err(), "one frame per VM");
    let (sink, table) = function(&router, 8);
    // What Linux's gic-v2m driver programs: the doorbell and an INTID.
    let doorbell = |intid| MsiMessage {
        address: 0x0802_0040,
        data: intid,
    };
    program(&table, 0, doorbell(32 + 100), false);
    sink.sync(&table);
    let spi_100 = GsiRoute::Irqchip(IrqchipRoute {
        gsi: 24,
        irqchip: 0,
        pin: 100,
    });
    assert_eq!(
        vm.take(),
        vec![Call::Routing(vec![GsiRoute::Irqchip(CHIP), spi_100])]
    );
    // An INTID outside the frame, or another address, goes nowhere.
    program(&table, 1, doorbell(32 + 95), false);
    program(&table, 0, MESSAGE, false);
    sink.sync(&table);
    let routes = vm.take();
    assert!(
        routes
            .iter()
            .all(|call| *call == Call::Routing(vec![GsiRoute::Irqchip(CHIP)])),
        "{routes:?}"
    );
}
