//! The vsock packet state machine driven the way a guest driver and host
//! programs drive it: packets written into real rings, real Unix sockets
//! in a temporary directory on the host side.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guest_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::EventSet;

use super::packet::{op, Header, HDR_LEN, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::*;
use crate::virtio::testing::{test_memory, TestRing};
use crate::virtio::worker::WorkerHandler;
use crate::virtio::Interrupt;
use crate::IrqTrigger;

const CID: u64 = 3;
pub(super) const RX_SLOTS: u64 = 16;
const RX_BUF: u32 = 0x1000 + HDR_LEN as u32;
const RX_AREA: u64 = 0x10000;
const TX_AREA: u64 = 0x40000;

pub(super) struct Fixture {
    pub(super) dir: PathBuf,
    pub(super) mem: GuestMemoryMmap,
    rx: TestRing,
    pub(super) tx: TestRing,
    pub(super) events: TestRing,
    rx_given: u64,
    rx_seen: usize,
    pub(super) muxer: Muxer,
}

pub(super) fn fixture(reset_event: bool) -> Fixture {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tandem-vsock-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("v.sock");
    let listener = UnixListener::bind(&uds).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mem = test_memory();
    let rx = TestRing::new(&mem, 0, RX_SLOTS as u16);
    let tx = TestRing::new(&mem, 0x4000, 16);
    let events = TestRing::new(&mem, 0x8000, 4);
    let queues = vec![rx.queue(true), tx.queue(true), events.queue(true)];
    let interrupt = Arc::new(Interrupt::new(IrqTrigger::new().unwrap()));
    let muxer = Muxer::new(
        CID,
        uds,
        Arc::new(listener),
        mem.clone(),
        queues,
        interrupt,
        reset_event,
    )
    .unwrap();
    Fixture {
        dir,
        mem,
        rx,
        tx,
        events,
        rx_given: 0,
        rx_seen: 0,
        muxer,
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A guest packet header on connection (guest port `peer`, host port
/// `local`) advertising a 64 KiB buffer with nothing consumed.
pub(super) fn guest(op: u16, peer: u32, local: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: peer,
        dst_port: local,
        kind: TYPE_STREAM,
        op,
        buf_alloc: 64 * 1024,
        ..Header::default()
    }
}

impl Fixture {
    pub(super) fn uds(&self) -> PathBuf {
        self.muxer.uds_path.clone()
    }

    /// The guest transmits `bytes` as one chain.
    pub(super) fn send_raw(&mut self, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(TX_AREA)).unwrap();
        self.tx.add_chain(&[(TX_AREA, bytes.len() as u32, false)]);
        self.muxer.queue_event(TX_QUEUE).unwrap();
    }

    pub(super) fn send(&mut self, header: Header, payload: &[u8]) {
        let mut header = header;
        header.len = payload.len() as u32;
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(payload);
        self.send_raw(&bytes);
    }

    /// The driver adds `n` RX buffers.
    pub(super) fn give_rx(&mut self, n: u64) {
        for _ in 0..n {
            let addr = RX_AREA + (self.rx_given % RX_SLOTS) * 0x2000;
            self.rx.add_chain(&[(addr, RX_BUF, true)]);
            self.rx_given += 1;
        }
        self.muxer.queue_event(RX_QUEUE).unwrap();
    }

    /// The driver fills its RX ring up again.
    pub(super) fn top_up_rx(&mut self) {
        let outstanding = self.rx_given - self.rx.used().len() as u64;
        self.give_rx(RX_SLOTS - outstanding);
    }

    /// Lets the muxer see host socket readiness (a few rounds: an accept
    /// registers a stream whose data shows on the next wait).
    pub(super) fn host_poll(&mut self) {
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(5));
            self.muxer.backend_event(0, EventSet::IN).unwrap();
        }
    }

    /// Packets the device returned through RX since the last call.
    pub(super) fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let used = self.rx.used();
        let new = used[self.rx_seen..].to_vec();
        self.rx_seen = used.len();
        new.into_iter()
            .map(|(head, len)| {
                let addr = RX_AREA + u64::from(head) * 0x2000;
                let mut bytes = vec![0u8; len as usize];
                self.mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
                let header = Header::decode(bytes[..HDR_LEN].try_into().unwrap());
                assert_eq!(header.len as usize, bytes.len() - HDR_LEN);
                (header, bytes[HDR_LEN..].to_vec())
            })
            .collect()
    }

    pub(super) fn ops(&mut self) -> Vec<u16> {
        self.received().iter().map(|(h, _)| h.op).collect()
    }

    /// A host program connects and asks for guest port `port`; returns
    /// its stream and the REQUEST the guest got.
    pub(super) fn host_connect(&mut self, port: u32) -> (UnixStream, Header) {
        let mut host = UnixStream::connect(self.uds()).unwrap();
        host.write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        self.host_poll();
        self.give_rx(1);
        let packets = self.received();
        assert_eq!(packets.len(), 1, "{packets:?}");
        let request = packets[0].0;
        assert_eq!(request.op, op::REQUEST);
        assert_eq!((request.src_cid, request.dst_cid), (HOST_CID, CID));
        assert_eq!(request.dst_port, port);
        (host, request)
    }

    /// A host-initiated connection the guest accepted; returns the host
    /// stream and the host-side port.
    pub(super) fn established(&mut self, port: u32) -> (UnixStream, u32) {
        let (mut host, request) = self.host_connect(port);
        self.send(guest(op::RESPONSE, port, request.src_port), &[]);
        let mut ok = vec![0u8; 64];
        host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = host.read(&mut ok).unwrap();
        assert_eq!(ok[..n], *format!("OK {}\n", request.src_port).as_bytes());
        (host, request.src_port)
    }
}

