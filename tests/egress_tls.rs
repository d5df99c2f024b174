//! HTTPS at the edges (DESIGN.md §10): the responder's egress listener with
//! `egress_listener.tls` (HTTP/1.1 and HTTP/2 by ALPN on one port, optional client
//! certificates, plaintext clients refused and counted, `x-forwarded-proto: https`), and an
//! initiator reaching https local services (`clusters.NAME.tls`) verified against their CA.
//!
//! Certificates are generated per test with rcgen; the clients are curl and h2load, the https
//! local service is nginx.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

// ---------------------------------------------------------------------------------------------
// Test PKI

/// A CA whose certificate is `<dir>/<name>.pem`, issuing leaves into the same directory.
struct Ca {
    path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key on disk.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
}

impl Ca {
    fn new(dir: &TempDir, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let path = dir.write(&format!("{name}.pem"), cert.pem());
        Ca {
            path,
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, dir: &TempDir, stem: &str, client: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: dir.write(&format!("{stem}.pem"), cert.pem()),
            key: dir.write(&format!("{stem}-key.pem"), key.serialize_pem()),
        }
    }
}

fn p(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// An HTTPS egress listener in front of one tunnel

struct HttpsStack {
    dir: TempDir,
    r: ResponderOpts,
    ca: Ca,
    _service: Proc,
    responder: Proc,
    _initiator: Proc,
}

impl HttpsStack {
    /// A responder whose egress listener serves HTTPS (client certificates required when
    /// `client_ca`), one initiator (node `n1`) and the test service.
    fn start(name: &str, client_ca: bool) -> HttpsStack {
        Self::start_with(name, client_ca, "")
    }

    /// [`start`](Self::start) with more `egress_listener` lines (indented by four).
    fn start_with(name: &str, client_ca: bool, egress_extra: &str) -> HttpsStack {
        let dir = TempDir::new(name);
        let ca = Ca::new(&dir, "ca");
        let server = ca.issue(&dir, "egress", false);
        let mut r = ResponderOpts::new();
        r.egress_extra = format!(
            "{egress_extra}    tls: {{ cert: {}, key: {}{} }}\n",
            p(&server.cert),
            p(&server.key),
            if client_ca {
                format!(", client_ca: {}", p(&ca.path))
            } else {
                String::new()
            }
        );
        let svc = port();
        let service = spawn_service(&dir, "svc", svc);
        let responder = r.spawn(&dir, "responder");
        let initiator = InitiatorOpts::new("n1", "c1", r.tunnel, svc).spawn(&dir, "initiator");
        let up = wait_until(Duration::from_secs(10), || tunnels_of(r.admin, "n1") >= 1);
        assert!(up, "no tunnel\n{}", responder.log_text());
        HttpsStack {
            dir,
            r,
            ca,
            _service: service,
            responder,
            _initiator: initiator,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.r.egress)
    }

    /// curl over HTTPS trusting the test CA, for node `n1`.
    fn curl(&self, extra: &[&str], path: &str) -> CurlOut {
        let url = self.url(path);
        let mut args = vec!["--cacert", p(&self.ca.path), "-H", "x-node-id: n1"];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    fn stat(&self, name: &str) -> u64 {
        admin_stat(self.r.admin, name)
    }
}

#[test]
fn https_egress_speaks_http1_and_http2_by_alpn() {
    let s = HttpsStack::start("egress-https", false);

    // The first request may still race the tunnel's registration; then both protocols work.
    let ready = wait_until(Duration::from_secs(10), || {
        s.curl(&["--http1.1"], "/hello").status == 200
    });
    assert!(ready, "no 200 over HTTPS\n{}", s.responder.log_text());
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = s.curl(&[flag], "/hello");
        assert_eq!(out.status, 200, "{flag}: {out:?}");
        assert_eq!(out.http_version, version, "{flag}: {out:?}");
        assert_eq!(out.header("x-served-by"), Some("svc"), "{flag}: {out:?}");
    }
    // `-w %{http_version}` says the same thing as the status line.
    let out = s.curl(
        &["--http2", "-o", "/dev/null", "-w", "%{http_version}"],
        "/hello",
    );
    assert_eq!(out.text(), "2", "{out:?}");

    // The service learns that the client came over HTTPS; a client cannot claim otherwise.
    for flag in ["--http1.1", "--http2"] {
        let out = s.curl(&[flag, "-H", "x-forwarded-proto: http"], "/headers");
        assert_eq!(out.status, 200, "{out:?}");
        let body = out.text().to_ascii_lowercase();
        assert!(body.contains("x-forwarded-proto: https"), "{flag}: {body}");
        assert!(
            !body.contains("x-forwarded-proto: http\n"),
            "{flag}: {body}"
        );
    }

    // h2load over TLS (ALPN h2), many streams on two connections.
    let url = s.url("/hello");
    let out = Command::new(H2LOAD)
        .args([
            "-n",
            "200",
            "-c",
            "2",
            "-m",
            "10",
            "-H",
            "x-node-id: n1",
            &url,
        ])
        .output()
        .expect("run h2load");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("200 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{report}"
    );
    assert!(report.contains("Application protocol: h2"), "{report}");
    assert!(s.stat("egress_tls_handshakes") >= 8);
}

#[test]
fn plaintext_on_the_https_port_gets_400_and_is_counted() {
    let s = HttpsStack::start_with("egress-plaintext", false, "    header_read_timeout: 1s\n");
    let before = s.stat("egress_tls_failed_plaintext_peer");

    let url = format!("http://127.0.0.1:{}/hello", s.r.egress);
    let out = curl(&["-H", "x-node-id: n1", &url]);
    assert_eq!(out.status, 400, "{out:?}");
    assert_eq!(out.text(), "plain HTTP request sent to an HTTPS port\n");
    assert_eq!(out.header("x-rtun-local-reply"), Some("1"));
    assert_eq!(out.header("connection"), Some("close"));
    assert!(out.header("x-request-id").is_some(), "{out:?}");

    // The h2c preface gets the same answer (rtun cannot know what else to say).
    let raw = raw_exchange(
        s.r.egress,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&raw), Some(400));

    // A client that does not trust the listener's CA fails its handshake, counted by label.
    let unknown_before = s.stat("egress_tls_failed_unknown_ca");
    let out = curl(&["-H", "x-node-id: n1", &s.url("/hello")]);
    assert_ne!(out.code, 0, "{out:?}");

    let moved = wait_until(Duration::from_secs(5), || {
        s.stat("egress_tls_failed_plaintext_peer") == before + 2
            && s.stat("egress_tls_failed_unknown_ca") == unknown_before + 1
    });
    assert!(
        moved,
        "{:?}",
        admin_stats(s.r.admin)
            .into_iter()
            .filter(|(k, _)| k.starts_with("egress_tls"))
            .collect::<Vec<_>>()
    );
    // HTTPS still works next to it.
    let ok = wait_until(Duration::from_secs(10), || {
        s.curl(&[], "/hello").status == 200
    });
    assert!(ok);

    // A handshake that stalls is cut at header_read_timeout.
    let mut stalled = std::net::TcpStream::connect(addr(s.r.egress)).unwrap();
    std::io::Write::write_all(&mut stalled, &[0x16, 0x03, 0x01]).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = std::io::Read::read(&mut stalled, &mut buf);
    assert!(matches!(read, Ok(0)), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.stat("egress_tls_handshake_timeout"), 1);
}

