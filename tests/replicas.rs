//! Scale-out (DESIGN §12): a responder name that resolves to several addresses gets
//! `connections` tunnels to each address; names are re-resolved, new addresses get tunnels,
//! vanished ones are drained.
//!
//! Two responder processes listen on the same tunnel port, one on 127.0.0.1 and one on ::1
//! (127.0.0.2 where this machine has no IPv6 loopback). The initiator dials one name that
//! resolves to both: `localhost` when the system resolver already answers both, otherwise the
//! resolver's test hook (`RTUN_TEST_HOSTS_FILE`, see `src/net.rs`), which also lets a test
//! change the answer while the initiator runs.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The second replica's address: the IPv6 loopback when this machine has one.
fn second_ip() -> IpAddr {
    if TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
    }
}

/// `ip:port` as a YAML string (brackets for IPv6).
fn at(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// Two responders (`a` on 127.0.0.1, `b` on the second address) sharing one tunnel port.
struct Replicas {
    ip_b: IpAddr,
    ra: ResponderOpts,
    rb: ResponderOpts,
    _a: Proc,
    b: Proc,
}

impl Replicas {
    fn start(dir: &TempDir) -> Replicas {
        let ip_b = second_ip();
        // A tunnel port free on both addresses.
        let ra = loop {
            let r = ResponderOpts::new();
            if TcpListener::bind((ip_b, r.tunnel)).is_ok() {
                break r;
            }
        };
        let rb = ResponderOpts {
            egress: port(),
            admin: port(),
            ..ra.clone()
        };
        let a = ra.spawn(dir, "responder-a");
        let b = spawn_b(dir, &rb, ip_b, "responder-b");
        Replicas {
            ip_b,
            ra,
            rb,
            _a: a,
            b,
        }
    }

    /// Tunnels of `n1` on (a, b).
    fn tunnels(&self) -> (u32, u32) {
        (
            tunnels_of(self.ra.admin, "n1"),
            tunnels_of(self.rb.admin, "n1"),
        )
    }
}

/// Starts responder `b` with its tunnel listener on `ip` and waits for its listeners.
fn spawn_b(dir: &TempDir, rb: &ResponderOpts, ip: IpAddr, name: &str) -> Proc {
    let yaml = rb.yaml().replace(
        &format!("listen: 127.0.0.1:{}\n", rb.tunnel),
        &format!("listen: \"{}\"\n", at(ip, rb.tunnel)),
    );
    assert!(yaml.contains(&at(ip, rb.tunnel)), "{yaml}");
    let p = spawn_rtun(dir, name, &yaml);
    let tunnel = SocketAddr::new(ip, rb.tunnel);
    let up = wait_until(Duration::from_secs(10), || {
        TcpStream::connect_timeout(&tunnel, Duration::from_millis(200)).is_ok()
    }) && wait_for_port(rb.egress, Duration::from_secs(10))
        && wait_for_port(rb.admin, Duration::from_secs(10));
    assert!(up, "responder {name} did not listen\n{}", p.log_text());
    p
}

/// Writes the resolver's test hosts file atomically (the initiator may read it at any time).
fn write_hosts(dir: &TempDir, lines: &str) {
    let tmp = dir.write("hosts.tmp", lines);
    std::fs::rename(tmp, dir.join("hosts")).expect("replace hosts file");
}

/// An initiator (admin on, `connections: 2`, 2 shards) dialing `name:<tunnel port>`,
/// re-resolving every 200 ms, with `env`.
fn initiator(
    dir: &TempDir,
    reps: &Replicas,
    svc: u16,
    name: &str,
    env: Vec<(String, String)>,
) -> (InitiatorOpts, Proc) {
    let mut i = InitiatorOpts::new("n1", "c1", reps.ra.tunnel, svc);
    i.count = 2;
    i.shards = 2;
    i.admin = Some(port());
    i.responder_cluster_extra = "    dns_refresh_rate: 200ms\n".into();
    i.env = env;
    let yaml = i.yaml().replace(
        &format!("[\"127.0.0.1:{}\"]", reps.ra.tunnel),
        &format!("[\"{name}:{}\"]", reps.ra.tunnel),
    );
    assert!(
        yaml.contains(&format!("{name}:{}", reps.ra.tunnel)),
        "{yaml}"
    );
    let cfg = dir.write("initiator.yaml", yaml);
    let args = ["run", "-c", cfg.to_str().expect("utf-8 path")];
    let p = Proc::spawn_with_env(dir, "initiator", RTUN, &args, &i.env);
    let admin = i.admin.expect("admin port");
    assert!(
        wait_for_port(admin, Duration::from_secs(10)),
        "initiator admin did not listen\n{}",
        p.log_text()
    );
    (i, p)
}

fn hook(dir: &TempDir) -> Vec<(String, String)> {
    let path = dir.join("hosts");
    vec![(
        "RTUN_TEST_HOSTS_FILE".into(),
        path.to_str().expect("utf-8 path").into(),
    )]
}

fn ok_through(r: &ResponderOpts) -> bool {
    get(r.egress, "/hello", &[("x-node-id", "n1")]).is_ok_and(|resp| resp.status == 200)
}

#[test]
fn every_address_of_a_name_gets_its_share() {
    let dir = TempDir::new("replicas-share");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let mut reps = Replicas::start(&dir);
    // `localhost` as the system resolves it, when that is both replicas; else the test hook.
    let system: Vec<IpAddr> = ("localhost", 0)
        .to_socket_addrs()
        .map(|a| a.map(|a| a.ip()).collect())
        .unwrap_or_default();
    let env = if system.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)) && system.contains(&reps.ip_b) {
        eprintln!("localhost resolves to {system:?}: no hosts file");
        Vec::new()
    } else {
        eprintln!("localhost resolves to {system:?}: using the test hosts file");
        write_hosts(
            &dir,
            &format!("127.0.0.1 localhost\n{} localhost\n", reps.ip_b),
        );
        hook(&dir)
    };
    let (i, _initiator) = initiator(&dir, &reps, svc, "localhost", env);
    let admin = i.admin.expect("admin");

    // Each replica gets `connections: 2`, one per shard.
    let both = wait_until(Duration::from_secs(10), || reps.tunnels() == (2, 2));
    assert!(both, "tunnels (a, b) = {:?}", reps.tunnels());
    assert!(ok_through(&reps.ra) && ok_through(&reps.rb));
    assert!(admin_stat(admin, "initiator_hosts_added") >= 2);

    // One replica dies: the other keeps serving, and the dead address is still resolved, so
    // the initiator keeps trying it with backoff (max 1s).
    reps.b.kill();
    let failures = admin_stat(admin, "initiator_dial_failures");
    for _ in 0..20 {
        assert!(ok_through(&reps.ra), "a request through a failed");
    }
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(tunnels_of(reps.ra.admin, "n1"), 2);
    let retried = admin_stat(admin, "initiator_dial_failures") - failures;
    assert!(retried >= 2, "{retried} redials of the dead replica");
    assert_eq!(admin_stat(admin, "initiator_hosts_removed"), 0);

    // It comes back on the same address: its tunnels return within the backoff.
    reps.b = spawn_b(&dir, &reps.rb, reps.ip_b, "responder-b2");
    let back = wait_until(Duration::from_secs(5), || reps.tunnels() == (2, 2));
    assert!(back, "tunnels (a, b) = {:?}", reps.tunnels());
    assert!(ok_through(&reps.rb));
}

