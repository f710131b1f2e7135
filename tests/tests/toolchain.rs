//! The policy toolchain as an operator meets it: `matrix import`, `matrix diff`,
//! `explain` (one packet and a pcap), `export --format firewalld`, and `check` warnings.

use std::{path::PathBuf, process::Command};

use ps_agent::policy::explain::{ExplainVerdict, Explanation, Replay};
use ps_common::{frames, reason::DropReason};
use ps_tests::agent_bin;

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(agent_bin()).args(args).output().expect("run ps-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn repo(p: &str) -> String {
    format!("{}/../{p}", env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join("pst-xtool");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn import_reproduces_the_shipped_policy() {
    let out = scratch("ps.toml");
    let (code, _, err) =
        agent(&["matrix", "import", &repo("policy/testdata/ps-8.1.2-matrix.txt"), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(repo("policy/ps-8.1.2.toml")).unwrap());

    let (code, json, err) = agent(&["matrix", "import", &repo("policy/testdata/sm-like.txt"), "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 11);
    assert_eq!(rows[3]["transports"], serde_json::json!(["tcp", "udp"]));
    assert_eq!(rows[6]["ports"], serde_json::json!([[8902, 8913]]));
    assert_eq!(rows[6]["default_state"], "n/a");
    assert_eq!(rows[1]["configurable"], true);
    assert_eq!(rows[9]["ports"], serde_json::json!([]));
    assert_eq!(rows[0]["line"], 31);
    assert_eq!(rows[0]["source_port"], "Ephemeral");
}

#[test]
fn import_reports_unreadable_rows_and_fails_unless_partial() {
    let aes = repo("policy/testdata/aes-like.txt");
    let (code, out, err) = agent(&["matrix", "import", &aes]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "nothing written on failure");
    assert!(err.contains("line 23 (aes-04): protocol `ICMP` has no ports"), "{err}");
    assert!(err.contains("line 39 (aes-09): optionally enabled is `maybe`"), "{err}");
    assert!(err.contains("2 of 9 rows"), "{err}");
    let (code, out, err) = agent(&["matrix", "import", &aes, "--allow-partial"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("\n[[row]]\n").count(), 7);
    assert!(out.contains("#   line 23 (aes-04)"));
}

#[test]
fn diff_lists_port_changes() {
    let old = scratch("old.toml");
    let text = std::fs::read_to_string(repo("policy/ps-8.1.2.toml"))
        .unwrap()
        .replace("destination_port = \"18445\"", "destination_port = \"18446\"")
        .replace("id = \"ps-27\"", "id = \"ps-28\"");
    std::fs::write(&old, text).unwrap();
    // NEW is the document itself: imported on the fly.
    let (code, out, err) =
        agent(&["matrix", "diff", old.to_str().unwrap(), &repo("policy/testdata/ps-8.1.2-matrix.txt")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("changed\tps-24\t"), "{out}");
    assert!(out.contains("\tdestination_port: `18446` → `18445`"), "{out}");
    assert!(out.contains("removed\tps-28\t") && out.contains("added\tps-27\t"), "{out}");
    let (_, json, _) = agent(&["matrix", "diff", old.to_str().unwrap(), &repo("policy/ps-8.1.2.toml"), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 3);
}

#[test]
fn check_warns_about_disabled_rows_that_no_longer_exist() {
    let site = scratch("site.toml");
    std::fs::write(&site, "[rows]\ndisable = [\"ps-27\", \"ps-31\"]\n").unwrap();
    let (code, out, err) = agent(&["check", "--config", site.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("warning: ") && out.contains("field `rows.disable`: no row `ps-31`"), "{out}");
    let (_, json, _) = agent(&["check", "--config", site.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["warnings"][0].as_str().unwrap().contains("ps-31"));
    std::fs::write(&site, "[rows]\nenable = [\"ps-31\"]\n").unwrap();
    let (code, _, err) = agent(&["check", "--config", site.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no row `ps-31`") && err.contains("matrix diff"), "{err}");
}

#[test]
fn explain_one_packet() {
    let (code, out, err) = agent(&["explain", "--config", "/dev/null", "--proto", "tcp", "--dport", "5222"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("verdict: ACCEPT by rule ps-10 (inbound rule tcp/5222)"), "{out}");
    assert!(out.contains("XMPP Client connection to PS"), "{out}");
    let (_, out, _) =
        agent(&["explain", "--config", "/dev/null", "--proto", "tcp", "--dport", "7001", "--iface", "eth1"]);
    assert!(out.contains("verdict: DROP (interface)"), "{out}");
    let (_, out, _) = agent(&[
        "explain",
        "--config",
        "/dev/null",
        "--proto",
        "tcp",
        "--sport",
        "5062",
        "--dport",
        "33000",
        "--flags",
        "S",
    ]);
    // Stateful (the default): the flow table decides.
    assert!(out.contains("verdict: ACCEPT IF TRACKED by rule ps-04"), "{out}");
    let cfg = std::env::temp_dir().join("pst-explain-stateless.toml");
    std::fs::write(&cfg, "reply_tracking = \"stateless\"\n").unwrap();
    let (_, out, _) = agent(&[
        "explain",
        "--config",
        cfg.to_str().unwrap(),
        "--proto",
        "tcp",
        "--sport",
        "5062",
        "--dport",
        "33000",
        "--flags",
        "S",
    ]);
    assert!(out.contains("verdict: DROP (reply_check)"), "{out}");
    let (_, json, _) = agent(&[
        "explain",
        "--config",
        "/dev/null",
        "--proto",
        "udp",
        "--sport",
        "53",
        "--dport",
        "40000",
        "--src",
        "fd00::53",
        "--json",
    ]);
    let v: Explanation = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!((v.verdict, v.rule.as_deref()), (ExplainVerdict::AcceptIfTracked, Some("failsafe-dns")));
    let (code, _, err) =
        agent(&["explain", "--config", "/dev/null", "--proto", "tcp", "--dport", "1", "--iface", "eth7"]);
    assert_eq!(code, 1);
    assert!(err.contains("interface `eth7` is not enforced"), "{err}");
}

/// A classic big-endian pcap's file header (the reader must handle both byte orders).
fn pcap_be_header() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_be_bytes());
    b.extend_from_slice(&2u16.to_be_bytes());
    b.extend_from_slice(&4u16.to_be_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&65535u32.to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes()); // Ethernet
    b
}

/// `f` as a big-endian pcap record.
fn pcap_be_record(b: &mut Vec<u8>, f: &[u8]) {
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&(f.len() as u32).to_be_bytes());
    b.extend_from_slice(&(f.len() as u32).to_be_bytes());
    b.extend_from_slice(f);
}

/// A classic big-endian pcap of `frames`.
fn pcap_be(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut b = pcap_be_header();
    for f in frames {
        pcap_be_record(&mut b, f);
    }
    b
}

/// Peak resident memory of `cmd` (KiB), and its standard output.
#[expect(clippy::zombie_processes, reason = "wait4 reaps the child, with its resource usage")]
fn peak_rss(cmd: &mut Command) -> (u64, String) {
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().expect("spawn");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 on our own child, which no one else waits for.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let pid = libc::wait4(child.id() as i32, &mut status, 0, &mut usage);
        assert_eq!(pid, child.id() as i32, "wait4: {}", std::io::Error::last_os_error());
        usage
    };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "exit status {status}: {out}");
    (usage.ru_maxrss as u64, out)
}

#[test]
fn explain_replays_a_pcap() {
    let mut fs = Vec::new();
    for _ in 0..4 {
        fs.push(frames::frame(&[], &frames::v4(), &frames::tcp(50000, 5061, 0x10), 20));
    }
    for _ in 0..6 {
        fs.push(frames::frame(&[], &frames::v6(), &frames::udp(40000, 5060), 12));
    }
    fs.push(frames::frame(&[], &frames::v4(), &frames::tcp(50001, 7000, 0x02), 0));
    fs.push(frames::frame(&[], &frames::Net::Arp, &frames::tcp(0, 0, 0), 0));
    let path = scratch("capture.pcap");
    std::fs::write(&path, pcap_be(&fs)).unwrap();
    let (code, out, err) =
        agent(&["explain", "--config", "/dev/null", "--pcap", path.to_str().unwrap(), "--iface", "eth1"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].starts_with("!        6  udp    fd00::2") && lines[1].ends_with("drop       no_rule"), "{out}");
    assert!(lines[2].starts_with("         4  tcp    198.18.0.2") && lines[2].ends_with("accept     ps-05"), "{out}");
    assert!(out.contains("interface"), "7000 on eth1: {out}");
    assert!(out.contains("12 frames in 4 flows; 2 flows (7 packets) would be cut by the matrix"), "{out}");
    let (_, json, _) = agent(&["explain", "--config", "/dev/null", "--pcap", path.to_str().unwrap(), "--json"]);
    let v: Replay = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!((v.flows[0].packets, v.flows[0].cut), (6, true));
    std::fs::write(&path, b"not a pcap at all, just some text....").unwrap();
    let (code, _, err) = agent(&["explain", "--config", "/dev/null", "--pcap", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
}

/// Replaying a capture takes constant memory: a 300 MB pcap, far from fitting the bound.
#[test]
fn explain_replays_a_large_pcap_in_constant_memory() {
    use std::io::Write as _;
    const FRAMES: usize = 200_000;
    const BOUND_KIB: u64 = 32 << 10;
    let accepted = frames::frame(&[], &frames::v4(), &frames::tcp(50000, 443, 0x10), 1460);
    let dropped = frames::frame(&[], &frames::v6(), &frames::udp(40000, 9999), 1440);
    let path = std::env::temp_dir().join(format!("{}-large.pcap", ps_tests::prefix()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    file.write_all(&pcap_be_header()).unwrap();
    let mut chunk = Vec::new();
    for i in 0..FRAMES {
        pcap_be_record(&mut chunk, if i % 4 == 0 { &dropped } else { &accepted });
        if chunk.len() > 1 << 20 {
            file.write_all(&chunk).unwrap();
            chunk.clear();
        }
    }
    file.write_all(&chunk).unwrap();
    drop(file);
    let size = std::fs::metadata(&path).unwrap().len();
    let (kib, json) =
        peak_rss(Command::new(agent_bin()).args(["explain", "--config", "/dev/null", "--json", "--pcap"]).arg(&path));
    std::fs::remove_file(&path).unwrap();
    eprintln!("explain --pcap of {} MB: peak RSS {} KiB", size / 1_000_000, kib);
    let v: Replay = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v.frames, FRAMES as u64);
    assert_eq!((v.flows[0].why.as_str(), v.flows[0].packets), ("ps-01+ps-02", 150_000));
    assert_eq!((v.flows[1].why.as_str(), v.flows[1].packets), (DropReason::NoRule.as_str(), 50_000));
    assert!(size > 300_000_000, "{size}");
    assert!(kib < BOUND_KIB, "explain of a {size}-byte capture peaked at {kib} KiB (bound {BOUND_KIB} KiB)");
}

#[test]
fn export_firewalld_writes_zones_and_services() {
    let dir = scratch("firewalld");
    let _ = std::fs::remove_dir_all(&dir);
    let (code, _, err) =
        agent(&["export", "--format", "firewalld", "--config", "/dev/null", "-o", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let zone = std::fs::read_to_string(dir.join("zones/ps-eth0.xml")).unwrap();
    assert!(zone.contains("<zone target=\"DROP\">") && zone.contains("<service name=\"ps-agent-ps-10\"/>"));
    let svc = std::fs::read_to_string(dir.join("services/ps-agent-ps-14_ps-21.xml")).unwrap();
    assert!(svc.contains("<port protocol=\"tcp\" port=\"7001-7199\"/>"), "{svc}");
    let (code, out, _) = agent(&["export", "--format", "nftables", "--config", "/dev/null", "--iface", "ens192"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("iifname \"eth0\" tcp dport 7000 accept"),
        "management rows stay on management_interface (eth0): {out}"
    );
}