#[test]
fn client_certificates_are_required_with_client_ca() {
    let s = HttpsStack::start("egress-mtls", true);
    let client = s.ca.issue(&s.dir, "client", true);
    let with_cert = [
        "--cert",
        p(&client.cert),
        "--key",
        p(&client.key),
        "--http2",
    ];
    let ready = wait_until(Duration::from_secs(10), || {
        s.curl(&with_cert, "/hello").status == 200
    });
    assert!(
        ready,
        "no 200 with a client certificate\n{}",
        s.responder.log_text()
    );
    let out = s.curl(
        &[
            "--cert",
            p(&client.cert),
            "--key",
            p(&client.key),
            "--http1.1",
        ],
        "/hello",
    );
    assert_eq!(
        (out.status, out.http_version.as_str()),
        (200, "1.1"),
        "{out:?}"
    );

    let before = s.stat("egress_tls_failed_no_client_cert");
    for flag in ["--http1.1", "--http2"] {
        let out = s.curl(&[flag], "/hello");
        assert_eq!(
            out.status, 0,
            "{flag}: answered without a client certificate: {out:?}"
        );
        assert_ne!(out.code, 0, "{flag}: {out:?}");
    }
    let counted = wait_until(Duration::from_secs(5), || {
        s.stat("egress_tls_failed_no_client_cert") == before + 2
    });
    assert!(counted, "{:?}", admin_stats(s.r.admin));
}

