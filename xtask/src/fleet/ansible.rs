//! Ansible in the lab: the inventory of the three hosts, and playbook runs from the
//! operator's station, read back from ansible-core's default output as a per-host recap
//! with the changed and failed tasks (the JSON callback is not part of ansible-core).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::lab::{self, Lab};

/// Where the ps_agent role and its playbooks live.
pub fn role_dir(root: &Path) -> PathBuf {
    root.join("packaging/ansible")
}

/// Seconds an unconfirmed enforce lasts in the lab (short, so a lock-out reverts quickly).
pub const CONFIRM_WITHIN: u64 = 40;
/// Seconds the role's fresh connection may take in the lab.
pub const RECONNECT_TIMEOUT: u64 = 15;

/// How the role puts ps-agent on the hosts.
#[derive(Clone, Debug)]
pub enum Install {
    /// A .deb on the controller.
    Package(PathBuf),
    /// A bare binary, through `ps-agent install`.
    Binary(PathBuf),
}

/// The cluster's variables, as an operator writes them (docs/cluster.md shows the same).
pub fn group_vars(lab: &Lab, install: &Install) -> Value {
    let mut v = json!({
        "ansible_user": "root",
        "ansible_ssh_private_key_file": lab.key(),
        "ansible_python_interpreter": "/usr/bin/python3",
        "ps_agent_session_managers": [lab::addr(lab::SM).to_string()],
        "ps_agent_interfaces": ["eth0"],
        "ps_agent_confirm_within": CONFIRM_WITHIN,
        "ps_agent_reconnect_timeout": RECONNECT_TIMEOUT,
    });
    match install {
        Install::Package(p) => {
            v["ps_agent_install_from"] = json!("package");
            v["ps_agent_package_file"] = json!(p);
        }
        Install::Binary(p) => {
            v["ps_agent_install_from"] = json!("binary");
            v["ps_agent_binary_file"] = json!(p);
        }
    }
    v
}

/// Write an inventory (JSON, which the YAML inventory plugin reads): the `ps_cluster` group
/// with `vars`, and per-host variables on top.
pub fn inventory(lab: &Lab, name: &str, vars: &Value, host_vars: &BTreeMap<&str, Value>) -> anyhow::Result<PathBuf> {
    let mut hosts = serde_json::Map::new();
    for n in &lab.nodes {
        let mut h = json!({"ansible_host": n.addr.to_string()});
        if let Some(Value::Object(extra)) = host_vars.get(n.name.as_str()) {
            for (k, v) in extra {
                h[k] = v.clone();
            }
        }
        hosts.insert(n.name.clone(), h);
    }
    let inv = json!({"ps_cluster": {"hosts": hosts, "vars": vars}});
    let path = lab.dir.join(format!("inventory-{name}.json"));
    fs::write(&path, serde_json::to_string_pretty(&inv)?)?;
    Ok(path)
}

/// One host's line of the play recap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Tasks that reported a change.
    pub changed: u64,
    /// Failed tasks.
    pub failures: u64,
    /// Lost connections.
    pub unreachable: u64,
    /// Tasks run (ok includes changed).
    pub ok: u64,
}

/// A playbook run.
pub struct Run {
    /// ansible-playbook's exit status was 0.
    pub success: bool,
    /// The recap per host; a host the run never reached is absent.
    pub stats: BTreeMap<String, HostStats>,
    /// "host: task: message" of every failed or unreachable task.
    pub failed: Vec<String>,
    /// Every task result that reported a change, "host: task".
    pub changes: Vec<String>,
}

impl Run {
    /// Hosts with at least one change.
    pub fn changed_hosts(&self) -> Vec<&str> {
        self.stats.iter().filter(|(_, s)| s.changed > 0).map(|(h, _)| h.as_str()).collect()
    }
}

