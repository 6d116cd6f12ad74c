//! Experiments: what to tune, how, and within which budget (Katib-like).
//!
//! An [`ExperimentSpec`] is parsed from YAML or JSON (unknown fields are
//! errors) and checked by [`ExperimentSpec::validate`], which names the field
//! at fault. Trials and their outcomes are [`crate::TrialRecord`]s.

use serde::{Deserialize, Serialize};

pub use crate::space::{Condition, ParamSpec, ParamValue, Params, SearchSpace};
use crate::{ModelSpec, SpecError};

/// Whether the objective metric should go up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Maximize,
    Minimize,
}

impl Direction {
    /// True when `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }

    /// True when `value` meets `goal`.
    pub fn meets(self, value: f64, goal: f64) -> bool {
        match self {
            Direction::Maximize => value >= goal,
            Direction::Minimize => value <= goal,
        }
    }
}

/// Which trial to prefer once the goal is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prefer {
    /// The best objective value.
    #[default]
    Best,
    /// Of the trials meeting the goal, the one with the fewest parameters.
    FewestParams,
    /// Of the trials meeting the goal, the fastest to train.
    FewestSeconds,
}

/// What the experiment optimises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    #[serde(default = "defaults::metric")]
    pub metric: String,
    #[serde(default)]
    pub direction: Direction,
    /// Stop as soon as a trial reaches this value. `null` (or, for any objective but
    /// the default `val_accuracy`/`maximize`, left out): no goal, an optimisation that
    /// runs the whole budget and ends successfully when it is spent. Left out for the
    /// default objective: 0.80 (resolved by [`ExperimentSpec::from_yaml`]).
    #[serde(default = "defaults::goal")]
    pub goal: Option<f64>,
    #[serde(default)]
    pub prefer: Prefer,
    /// With a confidence (e.g. 0.95), the goal is met when the lower bound of the metric's
    /// Wilson interval over the validation images reaches it, not the point estimate (an
    /// accuracy metric only). Absent: the point estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

impl Default for Objective {
    fn default() -> Self {
        Self {
            metric: defaults::metric(),
            direction: Direction::Maximize,
            goal: defaults::goal(),
            prefer: Prefer::Best,
            confidence: None,
        }
    }
}

impl Objective {
    /// Whether `value` (measured on `images` validation images, when known) meets the
    /// goal: never without a goal or a finite value; with [`confidence`](Self::confidence),
    /// the interval's lower bound must reach it, and the count must be known.
    pub fn meets_goal(&self, value: Option<f64>, images: Option<u64>) -> bool {
        let (Some(v), Some(goal)) = (value.filter(|v| v.is_finite()), self.goal) else {
            return false;
        };
        match (self.confidence, images.filter(|&n| n > 0)) {
            (None, _) => self.direction.meets(v, goal),
            (Some(c), Some(n)) => crate::Accuracy::from_fraction(v, n).wilson(c).low >= goal,
            (Some(_), None) => false,
        }
    }
}

/// The search algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Every combination, floats at `grid_points` points.
    Grid,
    /// Independent uniform (or log-uniform) draws.
    Random,
    /// Tree-structured Parzen estimator (as in Optuna).
    #[default]
    Tpe,
    /// Rule-based growth of the user's model: add blocks, filters, epochs
    /// while below the goal, keeping a change only if it helped.
    Grow,
}

/// Algorithm and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmSpec {
    #[serde(default)]
    pub name: Algorithm,
    /// TPE: random trials before the model kicks in.
    #[serde(default = "defaults::startup")]
    pub n_startup_trials: usize,
    /// TPE: how those start-up trials are drawn.
    #[serde(default)]
    pub startup: StartupDesign,
    /// TPE: candidates drawn from the good density per suggestion.
    #[serde(default = "defaults::ei_candidates")]
    pub n_ei_candidates: usize,
    /// Grid: points per float (and wide int) range.
    #[serde(default = "defaults::grid_points")]
    pub grid_points: usize,
    /// Warm start: a new experiment tries first the best configurations of the earlier
    /// experiments with the same name and objective, and its sampler takes their trials
    /// as history (the experiment's `prior`). On by default; `false` starts cold.
    #[serde(default = "defaults::yes")]
    pub warm_start: bool,
    /// TPE and random search: trial 1 is the base model (`trial.model`) as a point of the
    /// search space (`mlci_core::base_params`), as Keras Tuner's first trial takes every
    /// hyperparameter's default: a known-good model is measured before anything is drawn.
    /// Skipped when the base model is not a point of the space, or when a warm start has
    /// earlier best configurations to try first. On by default; `false` draws trial 1.
    #[serde(default = "defaults::yes")]
    pub base_first: bool,
}

