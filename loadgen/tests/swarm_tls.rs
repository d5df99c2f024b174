//! `loadgen swarm --tls-*` against a real rtun responder (started in this process with
//! `rtun::app::start`) whose tunnel listener requires client certificates, with certificates
//! made by `openssl`: 50 nodes connect over mutual TLS and serve h2 inside the sessions; a
//! swarm without a client certificate gets no tunnel and every failure labelled with rtun's
//! TLS failure class, on both sides.

mod common;
// The end-to-end tests' PKI (openssl-made certificates), shared rather than copied.
#[path = "../../tests/common/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{loadgen, read_json, stderr, stdout, BIN};

const NODES: u64 = 50;

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A responder counter summed over its shards.
fn stat(rtun: &rtun::app::Running, name: &str) -> u64 {
    rtun.stats()
        .totals()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| v)
}

/// One HTTP/1.1 GET to the egress listener for host `node`; returns the raw response.
fn get(egress: SocketAddr, node: &str) -> String {
    let mut s = TcpStream::connect(egress).expect("connect to egress");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nhost: swarm\r\nx-node-id: {node}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read egress response");
    out
}

#[test]
fn swarm_over_mutual_tls() {
    if !openssl_available() {
        eprintln!("openssl not installed: skipping");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki::Pki::new(dir.path(), "swarm-test-ca");
    let server = pki.server("responder");
    let node = pki.client("node", "t", "swarm-node");
    let path = |p: &Path| p.to_string_lossy().into_owned();

    let tunnel: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let egress: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = format!(
        "shards: 2\n\
         responder:\n  \
           tunnel_listener:\n    \
             listen: {tunnel}\n    \
             tls: {{ cert: {}, key: {}, client_ca: {} }}\n  \
           egress_listener:\n    \
             listen: {egress}\n",
        path(&server.cert),
        path(&server.key),
        path(&pki.ca),
    );
    let config = rtun::config::parse(&yaml, "responder.yaml").expect("responder config");
    let rtun = rtun::app::start(Arc::new(config)).expect("start the responder");
    wait_port(tunnel);
    wait_port(egress);
    let responder = tunnel.to_string();
    let nodes = NODES.to_string();
    let common = [
        "swarm",
        "--responder",
        &responder,
        "--nodes",
        &nodes,
        "--threads",
        "2",
        "--no-pin",
        "--connect-timeout",
        "5s",
    ];
    let (ca, cert, key) = (path(&pki.ca), path(&node.cert), path(&node.key));

    // Mutual TLS: every node connects, and serves h2 inside its TLS session.
    let json = dir.path().join("mtls.json");
    let mut child = Command::new(BIN)
        .args(common)
        .args(["--hold", "3s", "--tls-ca", &ca, "--tls-cert", &cert])
        .args(["--tls-key", &key, "--out", json.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen swarm");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60));
    let connected = first.as_deref().unwrap_or("");
    if !connected.contains("tunnels connected") {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no connect report: {first:?}");
    }
    let answer = get(egress, "edge-7");
    let status = child.wait().expect("wait for the swarm");
    // The rest of its output, up to the end of the reader (the swarm has exited).
    let rest: Vec<String> =
        std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(10)).ok()).collect();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "{connected}\n{rest:?}\n{err}");
    assert!(
        connected.contains(&format!("{NODES}/{NODES} tunnels connected")),
        "{connected}"
    );
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with(&"x".repeat(64)),
        "{answer}"
    );
    assert!(
        rest.iter().any(|l| l.contains("1 requests served")),
        "{rest:?}"
    );
    let report = read_json(&json);
    assert_eq!(report["tunnels_connected"], NODES, "{report}");
    assert_eq!(report["failures_total"], 0, "{report}");
    assert_eq!(report["tls"], true, "{report}");
    assert_eq!(report["tls_client_cert"], true, "{report}");
    assert_eq!(stat(&rtun, "tunnel_tls_accepted"), NODES);
    assert_eq!(stat(&rtun, "handshake_accepted"), NODES);

    // No client certificate: the listener requires one, so no tunnel, and every failure is
    // the TLS class `no_client_cert` (under TLS 1.3, told on the first read).
    let json = dir.path().join("anonymous.json");
    let out = loadgen(
        &[
            &common[..],
            &["--hold", "0s", "--tls-ca", &ca, "--out"],
            &[json.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no tunnel connected"),
        "{}",
        stderr(&out)
    );
    let report = read_json(&json);
    assert_eq!(report["tunnels_connected"], 0, "{report}");
    assert_eq!(report["failures_total"], NODES, "{report}");
    assert_eq!(report["failures"]["tls no_client_cert"], NODES, "{report}");
    assert_eq!(report["tls_client_cert"], false, "{report}");
    let first = report["first_error"].as_str().unwrap_or_default();
    assert!(first.contains("tls no_client_cert"), "{first}");
    assert_eq!(stat(&rtun, "tunnel_tls_failed_no_client_cert"), NODES);
    assert_eq!(stat(&rtun, "handshake_accepted"), NODES);

    // A CA that did not issue the responder's certificate: refused by the swarm itself.
    let other = pki::Pki::new(dir.path(), "foreign-ca");
    let json = dir.path().join("foreign.json");
    let out = loadgen(
        &[
            &common[..],
            &["--hold", "0s", "--tls-ca", &path(&other.ca)],
            &["--tls-cert", &cert, "--tls-key", &key, "--out"],
            &[json.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    let report = read_json(&json);
    assert_eq!(report["failures"]["tls unknown_ca"], NODES, "{report}");

    // Plaintext against the TLS listener: the plaintext path is untouched and refused.
    let out = loadgen(&[&common[..], &["--hold", "0s"]].concat());
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("0/{NODES} tunnels connected")),
        "{}",
        stdout(&out)
    );

    // A missing file is named before anything is dialed.
    let out = loadgen(&[&common[..], &["--tls-ca", "/nonexistent/ca.pem"]].concat());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/ca.pem"),
        "{}",
        stderr(&out)
    );
    rtun.stop();
}
