//! MSI-X delivery through KVM: every vector of every PCI function has its
//! own GSI and irqfd, and the GSI's route is the message the guest
//! programmed (x86: an MSI route; GICv3: the same, naming the function
//! by requester id for the ITS). KVM_SET_GSI_ROUTING replaces the whole
//! table, so [`MsiRouter`] keeps it: the back end's interrupt-controller
//! routes, then every MSI route.
//!
//! On a GICv2 the MSI controller is a GICv2m frame: a message is a write
//! of an SPI's INTID to the frame's doorbell, so its GSI is routed to that
//! SPI instead ([`MsiRouter::through_v2m`]), and a message that names no
//! SPI of the frame leaves its GSI unrouted.
//!
//! Routes are set on the vCPU thread that changed the table
//! ([`KvmMsiSink::sync`], after each guest write to a function's MSI-X
//! table or configuration space), never on a device worker. A message
//! sent before its route caught up — an unmask releasing a pending
//! vector, from inside the very write `sync` follows — is held back and
//! sent by that `sync`.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use arch::MsiRouting;
use devices::legacy::V2mWindow;
use devices::virtio::pci::{MsiSink, MsixVectors};
use devices::{IrqTrigger, LogLimit};
use log::{debug, warn};
use pci::msix::ENTRY_SIZE;
use pci::MsiMessage;

use crate::vm_wiring::{GsiRoute, VmWiring};

/// A route KVM refused: the guest can retry it with every table write.
static ROUTE_FAILED: LogLimit = LogLimit::new();

/// Vector control: masked.
const VECTOR_MASKED: u32 = 1;

/// The VM's GSI routing table.
pub struct MsiRouter {
    vm: Arc<dyn VmWiring>,
    routing: MsiRouting,
    v2m: std::sync::OnceLock<V2mWindow>,
    table: Mutex<RouterTable>,
}

struct RouterTable {
    next_gsi: u32,
    /// MSI routes by GSI.
    msi: std::collections::BTreeMap<u32, (MsiMessage, Option<u32>)>,
}

