//! Access logs and process logs, end to end: real `rtun` processes, real curl, real signals.
//!
//! - one JSON line per request on both roles, with the status, bytes, request id and host id
//!   the client saw; tunnel events (opened / up, rejected, closed) in the same file;
//! - a format string renders as configured;
//! - SIGUSR1 after a rename makes new lines go to a new file at the configured path;
//! - `--log-format json` puts JSON on stderr, text mode writes no colour to a file;
//! - a local service that refuses connections is one warning with the request id.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// The JSON lines of an access log file (none if it does not exist yet).
fn json_lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits for the first line of `path` that `pick` accepts.
fn wait_line(path: &Path, mut pick: impl FnMut(&Value) -> bool) -> Value {
    let mut found = None;
    let ok = wait_until(WAIT, || {
        found = json_lines(path).into_iter().find(|v| pick(v));
        found.is_some()
    });
    assert!(
        ok,
        "no such line in {}:\n{}",
        path.display(),
        fs::read_to_string(path).unwrap_or_default()
    );
    found.unwrap_or_default()
}

fn access_log(path: &Path, format: &str) -> String {
    format!(
        "access_log:\n  path: {}\n  format: {format}\n",
        path.display()
    )
}

/// Starts a responder with `top` prepended to its configuration.
fn responder(dir: &TempDir, r: &ResponderOpts, top: &str) -> Proc {
    let p = spawn_rtun(dir, "responder", &format!("{top}{}", r.yaml()));
    for port in [r.tunnel, r.egress, r.admin] {
        assert!(
            wait_for_port(port, WAIT),
            "responder did not listen on {port}\n{}",
            p.log_text()
        );
    }
    p
}

/// Starts an initiator with `top` prepended to its configuration.
fn initiator(dir: &TempDir, i: &InitiatorOpts, top: &str) -> Proc {
    spawn_rtun(dir, "initiator", &format!("{top}{}", i.yaml()))
}

fn is_request(v: &Value, path: &str) -> bool {
    v["event"] == "request" && v["path"] == path
}