fn read_exactly(stream: &mut UnixStream, n: usize) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn a_host_connect_reaches_the_guest_listener_and_data_flows_both_ways() {
    let mut f = fixture(false);
    let (mut host, local) = f.established(1234);
    host.write_all(b"hello").unwrap();
    f.host_poll();
    f.give_rx(1);
    let packets = f.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::RW);
    assert_eq!(
        (packets[0].0.src_port, packets[0].0.dst_port),
        (local, 1234)
    );
    assert_eq!(packets[0].1, b"hello");
    f.send(guest(op::RW, 1234, local), b"world");
    assert_eq!(read_exactly(&mut host, 5), b"world");
}

#[test]
fn a_host_connect_nobody_accepts_is_closed() {
    let mut f = fixture(false);
    let (mut host, request) = f.host_connect(80);
    f.send(guest(op::RST, 80, request.src_port), &[]);
    assert_eq!(f.muxer.open_count(), 0);
    host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(host.read(&mut [0u8; 8]).unwrap(), 0, "EOF, no OK");
}

#[test]
fn bad_handshakes_are_closed_without_a_guest_packet() {
    let mut f = fixture(false);
    let mut host = UnixStream::connect(f.uds()).unwrap();
    host.write_all(b"HELLO 80\n").unwrap();
    let mut long = UnixStream::connect(f.uds()).unwrap();
    long.write_all(&[b'7'; 100]).unwrap();
    f.host_poll();
    f.give_rx(2);
    assert!(f.received().is_empty());
    assert_eq!(f.muxer.open_count(), 0);
    host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(host.read(&mut [0u8; 8]).unwrap(), 0);
}

#[test]
fn a_guest_connect_reaches_the_host_listener_and_data_flows_both_ways() {
    let mut f = fixture(false);
    let mut path = f.uds().into_os_string();
    path.push("_5000");
    let listener = UnixListener::bind(&path).unwrap();
    f.give_rx(4);
    f.send(guest(op::REQUEST, 49152, 5000), &[]);
    let packets = f.received();
    assert_eq!(packets.len(), 1);
    let response = packets[0].0;
    assert_eq!(response.op, op::RESPONSE);
    assert_eq!((response.src_port, response.dst_port), (5000, 49152));
    assert_eq!(response.buf_alloc, BUF_ALLOC);
    let (mut host, _) = listener.accept().unwrap();
    f.send(guest(op::RW, 49152, 5000), b"ping");
    assert_eq!(read_exactly(&mut host, 4), b"ping");
    // The host read everything: the guest hears of its new credit.
    let packets = f.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::CREDIT_UPDATE);
    assert_eq!(packets[0].0.fwd_cnt, 4);
    host.write_all(b"pong").unwrap();
    f.host_poll();
    let packets = f.received();
    assert_eq!(packets[0].1, b"pong");
}