impl MsiRouter {
    /// A router for the VM `vm`, whose back end routes as `routing` says.
    pub fn new(vm: Arc<dyn VmWiring>, routing: MsiRouting) -> Self {
        let next_gsi = routing.first_msi_gsi;
        Self {
            vm,
            routing,
            v2m: std::sync::OnceLock::new(),
            table: Mutex::new(RouterTable {
                next_gsi,
                msi: Default::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes every message as the GICv2m frame `window` would deliver it:
    /// to the SPI its data names.
    pub fn through_v2m(&self, window: V2mWindow) -> Result<()> {
        if self.v2m.set(window).is_err() {
            bail!("a second GICv2m frame");
        }
        Ok(())
    }

    /// The route of `gsi` for `message`, if it goes anywhere.
    fn route_of(&self, gsi: u32, message: MsiMessage, device_id: Option<u32>) -> Option<GsiRoute> {
        match self.v2m.get() {
            Some(v2m) => v2m.spi_for(message).map(|spi| {
                GsiRoute::Irqchip(arch::IrqchipRoute {
                    gsi,
                    irqchip: 0,
                    pin: spi,
                })
            }),
            None => Some(GsiRoute::Msi {
                gsi,
                message,
                device_id,
            }),
        }
    }

    /// `count` GSIs of their own for a function's vectors.
    fn allocate(&self, count: u32) -> u32 {
        let mut table = self.lock();
        let first = table.next_gsi;
        table.next_gsi += count;
        first
    }

    /// Routes `gsi` to `message` from the function `requester_id` and sets
    /// the whole table.
    fn route(&self, gsi: u32, message: MsiMessage, requester_id: u32) -> Result<()> {
        let device_id = self.routing.requester_id.then_some(requester_id);
        let mut table = self.lock();
        table.msi.insert(gsi, (message, device_id));
        let routes: Vec<GsiRoute> = self
            .routing
            .irqchip_routes
            .iter()
            .map(|&route| GsiRoute::Irqchip(route))
            .chain(
                (table.msi.iter()).filter_map(|(&gsi, &(message, device_id))| {
                    self.route_of(gsi, message, device_id)
                }),
            )
            .collect();
        self.vm.set_gsi_routing(&routes)
    }
}

/// One function's vectors: a GSI and irqfd each.
#[derive(Debug)]
pub struct KvmMsiSink {
    router: Arc<MsiRouter>,
    requester_id: u32,
    first_gsi: u32,
    irqfds: Vec<IrqTrigger>,
    state: Mutex<SinkState>,
}

/// `MsiSink` wants `Debug`; the VM handle has nothing worth showing.
impl std::fmt::Debug for MsiRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsiRouter")
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct SinkState {
    /// What each vector's GSI routes now.
    routed: Vec<Option<MsiMessage>>,
    /// Vectors sent before their route caught up.
    held: Vec<bool>,
}

impl KvmMsiSink {
    /// A sink for a function with `vectors` vectors and requester id
    /// `requester_id`; its irqfds are bound by the caller
    /// ([`Self::irqfds`]).
    pub fn new(router: Arc<MsiRouter>, requester_id: u32, vectors: u16) -> Result<Self> {
        if vectors == 0 {
            bail!("a function without MSI-X vectors");
        }
        let count = usize::from(vectors);
        let irqfds = (0..count)
            .map(|_| IrqTrigger::new())
            .collect::<std::io::Result<_>>()?;
        let first_gsi = router.allocate(u32::from(vectors));
        Ok(Self {
            router,
            requester_id,
            first_gsi,
            irqfds,
            state: Mutex::new(SinkState {
                routed: vec![None; count],
                held: vec![false; count],
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Each vector's irqfd and GSI, for KVM_IRQFD.
    pub fn irqfds(&self) -> impl Iterator<Item = (&IrqTrigger, u32)> {
        (self.first_gsi..)
            .zip(&self.irqfds)
            .map(|(gsi, fd)| (fd, gsi))
    }

    /// After a guest write that may have changed `table`: routes every
    /// unmasked (or held-back) vector whose message is not routed yet,
    /// then sends what was held back. Runs on the vCPU thread.
    pub fn sync(&self, table: &MsixVectors) {
        let entries: Vec<(MsiMessage, bool)> = (0..self.irqfds.len())
            .map(|vector| read_entry(table, vector))
            .collect();
        let mut state = self.lock();
        for (vector, (message, masked)) in entries.into_iter().enumerate() {
            let held = state.held[vector];
            if (masked && !held) || state.routed[vector] == Some(message) {
                continue;
            }
            let gsi = self.first_gsi + vector as u32;
            match self.router.route(gsi, message, self.requester_id) {
                Ok(()) => state.routed[vector] = Some(message),
                Err(e) => {
                    ROUTE_FAILED.warn(format_args!("MSI-X vector {vector} (GSI {gsi}): {e:#}"))
                }
            }
        }
        for vector in 0..self.irqfds.len() {
            if std::mem::take(&mut state.held[vector]) && state.routed[vector].is_some() {
                self.fire(vector);
            }
        }
    }

    fn fire(&self, vector: usize) {
        if let Err(e) = self.irqfds[vector].trigger() {
            warn!("MSI-X vector {vector}: irqfd: {e}");
        }
    }
}

/// Vector `vector`'s message and whether it is masked.
fn read_entry(table: &MsixVectors, vector: usize) -> (MsiMessage, bool) {
    // The table takes dword (or qword) accesses, as a guest makes them.
    let word = |index: u64| {
        let mut bytes = [0u8; 4];
        table.read_table(vector as u64 * ENTRY_SIZE + index * 4, &mut bytes);
        u32::from_le_bytes(bytes)
    };
    let message = MsiMessage {
        address: u64::from(word(1)) << 32 | u64::from(word(0)),
        data: word(2),
    };
    (message, word(3) & VECTOR_MASKED != 0)
}

impl MsiSink for KvmMsiSink {
    fn send(&self, vector: u16, message: MsiMessage) {
        let vector = usize::from(vector);
        let mut state = self.lock();
        match state.routed.get(vector) {
            Some(Some(routed)) if *routed == message => self.fire(vector),
            Some(_) => state.held[vector] = true,
            None => debug!("MSI-X vector {vector} does not exist"),
        }
    }
}

#[cfg(test)]
#[path = "msi_tests.rs"]
mod tests;