impl Default for AlgorithmSpec {
    fn default() -> Self {
        Self {
            name: Algorithm::default(),
            n_startup_trials: defaults::startup(),
            startup: StartupDesign::default(),
            n_ei_candidates: defaults::ei_candidates(),
            grid_points: defaults::grid_points(),
            warm_start: true,
            base_first: true,
        }
    }
}

/// How TPE draws its `n_startup_trials` start-up trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartupDesign {
    /// A Latin hypercube: each parameter's range cut into `n_startup_trials`
    /// equally likely stretches, each stretch (each categorical value) used once.
    #[default]
    LatinHypercube,
    /// Independent uniform draws, as Optuna's `TPESampler`.
    Random,
}

/// Early stopping of bad trials while they train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "lowercase", deny_unknown_fields)]
pub enum PrunerSpec {
    /// Stop a trial whose best value so far is worse than the median of the
    /// other trials' best values up to the same epoch (every trial that reached
    /// it: completed, pruned or running; not Optuna's `MedianPruner`, see
    /// `mlci_tune::pruner::MedianPruner`).
    Median {
        #[serde(default = "defaults::one")]
        warmup_epochs: usize,
        #[serde(default = "defaults::min_trials")]
        min_trials: usize,
    },
    /// Asynchronous successive halving: at rungs `min_epochs * eta^k`, keep
    /// only the top `1/eta` of the trials that reached the rung.
    Asha {
        #[serde(default = "defaults::one")]
        min_epochs: usize,
        #[serde(default = "defaults::eta")]
        reduction_factor: usize,
    },
}

/// Limits of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default = "defaults::max_trials")]
    pub max_trials: usize,
    /// Failed trials (after retries) before the experiment gives up.
    #[serde(default = "defaults::max_failed")]
    pub max_failed_trials: usize,
    #[serde(default = "defaults::one")]
    pub parallel_trials: usize,
    /// Wall time of the whole experiment, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_seconds: Option<f64>,
    /// Retries of one trial that failed in a way a retry can fix.
    #[serde(default = "defaults::one")]
    pub max_retries: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_trials: defaults::max_trials(),
            max_failed_trials: defaults::max_failed(),
            parallel_trials: 1,
            max_wall_seconds: None,
            max_retries: 1,
        }
    }
}

/// Where trials run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// mlci's candle trainer in this process, on blocking threads.
    #[default]
    InProcess,
    /// Any command; metrics collected from its stdout.
    Subprocess,
    /// A container per trial (mlci-containers).
    Container,
    /// A Docker Swarm service per trial (mlci-containers), on any node of
    /// the swarm; settings in [`TrialTemplate::swarm`].
    Swarm,
}

/// How swarm trials are placed and sized (`trial.swarm`, for `executor: swarm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSpec {
    /// Swarm placement constraints, each `<key> == <value>` or `<key> != <value>`
    /// with key `node.id`, `node.hostname`, `node.role`, `node.platform.os`,
    /// `node.platform.arch`, `node.labels.<name>` or `engine.labels.<name>`.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Cores reserved and limited per trial (and the trainer's threads).
    /// Default: the tuner's share of this host's cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory reserved and limited per trial, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Seconds a trial may wait when no node satisfies its constraints.
    #[serde(default = "defaults::placement_grace")]
    pub placement_grace_seconds: f64,
    /// Seconds a trial may wait for a node with free CPU and memory.
    #[serde(default = "defaults::queue_timeout")]
    pub queue_timeout_seconds: f64,
    /// Seconds a running trial's node may be reported not ready (down: its
    /// heartbeats stopped, after Swarm's own dispatcher heartbeat grace) before the
    /// trial counts as lost and is retried elsewhere, from its checkpoint.
    #[serde(default = "defaults::node_lost")]
    pub node_lost_seconds: f64,
}

