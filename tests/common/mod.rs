//! Shared harness of the end-to-end tests: real `rtun` processes on loopback, real clients.
//!
//! Everything here is bounded: every wait polls a condition with a deadline, every child process
//! is SIGKILLed when its guard drops, and ports come from a per-process range so that tests
//! running in parallel threads (and other test binaries) do not collide.

#![allow(dead_code)]

pub mod pki;
pub mod relay;
pub mod script;
pub mod scripted;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const RTUN: &str = env!("CARGO_BIN_EXE_rtun");
pub const CURL: &str = "/usr/bin/curl";
pub const H2LOAD: &str = "/usr/bin/h2load";

// ---------------------------------------------------------------------------------------------
// Ports and directories

static PORT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A free TCP port on 127.0.0.1 from this process's own range (20000..32000, 100 per process,
/// chosen by pid), checked bindable. Avoids the demo's fixed ports (18080..19901).
pub fn port() -> u16 {
    let base = 20_000 + (std::process::id() % 120) * 100;
    for _ in 0..200 {
        let n = PORT_COUNTER.fetch_add(1, Ordering::SeqCst) % 100;
        let p = (base + n) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    // Fall back to the kernel's choice.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for one test's configs and logs; removed on drop unless the test failed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("rtun-e2e-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(test files kept in {})", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process, SIGKILLed on drop. Its stderr (and stdout) go to `<dir>/<name>.log`, printed
/// when the test panics.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(dir: &TempDir, name: &str, program: &str, args: &[&str]) -> Proc {
        Self::spawn_with_env(dir, name, program, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        dir: &TempDir,
        name: &str,
        program: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Proc {
        let log = dir.join(&format!("{name}.log"));
        let out = fs::File::create(&log).expect("create log");
        let err = out.try_clone().unwrap();
        let child = Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("RTUN_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("process").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child, identified by pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // A SIGSTOPped child still dies on SIGKILL.
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: String = {
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(80);
                lines[start..].join("\n")
            };
            eprintln!(
                "----- log of {} ({}) -----\n{tail}\n----- end of {} -----",
                self.name,
                self.log.display(),
                self.name
            );
        }
    }
}

/// `rtun run -c <dir>/<name>.yaml` with `yaml` written there.
pub fn spawn_rtun(dir: &TempDir, name: &str, yaml: &str) -> Proc {
    let cfg = dir.write(&format!("{name}.yaml"), yaml);
    Proc::spawn(dir, name, RTUN, &["run", "-c", cfg.to_str().unwrap()])
}

/// `rtun service --listen 127.0.0.1:<port> --name <name>`, waited for.
pub fn spawn_service(dir: &TempDir, name: &str, port: u16) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let p = Proc::spawn(
        dir,
        name,
        RTUN,
        &["service", "--listen", &listen, "--name", name],
    );
    assert!(
        wait_for_port(port, Duration::from_secs(10)),
        "service {name} did not listen on {port}"
    );
    p
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True once something accepts TCP connections on 127.0.0.1:port.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)).is_ok()
    })
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one request per fresh connection (`connection: close`).

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with `headers` (and `body`) on a new connection to 127.0.0.1:port and
/// reads the whole response (content-length, chunked, or until EOF). 10 s socket timeouts.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

/// GET with headers on a fresh connection.
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    http(port, "GET", path, headers, b"")
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

