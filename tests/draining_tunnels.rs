//! A tunnel that refuses a stream with GOAWAY: the request goes to another tunnel of the node
//! and succeeds (RFC 9113 §6.8: a stream above GOAWAY's last stream id was not processed).
//!
//! The refusing peer speaks raw HTTP/2 frames, as a draining initiator's h2 would when a
//! stream crossed its final GOAWAY on the wire: it registers as node n1 beside a real
//! initiator's tunnel, and answers the first HEADERS it sees with GOAWAY(last stream id 0).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;

const FRAME_HEADERS: u8 = 0x1;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads one frame: (type, flags, stream id, payload); `None` at EOF.
fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], stream, payload))
}

/// A peer registered as `n1` that refuses every stream with GOAWAY(0, NO_ERROR) and reports
/// the ids of the streams it refused once the responder closes the connection.
fn refusing_peer(tunnel_port: u16) -> thread::JoinHandle<Vec<u32>> {
    let mut s = TcpStream::connect(("127.0.0.1", tunnel_port)).expect("connect tunnel listener");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(
        b"GET /reverse_connections/request HTTP/1.1\r\nhost: 127.0.0.1\r\n\
          x-envoy-reverse-tunnel-node-id: n1\r\nx-envoy-reverse-tunnel-cluster-id: c1\r\n\
          x-envoy-reverse-tunnel-tenant-id: t\r\n\r\n",
    )
    .expect("write handshake");
    let mut accepted = Vec::new();
    while !accepted.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("handshake reply");
        accepted.push(b[0]);
    }
    assert!(
        accepted.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&accepted)
    );
    let mut preface = [0u8; 24];
    s.read_exact(&mut preface).expect("client preface");
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    s.write_all(&frame(FRAME_SETTINGS, 0, 0, &[]))
        .expect("settings");
    thread::spawn(move || {
        let mut refused = Vec::new();
        while let Some((kind, flags, stream, _)) = read_frame(&mut s) {
            match kind {
                FRAME_SETTINGS if flags & FLAG_ACK == 0 => {
                    let _ = s.write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]));
                }
                FRAME_HEADERS => {
                    refused.push(stream);
                    let mut goaway = 0u32.to_be_bytes().to_vec(); // last stream id: none
                    goaway.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                    let _ = s.write_all(&frame(FRAME_GOAWAY, 0, 0, &goaway));
                }
                _ => {}
            }
        }
        refused
    })
}

#[test]
fn a_stream_refused_by_goaway_is_sent_on_another_tunnel() {
    let s = Stack::start("goaway-refused", ResponderOpts::new(), 1, |_| {});
    let peer = refusing_peer(s.r.tunnel);
    assert!(
        wait_tunnels(&s.r, "n1", 2, Duration::from_secs(10)),
        "{:?}",
        admin_tunnels(s.r.admin)
    );
    let egress = s.r.egress;
    // The first request keeps the real tunnel busy, so the next one picks the idle refusing
    // tunnel (the least loaded), which refuses it; it goes back to the real one.
    let busy = thread::spawn(move || get(egress, "/delay/600", &[("x-node-id", "n1")]));
    thread::sleep(Duration::from_millis(200));
    let refused = get(egress, "/after-refusal", &[("x-node-id", "n1")]).expect("an answer");
    assert_eq!(refused.status, 200, "{}", refused.text());
    let held = busy.join().expect("join").expect("an answer");
    assert_eq!(held.status, 200, "{}", held.text());
    // The refusing tunnel left the registry at once: only the real one is listed.
    assert!(
        wait_until(Duration::from_secs(5), || tunnels_of(s.r.admin, "n1") == 1),
        "{:?}",
        admin_tunnels(s.r.admin)
    );
    assert_eq!(admin_stat(s.r.admin, "egress_tunnel_refused_retries"), 1);
    assert_eq!(s.responder.log_text().matches("status=502").count(), 0);
    drop(s);
    let streams = peer.join().expect("peer");
    assert_eq!(
        streams,
        [1],
        "the peer saw exactly the one stream it refused"
    );
}

#[test]
fn a_refused_request_with_a_body_is_a_502_not_a_replay() {
    let s = Stack::start("goaway-body", ResponderOpts::new(), 1, |_| {});
    let peer = refusing_peer(s.r.tunnel);
    assert!(wait_tunnels(&s.r, "n1", 2, Duration::from_secs(10)));
    let egress = s.r.egress;
    let busy = thread::spawn(move || get(egress, "/delay/600", &[("x-node-id", "n1")]));
    thread::sleep(Duration::from_millis(200));
    // Its body started up the refusing tunnel: rtun does not buffer bodies to replay them.
    let posted = http(
        egress,
        "POST",
        "/echo",
        &[("x-node-id", "n1"), ("content-type", "text/plain")],
        b"payload",
    )
    .expect("an answer");
    assert_eq!(posted.status, 502, "{}", posted.text());
    assert_eq!(
        posted.header("x-rtun-local-reply"),
        Some("1"),
        "{}",
        posted.text()
    );
    assert!(!posted.text().contains("GOAWAY") && !posted.text().contains("127.0.0.1"));
    assert_eq!(busy.join().expect("join").expect("an answer").status, 200);
    assert_eq!(admin_stat(s.r.admin, "egress_tunnel_refused_retries"), 0);
    drop(s);
    assert_eq!(peer.join().expect("peer"), [1]);
}
