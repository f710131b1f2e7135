//! The agent as a systemd service: the readiness notifications `Type=notify` relies on
//! (sd_notify(3)), read from a datagram socket standing in for systemd's.

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use ps_tests::*;

/// A stand-in for systemd's notification socket.
struct NotifySocket {
    sock: UnixDatagram,
    path: String,
}

impl NotifySocket {
    fn bind(tag: &str) -> Self {
        let dir = scratch(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        Self { sock, path: path.to_str().unwrap().to_string() }
    }

    /// The next message (its lines), or `None` after `wait`.
    fn next(&self, wait: Duration) -> Option<Vec<String>> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).lines().map(String::from).collect())
    }
}

#[test]
fn ready_after_attach_reloading_and_stopping_are_notified() {
    let lab = Lab::new("sn1");
    let notify = NotifySocket::bind("sn1-notify");
    let env = [("NOTIFY_SOCKET", notify.path.as_str())];
    let (mut agent, ok) = Agent::spawn_with_env(&lab.ps, "sn1", &["--dry-run"], &env, Duration::from_secs(30));
    assert!(ok, "{}", agent.log_text());

    // READY=1 arrives once both interfaces are attached and the state is published.
    let ready = notify.next(Duration::from_secs(10)).unwrap_or_else(|| panic!("no READY=1:\n{}", agent.log_text()));
    assert!(ready.contains(&"READY=1".to_string()), "{ready:?}");
    assert!(ready.contains(&"STATUS=dry-run: 27 rules on eth0, eth1".to_string()), "{ready:?}");
    assert!(xdp_attached(&lab.ps, "eth0") && xdp_attached(&lab.ps, "eth1"));
    let pid = agent.state().pid; // published before READY=1

    // A reload: RELOADING=1 with the monotonic clock, then READY=1 again.
    // SAFETY: signalling the agent this test started.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let reloading = notify.next(Duration::from_secs(10)).expect("RELOADING=1");
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    let usec: u64 = reloading
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("MONOTONIC_USEC with RELOADING=1: {reloading:?}"));
    assert!(usec > 0);
    let again = notify.next(Duration::from_secs(10)).expect("READY=1 after the reload");
    assert!(again.contains(&"READY=1".to_string()) && again.iter().any(|l| l.starts_with("STATUS=reloaded: 27 rules")));

    // SIGTERM: STOPPING=1 before the agent detaches.
    assert_eq!(agent.stop(), Some(0));
    let stopping = notify.next(Duration::from_secs(5)).expect("STOPPING=1");
    assert_eq!(stopping, ["STOPPING=1"]);
}

#[test]
fn a_failed_start_never_says_ready() {
    let lab = Lab::new("sn2");
    let notify = NotifySocket::bind("sn2-notify");
    let env = [("NOTIFY_SOCKET", notify.path.as_str())];
    let t0 = Instant::now();
    let (mut agent, ok) =
        Agent::spawn_with_env(&lab.ps, "sn2", &["--iface", "eth0", "--iface", "nope0"], &env, Duration::from_secs(30));
    assert!(!ok, "an interface that does not exist fails the start");
    assert_eq!(agent.stop(), Some(1), "{}", agent.log_text());
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(notify.next(Duration::from_millis(300)), None, "no READY=1: systemctl start fails");
    assert!(!xdp_attached(&lab.ps, "eth0"), "nothing stays attached");
}
