//! virtio-pci's MSI-X side: the table and pending bits the guest programs
//! ([`pci::MsixTable`]), which vector each queue and the configuration use
//! (`queue_msix_vector`, `config_msix_vector`), and where a message goes
//! ([`MsiSink`], the VMM's KVM side). The transport (guest accesses, on a
//! vCPU) and the device's worker (notifications) both reach it, so it sits
//! behind one lock; messages are handed to the sink under it, so a
//! notification and an unmask never overtake each other.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use pci::{ConfigSpace, MsiMessage, MsixTable};

use crate::virtio::{InterruptSource, VectorRouting};

/// `VIRTIO_MSI_NO_VECTOR`: the source has no vector (and, with MSI-X on,
/// interrupts nobody).
pub const NO_VECTOR: u16 = 0xffff;

/// Where MSI-X messages are delivered: on KVM, an irqfd per vector whose
/// GSI routes `message` (x86 MSI routing, the ITS with the requester id on
/// GICv3), or a write to an emulated GICv2m frame.
pub trait MsiSink: Send + Sync + fmt::Debug {
    /// Vector `vector` fires with `message`, as the guest programmed its
    /// table entry (the sink re-routes when the message changed).
    fn send(&self, vector: u16, message: MsiMessage);
}

#[derive(Debug)]
struct State {
    table: MsixTable,
    config_vector: u16,
    queue_vectors: Vec<u16>,
}

/// One function's MSI-X vectors and their assignment to virtio sources.
#[derive(Debug)]
pub struct MsixVectors {
    state: Mutex<State>,
    sink: Arc<dyn MsiSink>,
}

impl MsixVectors {
    /// A table with one vector per queue plus one for the configuration,
    /// all masked and unassigned, MSI-X off.
    pub fn new(queues: usize, sink: Arc<dyn MsiSink>) -> Self {
        let vectors = u16::try_from(queues + 1).expect("queue count checked by the transport");
        Self {
            state: Mutex::new(State {
                table: MsixTable::new(vectors),
                config_vector: NO_VECTOR,
                queue_vectors: vec![NO_VECTOR; queues],
            }),
            sink,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere under this lock leaves plain data behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the MSI-X capability (table and PBA in BAR `bar` at the given
    /// offsets) to `space`; returns its offset.
    pub fn add_capability(&self, space: &mut ConfigSpace, bar: u8, table: u32, pba: u32) -> u8 {
        self.lock()
            .table
            .add_capability(space, (bar, table), (bar, pba))
    }

    /// Whether the guest turned MSI-X on.
    pub fn enabled(&self) -> bool {
        self.lock().table.enabled()
    }

    /// Whether `vector` waits for an unmask.
    pub fn is_pending(&self, vector: u16) -> bool {
        self.lock().table.is_pending(vector)
    }

    /// The capability at `offset` of `space` was written: follows its
    /// control word and sends what an unmask released.
    pub fn control_written(&self, space: &ConfigSpace, offset: u8) {
        let mut state = self.lock();
        for (vector, message) in state.table.control_written(space, offset) {
            self.sink.send(vector, message);
        }
    }

    /// A guest read of the table.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        self.lock().table.read_table(offset, data);
    }

    /// A guest write to the table; sends the vector if it unmasked a
    /// pending one.
    pub fn write_table(&self, offset: u64, data: &[u8]) {
        let mut state = self.lock();
        if let Some(message) = state.table.write_table(offset, data) {
            let vector = (offset / pci::msix::ENTRY_SIZE) as u16;
            self.sink.send(vector, message);
        }
    }

    /// A guest read of the pending-bit array.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        self.lock().table.read_pba(offset, data);
    }

    /// `config_msix_vector`.
    pub fn config_vector(&self) -> u16 {
        self.lock().config_vector
    }

    /// The driver assigns `vector` to configuration changes; one past the
    /// table is refused (reads back as [`NO_VECTOR`], which is how the
    /// driver learns it).
    pub fn set_config_vector(&self, vector: u16) {
        let mut state = self.lock();
        state.config_vector = state.valid(vector);
    }

    /// `queue_msix_vector` of queue `index` ([`NO_VECTOR`] for no queue).
    pub fn queue_vector(&self, index: usize) -> u16 {
        let state = self.lock();
        state.queue_vectors.get(index).copied().unwrap_or(NO_VECTOR)
    }

    /// The driver assigns `vector` to queue `index`; refused as for
    /// [`Self::set_config_vector`].
    pub fn set_queue_vector(&self, index: usize, vector: u16) {
        let mut state = self.lock();
        let vector = state.valid(vector);
        if let Some(slot) = state.queue_vectors.get_mut(index) {
            *slot = vector;
        }
    }

    /// A device reset: no source has a vector any more. The table is the
    /// function's, not the device's, and stays as the guest left it.
    pub fn unassign_all(&self) {
        let mut state = self.lock();
        state.config_vector = NO_VECTOR;
        state.queue_vectors.fill(NO_VECTOR);
    }
}

impl State {
    fn valid(&self, vector: u16) -> u16 {
        match vector < self.table.vectors() {
            true => vector,
            false => NO_VECTOR,
        }
    }
}

impl VectorRouting for MsixVectors {
    fn route(&self, source: InterruptSource) -> bool {
        let mut state = self.lock();
        if !state.table.enabled() {
            return false;
        }
        let vector = match source {
            InterruptSource::Queue(index) => {
                state.queue_vectors.get(index).copied().unwrap_or(NO_VECTOR)
            }
            InterruptSource::Config => state.config_vector,
        };
        if vector != NO_VECTOR {
            if let Some(message) = state.table.trigger(vector) {
                self.sink.send(vector, message);
            }
        }
        true
    }
}
