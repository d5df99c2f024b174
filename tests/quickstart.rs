//! README "Running it" works as written: the `sh` block after `<!-- running-it -->` is taken
//! from README.md byte for byte and run with `bash -euo pipefail` in a fresh directory holding
//! copies of the `config/` files it names, with `rtun` on the `PATH` (the built binary). Every
//! `127.0.0.1:PORT` in the block and in those files is moved to a free port, the same one in
//! both, so the test runs next to anything else on the machine; nothing else is changed. The
//! script must exit 0, print the lines of the README's "The curls print" block in order, list
//! the tunnels, and leave every process it started stopped after a drain.

mod common;

use std::collections::BTreeMap;
use std::fs;

use std::time::Duration;

use common::*;

const MARKER: &str = "<!-- running-it -->";
const TIMEOUT: Duration = Duration::from_secs(90);

fn readme() -> String {
    fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read README.md")
}

/// The body of the first ```` ```{lang} ```` block at or after byte `from`, and the byte just
/// past its closing fence.
fn fenced_block(text: &str, from: usize, lang: &str) -> (String, usize) {
    let fence = format!("```{lang}\n");
    let open = text[from..]
        .find(&fence)
        .unwrap_or_else(|| panic!("no {fence:?} block after byte {from} of README.md"));
    let body_start = from + open + fence.len();
    let close = text[body_start..]
        .find("\n```\n")
        .expect("the block is not closed");
    (
        text[body_start..body_start + close + 1].to_owned(),
        body_start + close + 5,
    )
}

/// Every `127.0.0.1:PORT` in `text`, as the `PORT` strings.
fn loopback_ports(text: &str) -> Vec<String> {
    const PREFIX: &str = "127.0.0.1:";
    text.match_indices(PREFIX)
        .filter_map(|(at, _)| {
            let digits: String = text[at + PREFIX.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            (!digits.is_empty()).then_some(digits)
        })
        .collect()
}

/// `text` with each `127.0.0.1:OLD` replaced by `127.0.0.1:NEW` (whole port numbers only).
fn move_ports(text: &str, ports: &BTreeMap<String, u16>) -> String {
    const PREFIX: &str = "127.0.0.1:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        let after = at + PREFIX.len();
        let digits = rest[after..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - after);
        let old = &rest[after..after + digits];
        out.push_str(&rest[..after]);
        match ports.get(old) {
            Some(new) => out.push_str(&new.to_string()),
            None => out.push_str(old),
        }
        rest = &rest[after + digits..];
    }
    out.push_str(rest);
    out
}

/// The `config/*.yaml` paths the script names.
fn config_files(script: &str) -> Vec<String> {
    let mut files: Vec<String> = script
        .split_whitespace()
        .filter(|w| w.starts_with("config/") && w.ends_with(".yaml"))
        .map(str::to_owned)
        .collect();
    files.sort();
    files.dedup();
    files
}

#[test]
fn the_running_it_walk_through_runs_as_written() {
    let text = readme();
    let at = text
        .find(MARKER)
        .unwrap_or_else(|| panic!("README.md has no `{MARKER}` line"));
    assert!(
        text[at + MARKER.len()..].starts_with("\n```sh\n"),
        "the line after `{MARKER}` must open the walk-through's ```sh block"
    );
    let (script, end) = fenced_block(&text, at, "sh");
    let (expected, _) = fenced_block(&text, end, "");

    let files = config_files(&script);
    assert!(
        files.contains(&"config/responder.yaml".to_owned())
            && files.contains(&"config/initiator.yaml".to_owned()),
        "the walk-through should run config/responder.yaml and config/initiator.yaml: {files:?}"
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let configs: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let body = fs::read_to_string(repo.join(f))
                .unwrap_or_else(|e| panic!("the walk-through names {f}: {e}"));
            (f.clone(), body)
        })
        .collect();

    // One free port for every loopback port the script and the files use.
    let mut ports = BTreeMap::new();
    for p in loopback_ports(&script)
        .into_iter()
        .chain(configs.iter().flat_map(|(_, b)| loopback_ports(b)))
    {
        ports.entry(p).or_insert_with(port);
    }
    for wanted in ["8080", "8085", "9000", "9901", "9902"] {
        assert!(
            ports.contains_key(wanted),
            "127.0.0.1:{wanted} is in neither the walk-through nor its files: {ports:?}"
        );
    }

    let dir = TempDir::new("quickstart");
    fs::create_dir_all(dir.join("config")).unwrap();
    for (f, body) in &configs {
        dir.write(f, move_ports(body, &ports));
    }
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(RTUN, bin.join("rtun")).expect("link rtun");
    let script_path = dir.write("running-it.sh", move_ports(&script, &ports));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let run = common::script::run_bash(dir.path(), &script_path, &[("PATH", path)], TIMEOUT);
    let (code, leftover, output) = (run.code, run.leftover, run.output);
    let logs: String = ["service", "responder", "initiator"]
        .iter()
        .map(|n| {
            format!(
                "----- {n}.log -----\n{}",
                fs::read_to_string(dir.join(&format!("{n}.log"))).unwrap_or_default()
            )
        })
        .collect();
    let show = || format!("----- script output -----\n{output}{logs}----- end -----");

    assert_eq!(
        code,
        Some(0),
        "the walk-through failed (None: still running after {TIMEOUT:?})\n{}",
        show()
    );
    // What the README says the curls print, in this order.
    let mut lines = output.lines();
    for want in expected.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            lines.by_ref().any(|l| l.trim_end() == want),
            "line {want:?} of the README's output block is not in the output (in order)\n{}",
            show()
        );
    }
    // /tunnels names the node and the cluster.
    for id in ["edge-42", "edge-west"] {
        assert!(
            output.contains(id),
            "/tunnels does not list {id}\n{}",
            show()
        );
    }
    assert!(
        !leftover,
        "processes still running after `wait`\n{}",
        show()
    );
    // `kill` is SIGTERM: both roles drained and stopped cleanly.
    for role in ["responder", "initiator"] {
        let log = fs::read_to_string(dir.join(&format!("{role}.log"))).unwrap_or_default();
        assert!(
            log.contains("SIGTERM: draining") && log.contains("stopped"),
            "{role} did not drain and stop on SIGTERM\n{}",
            show()
        );
    }
}

#[test]
fn ports_move_whole_numbers_only() {
    let ports = BTreeMap::from([("80".to_owned(), 1234u16), ("9000".to_owned(), 2345)]);
    assert_eq!(
        move_ports(
            "a 127.0.0.1:80 b 127.0.0.1:8080 c 127.0.0.1:9000/x 10.0.0.1:80 127.0.0.1:",
            &ports
        ),
        "a 127.0.0.1:1234 b 127.0.0.1:8080 c 127.0.0.1:2345/x 10.0.0.1:80 127.0.0.1:"
    );
    assert_eq!(
        loopback_ports("x 127.0.0.1:80, 127.0.0.1:9000\"] 127.0.0.1:"),
        vec!["80".to_owned(), "9000".to_owned()]
    );
}