pub fn parse_response(raw: &[u8], head_only: bool) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            invalid(format!(
                "no response head in {} bytes: {:?}",
                raw.len(),
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ))
        })?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("head not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let hdr = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if head_only || status == 204 || status == 304 {
        Vec::new()
    } else if hdr("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = rest;
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| invalid("truncated chunk size"))?;
            let size_str = std::str::from_utf8(&rest[..nl]).map_err(|_| invalid("chunk size"))?;
            let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
                .map_err(|_| invalid(format!("chunk size {size_str:?}")))?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size + 2 {
                return Err(invalid("truncated chunk"));
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else if let Some(cl) = hdr("content-length") {
        let n: usize = cl.parse().map_err(|_| invalid("content-length"))?;
        if rest.len() < n {
            return Err(invalid(format!("truncated body: {} of {n}", rest.len())));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Sends raw bytes to 127.0.0.1:port and reads until EOF or `timeout`; returns what was read.
pub fn raw_exchange(port: u16, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The status code of the first line of a raw HTTP response, if any.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&raw[..line_end]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

pub fn half_close(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------------
// curl

#[derive(Debug)]
pub struct CurlOut {
    /// Status of the final response (0 if none).
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// curl's exit code.
    pub code: i32,
    pub stderr: String,
    /// "1.1" or "2" from the status line.
    pub http_version: String,
}

impl CurlOut {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl with `args` (plus `-sS -D <headers>` and a 30 s max time); body from stdout.
pub fn curl(args: &[&str]) -> CurlOut {
    static N: AtomicU32 = AtomicU32::new(0);
    let hfile = std::env::temp_dir().join(format!(
        "rtun-e2e-curl-{}-{}.headers",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let out = Command::new(CURL)
        .args(["-sS", "--max-time", "30", "-D"])
        .arg(&hfile)
        .args(args)
        .output()
        .expect("run curl");
    let head = fs::read_to_string(&hfile).unwrap_or_default();
    let _ = fs::remove_file(&hfile);
    // Only the last response block (after redirects/100-continue).
    let block = head
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .filter(|b| !b.starts_with("HTTP/1.1 100") && !b.starts_with("HTTP/2 100"))
        .last()
        .unwrap_or("");
    let mut lines = block.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let http_version = parts
        .next()
        .unwrap_or("")
        .trim_start_matches("HTTP/")
        .to_owned();
    let status = parts
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    CurlOut {
        status,
        headers,
        body: out.stdout,
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        http_version,
    }
}

// ---------------------------------------------------------------------------------------------
// Admin

/// GET an admin path; None when the admin listener does not answer.
pub fn admin_get(port: u16, path: &str) -> Option<String> {
    get(port, path, &[])
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.text())
}

/// All counters of `/stats`.
pub fn admin_stats(port: u16) -> Vec<(String, u64)> {
    admin_get(port, "/stats")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// One counter of `/stats` (panics if the admin endpoint or the counter is missing).
pub fn admin_stat(port: u16, name: &str) -> u64 {
    let stats = admin_stats(port);
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("counter {name} not in /stats of admin port {port}: {stats:?}"))
}

/// `/tunnels` parsed (its JSON form); `Null` when the admin endpoint does not answer.
pub fn admin_tunnels_json(port: u16, query: &str) -> serde_json::Value {
    admin_get(port, &format!("/tunnels{query}"))
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The responder's host ids on `/tunnels` (`responder.hosts`) as (host id, or `tenant/host`
/// when tenants are isolated, and its total tunnels).
pub fn admin_tunnels(port: u16) -> Vec<(String, u32)> {
    let json = admin_tunnels_json(port, "");
    let hosts = json["responder"]["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    hosts
        .iter()
        .filter_map(|h| {
            let (tenant, host) = (h["tenant"].as_str()?, h["host"].as_str()?);
            let total = u32::try_from(h["tunnels"].as_u64()?).ok()?;
            match tenant.is_empty() {
                true => Some((host.to_owned(), total)),
                false => Some((format!("{tenant}/{host}"), total)),
            }
        })
        .collect()
}

/// Tunnels listed for `host` (`host` alone, or `tenant/host` when tenants are isolated, summed
/// over tenants).
pub fn tunnels_of(admin_port: u16, host: &str) -> u32 {
    admin_tunnels(admin_port)
        .into_iter()
        .filter(|(h, _)| h == host || h.rsplit_once('/').is_some_and(|(_, h)| h == host))
        .map(|(_, n)| n)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Configurations

#[derive(Clone, Debug)]
pub struct ResponderOpts {
    pub shards: usize,
    pub tunnel: u16,
    pub egress: u16,
    pub admin: u16,
    pub ping_interval: String,
    pub ping_failure_threshold: u32,
    pub handshake_timeout: String,
    /// YAML flow list of egress routes.
    pub routes: String,
    pub drain_timeout: String,
    /// Path of the request that proves a node reachable (must match `routes`).
    pub probe_path: String,
    /// More `egress_listener` keys, as YAML lines indented by four spaces.
    pub egress_extra: String,
    /// More `tunnel_listener` lines (indented by 4), e.g. `auth:`.
    pub tunnel_extra: String,
}

impl ResponderOpts {
    pub fn new() -> Self {
        ResponderOpts {
            shards: 1,
            tunnel: port(),
            egress: port(),
            admin: port(),
            ping_interval: "1s".into(),
            ping_failure_threshold: 3,
            handshake_timeout: "5s".into(),
            routes: "[{ prefix: / }]".into(),
            drain_timeout: "2s".into(),
            probe_path: "/ready-probe".into(),
            egress_extra: String::new(),
            tunnel_extra: String::new(),
        }
    }

    pub fn yaml(&self) -> String {
        format!(
            "shards: {shards}\n\
             admin: {{ listen: 127.0.0.1:{admin} }}\n\
             drain_timeout: {drain}\n\
             responder:\n\
             \x20 tunnel_listener:\n\
             \x20   listen: 127.0.0.1:{tunnel}\n\
             \x20   ping_interval: {pi}\n\
             \x20   ping_failure_threshold: {pt}\n\
             \x20   handshake_timeout: {ht}\n\
             {tunnel_extra}\
             \x20 egress_listener:\n\
             \x20   listen: 127.0.0.1:{egress}\n\
             \x20   routes: {routes}\n\
             {egress_extra}",
            shards = self.shards,
            admin = self.admin,
            drain = self.drain_timeout,
            tunnel = self.tunnel,
            pi = self.ping_interval,
            pt = self.ping_failure_threshold,
            ht = self.handshake_timeout,
            tunnel_extra = self.tunnel_extra,
            egress = self.egress,
            routes = self.routes,
            egress_extra = self.egress_extra,
        )
    }

    /// Starts the responder and waits for its three listeners.
    pub fn spawn(&self, dir: &TempDir, name: &str) -> Proc {
        let p = spawn_rtun(dir, name, &self.yaml());
        for port in [self.tunnel, self.egress, self.admin] {
            assert!(
                wait_for_port(port, Duration::from_secs(10)),
                "responder {name} did not listen on {port}\n{}",
                p.log_text()
            );
        }
        p
    }
}

#[derive(Clone, Debug)]
pub struct InitiatorOpts {
    pub shards: usize,
    pub node: String,
    pub cluster: String,
    pub tenant: String,
    pub count: u32,
    /// The responder's tunnel port.
    pub responder_tunnel: u16,
    /// The local service's port.
    pub service: u16,
    pub protocol: String,
    pub admin: Option<u16>,
    pub initial_backoff: String,
    pub max_backoff: String,
    pub drain_timeout: String,
    /// More `initiator` lines (indented by 2), e.g. `auth:`.
    pub initiator_extra: String,
    /// YAML flow list of initiator routes.
    pub routes: String,
    /// More lines of the `responder` cluster (indented by 4), e.g. `tls:`.
    pub responder_cluster_extra: String,
    /// More lines of the `local-app` cluster (indented by 4), e.g. `response_timeout:`.
    pub local_cluster_extra: String,
    /// Environment variables of the process.
    pub env: Vec<(String, String)>,
}

impl InitiatorOpts {
    pub fn new(node: &str, cluster: &str, responder_tunnel: u16, service: u16) -> Self {
        InitiatorOpts {
            shards: 1,
            node: node.into(),
            cluster: cluster.into(),
            tenant: "t".into(),
            count: 1,
            responder_tunnel,
            service,
            protocol: "http1".into(),
            admin: None,
            initial_backoff: "100ms".into(),
            max_backoff: "1s".into(),
            drain_timeout: "3s".into(),
            initiator_extra: String::new(),
            routes: "[{ prefix: /, cluster: local-app }]".into(),
            responder_cluster_extra: String::new(),
            local_cluster_extra: String::new(),
            env: Vec::new(),
        }
    }

    pub fn yaml(&self) -> String {
        let admin = self
            .admin
            .map(|p| format!("admin: {{ listen: 127.0.0.1:{p} }}\n"))
            .unwrap_or_default();
        format!(
            "shards: {shards}\n\
             {admin}\
             drain_timeout: {drain}\n\
             clusters:\n\
             \x20 local-app:\n\
             \x20   endpoints: [\"127.0.0.1:{service}\"]\n\
             \x20   protocol: {proto}\n\
             {local_extra}\
             \x20 responder:\n\
             \x20   endpoints: [\"127.0.0.1:{tunnel}\"]\n\
             \x20   connect_timeout: 1s\n\
             {cluster_extra}\
             initiator:\n\
             \x20 tunnels: [\"rc://{node}:{cluster}:{tenant}@responder:{count}\"]\n\
             \x20 routes: {routes}\n\
             \x20 initial_reconnect_backoff: {ib}\n\
             \x20 max_reconnect_backoff: {mb}\n\
             {extra}",
            shards = self.shards,
            drain = self.drain_timeout,
            service = self.service,
            proto = self.protocol,
            tunnel = self.responder_tunnel,
            node = self.node,
            cluster = self.cluster,
            tenant = self.tenant,
            count = self.count,
            ib = self.initial_backoff,
            mb = self.max_backoff,
            extra = self.initiator_extra,
            routes = self.routes,
            cluster_extra = self.responder_cluster_extra,
            local_extra = self.local_cluster_extra,
        )
    }

    pub fn spawn(&self, dir: &TempDir, name: &str) -> Proc {
        let cfg = dir.write(&format!("{name}.yaml"), self.yaml());
        let args = ["run", "-c", cfg.to_str().unwrap()];
        let p = Proc::spawn_with_env(dir, name, RTUN, &args, &self.env);
        if let Some(a) = self.admin {
            assert!(
                wait_for_port(a, Duration::from_secs(10)),
                "initiator {name} admin did not listen"
            );
        }
        p
    }
}

/// Waits until the responder lists `count` tunnels for `node` and a request with
/// `x-node-id: node` is answered 200 through the egress listener.
pub fn wait_tunnels(r: &ResponderOpts, node: &str, count: u32, timeout: Duration) -> bool {
    wait_until(timeout, || {
        tunnels_of(r.admin, node) >= count
            && get(r.egress, &r.probe_path, &[("x-node-id", node)])
                .is_ok_and(|resp| resp.status == 200)
    })
}

/// A responder, one local service and one initiator (node `n1`, cluster `c1`) with `count`
/// tunnels, all up and answering.
pub struct Stack {
    pub dir: TempDir,
    pub r: ResponderOpts,
    pub i: InitiatorOpts,
    pub responder: Proc,
    pub initiator: Proc,
    pub service: Proc,
}

impl Stack {
    pub fn start(
        name: &str,
        r: ResponderOpts,
        count: u32,
        tweak: impl FnOnce(&mut InitiatorOpts),
    ) -> Stack {
        let dir = TempDir::new(name);
        let svc_port = port();
        let service = spawn_service(&dir, "svc-1", svc_port);
        let responder = r.spawn(&dir, "responder");
        let mut i = InitiatorOpts::new("n1", "c1", r.tunnel, svc_port);
        i.count = count;
        tweak(&mut i);
        let initiator = i.spawn(&dir, "initiator");
        let node = i.node.clone();
        let ok = wait_tunnels(&r, &node, count, Duration::from_secs(10));
        let stack = Stack {
            dir,
            r,
            i,
            responder,
            initiator,
            service,
        };
        assert!(
            ok,
            "tunnels of {node} did not come up: {:?}",
            admin_tunnels(stack.r.admin)
        );
        stack
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a shifted or repeated chunk is caught.
pub fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// The `/bytes/N` pattern of `rtun service`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}
