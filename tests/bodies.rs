//! Large bodies both ways through a tunnel, with bounded memory.

mod common;

use std::fs;

use common::*;

const SIZE: usize = 64 * 1024 * 1024;

/// Peak resident set (VmHWM) of a process in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

#[test]
fn sixty_four_mib_each_way() {
    let s = Stack::start("bodies-64m", ResponderOpts::new(), 1, |_| {});
    let input = noise(SIZE);
    let in_path = s.dir.write("in.bin", &input);
    let in_arg = format!("@{}", in_path.display());

    for (k, proto) in ["--http1.1", "--http2-prior-knowledge"].iter().enumerate() {
        let out_path = s.dir.join(&format!("echo-{k}.bin"));
        let url = format!("http://127.0.0.1:{}/echo", s.r.egress);
        let out = curl(&[
            proto,
            "-H",
            "x-node-id: n1",
            "-H",
            "content-type: application/octet-stream",
            "--data-binary",
            &in_arg,
            "-o",
            out_path.to_str().unwrap(),
            &url,
        ]);
        assert_eq!(out.code, 0, "{proto} echo: curl failed: {}", out.stderr);
        assert_eq!(out.status, 200, "{proto} echo: {out:?}");
        let echoed = fs::read(&out_path).unwrap();
        assert_eq!(echoed.len(), SIZE, "{proto} echo: length");
        assert!(
            echoed == input,
            "{proto} echo: bodies differ at byte {:?}",
            first_difference(&echoed, &input)
        );
        let _ = fs::remove_file(&out_path);
    }

    for (k, proto) in ["--http1.1", "--http2-prior-knowledge"].iter().enumerate() {
        let out_path = s.dir.join(&format!("bytes-{k}.bin"));
        let url = format!("http://127.0.0.1:{}/bytes/{SIZE}", s.r.egress);
        let out = curl(&[
            proto,
            "-H",
            "x-node-id: n1",
            "-o",
            out_path.to_str().unwrap(),
            &url,
        ]);
        assert_eq!(out.code, 0, "{proto} bytes: curl failed: {}", out.stderr);
        assert_eq!(out.status, 200, "{proto} bytes: {out:?}");
        let got = fs::read(&out_path).unwrap();
        assert_eq!(got.len(), SIZE, "{proto} bytes: length");
        let want = pattern(SIZE);
        assert!(
            got == want,
            "{proto} bytes: pattern differs at byte {:?}",
            first_difference(&got, &want)
        );
        let _ = fs::remove_file(&out_path);
    }

    // Bodies stream: neither side may have held a whole body in memory.
    for (name, pid) in [
        ("responder", s.responder.pid()),
        ("initiator", s.initiator.pid()),
    ] {
        let peak = peak_rss_kib(pid);
        assert!(peak > 0, "no VmHWM for {name}");
        assert!(
            peak < 48 * 1024,
            "{name} peaked at {} MiB after 64 MiB bodies: not streaming?",
            peak / 1024
        );
    }
}

/// HTTP/2 frames in `wire` from `start`: (type, payload length, the payload as far as
/// recorded). Stops at the end of what was recorded.
fn h2_frames(wire: &[u8], start: usize) -> Vec<(u8, usize, &[u8])> {
    let mut frames = Vec::new();
    let mut at = start;
    while let Some(head) = wire.get(at..at + 9) {
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let payload = &wire[(at + 9).min(wire.len())..(at + 9 + len).min(wire.len())];
        frames.push((head[3], len, payload));
        at += 9 + len;
    }
    frames
}

/// The value of SETTINGS_MAX_FRAME_SIZE (0x5) in the first SETTINGS frame, if it is there.
fn max_frame_setting(frames: &[(u8, usize, &[u8])]) -> Option<u32> {
    let (_, _, settings) = frames.iter().find(|(kind, _, _)| *kind == 0x4)?;
    settings
        .chunks_exact(6)
        .find(|s| s[..2] == [0, 5])
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
}

/// End of the handshake head (HTTP/1.1) at the start of a tunnel connection.
fn after_head(wire: &[u8]) -> usize {
    wire.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(wire.len(), |p| p + 4)
}

/// Both ends of a tunnel accept 256 KiB frames, so a download leaves the initiator in frames
/// larger than HTTP/2's default 16 KiB: each is one socket write (`tunnel::MAX_FRAME`).
#[test]
fn tunnels_carry_data_in_frames_up_to_256_kib() {
    const MAX_FRAME: u32 = 256 * 1024;
    let r = ResponderOpts::new();
    let relay = common::relay::Relay::start(port(), r.tunnel);
    relay.record();
    let s = Stack::start("bodies-frames", r, 1, |i| i.responder_tunnel = relay.port);
    let size = 4 * 1024 * 1024;
    let out_path = s.dir.join("frames.bin");
    let url = format!("http://127.0.0.1:{}/bytes/{size}", s.r.egress);
    let out = curl(&[
        "-H",
        "x-node-id: n1",
        "-o",
        out_path.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert_eq!(out.status, 200, "{out:?}");
    assert!(
        fs::read(&out_path).unwrap() == pattern(size),
        "body differs"
    );

    let (from_initiator, from_responder) = relay.recorded();
    // Initiator → responder: the handshake GET, then the h2 server's frames.
    let up = h2_frames(&from_initiator, after_head(&from_initiator));
    assert_eq!(
        up.first().map(|f| f.0),
        Some(0x4),
        "no SETTINGS after the handshake GET"
    );
    // Responder → initiator: the handshake reply, the client preface, then frames.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let start = after_head(&from_responder);
    assert_eq!(
        from_responder.get(start..start + 24),
        Some(&preface[..]),
        "no preface"
    );
    let down = h2_frames(&from_responder, start + 24);
    assert_eq!(
        max_frame_setting(&up),
        Some(MAX_FRAME),
        "initiator's SETTINGS"
    );
    assert_eq!(
        max_frame_setting(&down),
        Some(MAX_FRAME),
        "responder's SETTINGS"
    );
    let largest = up
        .iter()
        .filter(|(kind, _, _)| *kind == 0x0)
        .map(|(_, len, _)| *len)
        .max()
        .unwrap_or(0);
    assert!(
        largest > 16 * 1024 && largest <= MAX_FRAME as usize,
        "largest DATA frame from the initiator: {largest} bytes"
    );
}
