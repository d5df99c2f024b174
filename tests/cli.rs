//! The command line: `rtun validate` on the shipped and on broken configurations, `rtun demo --check`,
//! and the environment every command runs with (glibc's per-thread cache, `src/malloc_cache.rs`).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn validate(path: &std::path::Path) -> Output {
    Command::new(RTUN)
        .args(["validate", "-c"])
        .arg(path)
        .env("NO_COLOR", "1")
        .output()
        .expect("run rtun validate")
}

#[test]
fn validate_accepts_every_shipped_config() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no configs in {}", dir.display());
    for f in files {
        let out = validate(&f);
        assert!(
            out.status.success(),
            "rtun validate rejected {}:\n{}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("OK"), "{}: {stdout}", f.display());
    }
}

#[test]
fn validate_rejects_malformed_files_with_location() {
    let dir = TempDir::new("validate-bad");
    // (file contents, line and column expected in the diagnostic, a word the message must name)
    let cases: &[(&str, &str, usize, Option<usize>, &str)] = &[
        (
            "unknown-key.yaml",
            "shards: 1\nresponder:\n  tunnel_listener:\n    listen: 127.0.0.1:1\n    bogus_key: 3\n  egress_listener:\n    listen: 127.0.0.1:2\n",
            5,
            Some(5),
            "bogus_key",
        ),
        (
            "bad-rc.yaml",
            "clusters:\n  app: { endpoints: [\"127.0.0.1:1\"] }\n  resp: { endpoints: [\"127.0.0.1:2\"] }\ninitiator:\n  tunnels: [\"rc://only-node@resp:1\"]\n  routes: [{ prefix: /, cluster: app }]\n",
            5,
            None,
            "rc://only-node@resp:1",
        ),
        (
            "bad-duration.yaml",
            "responder:\n  tunnel_listener:\n    listen: 127.0.0.1:1\n    ping_interval: soon\n  egress_listener:\n    listen: 127.0.0.1:2\n",
            4,
            None,
            "soon",
        ),
        (
            "bad-yaml.yaml",
            "responder:\n  tunnel_listener: [unclosed\n",
            0,
            None,
            "",
        ),
    ];
    for (name, contents, line, column, word) in cases {
        let path = dir.write(name, contents);
        let out = validate(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{name} accepted:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // FILE:LINE:COLUMN
        let file = path.display().to_string();
        let located = stderr.lines().find_map(|l| {
            let rest = l.split_once(&format!("{file}:"))?.1;
            let mut it = rest.splitn(3, ':');
            let ln: usize = it.next()?.parse().ok()?;
            let col: usize = it.next()?.parse().ok()?;
            Some((ln, col))
        });
        let (ln, col) =
            located.unwrap_or_else(|| panic!("{name}: no {file}:LINE:COLUMN in stderr:\n{stderr}"));
        if *line > 0 {
            assert_eq!(ln, *line, "{name}: wrong line in\n{stderr}");
        }
        if let Some(c) = column {
            assert_eq!(col, *c, "{name}: wrong column in\n{stderr}");
        }
        assert!(
            stderr.contains(word),
            "{name}: message does not name {word:?}:\n{stderr}"
        );
    }
    // A missing file is an error too, not a panic.
    let out = validate(&dir.join("does-not-exist.yaml"));
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn demo_check_passes() {
    let started = Instant::now();
    let mut child = Command::new(RTUN)
        .args(["demo", "--check"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run rtun demo --check");
    let ok = wait_until(Duration::from_secs(30), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !ok {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        ok,
        "rtun demo --check still running after {:?}",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "rtun demo --check failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `GLIBC_TUNABLES` that `rtun service` runs with, started with `tunables` (`None`: unset),
/// and whether it was executed again (`RTUN_GLIBC_TUNABLES_SET`). Read from
/// `/proc/PID/environ` of the process `Command` started: `exec` keeps the pid. glibc ends each
/// tunable it parsed with a NUL there (the `:` between two is overwritten), so the tunables
/// are the entries from `GLIBC_TUNABLES=` on that look like one.
fn running_tunables(tunables: Option<&str>) -> (String, bool) {
    let port = common::port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new(RTUN);
    command
        .args(["service", "--listen", &listen, "--name", "env"])
        .env("NO_COLOR", "1")
        .env_remove("RTUN_GLIBC_TUNABLES_SET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    match tunables {
        Some(t) => command.env("GLIBC_TUNABLES", t),
        None => command.env_remove("GLIBC_TUNABLES"),
    };
    let mut child = command.spawn().expect("run rtun service");
    let up = common::wait_for_port(port, Duration::from_secs(10));
    let environ = std::fs::read(format!("/proc/{}/environ", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "rtun service did not listen on {listen}");
    let environ = environ.expect("read the process's environment");
    let entries: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let reexecuted = entries.iter().any(|e| e == "RTUN_GLIBC_TUNABLES_SET=1");
    let Some(start) = entries
        .iter()
        .position(|e| e.starts_with("GLIBC_TUNABLES="))
    else {
        return (String::new(), reexecuted);
    };
    let mut list = vec![entries[start]["GLIBC_TUNABLES=".len()..].to_owned()];
    list.extend(
        entries[start + 1..]
            .iter()
            .take_while(|e| e.starts_with("glibc."))
            .cloned(),
    );
    (list.join(":"), reexecuted)
}

#[test]
fn glibcs_per_thread_cache_is_sized_once_and_an_operators_setting_wins() {
    assert_eq!(
        running_tunables(None),
        ("glibc.malloc.tcache_count=64".into(), true)
    );
    assert_eq!(
        running_tunables(Some("glibc.malloc.mxfast=0")),
        (
            "glibc.malloc.mxfast=0:glibc.malloc.tcache_count=64".into(),
            true
        )
    );
    assert_eq!(
        running_tunables(Some("glibc.malloc.tcache_count=7")),
        ("glibc.malloc.tcache_count=7".into(), false)
    );
}
