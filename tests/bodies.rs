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
