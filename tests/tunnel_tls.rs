//! TLS on the tunnel with the real binary and certificates made by `openssl`: mutual TLS with
//! an SPKI pin carries 64 MiB each way byte-exact; a wrong pin, a foreign CA, a wrong name, a
//! missing client certificate and a plaintext initiator are each refused with the reason
//! logged and counted on both sides; the mTLS identity binding holds; SIGHUP rotates the
//! responder's certificate while a live tunnel keeps serving.

mod common;

use std::fs;
use std::time::Duration;

use common::pki::{spki_pin, Leaf, Pki};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// A responder whose tunnel listener presents `server` (requiring client certificates from
/// `client_ca` when given), with `auth` lines (indented by 4) after it.
fn tls_responder(server: &Leaf, client_ca: Option<&Pki>, auth: &str) -> ResponderOpts {
    let client_ca = client_ca
        .map(|p| format!(", client_ca: {}", p.ca.display()))
        .unwrap_or_default();
    ResponderOpts {
        tunnel_extra: format!(
            "    tls: {{ cert: {}, key: {}{client_ca} }}\n{auth}",
            server.cert.display(),
            server.key.display()
        ),
        ..ResponderOpts::new()
    }
}

/// An initiator for node `node` dialing `r` over TLS, trusting `ca`, presenting `client`,
/// with `extra` keys in its `tls:` mapping (e.g. `spki_pins: [...]`).
fn tls_initiator(
    node: &str,
    r: &ResponderOpts,
    svc: u16,
    ca: &Pki,
    client: Option<&Leaf>,
    extra: &str,
) -> InitiatorOpts {
    let mut i = InitiatorOpts::new(node, "c1", r.tunnel, svc);
    let client = client
        .map(|c| format!(", cert: {}, key: {}", c.cert.display(), c.key.display()))
        .unwrap_or_default();
    i.responder_cluster_extra = format!("    tls: {{ ca: {}{client}{extra} }}\n", ca.ca.display());
    i
}

#[test]
fn mutual_tls_with_a_pin_carries_64_mib_each_way() {
    let dir = TempDir::new("tls-64m");
    let pki = Pki::new(dir.path(), "ca");
    let server = pki.server("responder");
    let client = pki.client("edge", "t", "n1");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let r = tls_responder(&server, Some(&pki), "");
    let responder = r.spawn(&dir, "responder");
    let pin = spki_pin(&server.cert);
    let i = tls_initiator(
        "n1",
        &r,
        svc,
        &pki,
        Some(&client),
        &format!(", spki_pins: [\"{pin}\"]"),
    );
    let initiator = i.spawn(&dir, "initiator");
    assert!(
        wait_tunnels(&r, "n1", 1, WAIT),
        "no TLS tunnel\nresponder:\n{}\ninitiator:\n{}",
        responder.log_text(),
        initiator.log_text()
    );
    assert!(admin_stat(r.admin, "tunnel_tls_accepted") >= 1);

    const SIZE: usize = 64 * 1024 * 1024;
    let input = noise(SIZE);
    let in_path = dir.write("in.bin", &input);
    for (k, proto) in ["--http1.1", "--http2-prior-knowledge"].iter().enumerate() {
        let out_path = dir.join(&format!("echo-{k}.bin"));
        let out = curl(&[
            proto,
            "-H",
            "x-node-id: n1",
            "--data-binary",
            &format!("@{}", in_path.display()),
            "-o",
            out_path.to_str().unwrap(),
            &format!("http://127.0.0.1:{}/echo", r.egress),
        ]);
        assert_eq!((out.code, out.status), (0, 200), "{proto}: {}", out.stderr);
        let echoed = fs::read(&out_path).unwrap();
        assert!(echoed == input, "{proto}: the echoed 64 MiB differ");
        let _ = fs::remove_file(&out_path);
    }
    let out_path = dir.join("bytes.bin");
    let out = curl(&[
        "-H",
        "x-node-id: n1",
        "-o",
        out_path.to_str().unwrap(),
        &format!("http://127.0.0.1:{}/bytes/{SIZE}", r.egress),
    ]);
    assert_eq!((out.code, out.status), (0, 200), "{}", out.stderr);
    assert!(
        fs::read(&out_path).unwrap() == pattern(SIZE),
        "download differs"
    );
    // `/tunnels` says the tunnel is TLS and counts its bytes above TLS: the bodies and a little.
    let listed = admin_tunnels_json(r.admin, "");
    let tunnels = listed["responder"]["tunnels"].as_array().cloned();
    let tunnels = tunnels.unwrap_or_default();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| t["tls"] == true),
        "{listed}"
    );
    let sum = |field: &str| -> u64 { tunnels.iter().filter_map(|t| t[field].as_u64()).sum() };
    let size = SIZE as u64;
    let (sent, received) = (sum("bytes_sent"), sum("bytes_received"));
    assert!((2 * size..2 * size + size / 10).contains(&sent), "{listed}");
    assert!(
        (3 * size..3 * size + size / 10).contains(&received),
        "{listed}"
    );
}