impl Default for SwarmSpec {
    fn default() -> Self {
        Self {
            constraints: Vec::new(),
            cpus: None,
            memory_mb: None,
            placement_grace_seconds: defaults::placement_grace(),
            queue_timeout_seconds: defaults::queue_timeout(),
            node_lost_seconds: defaults::node_lost(),
        }
    }
}

impl SwarmSpec {
    /// Check every setting; errors name the field under `trial.swarm`.
    pub fn validate(&self) -> Result<(), SpecError> {
        const KEYS: [&str; 5] = [
            "node.id",
            "node.hostname",
            "node.role",
            "node.platform.os",
            "node.platform.arch",
        ];
        for (i, c) in self.constraints.iter().enumerate() {
            let field = format!("trial.swarm.constraints[{i}]");
            let Some((key, value)) = c.split_once("==").or_else(|| c.split_once("!=")) else {
                return Err(SpecError::new(
                    field,
                    format!("`{c}` is not `<key> == <value>` or `<key> != <value>`"),
                ));
            };
            let (key, value) = (key.trim(), value.trim());
            let label = ["node.labels.", "engine.labels."]
                .iter()
                .any(|p| key.strip_prefix(p).is_some_and(|name| !name.is_empty()));
            if !(KEYS.contains(&key) || label) {
                return Err(SpecError::new(
                    field,
                    format!(
                        "unknown key `{key}` (use node.labels.<name>, engine.labels.<name>, {})",
                        KEYS.join(", ")
                    ),
                ));
            }
            if value.is_empty() || value.contains("==") || value.contains("!=") {
                return Err(SpecError::new(
                    field,
                    format!("`{c}` needs one value after the operator"),
                ));
            }
        }
        if let Some(cpus) = self.cpus {
            if !(cpus.is_finite() && cpus >= 0.01) {
                return Err(SpecError::new(
                    "trial.swarm.cpus",
                    format!("must be at least 0.01 cores, got {cpus}"),
                ));
            }
        }
        if let Some(mb) = self.memory_mb {
            if mb < 16 {
                return Err(SpecError::new(
                    "trial.swarm.memory_mb",
                    format!("must be at least 16 MiB, got {mb}"),
                ));
            }
        }
        for (field, seconds) in [
            (
                "trial.swarm.placement_grace_seconds",
                self.placement_grace_seconds,
            ),
            ("trial.swarm.queue_timeout_seconds", self.queue_timeout_seconds),
        ] {
            if !(seconds.is_finite() && seconds > 0.0) {
                return Err(SpecError::new(field, "must be a positive number of seconds"));
            }
        }
        if !(self.node_lost_seconds.is_finite() && self.node_lost_seconds >= 0.0) {
            return Err(SpecError::new(
                "trial.swarm.node_lost_seconds",
                "must be zero or more seconds",
            ));
        }
        Ok(())
    }
}

/// What one trial runs: an mlci model spec with the parameters applied, or
/// a command with `${trialParameters.NAME}` placeholders (Katib's syntax).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrialTemplate {
    #[serde(default)]
    pub executor: ExecutorKind,
    /// The base model (in-process and container trials). Default: mlci's default spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// The command of subprocess trials, as argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Seconds before a trial is killed and counted as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Placement and size of swarm trials (only with `executor: swarm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmSpec>,
}

/// The images trials train on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_split: Option<f64>,
    /// Hold out this fraction of each class's training images as the test split, which no
    /// trial trains on and no choice looks at; the chosen model is evaluated on it once,
    /// at the end. A `test/` folder beside `train/` is used without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_split: Option<f64>,
}

impl DatasetSpec {
    /// The folder and its splits, as trials and the final evaluation get them.
    pub fn splits(&self) -> crate::DataSplits {
        crate::DataSplits {
            dir: self.path.clone().into(),
            val_split: self.val_split,
            test_split: self.test_split,
        }
    }
}

