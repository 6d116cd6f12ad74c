//! Trials across hosts, on the three-node lab of `scripts/swarm-lab` (three Docker
//! Engines, each in its own network, PID and mount namespace with its own address, one
//! manager and two workers, and a registry): the trainer image goes through the
//! registry by digest; the storage check refuses a data folder the nodes cannot see;
//! an experiment's trials spread over the nodes, a worker's Engine is killed mid-trial
//! and the other worker drained mid-trial, and the experiment still ends with every
//! trial once, the interrupted ones resumed from their checkpoints. The lab is taken
//! down when the test ends, passed or failed, and the test checks nothing is left.
//!
//! Needs root (namespaces, links) and the lab's tools (scripts/setup installs them); a
//! missing one fails the test naming it (`MLCI_SKIP=docker` opts out).
#![allow(clippy::disallowed_methods)] // tests read their own switches
#![allow(clippy::print_stderr)] // a failed teardown is said, not hidden

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::tune::show;
use crate::{every_trial_once, generated, mlci, run, stderr};

const NAME: &str = "it";
const SUBNET: &str = "10.213.9";
const EPOCHS: u64 = 30;

/// The lab; taken down (everything it made) when dropped, even on a failed assertion.
struct Lab {
    base: PathBuf,
    env: Vec<(String, String)>,
    /// The static mlci for the trainer image, as the other container tests use.
    trainer: PathBuf,
}

impl Lab {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/swarm-lab")
    }

    fn command(base: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(Self::script());
        cmd.args(args).args(["--name", NAME]).env("MLCI_LAB_ROOT", base);
        cmd
    }

    fn up() -> Option<Self> {
        let trainer = crate::tune::static_mlci()?;
        let uid = Command::new("id").arg("-u").output().unwrap();
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            mlci_containers::testing::missing(
                "docker",
                "root",
                "the swarm lab makes network namespaces and links",
                "run the tests as root (CI does)",
            );
            return None;
        }
        for tool in [
            "ip",
            "unshare",
            "nsenter",
            "dockerd",
            "containerd",
            "tini-static",
            "docker-registry",
            "curl",
            "iptables",
        ] {
            if !mlci_containers::testing::on_path(tool) {
                mlci_containers::testing::missing(
                    "docker",
                    tool,
                    "the swarm lab (scripts/swarm-lab) needs it",
                    "scripts/setup",
                );
                return None;
            }
        }
        let base = std::env::temp_dir().join("mlci-lab-test");
        // Made before `up`: a failed `up` is taken down too.
        let mut lab = Self {
            base: base.clone(),
            env: Vec::new(),
            trainer,
        };
        let o = Self::command(&base, &["up", "--subnet", SUBNET])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "swarm-lab up failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        lab.env = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(lab)
    }

    fn var(&self, key: &str) -> PathBuf {
        PathBuf::from(
            &self
                .env
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("swarm-lab up printed no {key}: {:?}", self.env))
                .1,
        )
    }

    fn lab(&self, args: &[&str]) -> Output {
        let o = Self::command(&self.base, args).output().unwrap();
        assert!(o.status.success(), "swarm-lab {args:?}: {}", stderr(&o));
        o
    }

    /// `mlci` against the lab's manager and registry.
    fn mlci(&self, data_dir: &Path) -> Command {
        let mut cmd = mlci(data_dir);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("MLCI_TRAINER_BINARY", &self.trainer);
        cmd
    }

    fn docker(&self, args: &[&str]) -> Output {
        let host = &self.env.iter().find(|(k, _)| k == "DOCKER_HOST").unwrap().1;
        let o = Command::new("docker")
            .arg("-H")
            .arg(host)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
        o
    }

    /// `docker ARGS` against node `k`'s own Engine.
    fn node_command(&self, k: u32, args: &[&str]) -> Output {
        let sock = self.base.join(NAME).join(format!("n{k}/docker.sock"));
        let o = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "docker {args:?} on n{k}: {}", stderr(&o));
        o
    }

    /// `docker ARGS` against node `k`'s own Engine; its stdout.
    fn node_docker(&self, k: u32, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.node_command(k, args).stdout).into_owned()
    }

    /// On node `k`, cut off but with its Engine still answering on its own socket: the
    /// exit code and log of trial `trial`'s container once it has stopped by itself
    /// (waits up to a minute).
    fn stopped_attempt(&self, k: u32, trial: u64) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let label = format!("label=mlci.trial={trial}");
        loop {
            let ids = self.node_docker(k, &["ps", "-aq", "--filter", &label, "--filter", "status=exited"]);
            if let Some(id) = ids.split_whitespace().next() {
                let code = self.node_docker(k, &["inspect", "--format", "{{.State.ExitCode}}", id]);
                // The container's stderr comes out on the CLI's stderr.
                let o = self.node_command(k, &["logs", id]);
                let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
                return (code.trim().to_owned(), log);
            }
            let all = self.node_docker(k, &["ps", "-a", "--filter", &label]);
            assert!(
                Instant::now() < deadline,
                "a minute after the retry, trial {trial}'s cut-off attempt on n{k} still runs: {all}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn down(base: &Path) {
        let o = Self::command(base, &["down"]).output().unwrap();
        assert!(o.status.success(), "swarm-lab down: {}", stderr(&o));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(o) = Self::command(&self.base, &["down"]).output() {
            if !o.status.success() {
                eprintln!("swarm-lab down failed: {}", stderr(&o));
            }
        }
    }
}