#[test]
fn requests_and_tunnels_are_logged_as_json_lines_on_both_roles() {
    let dir = TempDir::new("access-json");
    let (r_log, i_log) = (dir.join("responder.access"), dir.join("initiator.access"));
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let r = ResponderOpts::new();
    let _responder = responder(&dir, &r, &access_log(&r_log, "json"));
    let i = InitiatorOpts::new("n1", "c1", r.tunnel, svc);
    let _initiator = initiator(&dir, &i, &access_log(&i_log, "json"));
    assert!(wait_tunnels(&r, "n1", 1, WAIT), "tunnel did not come up");

    // A download and an upload, through the tunnel.
    let egress = format!("http://127.0.0.1:{}", r.egress);
    let down = curl(&[
        "-H",
        "x-node-id: n1",
        "-A",
        "access-test",
        &format!("{egress}/bytes/1000"),
    ]);
    assert_eq!(
        (down.status, down.body.len()),
        (200, 1000),
        "{}",
        down.stderr
    );
    let body = "x".repeat(777);
    let up = curl(&[
        "-H",
        "x-node-id: n1",
        "--data-binary",
        &body,
        &format!("{egress}/echo"),
    ]);
    assert_eq!(up.status, 200, "{}", up.stderr);
    // A local reply: no tunnel for that node.
    let missing = curl(&["-H", "x-node-id: nobody", &format!("{egress}/x")]);
    assert_eq!(missing.status, 503);
    let missing_id = missing
        .header("x-request-id")
        .expect("request id")
        .to_owned();

    let line = wait_line(&r_log, |v| is_request(v, "/bytes/1000"));
    assert_eq!(line["listener"], "egress");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 200);
    assert_eq!(line["response_flags"], "-");
    assert_eq!(line["bytes_sent"], 1000);
    assert_eq!(line["bytes_received"], 0);
    assert_eq!(line["host_id"], "n1");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["user_agent"], "access-test");
    assert_eq!(line["authority"], format!("127.0.0.1:{}", r.egress));
    assert!(line["tunnel_id"].is_u64(), "{line}");
    assert!(line["downstream_remote_address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    let id = line["request_id"].as_str().expect("request id").to_owned();
    // The initiator logs the same request under the same id.
    let far = wait_line(&i_log, |v| v["request_id"] == id.as_str());
    assert_eq!(far["listener"], "initiator");
    assert_eq!(far["status"], 200);
    assert_eq!(far["bytes_sent"], 1000);
    assert_eq!(far["cluster"], "local-app");
    assert_eq!(far["protocol"], "HTTP/2");

    let upload = wait_line(&r_log, |v| is_request(v, "/echo"));
    assert_eq!(
        (
            &upload["method"],
            &upload["bytes_received"],
            &upload["bytes_sent"]
        ),
        (&Value::from("POST"), &Value::from(777), &Value::from(777))
    );
    let far = wait_line(&i_log, |v| is_request(v, "/echo"));
    assert_eq!(far["bytes_received"], 777);

    let failed = wait_line(&r_log, |v| is_request(v, "/x"));
    assert_eq!(failed["status"], 503);
    assert_eq!(failed["response_flags"], "no_tunnel");
    assert_eq!(failed["request_id"], missing_id.as_str());
    assert_eq!(failed["bytes_sent"], missing.body.len() as u64);
    assert_eq!(failed["tunnel_id"], Value::Null);

    // One line per request: the download appears once in each log.
    let count = |path: &Path| {
        json_lines(path)
            .iter()
            .filter(|v| is_request(v, "/bytes/1000"))
            .count()
    };
    assert_eq!((count(&r_log), count(&i_log)), (1, 1));

    // The tunnel's events, in the same files.
    let opened = wait_line(&r_log, |v| v["event"] == "tunnel_opened");
    assert_eq!(
        (&opened["node"], &opened["cluster"], &opened["tenant"]),
        (&Value::from("n1"), &Value::from("c1"), &Value::from("t"))
    );
    assert_eq!(opened["tunnel_id"], line["tunnel_id"]);
    let up = wait_line(&i_log, |v| v["event"] == "tunnel_up");
    assert_eq!(up["peer"], format!("127.0.0.1:{}", r.tunnel));
}

#[test]
fn a_format_string_renders_as_configured() {
    let dir = TempDir::new("access-format");
    let log = dir.join("access.log");
    let r = ResponderOpts::new();
    let format = "'%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% \
                  \"%REQ(user-agent)%\" %HOST_ID% %REQUEST_ID% %PROTOCOL% %LISTENER% %TUNNEL_ID% \
                  %REQ(x-missing)%'";
    let _responder = responder(&dir, &r, &access_log(&log, format));
    let out = curl(&[
        "-H",
        "x-node-id: n9",
        "-A",
        "quote\" and \\ backslash",
        &format!("http://127.0.0.1:{}/some/path?q=1", r.egress),
    ]);
    assert_eq!(out.status, 503);
    let id = out.header("x-request-id").expect("request id");
    let expected = format!(
        "GET /some/path?q=1 503 no_tunnel {} \"quote\\\" and \\\\ backslash\" n9 {id} HTTP/1.1 \
         egress - -",
        out.body.len()
    );
    let ok = wait_until(WAIT, || {
        fs::read_to_string(&log).is_ok_and(|text| text.lines().any(|l| l == expected))
    });
    assert!(
        ok,
        "expected line\n{expected}\nnot in\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn tunnel_events_rejected_opened_and_closed() {
    let dir = TempDir::new("access-tunnels");
    let log = dir.join("access.log");
    let svc = port();
    let _service = spawn_service(&dir, "svc", svc);
    let r = ResponderOpts::new();
    let _responder = responder(&dir, &r, &access_log(&log, "json"));

    // Not a tunnel request: refused with 404 and logged with the rejection's label.
    let answer = raw_exchange(
        r.tunnel,
        b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), Some(404));
    let rejected = wait_line(&log, |v| v["event"] == "tunnel_rejected");
    assert_eq!(rejected["reason"], "not_tunnel_request");
    assert_eq!(rejected["status"], 404);
    assert!(rejected["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));

    let i = InitiatorOpts::new("n1", "c1", r.tunnel, svc);
    let mut initiator = initiator(&dir, &i, "");
    assert!(wait_tunnels(&r, "n1", 1, WAIT), "tunnel did not come up");
    let opened = wait_line(&log, |v| v["event"] == "tunnel_opened");
    assert_eq!(opened["node"], "n1");
    initiator.kill();
    let closed = wait_line(&log, |v| v["event"] == "tunnel_closed");
    assert_eq!(closed["tunnel_id"], opened["tunnel_id"]);
    assert_eq!(closed["node"], "n1");
    assert!(
        ["closed", "failed", "dead"].contains(&closed["reason"].as_str().unwrap_or("")),
        "{closed}"
    );
    assert!(closed["duration_ms"].is_u64());
}

#[test]
fn sigusr1_reopens_the_file_after_a_rename() {
    let dir = TempDir::new("access-rotate");
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let r = ResponderOpts::new();
    let responder = responder(&dir, &r, &access_log(&log, "json"));
    let egress = format!("http://127.0.0.1:{}", r.egress);

    assert_eq!(
        curl(&["-H", "x-node-id: n", &format!("{egress}/first")]).status,
        503
    );
    wait_line(&log, |v| is_request(v, "/first"));
    fs::rename(&log, &rotated).expect("rename");
    // The writer holds the renamed file until the signal.
    assert_eq!(
        curl(&["-H", "x-node-id: n", &format!("{egress}/second")]).status,
        503
    );
    wait_line(&rotated, |v| is_request(v, "/second"));
    assert!(!log.exists());

    responder.signal(libc::SIGUSR1);
    assert!(
        wait_until(WAIT, || log.exists()),
        "SIGUSR1 did not reopen {}",
        log.display()
    );
    assert_eq!(
        curl(&["-H", "x-node-id: n", &format!("{egress}/third")]).status,
        503
    );
    wait_line(&log, |v| is_request(v, "/third"));
    let old: Vec<_> = json_lines(&rotated)
        .iter()
        .map(|v| v["path"].clone())
        .collect();
    assert_eq!(old, ["/first", "/second"]);
    assert_eq!(json_lines(&log).len(), 1);
    assert!(responder.log_text().contains("access log reopened"));
}

#[test]
fn lines_accepted_before_shutdown_are_flushed() {
    let dir = TempDir::new("access-flush");
    let log = dir.join("access.log");
    let r = ResponderOpts::new();
    let mut responder = responder(&dir, &r, &access_log(&log, "json"));
    for n in 0..20 {
        let out = curl(&[
            "-H",
            "x-node-id: n",
            &format!("http://127.0.0.1:{}/r{n}", r.egress),
        ]);
        assert_eq!(out.status, 503);
    }
    responder.signal(libc::SIGTERM);
    let status = responder.wait_exit(WAIT).expect("exits");
    assert!(status.success());
    let requests = json_lines(&log)
        .iter()
        .filter(|v| v["event"] == "request")
        .count();
    assert_eq!(requests, 20);
}

/// Runs `rtun <args>` with stderr to a file and no NO_COLOR, until `done` holds of its stderr.
fn run_logging(dir: &TempDir, name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let err_path = dir.join(&format!("{name}.stderr"));
    let err = fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(RTUN)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn rtun");
    let started = wait_until(WAIT, || {
        fs::read_to_string(&err_path).is_ok_and(|t| t.contains("rtun started"))
    });
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = wait_until(WAIT, || matches!(child.try_wait(), Ok(Some(_))));
    let _ = child.kill();
    let _ = child.wait();
    let text = fs::read_to_string(&err_path).unwrap_or_default();
    assert!(started, "rtun did not start:\n{text}");
    text
}

#[test]
fn process_logs_json_or_plain_text_with_level_from_the_flag() {
    let dir = TempDir::new("process-logs");
    let r = ResponderOpts::new();
    let cfg = dir.write("responder.yaml", r.yaml());
    let cfg = cfg.to_str().expect("path");

    // JSON: every line is an object with a level and a message; --log-level beats RUST_LOG.
    let text = run_logging(
        &dir,
        "json",
        &[
            "--log-format",
            "json",
            "--log-level",
            "info",
            "run",
            "-c",
            cfg,
        ],
        &[("RUST_LOG", "error")],
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "rtun started" && v["level"] == "INFO"),
        "--log-level info beats RUST_LOG=error:\n{text}"
    );
    assert!(lines.iter().all(|v| v["level"].is_string()));

    // Text to a file: no ANSI colour codes, even without NO_COLOR.
    let text = run_logging(&dir, "text", &["run", "-c", cfg], &[]);
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\x1b'), "escape codes in a file:\n{text}");

    // A bad filter is refused at once.
    let out = Command::new(RTUN)
        .args(["--log-level", "info,=nope=", "validate", "-c", cfg])
        .output()
        .expect("run rtun");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-level"));
}

#[test]
fn a_local_service_refusing_connections_is_warned_once_with_the_request_id() {
    let dir = TempDir::new("local-refused");
    let r = ResponderOpts::new();
    let _responder = r.spawn(&dir, "responder");
    let closed = port(); // nothing listens there
    let mut i = InitiatorOpts::new("n1", "c1", r.tunnel, closed);
    let admin = port();
    i.admin = Some(admin);
    let initiator = i.spawn(&dir, "initiator");
    assert!(
        wait_until(WAIT, || tunnels_of(r.admin, "n1") >= 1),
        "tunnel did not come up"
    );
    let mut ids = Vec::new();
    for n in 0..3 {
        let out = curl(&[
            "-H",
            "x-node-id: n1",
            &format!("http://127.0.0.1:{}/try{n}", r.egress),
        ]);
        assert_eq!(out.status, 503, "{}", out.text());
        assert!(
            !out.text().contains("127.0.0.1"),
            "no address to the client"
        );
        ids.push(out.header("x-request-id").expect("request id").to_owned());
    }
    let warning = "cannot connect to the local service";
    assert!(
        wait_until(WAIT, || initiator.log_text().contains(warning)),
        "{}",
        initiator.log_text()
    );
    let text = initiator.log_text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(warning)).collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning per run of failures:\n{text}"
    );
    let w = warnings[0];
    assert!(w.contains("WARN"), "{w}");
    assert!(w.contains("cluster=local-app"), "{w}");
    assert!(w.contains(&format!("endpoint=127.0.0.1:{closed}")), "{w}");
    assert!(w.contains(&format!("request_id={}", ids[0])), "{w}");
    assert!(w.contains("refused"), "{w}");
    // Each failed request is logged under its id (a 503: a warning), and counted.
    for id in &ids {
        assert!(
            text.lines()
                .any(|l| l.contains(id.as_str()) && l.contains("local_unreachable")),
            "request {id} not logged:\n{text}"
        );
    }
    assert!(admin_stat(admin, "initiator_local_connect_failures") >= 3);
}