#[test]
fn hosts_follow_the_name() {
    let dir = TempDir::new("replicas-follow");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let reps = Replicas::start(&dir);
    let ip_b = reps.ip_b;
    write_hosts(&dir, "127.0.0.1 replicas.test\n");
    let (i, initiator) = initiator(&dir, &reps, svc, "replicas.test", hook(&dir));
    let admin = i.admin.expect("admin");

    // One address: only `a` is dialed.
    assert!(
        wait_until(Duration::from_secs(10), || reps.tunnels().0 == 2),
        "tunnels (a, b) = {:?}",
        reps.tunnels()
    );
    assert_eq!(reps.tunnels().1, 0);

    // A new address appears: it gets its share, `a` keeps its own.
    write_hosts(
        &dir,
        &format!("127.0.0.1 replicas.test\n{ip_b} replicas.test\n"),
    );
    let grown = wait_until(Duration::from_secs(5), || reps.tunnels() == (2, 2));
    assert!(grown, "tunnels (a, b) = {:?}", reps.tunnels());

    // A request in flight through `b` when its address vanishes finishes; then `b`'s tunnels
    // are gone and stay gone (the slots stop redialing), while `a` keeps its tunnels.
    let before = admin_stat(admin, "initiator_requests");
    let egress_b = reps.rb.egress;
    let slow = thread::spawn(move || get(egress_b, "/delay/1500", &[("x-node-id", "n1")]));
    assert!(
        wait_until(Duration::from_secs(3), || admin_stat(
            admin,
            "initiator_requests"
        ) > before),
        "the slow request did not reach the initiator"
    );
    let failures = admin_stat(admin, "initiator_dial_failures");
    write_hosts(&dir, "127.0.0.1 replicas.test\n");
    let removed = Instant::now();
    let resp = slow
        .join()
        .expect("request thread")
        .unwrap_or_else(|e| panic!("in-flight request through a drained host failed: {e}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let drained = wait_until(Duration::from_secs(5), || reps.tunnels().1 == 0);
    assert!(
        drained,
        "b still has tunnels {:?} after its address vanished",
        removed.elapsed()
    );
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(reps.tunnels(), (2, 0), "tunnels (a, b)");
    assert!(ok_through(&reps.ra));
    assert_eq!(
        admin_stat(admin, "initiator_dial_failures"),
        failures,
        "a retired slot redialed"
    );
    // One removal per shard that dialed it.
    assert_eq!(admin_stat(admin, "initiator_hosts_removed"), 2);

    // Resolution failure (the hosts file is gone): the last known set stays.
    std::fs::remove_file(dir.join("hosts")).expect("remove hosts file");
    assert!(
        wait_until(Duration::from_secs(3), || admin_stat(
            admin,
            "initiator_dns_failures"
        ) >= 2),
        "resolution did not fail"
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(reps.tunnels(), (2, 0), "tunnels (a, b)");
    assert!(ok_through(&reps.ra));
    let log = initiator.log_text();
    assert!(
        log.contains("keeping the last known hosts"),
        "no resolution failure in the log"
    );
    assert!(
        log.contains("endpoint hosts changed"),
        "no host change in the log"
    );
}