// ---------------------------------------------------------------------------------------------
// An https local service behind the initiator

/// nginx (one process, no daemon) serving TLS on `h1` (HTTP/1.1) and `h2` (HTTP/2 by ALPN),
/// answering every request with its protocol.
fn spawn_nginx(dir: &TempDir, leaf: &Leaf, h1: u16, h2: u16) -> Proc {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let d = p(&prefix);
    let conf = dir.write(
        "nginx.conf",
        format!(
            "daemon off;\n\
             master_process off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20 access_log off;\n\
             \x20 client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{h1} ssl;\n\
             \x20   listen 127.0.0.1:{h2} ssl http2;\n\
             \x20   ssl_certificate {cert};\n\
             \x20   ssl_certificate_key {key};\n\
             \x20   default_type text/plain;\n\
             \x20   location / {{ return 200 \"nginx $server_protocol\\n\"; }}\n\
             \x20 }}\n\
             }}\n",
            cert = p(&leaf.cert),
            key = p(&leaf.key),
        ),
    );
    let program = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nginx");
    let nginx = Proc::spawn(
        dir,
        "nginx",
        program,
        &["-e", "stderr", "-p", d, "-c", p(&conf)],
    );
    for port in [h1, h2] {
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "nginx did not listen on {port}\n{}",
            nginx.log_text()
        );
    }
    nginx
}

#[test]
fn https_local_services_are_verified_against_their_ca() {
    let dir = TempDir::new("local-https");
    let ca = Ca::new(&dir, "local-ca");
    let other = Ca::new(&dir, "other-ca");
    let leaf = ca.issue(&dir, "nginx", false);
    let (h1, h2) = (port(), port());
    let _nginx = spawn_nginx(&dir, &leaf, h1, h2);

    let r = ResponderOpts::new();
    let responder = r.spawn(&dir, "responder");
    let yaml = format!(
        "shards: 1\n\
         drain_timeout: 1s\n\
         clusters:\n\
         \x20 app-h1:\n\
         \x20   endpoints: [\"localhost:{h1}\"]\n\
         \x20   tls: {{ ca: {ca} }}\n\
         \x20 app-h2:\n\
         \x20   endpoints: [\"localhost:{h2}\"]\n\
         \x20   protocol: http2\n\
         \x20   tls: {{ ca: {ca} }}\n\
         \x20 wrong-ca:\n\
         \x20   endpoints: [\"localhost:{h1}\"]\n\
         \x20   tls: {{ ca: {other} }}\n\
         \x20 responder:\n\
         \x20   endpoints: [\"127.0.0.1:{tunnel}\"]\n\
         \x20   connect_timeout: 1s\n\
         initiator:\n\
         \x20 tunnels: [\"rc://n1:c1:t@responder:1\"]\n\
         \x20 routes:\n\
         \x20   - {{ prefix: /h2, cluster: app-h2 }}\n\
         \x20   - {{ prefix: /wrong, cluster: wrong-ca }}\n\
         \x20   - {{ prefix: /, cluster: app-h1 }}\n\
         \x20 initial_reconnect_backoff: 100ms\n\
         \x20 max_reconnect_backoff: 1s\n",
        ca = p(&ca.path),
        other = p(&other.path),
        tunnel = r.tunnel,
    );
    let initiator = spawn_rtun(&dir, "initiator", &yaml);
    assert!(
        wait_tunnels(&r, "n1", 1, Duration::from_secs(10)),
        "no tunnel\n{}\n{}",
        responder.log_text(),
        initiator.log_text()
    );

    // HTTP/1.1 and HTTP/2 (negotiated by ALPN) to nginx over verified TLS.
    let node = [("x-node-id", "n1")];
    let resp = get(r.egress, "/hello", &node).unwrap();
    assert_eq!(resp.status, 200, "{}", initiator.log_text());
    assert_eq!(resp.text(), "nginx HTTP/1.1\n");
    let resp = get(r.egress, "/h2/hello", &node).unwrap();
    assert_eq!(resp.status, 200, "{}", initiator.log_text());
    assert_eq!(resp.text(), "nginx HTTP/2.0\n");

    // A service whose certificate does not chain to the configured CA is unreachable: 503,
    // the reason only in the initiator's log.
    let resp = get(r.egress, "/wrong/hello", &node).unwrap();
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.text(), "The local service is unreachable\n");
    assert!(resp.header("x-request-id").is_some());
    let log = initiator.log_text();
    assert!(log.contains("(unknown_ca)"), "{log}");
    assert!(!resp.text().contains("localhost"));
}