/// A tuning experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    #[serde(default)]
    pub objective: Objective,
    #[serde(default)]
    pub search_space: SearchSpace,
    #[serde(default)]
    pub algorithm: AlgorithmSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<PrunerSpec>,
    #[serde(default)]
    pub budget: Budget,
    #[serde(default)]
    pub trial: TrialTemplate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetSpec>,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// What earlier experiments taught, filled in by mlci when it creates the experiment
    /// (`algorithm.warm_start`) and kept with it, so a resumed experiment suggests the
    /// same trials; also its provenance: which experiments it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<Prior>,
}

/// Earlier experiments' knowledge, for a warm start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prior {
    /// The experiments it comes from, newest first.
    pub experiments: Vec<String>,
    /// Their best configurations, tried first, in this order.
    pub seeds: Vec<crate::Params>,
    /// Their completed trials (configuration and objective value): the sampler's history
    /// before this experiment's own trials.
    #[serde(default)]
    pub trials: Vec<PriorTrial>,
}

/// One completed trial of an earlier experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorTrial {
    pub params: crate::Params,
    pub value: f64,
}

mod defaults {
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn metric() -> String {
        "val_accuracy".into()
    }
    pub(super) fn goal() -> Option<f64> {
        Some(0.80)
    }
    pub(super) fn startup() -> usize {
        10
    }
    pub(super) fn ei_candidates() -> usize {
        24
    }
    pub(super) fn grid_points() -> usize {
        3
    }
    pub(super) fn one() -> usize {
        1
    }
    pub(super) fn min_trials() -> usize {
        3
    }
    pub(super) fn eta() -> usize {
        3
    }
    pub(super) fn max_trials() -> usize {
        20
    }
    pub(super) fn max_failed() -> usize {
        3
    }
    pub(super) fn seed() -> u64 {
        42
    }
    pub(super) fn placement_grace() -> f64 {
        30.0
    }
    pub(super) fn queue_timeout() -> f64 {
        3600.0
    }
    pub(super) fn node_lost() -> f64 {
        5.0
    }
}