/// Sum of the responder's TLS failure counters (`tunnel_tls_failed_*`).
fn tls_failures(admin: u16) -> u64 {
    admin_stats(admin)
        .iter()
        .filter(|(name, _)| name.starts_with("tunnel_tls_failed_"))
        .map(|(_, v)| v)
        .sum()
}

/// Starts an initiator that must be refused, and waits until its log names `initiator_says`,
/// the responder's log names `responder_says` and `counted` (read from the responder's admin)
/// has grown; no tunnel may come up.
fn refused(
    (dir, r, responder): (&TempDir, &ResponderOpts, &Proc),
    name: &str,
    i: InitiatorOpts,
    initiator_says: &str,
    responder_says: &str,
    counted: fn(u16) -> u64,
) {
    let before = counted(r.admin);
    let initiator = i.spawn(dir, name);
    let named = wait_until(WAIT, || {
        initiator.log_text().contains(initiator_says)
            && responder.log_text().contains(responder_says)
            && counted(r.admin) > before
    });
    assert!(
        named,
        "{name}: expected the initiator to log {initiator_says:?} and the responder \
         {responder_says:?}, and a counter to move\nresponder:\n{}\ninitiator:\n{}",
        responder.log_text(),
        initiator.log_text()
    );
    assert_eq!(
        tunnels_of(r.admin, &i.node),
        0,
        "{name}: a refused tunnel registered"
    );
}

#[test]
fn every_tls_refusal_is_named_and_counted_on_both_sides() {
    let dir = TempDir::new("tls-refusals");
    let pki = Pki::new(dir.path(), "ca");
    let foreign = Pki::new(dir.path(), "foreign");
    let server = pki.server("responder");
    let client = pki.client("edge", "t", "n1");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let r = tls_responder(&server, Some(&pki), "");
    let responder = r.spawn(&dir, "responder");
    let on = (&dir, &r, &responder);

    // The server's key matches none of the pins.
    let other = pki.server("other");
    let wrong_pin = format!(", spki_pins: [\"{}\"]", spki_pin(&other.cert));
    let i = tls_initiator("pinned", &r, svc, &pki, Some(&client), &wrong_pin);
    refused(
        on,
        "wrong-pin",
        i,
        "spki_pin_mismatch",
        "TLS refused",
        tls_failures,
    );

    // The initiator trusts another CA.
    let i = tls_initiator("foreign-ca", &r, svc, &foreign, Some(&client), "");
    refused(
        on,
        "foreign-ca",
        i,
        "unknown_ca",
        "reason=\"unknown_ca\"",
        tls_failures,
    );

    // The name the initiator verifies is not the certificate's.
    let i = tls_initiator(
        "wrong-name",
        &r,
        svc,
        &pki,
        Some(&client),
        ", sni: other.example",
    );
    refused(
        on,
        "wrong-name",
        i,
        "name_mismatch",
        "TLS refused",
        tls_failures,
    );

    // A certificate from a CA the responder does not trust.
    let intruder = foreign.client("intruder", "t", "intruder");
    let i = tls_initiator("intruder", &r, svc, &pki, Some(&intruder), "");
    refused(
        on,
        "foreign-client",
        i,
        "TLS refused",
        "reason=\"unknown_ca\"",
        tls_failures,
    );

    // No client certificate at all.
    let i = tls_initiator("anonymous", &r, svc, &pki, None, "");
    refused(
        on,
        "no-client-cert",
        i,
        "no_client_cert",
        "reason=\"no_client_cert\"",
        tls_failures,
    );

    // Plaintext on the TLS port: told so in plaintext, counted as a plaintext peer.
    let i = InitiatorOpts::new("plain", "c1", r.tunnel, svc);
    let plaintext = |admin| admin_stat(admin, "tunnel_tls_failed_plaintext_peer");
    refused(
        on,
        "plaintext",
        i,
        "requires TLS",
        "plaintext peer on a TLS port",
        plaintext,
    );

    // The real node still gets its tunnel.
    let i = tls_initiator("n1", &r, svc, &pki, Some(&client), "");
    let _initiator = i.spawn(&dir, "n1");
    assert!(wait_tunnels(&r, "n1", 1, WAIT), "{}", responder.log_text());
}