#[test]
fn a_guest_connect_nobody_listens_for_is_reset() {
    let mut f = fixture(false);
    f.give_rx(1);
    f.send(guest(op::REQUEST, 49152, 5001), &[]);
    let packets = f.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::RST);
    assert_eq!(
        (packets[0].0.src_port, packets[0].0.dst_port),
        (5001, 49152)
    );
    assert_eq!(f.muxer.open_count(), 0);
}

#[test]
fn the_guest_never_gets_more_than_its_credit() {
    let mut f = fixture(false);
    let (mut host, request) = f.host_connect(7);
    let local = request.src_port;
    let mut response = guest(op::RESPONSE, 7, local);
    response.buf_alloc = 10;
    f.send(response, &[]);
    let mut ok = [0u8; 32];
    let _ = host.read(&mut ok).unwrap();
    host.write_all(&[0xab; 100]).unwrap();
    f.host_poll();
    f.give_rx(4);
    let packets = f.received();
    let data: usize = packets.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(data, 10, "{packets:?}");
    // The guest consumed 10 bytes and says so: 10 more come.
    let mut update = guest(op::CREDIT_UPDATE, 7, local);
    update.buf_alloc = 10;
    update.fwd_cnt = 10;
    f.send(update, &[]);
    let data: usize = f.received().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(data, 10);
}

#[test]
fn a_credit_request_is_answered() {
    let mut f = fixture(false);
    let (_host, local) = f.established(7);
    f.give_rx(1);
    f.send(guest(op::CREDIT_REQUEST, 7, local), &[]);
    let packets = f.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::CREDIT_UPDATE);
    assert_eq!(packets[0].0.buf_alloc, BUF_ALLOC);
}

#[test]
fn shutdowns_pass_each_way_and_a_full_close_is_reset() {
    let mut f = fixture(false);
    let (mut host, local) = f.established(9);
    // The host program stops sending: the guest hears SHUTDOWN(SEND).
    host.shutdown(std::net::Shutdown::Write).unwrap();
    f.host_poll();
    f.give_rx(2);
    let packets = f.received();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, op::SHUTDOWN);
    assert_eq!(packets[0].0.flags, SHUTDOWN_SEND);
    // The guest sends its last bytes, then closes both ways: the host
    // reads them, then EOF, and the guest gets its RST.
    f.send(guest(op::RW, 9, local), b"bye");
    let mut shutdown = guest(op::SHUTDOWN, 9, local);
    shutdown.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    f.send(shutdown, &[]);
    let mut rest = Vec::new();
    host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    host.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye");
    f.give_rx(2);
    assert_eq!(f.ops(), vec![op::CREDIT_UPDATE, op::RST]);
    assert_eq!(f.muxer.open_count(), 0);
}

#[test]
fn a_reset_device_tells_the_driver_once() {
    let mut f = fixture(true);
    f.events.add_chain(&[(0xc000, 4, true)]);
    f.mem
        .write_obj(0xffff_ffffu32, GuestAddress(0xc000))
        .unwrap();
    f.muxer.queue_event(EVENT_QUEUE).unwrap();
    assert_eq!(f.events.used(), vec![(0, 4)]);
    let id: u32 = f.mem.read_obj(GuestAddress(0xc000)).unwrap();
    assert_eq!(id, packet::EVENT_TRANSPORT_RESET);
    f.events.add_chain(&[(0xc000, 4, true)]);
    f.muxer.queue_event(EVENT_QUEUE).unwrap();
    assert_eq!(f.events.used().len(), 1, "the second buffer is kept");
}

#[test]
fn the_device_binds_its_socket_and_refuses_reserved_cids() {
    let f = fixture(false);
    let path = f.dir.join("dev.sock");
    assert!(matches!(
        Vsock::new(2, &path),
        Err(VsockError::ReservedCid(2))
    ));
    let device = Vsock::new(3, &path).unwrap();
    let mut config = [0u8; 8];
    device.read_config(0, &mut config);
    assert_eq!(u64::from_le_bytes(config), 3);
    // A live socket is refused; once its device is gone, the stale file
    // is replaced.
    assert!(Vsock::new(4, &path).is_err());
    drop(device);
    assert!(Vsock::new(4, &path).is_ok());
}
