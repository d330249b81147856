//! virtio-net's receive path: frames from the TAP into the driver's
//! receive buffers, spread over several with MRG_RXBUF and published with
//! one used-index update. Popped chains wait as [`RxBuffer`]s (writable
//! segments only) while a frame needs more, at most
//! [`MAX_RX_HELD_SEGMENTS`] segments in all.

use super::*;

/// A receive chain popped but not yet filled: only what is needed to fill
/// it is kept.
pub(super) struct RxBuffer {
    head: u16,
    pub(super) writable: Segments,
    capacity: usize,
}

impl NetHandler {
    /// Moves frames from the TAP into receive buffers until the TAP is
    /// empty or the buffers run out, then interrupts once.
    pub(super) fn receive(&mut self) -> Result<(), WorkerError> {
        let old_used = self.queues[RX_QUEUE].next_used();
        let result = self.receive_frames();
        let rx = &self.queues[RX_QUEUE];
        guarded(|| notify_since(RX_QUEUE, rx, &self.mem, &self.interrupt, old_used))
            .map_err(rx_error)?;
        result
    }

    fn receive_frames(&mut self) -> Result<(), WorkerError> {
        let mut last_rearm = None;
        loop {
            // A pause or a stop waits for one frame at most; a frame
            // already read waits in `rx_frame`.
            if should_yield() {
                return Ok(());
            }
            if self.rx_len == 0 {
                match self.tap.read_frame(&mut self.rx_frame) {
                    Ok(len) if len <= VNET_HDR_LEN => {
                        debug!("virtio-net: runt frame dropped");
                        self.interrupt.io_stats().record_error();
                    }
                    Ok(len) => self.rx_len = len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(WorkerError::Backend(e)),
                }
                continue;
            }
            if self.deliver_frame()? {
                continue;
            }
            // Every available buffer is held and they are not enough: ask
            // for a kick at the next one the driver adds (avail_event =
            // next_avail), and look again if it just added some, unless
            // nothing could be popped since the last look (a broken ring).
            let rx = &mut self.queues[RX_QUEUE];
            let position = rx.next_avail();
            let more = guarded(|| rx.enable_notification(&self.mem)).map_err(rx_error)?;
            if !more.unwrap_or(false) || last_rearm == Some(position) {
                return Ok(());
            }
            last_rearm = Some(position);
        }
    }

    /// Copies the pending frame into receive buffers. False when there are
    /// not enough buffers yet: the frame and the buffers popped so far stay
    /// held for the next attempt.
    fn deliver_frame(&mut self) -> Result<bool, WorkerError> {
        let (mem, rx, held) = (&self.mem, &mut self.queues[RX_QUEUE], &mut self.rx_held);
        let (mergeable, len, max) = (self.mergeable, self.rx_len, usize::from(rx.size()));
        while needs_buffers(held, len, mergeable, max) {
            let Some(chain) = pop_chain(rx, mem).map_err(rx_error)? else {
                return Ok(false);
            };
            chain
                .validate(mem)
                .map_err(|e| bad_rx_buffer(chain.head, e))?;
            let writable = chain.writable();
            let capacity = writable.len();
            if capacity == 0 {
                let e = ChainError::TooShort {
                    needed: 1,
                    available: 0,
                };
                return Err(bad_rx_buffer(chain.head, e));
            }
            if !held.is_empty() && self.rx_held_segments + writable.count() > MAX_RX_HELD_SEGMENTS {
                // Over the budget: the chain stays in the ring for a later
                // frame, and this one is dropped below.
                rx.go_to_previous_position();
                break;
            }
            self.rx_held_segments += writable.count();
            held.push_back(RxBuffer {
                head: chain.head,
                writable,
                capacity,
            });
        }
        let frame = &mut self.rx_frame[..len];
        self.rx_len = 0;
        let capacities: Vec<usize> = held.iter().map(|h| h.capacity).collect();
        let Some(pieces) = split_frame(len, &capacities) else {
            // The buffers stay held for smaller frames.
            debug!("virtio-net: {len}-byte frame larger than the receive buffers, dropped");
            self.interrupt.io_stats().record_error();
            return Ok(true);
        };
        // Without MRG_RXBUF this is always 1, as the spec requires.
        let num_buffers = pieces.len() as u16;
        frame[NUM_BUFFERS_OFFSET..VNET_HDR_LEN].copy_from_slice(&num_buffers.to_le_bytes());
        let mut used = Vec::with_capacity(pieces.len());
        let mut offset = 0;
        for (buffer, piece) in held.drain(..pieces.len()).zip(pieces) {
            self.rx_held_segments -= buffer.writable.count();
            let bytes = &frame[offset..offset + piece];
            let written = buffer
                .writable
                .write_from(mem, bytes)
                .map_err(|e| bad_rx_buffer(buffer.head, e))?;
            used.push((buffer.head, written as u32));
            offset += piece;
        }
        if publish(|| add_used_batch(rx, mem, &used))
            .transpose()
            .map_err(rx_error)?
            .is_none()
        {
            // Stopped: the device is being reset, the frame goes with it.
            return Ok(true);
        }
        let io = self.interrupt.io_stats();
        io.record(len - VNET_HDR_LEN, 0);
        Ok(true)
    }
}

/// How many bytes of a `len`-byte frame go into each buffer of the given
/// capacities, filling them in order; `None` if they cannot hold it.
pub(super) fn split_frame(len: usize, capacities: &[usize]) -> Option<Vec<usize>> {
    let mut left = len;
    let mut pieces = Vec::new();
    for &capacity in capacities {
        if left == 0 {
            break;
        }
        let piece = capacity.min(left);
        pieces.push(piece);
        left -= piece;
    }
    (left == 0).then_some(pieces)
}

/// Whether `held` receive buffers are too few for a `len`-byte frame:
/// one buffer without MRG_RXBUF, enough bytes (up to `max` buffers) with.
fn needs_buffers(held: &VecDeque<RxBuffer>, len: usize, mergeable: bool, max: usize) -> bool {
    if !mergeable {
        return held.is_empty();
    }
    held.iter().map(|h| h.capacity).sum::<usize>() < len && held.len() < max
}

pub(super) fn rx_error(source: virtio_queue::Error) -> WorkerError {
    WorkerError::Queue {
        index: RX_QUEUE,
        source,
    }
}

pub(super) fn bad_rx_buffer(head: u16, e: ChainError) -> WorkerError {
    let message = format!("receive buffer {head}: {e}");
    WorkerError::Backend(io::Error::new(io::ErrorKind::InvalidData, message))
}