#[test]
fn the_client_certificate_binds_the_node_id() {
    let dir = TempDir::new("tls-mtls-binding");
    let pki = Pki::new(dir.path(), "ca");
    let server = pki.server("responder");
    let n1 = pki.client("n1", "t", "n1");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let binding = "    auth:\n      mtls: { node_id_format: \"%DOWNSTREAM_PEER_DNS_SAN%\" }\n";
    let r = tls_responder(&server, Some(&pki), binding);
    let responder = r.spawn(&dir, "responder");
    let on = (&dir, &r, &responder);

    // n1's certificate claiming n2: refused, n2 never registers.
    let i = tls_initiator("n2", &r, svc, &pki, Some(&n1), "");
    let forbidden = |admin| admin_stat(admin, "handshake_rejected_403");
    refused(on, "n1-as-n2", i, "403", "handshake rejected", forbidden);

    // n1's certificate claiming n1: served.
    let i = tls_initiator("n1", &r, svc, &pki, Some(&n1), "");
    let initiator = i.spawn(&dir, "n1");
    assert!(
        wait_tunnels(&r, "n1", 1, WAIT),
        "{}\n{}",
        responder.log_text(),
        initiator.log_text()
    );
}

#[test]
fn sighup_rotates_the_certificate_and_keeps_live_tunnels() {
    let dir = TempDir::new("tls-rotation");
    let pki = Pki::new(dir.path(), "ca");
    pki.server("responder");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let server = Leaf {
        cert: pki.dir.join("responder.pem"),
        key: pki.dir.join("responder-key.pem"),
    };
    let r = tls_responder(&server, None, "");
    let responder = r.spawn(&dir, "responder");
    let live = tls_initiator("n1", &r, svc, &pki, None, "").spawn(&dir, "n1");
    assert!(wait_tunnels(&r, "n1", 1, WAIT), "{}", live.log_text());
    let closed = admin_stat(r.admin, "tunnels_closed");

    // Rotate: a new key and certificate in the same files, then SIGHUP.
    pki.server("responder");
    let new_pin = format!(", spki_pins: [\"{}\"]", spki_pin(&server.cert));
    responder.signal(libc::SIGHUP);
    assert!(
        wait_until(WAIT, || responder
            .log_text()
            .contains("configuration reloaded (generation 1)")),
        "{}",
        responder.log_text()
    );
    // New handshakes get the new certificate: an initiator pinned to the new key connects.
    let pinned = tls_initiator("n2", &r, svc, &pki, None, &new_pin).spawn(&dir, "n2");
    assert!(wait_tunnels(&r, "n2", 1, WAIT), "{}", pinned.log_text());

    // A file that does not load refuses the reload; the loaded certificate is kept.
    fs::write(&server.cert, "not a certificate").unwrap();
    responder.signal(libc::SIGHUP);
    assert!(
        wait_until(WAIT, || responder
            .log_text()
            .contains("configuration refused, the running one is kept")),
        "{}",
        responder.log_text()
    );
    let again = tls_initiator("n3", &r, svc, &pki, None, &new_pin).spawn(&dir, "n3");
    assert!(wait_tunnels(&r, "n3", 1, WAIT), "{}", again.log_text());

    // The live tunnel never dropped: no tunnel closed, one "tunnel up", still serving.
    assert_eq!(admin_stat(r.admin, "tunnels_closed"), closed);
    assert_eq!(
        live.log_text().matches("tunnel up").count(),
        1,
        "{}",
        live.log_text()
    );
    let resp = get(r.egress, "/still-here", &[("x-node-id", "n1")]).expect("request");
    assert_eq!(resp.status, 200, "{}", resp.text());
}
