//! The fleet view in the lab: Debian's Prometheus on the operator's station, scraping every
//! node's metrics with the shipped rules, and a small client of its HTTP API.
//!
//! The rules' `for:` durations are cut to seconds in the lab's copy, so an alert fires
//! within the test; what the rules say is the shipped file's (its own `promtool test
//! rules` cases cover the durations).

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::lab::{self, Lab};

/// Where Prometheus listens, on the operator's station.
pub fn listen() -> SocketAddr {
    SocketAddr::from((lab::addr(lab::OPS), 9090))
}

/// The shipped rules file.
pub fn rules_file(root: &Path) -> PathBuf {
    root.join("packaging/prometheus/ps-agent.rules.yml")
}

/// The scrape config of the lab: the site's, with every node a static target labelled
/// with its cluster and node name.
pub fn config(lab: &Lab, rules: &Path) -> String {
    let mut targets = String::new();
    for n in &lab.nodes {
        targets.push_str(&format!(
            "      - targets: ['{}:9487']\n        labels: {{cluster: lab, node: {}}}\n",
            n.addr, n.name
        ));
    }
    format!(
        "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: ps-agent\n    scrape_timeout: 1s\n    static_configs:\n{targets}",
        rules.display()
    )
}

/// `for: 10m` → `for: 4s`: the lab's copy of the rules fires within seconds.
pub fn quick_rules(text: &str) -> String {
    text.lines()
        .map(|l| match l.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 4s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Start Prometheus (unpacked under target/fleet/prometheus) in the bridge's namespace.
pub fn start(lab: &Lab, bin: &Path, rules: &Path) -> anyhow::Result<Child> {
    let text = fs::read_to_string(rules)
        .with_context(|| format!("failed to read the rules {} (the package ships them)", rules.display()))?;
    let lab_rules = lab.dir.join("rules.yml");
    fs::write(&lab_rules, quick_rules(&text))?;
    let cfg = lab.dir.join("prometheus.yml");
    fs::write(&cfg, config(lab, &lab_rules))?;
    let log = fs::File::create(lab.dir.join("prometheus.log"))?;
    let child = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.lan()))
        .arg(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", lab.dir.join("prometheus-data").display()))
        .arg(format!("--web.listen-address={}", listen()))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("failed to start prometheus")?;
    lab::wait_tcp(&lab.lan(), listen(), 30).context("prometheus did not come up (see prometheus.log)")?;
    Ok(child)
}

/// GET `path` from Prometheus; the JSON body's `data`.
pub fn get(lab: &Lab, path: &str) -> anyhow::Result<Value> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", listen());
    let body = lab::in_ns(&lab.lan(), move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&listen(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(req.as_bytes())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    })??;
    let json = body.split_once("\r\n\r\n").map(|(_, b)| b).context("no HTTP body from prometheus")?;
    let v: Value = serde_json::from_str(json).with_context(|| format!("prometheus answered: {json}"))?;
    if v["status"] != "success" {
        bail!("prometheus: {}", v["error"]);
    }
    Ok(v["data"].clone())
}

/// An instant query's vector: (labels, value) per series.
pub fn query(lab: &Lab, q: &str) -> anyhow::Result<Vec<(Value, f64)>> {
    let data = get(lab, &format!("/api/v1/query?query={}", encode(q)))?;
    let rows = data["result"].as_array().cloned().unwrap_or_default();
    Ok(rows
        .into_iter()
        .map(|r| {
            let v = r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
            (r["metric"].clone(), v)
        })
        .collect())
}

/// The alerts now firing: (name, labels).
pub fn firing(lab: &Lab) -> anyhow::Result<Vec<(String, Value)>> {
    let data = get(lab, "/api/v1/alerts")?;
    Ok(data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .map(|a| (a["labels"]["alertname"].as_str().unwrap_or("").to_string(), a["labels"].clone()))
        .collect())
}

/// Wait until `done` holds for the firing alerts; the last list seen either way.
pub fn wait_alerts(
    lab: &Lab,
    secs: u64,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> anyhow::Result<(bool, Vec<(String, Value)>)> {
    let t0 = Instant::now();
    loop {
        let now = firing(lab)?;
        if done(&now) {
            return Ok((true, now));
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            return Ok((false, now));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Percent-encode a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_within_seconds_in_the_lab() {
        let text = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 10m\n";
        let q = quick_rules(text);
        assert!(q.contains("        for: 4s") && !q.contains("10m"), "{q}");
        assert_eq!(q.lines().count(), text.lines().count());
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(encode("up{job=\"x\"} == 0"), "up%7Bjob%3D%22x%22%7D%20%3D%3D%200");
    }
}
