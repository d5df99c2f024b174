//! Hot reload with the real binary (ARCHITECTURE.md §9): SIGHUP, `rtun reload` and the admin's
//! `POST /reload` apply a new file to a running responder while clients keep sending requests
//! through its tunnel. Every change must reach new requests and handshakes, and not one request
//! of the load may fail; the live tunnel stays up; the counters are never reset.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::pki::{spki_pin, Leaf, Pki};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// The hex SHA-256 of a token, as an operator writes it in `tokens:`.
fn hash(token: &str) -> String {
    rtun::auth::tokens::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `tokens:` granting tenant `t` any node and cluster, one line per token.
fn tokens(names: &[&str]) -> String {
    let mut out = String::from("    auth:\n      tokens:\n");
    for name in names {
        out.push_str(&format!(
            "        - {{ sha256: {}, tenant: t, nodes: [\"*\"], clusters: [\"*\"] }}\n",
            hash(name)
        ));
    }
    out
}

/// Requests sent without pause by `workers` threads, each on a fresh connection, to node n1;
/// every answer but a 200 is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(
        workers: usize,
        send: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Load {
        let (stop, ok) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let failed = Arc::new(Mutex::new(Vec::new()));
        let send = Arc::new(send);
        let threads = (0..workers)
            .map(|_| {
                let (stop, ok, failed, send) =
                    (stop.clone(), ok.clone(), failed.clone(), send.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match send() {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                failed.lock().unwrap().push(e);
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Plain HTTP/1.1 to the egress listener.
    fn plain(egress: u16) -> Load {
        Load::start(2, move || {
            match get(egress, "/bytes/64", &[("x-node-id", "n1")]) {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("{}: {}", r.status, r.text())),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// No failure so far, and requests keep succeeding (the load is not stuck).
    fn assert_clean(&self, step: &str) {
        let before = self.ok();
        assert!(
            wait_until(WAIT, || self.ok() >= before + 20),
            "{step}: the load stopped making progress"
        );
        let failed = self.failed.lock().unwrap();
        assert!(
            failed.is_empty(),
            "{step}: {} requests failed under load, first: {:?}",
            failed.len(),
            failed.first()
        );
    }

    fn finish(mut self, step: &str) -> u64 {
        self.assert_clean(step);
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("load thread");
        }
        self.ok()
    }
}

/// The process's reloads so far; SIGHUP is asynchronous, so the log line says when it is done.
struct Reloads<'a> {
    rtun: &'a Proc,
    admin: u16,
    generation: u64,
}

impl Reloads<'_> {
    fn sighup(&mut self) {
        self.generation += 1;
        self.rtun.signal(libc::SIGHUP);
        let line = format!("configuration reloaded (generation {})", self.generation);
        assert!(
            wait_until(WAIT, || self.rtun.log_text().contains(&line)),
            "no `{line}` after SIGHUP\n{}",
            self.rtun.log_text()
        );
    }

    /// `rtun reload --admin`: (exit success, stdout, stderr).
    fn cli(&mut self) -> (bool, String, String) {
        let out = Command::new(RTUN)
            .args(["reload", "--admin", &format!("127.0.0.1:{}", self.admin)])
            .output()
            .expect("run rtun reload");
        if out.status.success() {
            self.generation += 1;
        }
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `curl -X POST /reload`: (status, JSON body).
    fn post(&mut self) -> (u16, serde_json::Value) {
        let url = format!("http://127.0.0.1:{}/reload", self.admin);
        let out = curl(&["-X", "POST", &url]);
        if out.status == 200 {
            self.generation += 1;
        }
        let json = serde_json::from_slice(&out.body).unwrap_or(serde_json::Value::Null);
        (out.status, json)
    }
}

/// A raw handshake for node `node` of tenant `t` bearing `token`: its status. The connection
/// closes when this returns.
fn handshake(port: u16, node: &str, token: &str) -> Option<u16> {
    let req = format!(
        "GET /reverse_connections/request HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         x-envoy-reverse-tunnel-node-id: {node}\r\n\
         x-envoy-reverse-tunnel-cluster-id: c9\r\n\
         x-envoy-reverse-tunnel-tenant-id: t\r\n\
         authorization: Bearer {token}\r\n\r\n"
    );
    let mut s = TcpStream::connect(addr(port)).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).ok()?;
    status_of(&buf[..n])
}

fn rewrite(dir: &TempDir, r: &ResponderOpts) -> PathBuf {
    dir.write("responder.yaml", r.yaml())
}

#[test]
fn responder_changes_apply_under_load_without_a_failed_request() {
    let mut r = ResponderOpts::new();
    r.shards = 2;
    r.routes = "[{ prefix: /bytes }, { prefix: /ready-probe }, { prefix: /delay }]".into();
    r.tunnel_extra = tokens(&["tok-a"]);
    let s = Stack::start("reload-responder", r.clone(), 1, |i| {
        i.initiator_extra = "  auth: { token: tok-a }\n".into();
    });
    let (dir, mut r) = (&s.dir, r);
    let mut reloads = Reloads {
        rtun: &s.responder,
        admin: r.admin,
        generation: 0,
    };
    let node = [("x-node-id", "n1")];
    let egress_requests = admin_stat(r.admin, "egress_requests");
    let closed = admin_stat(r.admin, "tunnels_closed");
    let load = Load::plain(r.egress);
    load.assert_clean("before any reload");

    // A route added (SIGHUP): /echo had no route.
    assert_eq!(get(r.egress, "/echo", &node).unwrap().status, 404);
    r.routes =
        "[{ prefix: /bytes }, { prefix: /ready-probe }, { prefix: /delay }, { prefix: /echo }]"
            .into();
    rewrite(dir, &r);
    reloads.sighup();
    assert_eq!(get(r.egress, "/echo", &node).unwrap().status, 200);
    load.assert_clean("route added");

    // A route removed (`rtun reload`).
    r.routes = "[{ prefix: /bytes }, { prefix: /ready-probe }, { prefix: /delay }]".into();
    rewrite(dir, &r);
    let (ok, stdout, stderr) = reloads.cli();
    assert!(ok, "rtun reload failed: {stderr}");
    assert!(
        stdout.contains("responder.egress_listener.routes"),
        "{stdout}"
    );
    assert_eq!(get(r.egress, "/echo", &node).unwrap().status, 404);
    load.assert_clean("route removed");

    // HTTP/2 clients on kept-alive connections through the next two reloads: each new request
    // on an old connection reads the new settings, and none fails.
    let h2 = {
        let url = format!("http://127.0.0.1:{}/bytes/64", r.egress);
        std::thread::spawn(move || {
            let args = ["-D", "4", "-c", "2", "-m", "4", "-H", "x-node-id: n1", &url];
            Command::new(H2LOAD)
                .args(args)
                .output()
                .expect("run h2load")
        })
    };

    // A timeout changed, and observed: the listener's route timeout drops to 500ms.
    assert_eq!(get(r.egress, "/delay/1500", &node).unwrap().status, 200);
    r.egress_extra = "    request_timeout: 500ms\n".into();
    rewrite(dir, &r);
    reloads.sighup();
    assert_eq!(get(r.egress, "/delay/1500", &node).unwrap().status, 504);
    load.assert_clean("request_timeout changed");

    // A route changed: /delay gets its own, longer timeout.
    r.routes =
        "[{ prefix: /bytes }, { prefix: /ready-probe }, { prefix: /delay, timeout: 5s }]".into();
    rewrite(dir, &r);
    let (status, json) = reloads.post();
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["generation"], reloads.generation);
    assert_eq!(
        json["applied"][0], "responder.egress_listener.routes",
        "{json}"
    );
    assert_eq!(get(r.egress, "/delay/1500", &node).unwrap().status, 200);
    load.assert_clean("route changed");
    let out = h2.join().expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" succeeded, 0 failed, 0 errored, 0 timeout"),
        "{text}"
    );
    assert!(text.contains(", 0 4xx, 0 5xx"), "{text}");

    // host_id_format: a new header names the host; the old one still works as the fallback.
    let by_new_header = [("x-host", "n1")];
    assert_eq!(
        get(r.egress, "/bytes/8", &by_new_header).unwrap().status,
        400
    );
    r.egress_extra
        .push_str("    host_id_format: [\"%REQ(x-host)%\", \"%REQ(x-node-id)%\"]\n");
    rewrite(dir, &r);
    reloads.sighup();
    let resp = get(r.egress, "/bytes/8", &by_new_header).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    load.assert_clean("host_id_format changed");

    // Credentials: tok-b added, tok-a revoked. New handshakes with tok-a get 401, tok-b
    // works; the live tunnel, opened with tok-a, is kept (as Envoy keeps its connections).
    assert_eq!(handshake(r.tunnel, "n2", "tok-b"), Some(401));
    r.tunnel_extra = tokens(&["tok-b"]);
    rewrite(dir, &r);
    reloads.sighup();
    assert_eq!(handshake(r.tunnel, "n2", "tok-a"), Some(401));
    assert_eq!(handshake(r.tunnel, "n2", "tok-b"), Some(200));
    load.assert_clean("token revoked");
    assert_eq!(
        tunnels_of(r.admin, "n1"),
        1,
        "the tunnel opened with tok-a stays"
    );

    // A lowered cap: tunnels above it are kept, new ones refused.
    let held = admin_stat(r.admin, "directory_tunnels");
    assert!(
        wait_until(WAIT, || admin_stat(r.admin, "directory_tunnels") == 1),
        "n2's tunnel is gone once its connection closed ({held})"
    );
    r.tunnel_extra = format!("    max_tunnels: 1\n{}", tokens(&["tok-b"]));
    rewrite(dir, &r);
    reloads.sighup();
    assert_eq!(handshake(r.tunnel, "n3", "tok-b"), Some(429));
    load.assert_clean("max_tunnels lowered");

    // A listen address changed (with a route): reported as needing a restart, the rest
    // applied, the old address still serving.
    let old_egress = r.egress;
    r.egress = port();
    r.routes =
        "[{ prefix: /bytes }, { prefix: /ready-probe }, { prefix: /delay }, { prefix: /echo }]"
            .into();
    rewrite(dir, &r);
    let (status, json) = reloads.post();
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        json["restart_required"],
        serde_json::json!(["responder.egress_listener.listen"])
    );
    assert_eq!(
        json["applied"],
        serde_json::json!(["responder.egress_listener.routes"])
    );
    assert_eq!(get(old_egress, "/echo", &node).unwrap().status, 200);
    assert!(
        TcpStream::connect(addr(r.egress)).is_err(),
        "nothing binds the new address"
    );
    assert!(s
        .responder
        .log_text()
        .contains("`responder.egress_listener.listen` changed, but only a restart applies it"));
    load.assert_clean("listen address changed");
    r.egress = old_egress;

    // An invalid file: refused with FILE:LINE:COLUMN, logged, the running configuration kept.
    r.egress_extra.push_str("    idle_timeout: soon\n");
    let path = rewrite(dir, &r);
    let line = r.yaml().lines().position(|l| l.contains("soon")).unwrap() + 1;
    let at = format!("{}:{line}:", path.display());
    let (ok, _, stderr) = reloads.cli();
    assert!(!ok, "an invalid file must be refused");
    assert!(
        stderr.contains("refused (400)") && stderr.contains(&at),
        "{stderr}"
    );
    s.responder.signal(libc::SIGHUP);
    assert!(
        wait_until(WAIT, || s.responder.log_text().matches(&at).count() >= 2),
        "both refusals are logged with {at}\n{}",
        s.responder.log_text()
    );
    assert!(s
        .responder
        .log_text()
        .contains("configuration refused, the running one is kept"));
    assert_eq!(
        get(r.egress, "/echo", &node).unwrap().status,
        200,
        "still generation {}",
        reloads.generation
    );
    let (status, json) = reloads.post();
    assert_eq!(status, 400);
    assert!(json["error"].as_str().unwrap_or("").contains(&at), "{json}");
    // Every reload is counted: the applied ones, and the three refusals just above.
    assert_eq!(admin_stat(r.admin, "config_reloads"), reloads.generation);
    assert_eq!(admin_stat(r.admin, "config_reloads_refused"), 3);

    let sent = load.finish("invalid file");
    // Counters survive every reload: they count all the load's requests.
    let after = admin_stat(r.admin, "egress_requests");
    assert!(
        after >= egress_requests + sent,
        "egress_requests went from {egress_requests} to {after} over {sent} requests"
    );
    assert_eq!(
        admin_stat(r.admin, "tunnels_closed"),
        closed + 1,
        "only n2's tunnel closed"
    );
    assert_eq!(
        s.initiator.log_text().matches("tunnel up").count(),
        1,
        "the initiator's tunnel never redialed\n{}",
        s.initiator.log_text()
    );
}

/// The SPKI pin of the certificate a TLS server on `port` presents.
fn served_pin(port: u16) -> String {
    let script = format!(
        "echo | openssl s_client -connect 127.0.0.1:{port} -servername localhost 2>/dev/null \
         | openssl x509 -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | openssl enc -base64"
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn certificates_move_to_new_files_under_load() {
    let dir = TempDir::new("reload-certificates");
    let pki = Pki::new(dir.path(), "ca");
    let (tunnel1, egress1) = (pki.server("tunnel-1"), pki.server("egress-1"));
    let tls = |tunnel: &Leaf, egress: &Leaf| {
        (
            format!(
                "    tls: {{ cert: {}, key: {} }}\n",
                p(&tunnel.cert),
                p(&tunnel.key)
            ),
            format!(
                "    tls: {{ cert: {}, key: {} }}\n",
                p(&egress.cert),
                p(&egress.key)
            ),
        )
    };
    let mut r = ResponderOpts::new();
    (r.tunnel_extra, r.egress_extra) = tls(&tunnel1, &egress1);
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let responder = r.spawn(&dir, "responder");
    let mut i = InitiatorOpts::new("n1", "c1", r.tunnel, svc);
    i.responder_cluster_extra = format!("    tls: {{ ca: {} }}\n", p(&pki.ca));
    let initiator = i.spawn(&dir, "initiator");
    let (ca, egress) = (pki.ca.clone(), r.egress);
    let https = move || {
        let url = format!("https://localhost:{egress}/bytes/64");
        let resolve = format!("localhost:{egress}:127.0.0.1");
        let args = [
            "--cacert",
            p(&ca),
            "--resolve",
            &resolve,
            "-H",
            "x-node-id: n1",
            &url,
        ];
        let out = curl(&args);
        match out.status {
            200 => Ok(()),
            status => Err(format!("{status} {} {}", out.text(), out.stderr)),
        }
    };
    assert!(
        wait_until(WAIT, || tunnels_of(r.admin, "n1") == 1 && https().is_ok()),
        "{}\n{}",
        responder.log_text(),
        initiator.log_text()
    );
    assert_eq!(served_pin(r.tunnel), spki_pin(&tunnel1.cert));
    assert_eq!(served_pin(r.egress), spki_pin(&egress1.cert));
    let load = Load::start(2, https);
    load.assert_clean("before the reload");

    // New certificates in new files; the old files are gone after the reload.
    let (tunnel2, egress2) = (pki.server("tunnel-2"), pki.server("egress-2"));
    (r.tunnel_extra, r.egress_extra) = tls(&tunnel2, &egress2);
    dir.write("responder.yaml", r.yaml());
    let mut reloads = Reloads {
        rtun: &responder,
        admin: r.admin,
        generation: 0,
    };
    let (ok, stdout, stderr) = reloads.cli();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("responder.tunnel_listener.tls")
            && stdout.contains("responder.egress_listener.tls"),
        "{stdout}"
    );
    for old in [&tunnel1, &egress1] {
        std::fs::remove_file(&old.cert).unwrap();
        std::fs::remove_file(&old.key).unwrap();
    }
    assert_eq!(served_pin(r.tunnel), spki_pin(&tunnel2.cert));
    assert_eq!(served_pin(r.egress), spki_pin(&egress2.cert));
    load.assert_clean("certificates replaced");

    // A later SIGHUP reads the new files again (the old ones no longer exist).
    reloads.sighup();
    load.finish("SIGHUP after the move");
    assert_eq!(
        admin_stat(r.admin, "tunnels_closed"),
        0,
        "the live tunnel stays"
    );
}
