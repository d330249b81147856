//! The vsock device under a guest or host that misbehaves: malformed and
//! out-of-turn packets, a host that stops reading, a guest that stops
//! reading, and more connections than allowed.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use super::packet::op;
use super::tests::{fixture, guest, RX_SLOTS};
use super::{BUF_ALLOC, MAX_CONNECTIONS, MAX_PAYLOAD};

#[test]
fn malformed_packets_are_dropped_and_the_queue_goes_on() {
    let mut f = fixture(false);
    f.give_rx(8);
    // Too short for a header.
    f.send_raw(&[0u8; 20]);
    // A length past the limit, and one past the chain.
    let mut huge = guest(op::RW, 1, 2);
    huge.len = 1 << 30;
    f.send_raw(&huge.encode());
    let mut lying = guest(op::RW, 1, 2);
    lying.len = 100;
    let mut bytes = lying.encode().to_vec();
    bytes.extend_from_slice(&[0; 10]);
    f.send_raw(&bytes);
    // Payload on a control packet; another guest's CID.
    let mut request = guest(op::REQUEST, 1, 2);
    request.len = 4;
    let mut bytes = request.encode().to_vec();
    bytes.extend_from_slice(&[0; 4]);
    f.send_raw(&bytes);
    let mut spoofed = guest(op::REQUEST, 1, 2);
    spoofed.src_cid = 4;
    f.send(spoofed, &[]);
    assert_eq!(f.tx.used().len(), 5, "every chain is returned");
    assert!(f.received().is_empty(), "no reply to garbage");
    // Data or an unknown op on no connection, or a datagram type: RST.
    f.send(guest(op::RW, 1, 2), b"x");
    f.send(guest(99, 1, 2), &[]);
    let mut dgram = guest(op::REQUEST, 1, 2);
    dgram.kind = 2;
    f.send(dgram, &[]);
    // But never an RST for an RST.
    f.send(guest(op::RST, 1, 2), &[]);
    assert_eq!(f.ops(), vec![op::RST; 3]);
    assert_eq!(f.muxer.open_count(), 0);
}

#[test]
fn packets_out_of_turn_reset_the_connection() {
    let mut f = fixture(false);
    let (mut host, request) = f.host_connect(11);
    // Data before the guest accepted.
    f.send(guest(op::RW, 11, request.src_port), b"early");
    f.give_rx(1);
    assert_eq!(f.ops(), vec![op::RST]);
    assert_eq!(f.muxer.open_count(), 0);
    host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(host.read(&mut [0u8; 8]).unwrap(), 0);
    // A second RESPONSE on an established connection.
    let (_host, local) = f.established(12);
    f.send(guest(op::RESPONSE, 12, local), &[]);
    f.give_rx(1);
    assert_eq!(f.ops(), vec![op::RST]);
}

#[test]
fn a_host_that_stops_reading_costs_at_most_the_buffer() {
    let mut f = fixture(false);
    let (_host, local) = f.established(13);
    let chunk = vec![0x5a; MAX_PAYLOAD];
    let mut sent = 0;
    // A guest that ignores its credit: kept up to BUF_ALLOC past what the
    // socket takes, then reset.
    while f.muxer.open_count() == 1 && sent < 64 << 20 {
        f.send(guest(op::RW, 13, local), &chunk);
        sent += chunk.len();
        for conn in f.muxer.conns.values() {
            assert!(conn.to_host.len() <= BUF_ALLOC as usize);
        }
    }
    assert_eq!(f.muxer.open_count(), 0, "reset after {sent} bytes");
    assert!(sent < 8 << 20, "{sent} bytes taken");
    f.give_rx(1);
    assert_eq!(f.ops(), vec![op::RST]);
}