/// Kills the experiment's `mlci` if the test fails before it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `trial=N` and `node="mlab-it-nK"` of a "trial task running" line.
fn placed(line: &str) -> Option<(u64, u32)> {
    if !line.contains("trial task running") {
        return None;
    }
    let trial = field(line, "trial=")?;
    let node = line.split(&format!("mlab-{NAME}-n")).nth(1)?;
    Some((trial, node[..1].parse().ok()?))
}

/// `trial=N` and `epoch=E` of an epoch line.
fn epoch_of(line: &str) -> Option<(u64, u64)> {
    Some((field(line, "trial=")?, field(line, "epoch=")?))
}

fn field(line: &str, key: &str) -> Option<u64> {
    let rest = line.split(key).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The experiment: `trials` trials, `parallel` at a time, each reserving 1.5 of a node's
/// 2 cores, so two never share a node.
fn experiment(
    dir: &Path,
    data: &Path,
    (trials, parallel): (usize, usize),
    epochs: u64,
    input_size: u32,
) -> PathBuf {
    let path = dir.join(format!("experiment-{trials}-{epochs}.yaml"));
    std::fs::write(
        &path,
        format!(
            r#"name: lab
objective: {{ metric: val_accuracy, goal: 1.5 }}
search_space:
  training.learning_rate: {{ type: float, min: 0.0005, max: 0.003, log: true }}
algorithm: {{ name: random }}
budget: {{ max_trials: {trials}, parallel_trials: {parallel}, max_retries: 2, max_failed_trials: 1 }}
trial:
  executor: swarm
  swarm: {{ cpus: 1.5, memory_mb: 1024, node_lost_seconds: 2 }}
  model:
    input_size: {input_size}
    conv_blocks: [{{ filters: 16 }}, {{ filters: 32 }}]
    dense: [{{ units: 32 }}]
    training: {{ epochs: {epochs}, learning_rate: 0.002, batch_size: 32, seed: 3 }}
dataset: {{ path: "{}" }}
seed: 5
"#,
            data.display()
        ),
    )
    .unwrap();
    path
}

/// Run `mlci tune SPEC` against the lab, calling `on_epoch(trial, node, epoch, line)` for
/// each epoch line of a trial whose node is known, and with epoch 0 for each retry line;
/// returns mlci's log and `experiments show`. Exit 3 expected (the goal is unreachable,
/// so every trial runs).
fn run_experiment(
    lab: &Lab,
    data_dir: &Path,
    spec: &Path,
    mut on_epoch: impl FnMut(u64, u32, u64, &str),
) -> (String, Value) {
    let mut child = Running(
        lab.mlci(data_dir)
            .args(["tune", "--no-mail"])
            .arg(spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let mut log = Vec::new();
    let mut node_of: BTreeMap<u64, u32> = BTreeMap::new();
    let started = Instant::now();
    for line in BufReader::new(child.0.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push(line.clone());
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the experiment ran for 15 minutes: {}",
            log.join("\n")
        );
        if let Some((trial, node)) = placed(&line) {
            node_of.insert(trial, node);
            continue;
        }
        if line.contains("event=trial_retried") {
            let trial = field(&line, "trial=").unwrap_or_default();
            on_epoch(trial, node_of.get(&trial).copied().unwrap_or(0), 0, &line);
            continue;
        }
        let Some((trial, epoch)) = epoch_of(&line) else {
            continue;
        };
        if let Some(&node) = node_of.get(&trial) {
            on_epoch(trial, node, epoch, &line);
        }
    }
    let status = child.0.wait().unwrap();
    let out = out_reader.join().unwrap();
    let log = log.join("\n");
    assert_eq!(status.code(), Some(3), "{log}");
    let id = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "experiment")
        .unwrap_or_else(|| panic!("no experiment line: {out}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (log, show(data_dir, &id))
}

/// Two trials never ran on one node at the same time: each reserves 1.5 of a node's 2
/// cores, so Swarm must place a second one elsewhere (or queue it). A trial holds its node
/// from its "trial task running" line to its last epoch (its container exits right after;
/// mlci says `trial_completed` only once it has read the rest of the log) or its retry.
fn never_shared_a_node(log: &str, epochs: u64) {
    let mut running: BTreeMap<u64, u32> = BTreeMap::new();
    for line in log.lines() {
        if let Some((trial, node)) = placed(line) {
            assert!(
                !running.iter().any(|(t, n)| *n == node && *t != trial),
                "trial {trial} placed on n{node} beside another: {running:?}\n{line}"
            );
            running.insert(trial, node);
        } else if let Some((trial, epoch)) = epoch_of(line) {
            if epoch == epochs {
                running.remove(&trial);
            }
        } else if line.contains("event=trial_retried") {
            if let Some(trial) = field(line, "trial=") {
                running.remove(&trial);
            }
        }
    }
}

/// `trial`, interrupted at epoch `at` on `node`, was retried (the retry's message says
/// `why`), resumed from a checkpoint at `at` or later (epoch 1 ran once), and finished
/// on another node.
fn resumed_elsewhere(shown: &Value, log: &str, (trial, at, node): (u64, u64, u32), why: &str, epochs: u64) {
    let events = shown["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "trial_retried"
            && e["trial"] == trial
            && e["message"].as_str().unwrap().contains(why)),
        "trial {trial} was not retried for '{why}': {events:?}"
    );
    let t = &shown["trials"][trial as usize - 1];
    assert!(t["attempts"].as_u64().unwrap() >= 2, "{t}");
    let trial_log =
        std::fs::read_to_string(Path::new(t["artifacts"].as_str().unwrap()).join("trial.log")).unwrap();
    // (The same trial may have been both: killed on one worker, drained on the other.)
    let resumed: Vec<u64> = trial_log
        .split("resuming from checkpoint")
        .skip(1)
        .filter_map(|rest| field(rest, "epoch="))
        .collect();
    assert!(
        resumed.iter().any(|e| *e >= at),
        "trial {trial} had reached epoch {at} but resumed at {resumed:?}"
    );
    assert_eq!(
        trial_log.matches(&format!("epoch 1/{epochs} done")).count(),
        1,
        "trial {trial} restarted from epoch 1"
    );
    let placements: Vec<u32> = log
        .lines()
        .filter_map(placed)
        .filter(|(t, _)| *t == trial)
        .map(|(_, n)| n)
        .collect();
    assert!(
        placements.len() >= 2 && placements.last() != Some(&node),
        "trial {trial} ran on nodes {placements:?}, finishing on {node}, which it lost"
    );
}

#[test]
fn trials_spread_over_three_hosts_and_survive_a_killed_engine_and_a_drained_node() {
    let Some(lab) = Lab::up() else { return };
    let shared = lab.var("MLCI_LAB_SHARED");
    let private = lab.var("MLCI_LAB_PRIVATE");
    let registry = lab.var("MLCI_SWARM_REGISTRY");
    let status = String::from_utf8_lossy(&lab.lab(&["status"]).stdout).into_owned();
    assert_eq!(status.matches(": Ready, Active").count(), 3, "{status}");

    let data = generated(&shared, 500);
    let spec = experiment(&shared, &data, (4, 3), EPOCHS, 32);

    // A data folder the nodes cannot see (each node mounts its own empty tmpfs over
    // `private/`): refused before any trial, naming the nodes.
    let o = run(lab
        .mlci(&private.join("data"))
        .args(["tune", "--no-mail"])
        .arg(&spec));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("shared storage") && err.contains("3 of 3 nodes"),
        "{err}"
    );
    for k in 1..=3 {
        // Swarm refuses the bind ("bind source path does not exist"), or, had the folder
        // been there, the probe would say the file is missing.
        let said = err
            .split(&format!("node mlab-{NAME}-n{k}: "))
            .nth(1)
            .unwrap_or_else(|| panic!("node {k} not named: {err}"));
        assert!(
            said.starts_with("missing") || said.contains("does not exist"),
            "{err}"
        );
    }
    assert!(!err.contains("trial_started"), "a trial started: {err}");

    // Four trials, three at a time: one on each node. A worker's Engine dies (SIGKILL to
    // its namespace: Engine, containerd and the trial's container at once) after its
    // trial's third epoch; then the other worker is drained under its trial. Both trials
    // and the fourth finish on the manager, the one node left.
    let data_dir = shared.join("data");
    let spec = experiment(&shared, &data, (4, 3), EPOCHS, 32);
    let mut killed: Option<(u64, u32, u64)> = None;
    let mut drained: Option<(u64, u32, u64)> = None;
    let (log, shown) = run_experiment(&lab, &data_dir, &spec, |trial, node, epoch, _| {
        if node == 1 || epoch == 0 || epoch + 5 > EPOCHS {
            return;
        }
        match (killed, drained) {
            (None, _) if epoch >= 3 => {
                lab.lab(&["kill", &node.to_string()]);
                killed = Some((trial, node, epoch));
            }
            (Some((_, dead, _)), None) if node != dead => {
                lab.docker(&[
                    "node",
                    "update",
                    "--availability",
                    "drain",
                    &format!("mlab-{NAME}-n{node}"),
                ]);
                drained = Some((trial, node, epoch));
            }
            _ => {}
        }
    });
    let (killed_trial, dead_node, killed_at) =
        killed.unwrap_or_else(|| panic!("no trial ran on a worker: {log}"));
    let (drained_trial, drained_node, drained_at) =
        drained.unwrap_or_else(|| panic!("no trial ran on the other worker after the kill: {log}"));
    let nodes_used: BTreeSet<u32> = log.lines().filter_map(placed).map(|(_, n)| n).collect();
    assert!(nodes_used.len() >= 2, "trials ran on {nodes_used:?} only");
    never_shared_a_node(&log, EPOCHS);
    assert!(
        log.contains(&format!("{}/mlci-trainer@sha256:", registry.display())),
        "trials did not run the registry's image by digest: {log}"
    );
    assert!(
        log.contains("every node sees the experiment's folder and the dataset"),
        "{log}"
    );
    assert_eq!(
        nodes_used.len(),
        3,
        "three trials at a time ran on {nodes_used:?}"
    );
    every_trial_once(&shown, 4, EPOCHS);
    let lost = format!("node mlab-{NAME}-n{dead_node} is down");
    resumed_elsewhere(&shown, &log, (killed_trial, killed_at, dead_node), &lost, EPOCHS);
    resumed_elsewhere(
        &shown,
        &log,
        (drained_trial, drained_at, drained_node),
        "shut down from outside",
        EPOCHS,
    );
    drop(lab);

    // A new lab: a worker's network is cut under a running trial (its Engine and the
    // trial's container live on, unreachable), then healed once the trial was retried
    // elsewhere and the cut-off attempt, fenced by its lease, stopped by itself (read on
    // the cut node's own Engine). The trial resumes from its checkpoint, and Swarm
    // removes the old container after the heal.
    let Some(lab) = Lab::up() else { return };
    let shared = lab.var("MLCI_LAB_SHARED");
    let data = generated(&shared, 500);
    let data_dir = shared.join("data");
    // Long enough (0.8 s an epoch here) that the cut-off attempt is still training when
    // the retry takes its lease, about 20 s after the cut.
    let slow = 60;
    let spec = experiment(&shared, &data, (2, 2), slow, 48);
    let mut cut: Option<(u64, u32, u64)> = None;
    let mut healed = false;
    let mut fenced: Option<(String, String)> = None;
    let (log, shown) = run_experiment(&lab, &data_dir, &spec, |trial, node, epoch, line| {
        if cut.is_none() && node != 1 && epoch >= 3 && epoch + 10 <= slow {
            lab.lab(&["cut", &node.to_string()]);
            cut = Some((trial, node, epoch));
        }
        if let Some((t, node, _)) = cut {
            if !healed && line.contains("event=trial_retried") && field(line, "trial=") == Some(t) {
                fenced = Some(lab.stopped_attempt(node, t));
                lab.lab(&["heal", &node.to_string()]);
                healed = true;
            }
        }
    });
    let (cut_trial, cut_node, cut_at) = cut.unwrap_or_else(|| panic!("no trial ran on a worker: {log}"));
    assert!(healed, "trial {cut_trial} was never retried: {log}");
    // The cut-off attempt trained on until the retry wrote its own lease, then stopped
    // at its next checkpoint (or before its final model) without writing it.
    let (code, old_log) = fenced.unwrap();
    assert!(
        old_log.contains("no longer holds this run's lease") && code != "0",
        "the cut-off attempt of trial {cut_trial} (exit {code}) was not fenced: {old_log}"
    );
    every_trial_once(&shown, 2, slow);
    let lost = format!("node mlab-{NAME}-n{cut_node} is down");
    resumed_elsewhere(&shown, &log, (cut_trial, cut_at, cut_node), &lost, slow);
    // Back on the network, the node is ready again and keeps no container of the experiment.
    let id = shown["experiment"]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = String::from_utf8_lossy(
            &lab.docker(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])
                .stdout,
        )
        .into_owned();
        let left = lab.node_docker(
            cut_node,
            &["ps", "-aq", "--filter", &format!("label=mlci.owner={id}")],
        );
        let ready = nodes.contains(&format!("mlab-{NAME}-n{cut_node} Ready"));
        if ready && left.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a minute after the heal: nodes {nodes}, containers left on n{cut_node}: {left}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Down: nothing of the lab is left (processes, namespaces, links, the registry's data).
    let base = lab.base.clone();
    let root = base.join(NAME);
    drop(lab);
    Lab::down(&base);
    assert!(!root.exists(), "{} is left", root.display());
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&format!("mlab-{NAME}-")),
        "namespaces left"
    );
    let links = Command::new("ip").args(["-br", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&format!("mlab-{NAME}")),
        "links left"
    );
    let marker = root.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(!cmdline.contains(&marker), "a lab process is left: {cmdline}");
        }
    }
}
