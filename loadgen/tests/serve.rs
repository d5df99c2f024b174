//! `loadgen serve` seen by curl: /echo round trips over HTTP/1.1 and h2c,
//! x-echo-length counts the request body, /bytes/N streams N bytes.

mod common;

use std::process::Command;

use common::{curl_available, run_bounded, stderr, Server};

fn curl(args: &[&str]) -> std::process::Output {
    run_bounded(
        Command::new("/usr/bin/curl")
            .args(["-sS", "--max-time", "60"])
            .args(args),
    )
}

fn payload(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let mut rng = fastrand::Rng::with_seed(7);
    let data: Vec<u8> = (0..1 << 20).map(|_| rng.u8(..)).collect();
    let path = dir.join("payload.bin");
    std::fs::write(&path, &data).expect("write payload");
    (path, data)
}

#[test]
fn echo_and_echo_length_over_http1_and_h2c() {
    if !curl_available() {
        eprintln!("curl not installed: skipping");
        return;
    }
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, data) = payload(dir.path());
    let upload = format!("@{}", path.display());
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        // /echo returns the same bytes.
        let back = dir.path().join("back.bin");
        let back_arg = back.to_string_lossy().into_owned();
        let out = curl(&[
            proto,
            "--data-binary",
            &upload,
            "-o",
            &back_arg,
            &server.url("/echo"),
        ]);
        assert!(out.status.success(), "{proto}: {}", stderr(&out));
        assert!(
            std::fs::read(&back).expect("read echo") == data,
            "{proto}: echo differs"
        );
        // The default route reads the whole body and reports its length.
        let out = curl(&[
            proto,
            "--data-binary",
            &upload,
            "-D",
            "-",
            "-o",
            "/dev/null",
            &server.url("/"),
        ]);
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(out.status.success(), "{proto}: {}", stderr(&out));
        assert!(head.contains("x-echo-length: 1048576"), "{proto}: {head}");
        assert!(head.contains(" 200"), "{proto}: {head}");
        if proto == "--http2-prior-knowledge" {
            assert!(head.starts_with("http/2 200"), "{head}");
        }
    }
}

#[test]
fn fixed_body_size_and_streamed_bytes() {
    if !curl_available() {
        eprintln!("curl not installed: skipping");
        return;
    }
    let server = Server::start(&["--body-size", "100"]);
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        &server.url("/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "100");
    let n = 3 * 65536 + 17;
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        &server.url(&format!("/bytes/{n}")),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), n.to_string());
    let out = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{http_version}",
        &server.url(&format!("/bytes/{n}")),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{n} 2"));
}