#[test]
fn a_guest_that_does_not_read_stalls_only_its_own_connection() {
    let mut f = fixture(false);
    let (mut slow, request) = f.host_connect(20);
    let mut response = guest(op::RESPONSE, 20, request.src_port);
    response.buf_alloc = 0;
    f.send(response, &[]);
    let (mut fast, fast_port) = f.established(21);
    let mut ok = [0u8; 32];
    let _ = slow.read(&mut ok).unwrap();
    slow.write_all(&[1; 1000]).unwrap();
    fast.write_all(&[2; 1000]).unwrap();
    f.host_poll();
    f.give_rx(4);
    let packets = f.received();
    assert!(!packets.is_empty());
    for (header, data) in &packets {
        assert_eq!(header.src_port, fast_port, "no credit, no data");
        assert!(data.iter().all(|&b| b == 2));
    }
    assert_eq!(packets.iter().map(|(_, d)| d.len()).sum::<usize>(), 1000);
}

#[test]
fn connections_past_the_limit_are_refused() {
    let mut f = fixture(false);
    let mut path = f.uds().into_os_string();
    path.push("_6000");
    let _listener = UnixListener::bind(&path).unwrap();
    for port in 0..MAX_CONNECTIONS as u32 {
        f.send(guest(op::REQUEST, 40000 + port, 6000), &[]);
    }
    assert_eq!(f.muxer.open_count(), MAX_CONNECTIONS);
    f.send(guest(op::REQUEST, 50000, 6000), &[]);
    assert_eq!(f.muxer.open_count(), MAX_CONNECTIONS);
    // A host program past the limit reads EOF.
    let mut host = UnixStream::connect(f.uds()).unwrap();
    f.host_poll();
    host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(host.read(&mut [0u8; 8]).unwrap(), 0);
    // The refused guest connection got an RST among the responses.
    let mut resets = Vec::new();
    for _ in 0..8 {
        f.give_rx(RX_SLOTS);
        resets.extend(
            f.received()
                .into_iter()
                .filter(|(h, _)| h.op == op::RST)
                .map(|(h, _)| h.dst_port),
        );
    }
    assert_eq!(resets, vec![50000]);
}

#[test]
fn random_packets_leave_the_device_bounded() {
    let mut f = fixture(false);
    let mut path = f.uds().into_os_string();
    path.push("_7");
    let _listener = UnixListener::bind(&path).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3000u32 {
        let r = next();
        let mut header = guest((r % 9) as u16, (r >> 8) as u32 % 4, (r >> 16) as u32 % 9);
        if r & (1 << 40) != 0 {
            header.src_cid = next() % 6;
        }
        header.buf_alloc = (next() % (1 << 20)) as u32;
        header.fwd_cnt = next() as u32;
        header.flags = (next() % 4) as u32;
        let len = (next() % 300) as usize;
        let mut bytes = header.encode().to_vec();
        bytes[24..28].copy_from_slice(&(next() as u32 % 400).to_le_bytes());
        bytes.extend(std::iter::repeat_n(0x77, len));
        f.send_raw(&bytes);
        if round % 50 == 0 {
            f.top_up_rx();
            f.received();
        }
        assert!(f.muxer.open_count() <= MAX_CONNECTIONS);
        assert!(f.muxer.replies.len() <= 2 * MAX_CONNECTIONS);
        for conn in f.muxer.conns.values() {
            assert!(conn.to_host.len() <= BUF_ALLOC as usize);
        }
    }
    assert_eq!(f.tx.used().len() % 16, 3000 % 16, "every chain returned");
}

#[test]
fn a_host_program_with_a_full_backlog_cannot_hold_the_worker() {
    use rustix::net::{bind, listen, socket, AddressFamily, SocketAddrUnix, SocketType};
    let f = fixture(false);
    let path = f.uds().with_file_name("full.sock");
    let listener = socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    bind(&listener, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    // A backlog of 0 holds one connection; the program never accepts.
    listen(&listener, 0).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let results: Vec<_> = (0..3).map(|_| super::connect(&path).map(drop)).collect();
        let _ = done.send(results);
    });
    let results = finished
        .recv_timeout(Duration::from_secs(5))
        .expect("connect blocked on a full backlog");
    assert!(results[0].is_ok());
    let err = results[2].as_ref().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
    drop(listener);
}
