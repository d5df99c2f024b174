//! `loadgen run` against `loadgen serve`: closed loop over h2c and HTTP/1.1, open
//! loop, connection churn, and the files written by `--out`.

mod common;

use std::path::Path;

use common::{loadgen, read_json, stderr, stdout, Server};

/// Checks the .hgrm layout: header, 4-column rows (the last row has 3), footers.
fn check_hgrm(path: &Path, total: u64) {
    let text = std::fs::read_to_string(path).expect("read hgrm");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    assert_eq!(lines[1], "");
    let n = lines.len();
    assert!(lines[n - 3].starts_with("#[Mean    = ") && lines[n - 3].contains("StdDeviation   = "));
    assert!(lines[n - 2].starts_with("#[Max     = "));
    assert!(
        lines[n - 2].ends_with(&format!("Total count    = {total:>12}]")),
        "{}",
        lines[n - 2]
    );
    assert!(lines[n - 1].starts_with("#[Buckets = ") && lines[n - 1].contains("SubBuckets     = "));
    let rows = &lines[2..n - 3];
    assert!(rows.len() > 3);
    for row in &rows[..rows.len() - 1] {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 4, "{row}");
        for c in cols {
            c.parse::<f64>().expect("numeric column");
        }
    }
    let last: Vec<&str> = rows[rows.len() - 1].split_whitespace().collect();
    assert_eq!(last[1], "1.000000000000");
    assert_eq!(last[2], total.to_string());
}

fn check_hdr(path: &Path, total: u64) {
    let bytes = std::fs::read(path).expect("read hdr");
    let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .expect("V2 histogram deserializes");
    assert_eq!(h.len(), total);
}

/// Runs `loadgen run ARGS --out DIR/NAME`, which must succeed; its stdout and its JSON.
fn run_ok(args: &[&str], name: &str) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join(name).to_string_lossy().into_owned();
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", &prefix]);
    let out = loadgen(&all);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "stdout: {text}\nstderr: {}",
        stderr(&out)
    );
    let json = read_json(&dir.path().join(format!("{name}.json")));
    (text, json)
}

fn closed_loop(protocol: &[&str], name: &str) {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join(name);
    let url = server.url("/");
    let mut args = vec![
        "run",
        url.as_str(),
        "-n",
        "2000",
        "--threads",
        "2",
        "--no-pin",
    ];
    args.extend_from_slice(protocol);
    let out_arg = prefix.to_string_lossy().into_owned();
    args.extend_from_slice(&["--out", out_arg.as_str()]);
    let out = loadgen(&args);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "stdout: {text}\nstderr: {}",
        stderr(&out)
    );
    assert!(text.contains("requests    2000 in "), "{text}");
    assert!(text.contains("errors      0 ("), "{text}");
    for label in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
        assert!(
            text.contains(&format!("    {label} ")),
            "{label} missing: {text}"
        );
    }
    check_hgrm(&dir.path().join(format!("{name}.hgrm")), 2000);
    check_hdr(&dir.path().join(format!("{name}.hdr")), 2000);
    check_hdr(&dir.path().join(format!("{name}.uncorrected.hdr")), 2000);
    let json = read_json(&dir.path().join(format!("{name}.json")));
    assert_eq!(json["requests"], 2000);
    assert_eq!(json["ok"], 2000);
    assert_eq!(json["errors_total"], 0);
    assert_eq!(json["errors"]["connect"], 0);
    assert_eq!(json["mode"], "closed");
    assert_eq!(json["latency_us"]["corrected"]["count"], 2000);
    assert!(json["latency_us"]["uncorrected"]["p99.9"].is_u64());
    assert_eq!(json["bytes_received"], 2000 * 64);
}

#[test]
fn h2c_closed_loop_counts_and_writes_files() {
    closed_loop(&["--h2c", "-c", "2", "-m", "8"], "h2c");
}

#[test]
fn http1_closed_loop_counts_and_writes_files() {
    closed_loop(&["--http1", "-c", "4"], "http1");
}

#[test]
fn open_loop_reports_rate_and_both_latencies() {
    let server = Server::start(&[]);
    let url = server.url("/");
    let (text, json) = run_ok(
        &[
            &url,
            "--rate",
            "500",
            "-d",
            "2s",
            "-c",
            "4",
            "--threads",
            "2",
            "--no-pin",
        ],
        "open",
    );
    assert!(text.contains("open loop"), "{text}");
    assert!(
        text.contains("rate        target 500.0 req/s, achieved "),
        "{text}"
    );
    assert!(
        text.contains("corrected") && text.contains("uncorrected"),
        "{text}"
    );
    assert_eq!(json["mode"], "open");
    assert_eq!(json["rate"]["target"], 500.0);
    assert!(json["rate"]["achieved"].as_f64().is_some_and(|a| a > 0.0));
    assert!(json["rate"]["reached"].is_boolean());
    let requests = json["requests"].as_u64().expect("requests");
    assert!(requests > 0 && requests <= 1000, "{requests}");
    assert_eq!(json["latency_us"]["corrected"]["count"], json["ok"]);
    assert_eq!(json["latency_us"]["uncorrected"]["count"], json["ok"]);
    // Corrected latency is measured from the intended send time, never less.
    let c = json["latency_us"]["corrected"]["max"]
        .as_u64()
        .expect("max");
    let u = json["latency_us"]["uncorrected"]["max"]
        .as_u64()
        .expect("max");
    assert!(c >= u, "corrected {c} < uncorrected {u}");
}