/// Run `playbook` (relative to packaging/ansible/playbooks) against `inventory` from the
/// operator's station; `label` names the saved JSON output under the lab's directory.
pub fn playbook(
    root: &Path,
    lab: &Lab,
    label: &str,
    playbook: &str,
    inventory: &Path,
    extra: &[&str],
) -> anyhow::Result<Run> {
    let home = lab.dir.join("ansible");
    fs::create_dir_all(home.join("cp"))?;
    let bin = root.join("target/fleet/venv/bin/ansible-playbook");
    eprintln!("[fleet] ansible-playbook {playbook} {} ({label})", extra.join(" "));
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.lan()))
        .arg(&bin)
        .arg("-i")
        .arg(inventory)
        .arg(role_dir(root).join("playbooks").join(playbook))
        .args(extra)
        .env("ANSIBLE_ROLES_PATH", role_dir(root).join("roles"))
        .env("ANSIBLE_STDOUT_CALLBACK", "default")
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env(
            "ANSIBLE_SSH_ARGS",
            "-o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5",
        )
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", home.join("cp"))
        .env("ANSIBLE_HOME", &home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_PIPELINING", "True")
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .with_context(|| format!("failed to start {} (xtask/fleet-setup.sh installs it)", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    fs::write(lab.dir.join(format!("ansible-{label}.log")), text.as_bytes())?;
    let run = read_run(&text, out.status.success());
    if run.stats.is_empty() {
        bail!("ansible-playbook printed no recap ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(run)
}

/// The recap and the failed and changed tasks, read from the default callback's output:
/// `TASK [name]` headers, `changed: [host]` and `fatal: [host]: FAILED! => {json}` lines,
/// and the `PLAY RECAP` lines (`host : ok=N changed=N unreachable=N failed=N ...`).
fn read_run(text: &str, success: bool) -> Run {
    let (mut stats, mut failed, mut changes) = (BTreeMap::new(), Vec::new(), Vec::new());
    let (mut task, mut recap) = (String::new(), false);
    let host_of = |l: &str| l.split_once('[').and_then(|(_, r)| r.split_once(']')).map(|(h, _)| h.to_string());
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(t) = line.strip_prefix("TASK [") {
            let t = t.rsplit_once(']').map_or(t, |(t, _)| t);
            task = t.split_once(" : ").map_or(t, |(_, t)| t).to_string();
        } else if line.starts_with("PLAY RECAP") {
            recap = true;
        } else if line.starts_with("changed: [") {
            changes.push(format!("{}: {task}", host_of(line).unwrap_or_default()));
        } else if line.starts_with("fatal: [") || line.starts_with("failed: [") {
            // The result's JSON follows on the same line, or on the next ones, indented.
            let mut json = line.split_once("=> ").map_or("", |(_, j)| j).to_string();
            let mut v: Option<Value> = serde_json::from_str(&json).ok();
            while v.is_none() && json.starts_with('{') {
                let Some(more) = lines.next() else { break };
                json.push_str(more);
                v = serde_json::from_str(&json).ok();
            }
            let v = v.unwrap_or_default();
            let text = |k: &str| v[k].as_str().unwrap_or_default().trim().to_string();
            let detail: Vec<String> = [text("msg"), text("stderr")].into_iter().filter(|t| !t.is_empty()).collect();
            failed.push(format!("{}: {task}: {}", host_of(line).unwrap_or_default(), detail.join(": ")));
        } else if recap && let Some((host, counts)) = line.split_once(" : ") {
            let n = |k: &str| {
                counts
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
                    .unwrap_or(0)
            };
            let st =
                HostStats { changed: n("changed"), failures: n("failed"), unreachable: n("unreachable"), ok: n("ok") };
            stats.insert(host.trim().to_string(), st);
        }
    }
    Run { success, stats, failed, changes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recap_and_failures_are_read_from_the_default_callback() {
        let out = r#"
PLAY [Roll ps-agent out, one node at a time] ***********************************

TASK [ps_agent : Write the site config, checked by `ps-agent check` before it replaces the old one] ***
changed: [n1]

TASK [ps_agent : Write the site config, checked by `ps-agent check` before it replaces the old one] ***
fatal: [n2]: FAILED! => {"changed": false, "exit_status": 1, "msg": "failed to validate", "stderr": "error: bad address\n"}

TASK [ps_agent : Compare the policy fingerprints of all nodes] *****************
fatal: [n1]: FAILED! => {
    "assertion": "fingerprints | unique | length == 1",
    "changed": false,
    "msg": "policy drift: n1 runs a, n2 runs b"
}

PLAY RECAP *********************************************************************
n1                         : ok=18   changed=7    unreachable=0    failed=0    skipped=4    rescued=0    ignored=0
n2                         : ok=3    changed=0    unreachable=0    failed=1    skipped=0    rescued=0    ignored=0
"#;
        let r = read_run(out, false);
        assert_eq!(r.stats["n2"], HostStats { changed: 0, failures: 1, unreachable: 0, ok: 3 });
        assert_eq!(r.stats["n1"].changed, 7);
        assert_eq!(r.changed_hosts(), vec!["n1"]);
        let task = "Write the site config, checked by `ps-agent check` before it replaces the old one";
        assert_eq!(
            r.failed,
            vec![
                format!("n2: {task}: failed to validate: error: bad address"),
                "n1: Compare the policy fingerprints of all nodes: policy drift: n1 runs a, n2 runs b".into()
            ]
        );
        assert_eq!(r.changes, vec![format!("n1: {task}")]);
    }
}