// ---------------------------------------------------------------------------------------------
// Which TLS sections this build runs

#[test]
fn validate_loads_every_tls_file_and_names_the_broken_one() {
    let dir = TempDir::new("tls-validate");
    let pki = common::pki::Pki::new(dir.path(), "ca");
    let server = pki.server("s");
    let edge = format!(
        "responder:\n\
         \x20 tunnel_listener: {{ listen: 127.0.0.1:19000, tls: {{ cert: {cert}, key: {key} }} }}\n\
         \x20 egress_listener:\n\
         \x20   listen: 127.0.0.1:18085\n\
         \x20   tls: {{ cert: {cert}, key: {key}, client_ca: {ca} }}\n\
         clusters:\n\
         \x20 app: {{ endpoints: [\"127.0.0.1:8443\"], tls: {{ ca: {ca} }} }}\n\
         \x20 cloud: {{ endpoints: [\"127.0.0.1:19000\"], tls: {{ ca: {ca} }} }}\n\
         initiator:\n\
         \x20 tunnels: [\"rc://n:c:t@cloud:1\"]\n\
         \x20 routes: [{{ prefix: /, cluster: app }}]\n",
        cert = server.cert.display(),
        key = server.key.display(),
        ca = pki.ca.display(),
    );
    let validate = |yaml: &str| {
        let path = dir.write("c.yaml", yaml);
        Command::new(RTUN)
            .args(["validate", "-c", p(&path)])
            .output()
            .expect("run rtun validate")
    };
    // TLS everywhere (tunnel listener, egress, dialed responder, local service) validates.
    let out = validate(&edge);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("egress listener: 127.0.0.1:18085 (HTTPS, client certificates required)"),
        "{stdout}"
    );

    // A missing file is named with the key that names it, by `validate` and by `run`.
    let missing = edge.replace(&server.cert.display().to_string(), "/nonexistent/s.pem");
    let out = validate(&missing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tls") && stderr.contains("/nonexistent/s.pem"),
        "{stderr}"
    );
    let bad = missing
        .replace("127.0.0.1:19000", &format!("127.0.0.1:{}", port()))
        .replace("127.0.0.1:18085", &format!("127.0.0.1:{}", port()));
    let mut run = spawn_rtun(&dir, "bad-files", &bad);
    let status = run
        .wait_exit(Duration::from_secs(10))
        .expect("rtun run exits");
    assert!(!status.success());
    let log = run.log_text();
    assert!(log.contains("_listener.tls: "), "{log}");
    assert!(log.contains("/nonexistent/s.pem"), "{log}");
}
