//! README "Securing rtun" works as written: the `sh` block after `<!-- securing-example -->` is
//! taken from README.md byte for byte and run with `bash -euo pipefail` in a fresh directory,
//! with `RTUN` pointing at the built binary and free ports in the variables the script reads.
//! It must exit 0 within 60 s, the service's answer, the 401 and the two 503s must be in its
//! output, and so must the lines of the README's "The end of its output" block, in order.

mod common;

use std::fs;

use std::time::Duration;

use common::*;

const MARKER: &str = "<!-- securing-example -->";
const TIMEOUT: Duration = Duration::from_secs(60);

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    fs::read_to_string(path).expect("read README.md")
}

/// The body of the first fenced block starting at or after byte `from` whose fence line is
/// `fence`, and the byte offset just past its closing fence.
fn fenced_block(text: &str, from: usize, fence: &str) -> (String, usize) {
    let rest = &text[from..];
    let open = rest
        .find(&format!("{fence}\n"))
        .unwrap_or_else(|| panic!("no `{fence}` block after byte {from} of README.md"));
    let body_start = from + open + fence.len() + 1;
    let close = text[body_start..]
        .find("\n```\n")
        .expect("the block is not closed");
    let body = &text[body_start..body_start + close + 1];
    (body.to_owned(), body_start + close + 5)
}

/// The example script: the `sh` block right after the marker line.
fn example(text: &str) -> (String, usize) {
    let at = text
        .find(MARKER)
        .unwrap_or_else(|| panic!("README.md has no `{MARKER}` line"));
    let after = at + MARKER.len();
    assert!(
        text[after..].starts_with("\n```sh\n"),
        "the line after `{MARKER}` must open the example's ```sh block"
    );
    fenced_block(text, after, "```sh")
}

/// Runs `script` in `dir` (`common::script::run_bash`, with `$RTUN` set).
fn run_script(dir: &TempDir, script: &str, env: &[(&str, String)]) -> (Option<i32>, bool, String) {
    let path = dir.write("secure.sh", script);
    let mut env = env.to_vec();
    env.push(("RTUN", RTUN.to_owned()));
    let run = common::script::run_bash(dir.path(), &path, &env, TIMEOUT);
    (run.code, run.leftover, run.output)
}

/// True when `expected` occur in `lines` in this order, compared with their runs of spaces as
/// one (a table's column widths follow its contents). In the `/tunnels` tables, a tunnel's row
/// (it starts with its id: its port, bytes and age change with every run) is not compared,
/// the tables' titles are compared without their counts, and a host's row (`acme host
/// tunnels per-shard`) by its tenant and host only: how many of the two tunnels are up when
/// the script lists them is a race the README does not promise.
fn in_order(lines: &[&str], expected: &[&str]) -> Result<(), String> {
    let key = |l: &str| -> String {
        let words: Vec<&str> = l.split_whitespace().collect();
        match words.as_slice() {
            [role, table, _count] if l.ends_with("):") && *table != "==" => {
                format!("{role} {table}:")
            }
            ["acme", host, ..] => format!("acme {host}"),
            _ => words.join(" "),
        }
    };
    let tunnel_row = |l: &&&str| -> bool {
        l.split_whitespace()
            .next()
            .is_some_and(|id| id.parse::<u64>().is_ok())
    };
    let expected: Vec<&&str> = expected.iter().filter(|l| !tunnel_row(l)).collect();
    let mut it = lines.iter();
    for want in expected {
        let want_key = key(want);
        if !it.by_ref().any(|l| key(l) == want_key) {
            return Err(format!("line {want:?} not found (in this order)"));
        }
    }
    Ok(())
}

#[test]
fn the_securing_example_runs_as_written() {
    let text = readme();
    let (script, end) = example(&text);
    let (expected_tail, _) = fenced_block(&text, end, "```");

    let dir = TempDir::new("readme-secure");
    let env = [
        ("TUNNEL_PORT", port().to_string()),
        ("EGRESS_PORT", port().to_string()),
        ("ADMIN_PORT", port().to_string()),
        ("INITIATOR_ADMIN_PORT", port().to_string()),
        ("SERVICE_PORT", port().to_string()),
    ];
    let (code, leftover, output) = run_script(&dir, &script, &env);
    let show = || format!("----- script output -----\n{output}----- end of script output -----");

    assert_eq!(
        code,
        Some(0),
        "the README example failed (None: still running after {TIMEOUT:?})\n{}",
        show()
    );
    for needle in [
        "== acme's key, node edge-1:\nHello from the service behind the initiator: GET /hello\n",
        "== no key:\nUnauthenticated: Missing API key: send the `x-rtun-api-key` header\nHTTP 401\n",
        "== globex's key, acme's node edge-1:\nNo tunnel for host id 'edge-1'\nHTTP 503\n",
        "No tunnel for host id 'edge-9'\nHTTP 503\n",
        "    TLS: on (client certificates required)\n",
        "    tenant isolation: on, API keys (2) in header x-rtun-api-key\n",
    ] {
        assert!(
            output.contains(needle),
            "the output lacks {needle:?}\n{}",
            show()
        );
    }
    // The output the README shows is the output the script prints.
    let expected: Vec<&str> = expected_tail
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "…")
        .collect();
    assert!(
        expected.len() >= 10,
        "the README's expected output block after the example looks wrong: {expected:?}"
    );
    let lines: Vec<&str> = output.lines().collect();
    if let Err(e) = in_order(&lines, &expected) {
        panic!(
            "the README's \"end of its output\" does not match what the script printed: {e}\n{}",
            show()
        );
    }
    assert!(
        !leftover,
        "processes the script started were still running after it ended (its trap should stop \
         them)\n{}",
        show()
    );
}