impl ExperimentSpec {
    /// Parse YAML (a superset of JSON); unknown fields are errors naming them.
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let mut spec: Self = serde_norway::from_str(text).map_err(|e| SpecError::parse(e.to_string()))?;
        // The default goal belongs to the default objective only: `goal` left out of
        // another objective means no goal (serde cannot tell "left out" from the default).
        let goal_given = serde_norway::from_str::<serde_norway::Value>(text)
            .ok()
            .and_then(|v| v.get("objective").map(|o| o.get("goal").is_some()))
            .unwrap_or(false);
        let default_objective =
            spec.objective.metric == defaults::metric() && spec.objective.direction == Direction::Maximize;
        if !goal_given && !default_objective {
            spec.objective.goal = None;
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The base model of model trials.
    pub fn base_model(&self) -> ModelSpec {
        self.trial.model.clone().unwrap_or_default()
    }

    /// Check ranges, budgets and that every key can be applied.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() {
            return Err(SpecError::new("name", "must not be empty"));
        }
        if self.objective.metric.trim().is_empty() {
            return Err(SpecError::new("objective.metric", "must not be empty"));
        }
        if let Some(goal) = self.objective.goal {
            if !goal.is_finite() {
                return Err(SpecError::new("objective.goal", "must be a finite number"));
            }
        }
        if let Some(d) = &self.dataset {
            for (field, split) in [
                ("dataset.val_split", d.val_split),
                ("dataset.test_split", d.test_split),
            ] {
                if let Some(f) = split.filter(|f| !(*f > 0.0 && *f < 1.0)) {
                    return Err(SpecError::new(field, format!("must be in (0, 1), got {f}")));
                }
            }
        }
        if let Some(c) = self.objective.confidence {
            if !(c > 0.0 && c < 1.0) {
                return Err(SpecError::new(
                    "objective.confidence",
                    format!("must be between 0 and 1 (e.g. 0.95), got {c}"),
                ));
            }
            let o = &self.objective;
            if !(o.metric.ends_with("accuracy") && o.direction == Direction::Maximize) {
                return Err(SpecError::new(
                    "objective.confidence",
                    format!(
                        "applies to a maximised accuracy (val_accuracy), not `{}` ({:?})",
                        o.metric, o.direction
                    ),
                ));
            }
        }
        let b = &self.budget;
        if b.max_trials == 0 || b.max_trials > 100_000 {
            return Err(SpecError::new(
                "budget.max_trials",
                format!("must be in 1..=100000, got {}", b.max_trials),
            ));
        }
        if b.parallel_trials == 0 || b.parallel_trials > 64 {
            return Err(SpecError::new(
                "budget.parallel_trials",
                format!("must be in 1..=64, got {}", b.parallel_trials),
            ));
        }
        if let Some(w) = b.max_wall_seconds {
            if !(w.is_finite() && w > 0.0) {
                return Err(SpecError::new(
                    "budget.max_wall_seconds",
                    "must be a positive number of seconds",
                ));
            }
        }
        if let Some(t) = self.trial.timeout_seconds {
            if !(t.is_finite() && t > 0.0) {
                return Err(SpecError::new(
                    "trial.timeout_seconds",
                    "must be a positive number of seconds",
                ));
            }
        }
        match self.algorithm.name {
            Algorithm::Grow => {}
            _ if self.search_space.is_empty() => {
                return Err(SpecError::new(
                    "search_space",
                    "needs at least one parameter (or use algorithm grow)",
                ));
            }
            _ => {}
        }
        if self.algorithm.grid_points < 2 {
            return Err(SpecError::new("algorithm.grid_points", "must be at least 2"));
        }
        if self.algorithm.n_ei_candidates == 0 {
            return Err(SpecError::new("algorithm.n_ei_candidates", "must be at least 1"));
        }
        match self.early_stopping {
            Some(PrunerSpec::Asha {
                reduction_factor,
                min_epochs,
            }) => {
                if reduction_factor < 2 {
                    return Err(SpecError::new(
                        "early_stopping.reduction_factor",
                        "must be at least 2",
                    ));
                }
                if min_epochs == 0 {
                    return Err(SpecError::new("early_stopping.min_epochs", "must be at least 1"));
                }
            }
            Some(PrunerSpec::Median { min_trials: 0, .. }) => {
                return Err(SpecError::new("early_stopping.min_trials", "must be at least 1"));
            }
            _ => {}
        }
        for (key, p) in &self.search_space {
            let field = |f: &str| format!("search_space.{key}.{f}");
            match p {
                ParamSpec::Int {
                    min, max, step, log, ..
                } => {
                    if min > max {
                        return Err(SpecError::new(
                            field("max"),
                            format!("min {min} is above max {max}"),
                        ));
                    }
                    if *log && *min <= 0 {
                        return Err(SpecError::new(field("min"), "a log scale needs min > 0"));
                    }
                    if step.is_some_and(|s| s <= 0) {
                        return Err(SpecError::new(field("step"), "must be positive"));
                    }
                }
                ParamSpec::Float { min, max, log, .. } => {
                    if !(min.is_finite() && max.is_finite()) || min > max {
                        return Err(SpecError::new(
                            field("max"),
                            format!("need finite min <= max, got {min}..{max}"),
                        ));
                    }
                    if *log && *min <= 0.0 {
                        return Err(SpecError::new(field("min"), "a log scale needs min > 0"));
                    }
                }
                ParamSpec::Categorical { values, .. } => {
                    if values.is_empty() {
                        return Err(SpecError::new(field("values"), "needs at least one value"));
                    }
                }
            }
            if let Some(cond) = p.condition() {
                if cond.param == *key || !self.search_space.contains_key(&cond.param) {
                    return Err(SpecError::new(
                        field("when.param"),
                        format!("`{}` is not another parameter of the search space", cond.param),
                    ));
                }
            }
        }
        match (&self.trial.swarm, self.trial.executor) {
            (Some(swarm), ExecutorKind::Swarm) => swarm.validate()?,
            (Some(_), _) => {
                return Err(SpecError::new(
                    "trial.swarm",
                    "only applies to swarm trials; set executor: swarm or remove it",
                ));
            }
            (None, _) => {}
        }
        match self.trial.executor {
            ExecutorKind::Subprocess => {
                if self.trial.command.as_ref().is_none_or(|c| c.is_empty()) {
                    return Err(SpecError::new(
                        "trial.command",
                        "a subprocess trial needs a command",
                    ));
                }
            }
            ExecutorKind::InProcess | ExecutorKind::Container | ExecutorKind::Swarm => {
                if self.trial.command.is_some() && self.trial.executor == ExecutorKind::InProcess {
                    return Err(SpecError::new(
                        "trial.command",
                        "in_process trials train the model spec; set executor: subprocess to run a command",
                    ));
                }
                let base = self.base_model();
                base.architecture(2)
                    .map_err(|e| SpecError::new(format!("trial.model.{}", e.field), e.message))?;
                // Every key must apply to the model (values at the lower end of each range).
                for (key, p) in &self.search_space {
                    let sample = match p {
                        ParamSpec::Int { min, .. } => ParamValue::Int(*min),
                        ParamSpec::Float { min, .. } => ParamValue::Float(*min),
                        ParamSpec::Categorical { values, .. } => values[0].clone(),
                    };
                    let one = Params::from([(key.clone(), sample)]);
                    crate::apply_params(&base, &one)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name: x\nsearch_space: { filters: { type: int, min: 8, max: 16 } }\n";

    fn parse(trial: &str) -> Result<ExperimentSpec, SpecError> {
        ExperimentSpec::from_yaml(&format!("{BASE}trial: {trial}\n"))
    }

    #[test]
    fn swarm_trials_parse_with_their_placement() {
        let spec = parse(
            "{ executor: swarm, swarm: { constraints: ['node.labels.mlci == trainer', 'node.role != manager'], \
             cpus: 2, memory_mb: 2048 } }",
        )
        .unwrap();
        assert_eq!(spec.trial.executor, ExecutorKind::Swarm);
        let swarm = spec.trial.swarm.unwrap();
        assert_eq!(swarm.constraints.len(), 2);
        assert_eq!((swarm.cpus, swarm.memory_mb), (Some(2.0), Some(2048)));
        assert_eq!(swarm.placement_grace_seconds, 30.0);
        assert_eq!(swarm.queue_timeout_seconds, 3600.0);
        // Without settings: defaults.
        assert_eq!(parse("{ executor: swarm }").unwrap().trial.swarm, None);
    }

    #[test]
    fn bad_swarm_settings_name_their_field() {
        for (trial, field) in [
            (
                "{ executor: swarm, swarm: { constraints: ['node.labels.gpu'] } }",
                "trial.swarm.constraints[0]",
            ),
            (
                "{ executor: swarm, swarm: { constraints: ['a == b', 'nodes.hostname == x'] } }",
                "trial.swarm.constraints[0]",
            ),
            (
                "{ executor: swarm, swarm: { constraints: ['node.hostname == ci-1', 'node.labels. == x'] } }",
                "trial.swarm.constraints[1]",
            ),
            (
                "{ executor: swarm, swarm: { constraints: ['node.hostname == '] } }",
                "trial.swarm.constraints[0]",
            ),
            ("{ executor: swarm, swarm: { cpus: 0 } }", "trial.swarm.cpus"),
            (
                "{ executor: swarm, swarm: { memory_mb: 1 } }",
                "trial.swarm.memory_mb",
            ),
            (
                "{ executor: swarm, swarm: { placement_grace_seconds: -1 } }",
                "trial.swarm.placement_grace_seconds",
            ),
            (
                "{ executor: swarm, swarm: { queue_timeout_seconds: .inf } }",
                "trial.swarm.queue_timeout_seconds",
            ),
            ("{ executor: container, swarm: { cpus: 1 } }", "trial.swarm"),
            ("{ executor: swarm, swarm: { replicas: 2 } }", "replicas"),
        ] {
            let e = parse(trial).expect_err(trial);
            let got = format!("{}: {}", e.field, e.message);
            assert!(got.contains(field), "{trial}\n  -> {got}\n  expected {field}");
        }
    }
}
