//! Runs a README block as a script, the way a reader pastes it: `bash -euo pipefail` in its
//! own process group, bounded by a deadline, with whatever it left running killed.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a script run ended.
pub struct ScriptRun {
    /// The exit code; `None` when it was still running at the deadline.
    pub code: Option<i32>,
    /// Whether processes it started were still alive after it ended (its own cleanup failed).
    pub leftover: bool,
    /// Its stdout and stderr, interleaved.
    pub output: String,
}

/// Runs `script` in `dir` with `env` added, killing its whole process group after `timeout`.
pub fn run_bash(dir: &Path, script: &Path, env: &[(&str, String)], timeout: Duration) -> ScriptRun {
    let log = dir.join("script.out");
    let out = fs::File::create(&log).expect("create output file");
    let err = out.try_clone().expect("clone output file");
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail"])
        .arg(script)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .expect("run bash");
    let pgid = child.id() as i32;
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The script stops what it started; anything still in its process group is a leak.
    // SAFETY: signal 0 to the process group this test created only probes for members.
    let leftover = code.is_some() && unsafe { libc::kill(-pgid, 0) } == 0;
    // SAFETY: SIGKILL to the process group this test created (the script and its children).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    ScriptRun {
        code,
        leftover,
        output: fs::read_to_string(&log).unwrap_or_default(),
    }
}
