//! README "Benchmarking": the `sh` block after `<!-- loadgen-example -->` runs as written
//! against `rtun demo`. The block is taken from README.md byte for byte and run with `bash -euo
//! pipefail` in a fresh directory, with the built `loadgen` and `rtun` first on the `PATH`. It
//! must exit 0 (each `loadgen run` exits non-zero on any failed request), the swarm must have
//! registered every node, and the comparison and its plot must be written.
//!
//! `rtun` is the binary next to `loadgen` in the target directory: `cargo test --workspace`
//! builds both (alone: `cargo build --bin rtun` first). The demo listens on fixed ports
//! (18080, 18085, 19000, 19901), so this is the only test here that runs it.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MARKER: &str = "<!-- loadgen-example -->";
const TIMEOUT: Duration = Duration::from_secs(120);

/// The `sh` block right after the marker line.
fn example() -> String {
    let text = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let at = text
        .find(MARKER)
        .unwrap_or_else(|| panic!("README.md has no `{MARKER}` line"));
    let rest = text[at + MARKER.len()..]
        .strip_prefix("\n```sh\n")
        .unwrap_or_else(|| panic!("the line after `{MARKER}` must open a ```sh block"));
    let end = rest.find("\n```\n").expect("the block is not closed");
    rest[..end + 1].to_owned()
}

#[test]
fn the_readme_loadgen_example_runs_against_the_demo() {
    let script = example();
    let loadgen = Path::new(common::BIN);
    let rtun = loadgen.with_file_name("rtun");
    assert!(
        rtun.exists(),
        "{} is missing: build it first (`cargo build --bin rtun`; `cargo test --workspace` does)",
        rtun.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(loadgen, bin.join("loadgen")).unwrap();
    std::os::unix::fs::symlink(&rtun, bin.join("rtun")).unwrap();
    let script_path = dir.path().join("example.sh");
    fs::write(&script_path, &script).unwrap();
    let log = dir.path().join("script.out");
    let out = fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail"])
        .arg(&script_path)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .expect("run bash");
    let pgid = child.id();
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
    // Whatever the script left behind (it should have stopped everything) is killed.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let output = fs::read_to_string(&log).unwrap_or_default();
    let demo = fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    let show = || {
        format!("----- script output -----\n{output}----- demo.log -----\n{demo}----- end -----")
    };
    assert_eq!(
        code,
        Some(0),
        "the README's loadgen example failed (None: still running after {TIMEOUT:?})\n{}",
        show()
    );
    assert!(
        output.contains("swarm: 100/100 tunnels connected"),
        "the swarm did not register all its nodes\n{}",
        show()
    );
    assert_eq!(
        output.matches("errors      0 (").count(),
        2,
        "two runs without errors expected\n{}",
        show()
    );
    for file in ["run-a.hdr", "run-b.hdr", "ab.svg"] {
        assert!(
            dir.path().join(file).exists(),
            "{file} was not written\n{}",
            show()
        );
    }
}
