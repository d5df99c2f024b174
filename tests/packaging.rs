//! contrib/: the systemd unit passes `systemd-analyze verify` without a warning (through
//! contrib/verify-unit.sh, as CI runs it, against the built binary) and keeps its hardening.

mod common;

use std::process::Command;

use common::*;

const UNIT: &str = include_str!("../contrib/rtun.service");

#[test]
fn systemd_unit_verifies_cleanly() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/verify-unit.sh");
    let out = Command::new(script)
        .arg(RTUN)
        .output()
        .expect("run contrib/verify-unit.sh (needs systemd-analyze: apt-get install systemd)");
    assert!(
        out.status.success(),
        "contrib/verify-unit.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_keeps_its_hardening() {
    let lines: Vec<&str> = UNIT.lines().map(str::trim).collect();
    for directive in [
        "ExecStartPre=/usr/local/bin/rtun validate -c /etc/rtun/rtun.yaml",
        "ExecStart=/usr/local/bin/rtun run -c /etc/rtun/rtun.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "User=rtun",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "LimitNOFILE=1048576",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service io_uring_setup io_uring_enter io_uring_register",
        "Restart=on-failure",
    ] {
        assert!(
            lines.contains(&directive),
            "contrib/rtun.service lacks `{directive}`"
        );
    }
    // The stop timeout outlasts the default drain_timeout (10s).
    let stop = lines
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec");
    let secs: u64 = stop
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        secs > 10,
        "TimeoutStopSec={stop} is not above drain_timeout's default"
    );
}
