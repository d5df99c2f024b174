//! `loadgen compare` on files written by real runs: the table and the SVG plot.

mod common;

use common::{loadgen, stderr, stdout, Server};

#[test]
fn compare_prints_table_and_writes_svg() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url("/");
    for (name, proto) in [("direct-h1", "--http1"), ("direct-h2c", "--h2c")] {
        let prefix = dir.path().join(name).to_string_lossy().into_owned();
        let out = loadgen(&[
            "run", &url, "-n", "500", "-c", "2", proto, "--no-pin", "--out", &prefix,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let a = dir
        .path()
        .join("direct-h1.hdr")
        .to_string_lossy()
        .into_owned();
    let b = dir
        .path()
        .join("direct-h2c.hgrm")
        .to_string_lossy()
        .into_owned();
    let svg = dir.path().join("cmp.svg");
    let svg_arg = svg.to_string_lossy().into_owned();
    let out = loadgen(&["compare", &a, &b, "--plot", &svg_arg]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text} {}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("direct-h1") && lines[0].contains("direct-h2c"),
        "{text}"
    );
    for label in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(label))
            .unwrap_or_else(|| panic!("no {label} row in {text}"));
        assert!(row.contains("(x"), "no ratio in {row}");
    }
    let body = std::fs::read_to_string(&svg).expect("svg written");
    assert!(body.starts_with("<svg"), "{}", &body[..60.min(body.len())]);
    assert!(body.contains("direct-h1") && body.contains("direct-h2c"));
    assert!(body.contains("99.9%"));
}