/// Far beyond what the target serves, an open loop still measures what it serves: the
/// warmup's backlog, sent within the measured window, is recorded with its latency from the
/// intended time (it used to be skipped, and such a run reported 0 requests).
#[test]
fn an_overloaded_open_loop_records_what_the_target_serves() {
    // One connection at 20 ms a request: about 50 req/s, against 2000 asked.
    let server = Server::start(&["--delay", "20ms"]);
    let url = server.url("/");
    let (text, json) = run_ok(
        &[
            &url,
            "--http1",
            "-c",
            "1",
            "--rate",
            "2000",
            "--warmup",
            "1s",
            "-d",
            "2s",
            "--threads",
            "1",
            "--no-pin",
        ],
        "over",
    );
    let ok = json["ok"].as_u64().expect("ok");
    // About 100 at 50 req/s; none were recorded before the fix.
    assert!(ok >= 20, "only {ok} requests recorded\n{text}");
    assert_eq!(json["rate"]["reached"], false, "{text}");
    // The backlog behind the warmup's 2000 slots is far over a second.
    let corrected_min = json["latency_us"]["corrected"]["min"]
        .as_u64()
        .expect("min");
    assert!(
        corrected_min > 500_000,
        "corrected min {corrected_min} us\n{text}"
    );
}

#[test]
fn connection_churn_and_templated_headers() {
    let server = Server::start(&[]);
    let url = server.url("/");
    let out = loadgen(&[
        "run",
        &url,
        "-n",
        "300",
        "-c",
        "3",
        "--connect-per-request",
        "--no-pin",
        "--method",
        "POST",
        "--body-size",
        "100",
        "-H",
        "x-node-id: edge-{0..9999}",
    ]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "stdout: {text}\nstderr: {}",
        stderr(&out)
    );
    assert!(text.contains("requests    300 in "), "{text}");
    assert!(text.contains("errors      0 ("), "{text}");
    assert!(text.contains("new connection per request"), "{text}");
}

#[test]
fn server_errors_are_counted_by_kind() {
    let server = Server::start(&[]);
    // /bytes/<not a number> answers 400.
    let url = server.url("/bytes/nope");
    let out = loadgen(&[
        "run",
        &url,
        "-n",
        "50",
        "-c",
        "1",
        "--no-pin",
        "--max-errors",
        "50",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text} {}", stderr(&out));
    assert!(
        text.contains("errors      50 (connect 0, timeout 0, reset 0, 4xx 50, 5xx 0, other 0)"),
        "{text}"
    );
}

#[test]
fn more_errors_than_max_errors_allows_fail_the_run() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = server.url("/bytes/nope");
    let run = |url: &str, extra: &[&str]| {
        let prefix = dir.path().join("run").to_string_lossy().into_owned();
        let mut args = vec![
            "run", url, "-n", "40", "-c", "2", "--no-pin", "--out", &prefix,
        ];
        args.extend_from_slice(extra);
        loadgen(&args)
    };
    // The default allows none: one line on stderr, exit 1, yet the summary and the files.
    let out = run(&bad, &[]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "loadgen: 40 of 40 requests failed (connect 0, timeout 0, reset 0, 4xx 40, 5xx 0, \
         other 0), more than --max-errors 0 allows\n"
    );
    assert!(
        stdout(&out).contains("errors      40 ("),
        "{}",
        stdout(&out)
    );
    let json = read_json(&dir.path().join("run.json"));
    assert_eq!(json["errors_total"], 40);
    for (limit, passes) in [("39", false), ("40", true), ("99%", false), ("100%", true)] {
        let out = run(&bad, &["--max-errors", limit]);
        assert_eq!(out.status.success(), passes, "{limit}: {}", stderr(&out));
        if !passes {
            assert!(
                stderr(&out).contains(&format!("more than --max-errors {limit} allows")),
                "{}",
                stderr(&out)
            );
        }
    }
    // A clean run passes the default.
    let out = run(&server.url("/"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    // A malformed budget is a usage error.
    let out = run(&bad, &["--max-errors", "lots"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid --max-errors"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn large_bodies_echo_through_both_protocols() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url("/echo");
    for proto in ["--http1", "--h2c"] {
        let prefix = dir.path().join(proto.trim_start_matches('-'));
        let prefix_arg = prefix.to_string_lossy().into_owned();
        let out = loadgen(&[
            "run",
            &url,
            proto,
            "-n",
            "10",
            "-c",
            "2",
            "-m",
            "2",
            "--no-pin",
            "--method",
            "PUT",
            "--body-size",
            "3000000",
            "--out",
            &prefix_arg,
        ]);
        assert!(
            out.status.success(),
            "{proto}: {} {}",
            stdout(&out),
            stderr(&out)
        );
        let json = read_json(&common::with_ext(&prefix, "json"));
        assert_eq!(json["errors_total"], 0, "{proto}: {json}");
        assert_eq!(json["bytes_sent"], 30_000_000u64, "{proto}");
        assert_eq!(json["bytes_received"], 30_000_000u64, "{proto}");
    }
}
