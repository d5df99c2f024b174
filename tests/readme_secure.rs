//! README "Securing rtun" works as written: the `sh` block after `<!-- securing-example -->` is
//! taken from README.md byte for byte and run with `bash -euo pipefail` in a fresh directory,
//! with `RTUN` pointing at the built binary and free ports in the variables the script reads.
//! It must exit 0 within 60 s, the service's answer, the 401 and the two 503s must be in its
//! output, and so must the lines of the README's "The end of its output" block, in order.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Runs `script` with `bash -euo pipefail` in `dir`, killing its whole process group after
/// `TIMEOUT`. Returns the exit code (None when it timed out), whether processes it started
/// were still alive after it ended, and its stdout and stderr interleaved.
fn run_script(dir: &TempDir, script: &str, env: &[(&str, String)]) -> (Option<i32>, bool, String) {
    let path = dir.write("secure.sh", script);
    let log = dir.join("script.out");
    let out = fs::File::create(&log).expect("create output file");
    let err = out.try_clone().unwrap();
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail"])
        .arg(&path)
        .current_dir(dir.path())
        .env("RTUN", RTUN)
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .expect("run bash");
    let pgid = child.id() as i32;
    let deadline = Instant::now() + TIMEOUT;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The script's trap stops what it started; anything left in its process group is killed.
    // SAFETY: signal 0 to the process group this test created only probes for members.
    let leftover = code.is_some() && unsafe { libc::kill(-pgid, 0) } == 0;
    // SAFETY: SIGKILL to the process group this test created (the script and its children).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    (code, leftover, fs::read_to_string(&log).unwrap_or_default())
}

/// True when `expected` occur in `lines` in this order. A `/tunnels` line (`tenant/host total
/// [per shard]`) is compared by its host only: how many of the two tunnels are up when the
/// script lists them is a race the README does not promise.
fn in_order(lines: &[&str], expected: &[&str]) -> Result<(), String> {
    let key = |l: &str| -> String {
        if l.starts_with("acme/") {
            l.split_whitespace().next().unwrap_or("").to_owned()
        } else {
            l.trim_end().to_owned()
        }
    };
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
