//! Bad input gets one clear line on stderr and a non-zero exit.

mod common;

use common::{loadgen, stderr, Server};

fn assert_one_line_failure(args: &[&str], expect: &str) {
    let out = loadgen(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("loadgen: "), "{err:?}");
    assert!(err.contains(expect), "{err:?} lacks {expect:?}");
}

#[test]
fn unreachable_url() {
    let out = loadgen(&["run", "http://127.0.0.1:1/", "-n", "10"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "loadgen: cannot connect to 127.0.0.1:1: Connection refused\n"
    );
}

#[test]
fn malformed_inputs() {
    let server = Server::start(&[]);
    let url = server.url("/");
    assert_one_line_failure(
        &["run", &url, "-n", "1", "-H", "no-colon"],
        "malformed header",
    );
    assert_one_line_failure(
        &["run", &url, "-n", "1", "-H", "x: {9..1}"],
        "malformed header",
    );
    assert_one_line_failure(&["run", "http//nohost", "-n", "1"], "malformed URL");
    assert_one_line_failure(
        &["run", "https://127.0.0.1:1/", "-n", "1"],
        "https is not supported",
    );
    assert_one_line_failure(&["run", &url, "-n", "1", "-c", "0"], "--connections");
    assert_one_line_failure(&["run", &url, "-n", "1", "--h2c", "-m", "0"], "--streams");
    assert_one_line_failure(&["run", &url, "--rate", "0", "-d", "1s"], "--rate");
    assert_one_line_failure(
        &["run", &url, "-n", "1", "--h2c", "--connect-per-request"],
        "HTTP/1.1 only",
    );
    assert_one_line_failure(&["compare", "/nonexistent/a.hdr"], "cannot read");
}
