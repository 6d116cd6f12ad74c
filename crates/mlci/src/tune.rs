//! `mlci tune` and `mlci experiments`: run experiments, resume them, report
//! and notify.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use mlci_core::{
    protocol, DataSplits, DatasetSpec, Executor, ExecutorKind, ExperimentRecord, ExperimentSpec,
    ExperimentState, ExperimentSummary, Provenance, Store, TrialRecord, TrialState,
};
use mlci_store::SqliteStore;
use mlci_train::{DataSource, InProcessExecutor};
use mlci_tune::{Progress, SubprocessExecutor, TuneOptions, Tuner};

use crate::cli::{ExperimentsCommand, TuneArgs};
use crate::config::Config;
use crate::exit::Exit;
use crate::{bad, emit_plain};

fn open_store(cfg: &Config) -> anyhow::Result<SqliteStore> {
    crate::open_store(&cfg.db)
}

/// A new experiment id: the spec's name (slugged) and a short unique suffix.
fn new_id(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    format!(
        "{}-{:06x}",
        if slug.is_empty() { "experiment" } else { &slug },
        mix & 0xff_ffff
    )
}

fn read_spec(path: &Path) -> anyhow::Result<ExperimentSpec> {
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    ExperimentSpec::from_yaml(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// What a new experiment needs of its dataset, checked before it is created (exit 2,
/// nothing stored): one to train on, in mlci's layout, every class with images.
fn check_dataset(spec: &ExperimentSpec) -> anyhow::Result<()> {
    let needs_data = spec.trial.executor != ExecutorKind::Subprocess;
    let Some(d) = &spec.dataset else {
        if needs_data {
            return Err(bad(
                "the experiment has no dataset: set dataset.path in the spec or pass --data",
            ));
        }
        return Ok(());
    };
    let source = DataSource::new(&d.splits(), spec.base_model().training.seed);
    let checked = if needs_data {
        mlci_train::data::check(&source)
    } else {
        // A command reads the data its own way; only what the fingerprint lists is needed.
        mlci_train::data::fingerprint(&source).map(drop)
    };
    checked.map_err(|e| bad(e.to_string()))
}

/// Resolve the experiment to run: a new one from a spec, or one to resume.
fn experiment_to_run(args: &TuneArgs, store: &SqliteStore) -> anyhow::Result<ExperimentRecord> {
    match (&args.resume, &args.spec) {
        // `--resume spec.yaml`: the value is the spec, not an id.
        (Some(Some(id)), None) if Path::new(id).is_file() => experiment_to_run(
            &TuneArgs {
                resume: Some(None),
                spec: Some(PathBuf::from(id)),
                ..args.clone()
            },
            store,
        ),
        (Some(Some(id)), _) => store.experiment(id)?.ok_or_else(|| {
            bad(format!(
                "no experiment `{id}` in the store (see `mlci experiments list`)"
            ))
        }),
        (Some(None), Some(path)) => {
            let spec = read_spec(path)?;
            let same_name: Vec<ExperimentRecord> = store
                .experiments()?
                .into_iter()
                .filter(|e| e.spec.name == spec.name)
                .collect();
            if same_name.is_empty() {
                // Like `mlci train --resume`: nothing to resume yet, so start (a
                // relaunched environment runs the same command from the start).
                tracing::info!(name = %spec.name, "no experiment of this name yet; starting one");
                return experiment_to_run(
                    &TuneArgs {
                        resume: None,
                        ..args.clone()
                    },
                    store,
                );
            }
            same_name
                .into_iter()
                .find(|e| e.state == ExperimentState::Running)
                .ok_or_else(|| {
                    bad(format!(
                        "no unfinished experiment named `{}` to resume (all have finished; \
                         see `mlci experiments list`)",
                        spec.name
                    ))
                })
        }
        (Some(None), None) => Err(bad(
            "--resume needs an experiment id, or a spec whose latest run to resume",
        )),
        (None, None) => Err(bad("give an experiment spec (YAML or JSON), or --resume ID")),
        (None, Some(path)) => {
            let mut spec = read_spec(path)?;
            if let Some(data) = &args.data {
                spec.dataset = Some(DatasetSpec {
                    path: data.display().to_string(),
                    ..spec.dataset.take().unwrap_or_default()
                });
            }
            check_dataset(&spec)?;
            if spec.algorithm.warm_start && spec.prior.is_none() {
                spec.prior = warm_start(&spec, store)?;
            }
            let now = mlci_tune::now();
            let exp = ExperimentRecord {
                id: new_id(&spec.name),
                spec,
                state: ExperimentState::Running,
                created_at: now,
                updated_at: now,
                best_trial: None,
                message: None,
                wall_seconds: 0.0,
                evaluation: None,
            };
            store.create_experiment(&exp)?;
            if let Some(prior) = &exp.spec.prior {
                let message = format!(
                    "warm start from {}: {} configuration(s) tried first, {} earlier trial(s) as history",
                    prior.experiments.join(", "),
                    prior.seeds.len(),
                    prior.trials.len()
                );
                tracing::info!(experiment = %exp.id, "{message}");
                store.add_event(
                    &exp.id,
                    &mlci_core::Event {
                        at: now,
                        kind: "warm_start".into(),
                        trial: None,
                        message,
                    },
                )?;
            }
            Ok(exp)
        }
    }
}

/// The prior of a new experiment: the earlier experiments of this name and objective in
/// the store, with their trials (`algorithm.warm_start`; see `mlci_tune::warm`).
fn warm_start(
    spec: &mlci_core::ExperimentSpec,
    store: &dyn Store,
) -> anyhow::Result<Option<mlci_core::Prior>> {
    let mut earlier = Vec::new();
    for exp in store
        .experiments()?
        .into_iter()
        .filter(|e| e.spec.name == spec.name)
    {
        let trials = store.trials(&exp.id)?;
        earlier.push((exp, trials));
    }
    Ok(mlci_tune::warm::prior(spec, &earlier))
}

/// The container executor: connect to the Engine, build the trainer image
/// from a static mlci when it is missing, and remove containers a crashed run
/// of this experiment left behind.
fn container_executor(
    experiment: &str,
    parallel_trials: usize,
) -> anyhow::Result<mlci_containers::ContainerExecutor> {
    let engine = crate::env::engine()?;
    let image = crate::env::trainer_image(&engine)?;
    for left in engine.leftovers(experiment)? {
        tracing::warn!(container = %left.name, state = %left.state, "removing a container a crashed run left behind");
        engine.remove_container(&left.id)?;
    }
    let memory = engine.memory_bytes();
    let mut executor = mlci_containers::ContainerExecutor::new(engine, &image, experiment)?;
    // Parallel trials share the host: each gets its part of 80% of its memory (the
    // rest for the Engine, mlci and the page cache), as the cores are split by threads.
    if memory > 0 {
        executor.memory_bytes = Some(memory / 5 * 4 / parallel_trials.max(1) as u64);
    }
    tracing::info!(
        image = %image,
        digest = executor.image_digest(),
        memory_per_trial = executor.memory_bytes.unwrap_or(0),
        "trials run in containers"
    );
    Ok(executor)
}

/// Run `mlci tune`; returns the exit code.
pub(crate) fn cmd_tune(args: TuneArgs, cfg: &Config) -> anyhow::Result<Exit> {
    let store = open_store(cfg)?;
    let exp = experiment_to_run(&args, &store)?;
    let spec = exp.spec.clone();
    tracing::info!(experiment = %exp.id, db = %cfg.db.display(), "experiment {}", if args.resume.is_some() { "resumed" } else { "created" });

    let needs_data = spec.trial.executor != ExecutorKind::Subprocess;
    let dataset = match &spec.dataset {
        Some(d) => Some(d.splits()),
        None if needs_data => {
            return Err(bad(
                "the experiment has no dataset: set dataset.path in the spec or pass --data",
            ))
        }
        None => None,
    };
    let mut provenance = Provenance {
        mlci_version: env!("CARGO_PKG_VERSION").into(),
        ..Provenance::default()
    };
    provenance.git_commit = args.git_commit.clone().or_else(crate::config::git_commit);
    if let Some(splits) = &dataset {
        let source = DataSource::new(splits, spec.base_model().training.seed);
        let fp = mlci_train::data::fingerprint(&source).map_err(mlci_train::TrainError::from)?;
        tracing::info!(dataset = %splits.dir.display(), fingerprint = %fp, "dataset");
        provenance.dataset_fingerprint = Some(fp);
    }
    let root = cfg.layout().experiment_dir(&exp.id);
    // Check the mail settings now, not after hours of training.
    let notifier = if args.no_mail {
        None
    } else {
        Some(crate::mail::notifier(cfg)?)
    };
    let executor: Box<dyn Executor> = match spec.trial.executor {
        ExecutorKind::InProcess => Box::new(InProcessExecutor::new()),
        // Trials never see the variable that holds the SMTP password.
        ExecutorKind::Subprocess => Box::new(SubprocessExecutor {
            env: crate::config::trial_environment(),
        }),
        ExecutorKind::Container => Box::new(container_executor(&exp.id, spec.budget.parallel_trials)?),
        ExecutorKind::Swarm => Box::new(crate::swarm::swarm_executor(
            &exp.id,
            &spec,
            cfg,
            &root,
            dataset.as_ref().map(|d| d.dir.as_path()),
        )?),
    };
    // SIGTERM (a Jenkins abort) or Ctrl-C: running trials stop within seconds (between
    // batches), keeping their last epoch's checkpoint, and go back to pending; `--resume`
    // continues.
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, cancel.clone()).context("cannot install the signal handler")?;
    }
    let options = TuneOptions {
        root: root.clone(),
        threads: cfg.threads,
        dataset: dataset.clone(),
        provenance,
        cancel: Some(cancel.clone()),
    };
    let tuner = Tuner::new(&store, executor.as_ref(), options);
    let metric = spec.objective.metric.clone();
    let exp = tuner.run(&exp.id, &|p: &Progress| match p {
        Progress::Event(e) => match e.trial {
            Some(t) => tracing::info!(trial = t, event = %e.kind, "{}", e.message),
            None => tracing::info!(event = %e.kind, "{}", e.message),
        },
        Progress::Step { trial, step } => {
            let value = step
                .values
                .get(&metric)
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into());
            tracing::info!(trial, epoch = step.step, "{metric} {value}");
        }
    })?;

    if exp.state == ExperimentState::Running && cancel.load(Ordering::SeqCst) {
        tracing::warn!(experiment = %exp.id, "interrupted: running trials were checkpointed; continue with `mlci tune --resume {}`", exp.id);
        return Ok(Exit::Interrupted);
    }
    let mut exp = exp;
    if let Some(splits) = &dataset {
        evaluate_chosen(&store, &mut exp, splits, &root);
    }
    let trials = store.trials(&exp.id)?;
    let events = store.events(&exp.id)?;
    let report_dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| cfg.layout().report_dir(&exp.id));
    let files = mlci_report::write_reports(&report_dir, &exp, &trials, &events)
        .with_context(|| format!("cannot write the report to {}", report_dir.display()))?;
    tracing::info!(report = %files.html.display(), junit = %files.junit.display(), "report written");
    match &notifier {
        None => tracing::info!("mail skipped (--no-mail)"),
        // A mail that cannot be sent is reported; the exit code stays the experiment's.
        Some(n) => {
            if let Err(e) = crate::mail::notify(n, &exp, &trials, &files.html) {
                tracing::error!("the result mail could not be sent: {e:#}");
            }
        }
    }
    print_summary(&exp, &trials);
    emit_result(&exp, &trials, &files.html);
    Ok(match exp.state {
        ExperimentState::Succeeded => Exit::Success,
        // Without a goal the experiment is an optimisation: a spent budget is its end.
        ExperimentState::BudgetExhausted if exp.spec.objective.goal.is_none() => Exit::Success,
        ExperimentState::BudgetExhausted => Exit::GoalNotMet,
        ExperimentState::Failed | ExperimentState::Running => Exit::Failure,
    })
}

/// Measure the chosen trial's model once the experiment has ended: on the validation
/// images it was selected on and on the test split nobody has seen (when the dataset has
/// one), each with its 95% Wilson interval; kept in the experiment. A model that cannot be
/// evaluated is logged, never a reason to lose the experiment's result.
fn evaluate_chosen(store: &SqliteStore, exp: &mut ExperimentRecord, splits: &DataSplits, root: &Path) {
    let Some(trial) = exp.best_trial else {
        return;
    };
    if exp.evaluation.as_ref().is_some_and(|e| e.trial == trial) {
        return;
    }
    let seed = exp.spec.base_model().training.seed;
    match evaluation(splits, seed, &mlci_core::trial_dir_in(root, trial), trial) {
        Ok(e) => {
            let test = e.test.as_ref().map_or_else(
                || mlci_core::NO_TEST_SPLIT.to_owned(),
                |t| format!("{} (never seen)", t.describe()),
            );
            tracing::info!(
                trial,
                "chosen model: validation accuracy {} (selected on) · test {test}",
                e.validation.describe()
            );
            exp.evaluation = Some(e);
            if let Err(e) = store.update_experiment(exp) {
                tracing::error!("cannot record the evaluation: {e}");
            }
        }
        Err(e) => tracing::error!(trial, "cannot evaluate the chosen model: {e:#}"),
    }
}

/// The evaluation of the model in `dir` on the splits of `splits`.
fn evaluation(
    splits: &DataSplits,
    seed: u64,
    dir: &Path,
    trial: u32,
) -> anyhow::Result<mlci_core::Evaluation> {
    use mlci_core::{SplitAccuracy, DEFAULT_CONFIDENCE};
    use mlci_train::{DataError, Dataset, Predictor, Split};
    let model = Predictor::load(dir)?;
    let source = DataSource::new(splits, seed);
    let size = model.saved.input_size;
    let on = |split| -> anyhow::Result<Option<SplitAccuracy>> {
        match Dataset::load_split(&source, split, size) {
            Ok((classes, set)) => Ok(Some(SplitAccuracy::new(
                model.confusion(&classes, &set)?.accuracy(),
                DEFAULT_CONFIDENCE,
            ))),
            Err(DataError::NoTestSplit { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let validation = on(Split::Validation)?.context("the dataset has no validation images")?;
    let test = on(Split::Test)?;
    Ok(mlci_core::Evaluation {
        trial,
        validation,
        test,
    })
}

/// The last line of `mlci tune`: the experiment's outcome as a protocol event.
fn emit_result(exp: &ExperimentRecord, trials: &[TrialRecord], report: &Path) {
    let summary = ExperimentSummary::new(exp, trials);
    crate::progress::emit_event(&protocol::Event::Experiment(protocol::ExperimentEvent {
        id: exp.id.clone(),
        state: exp.state,
        met: exp.state == ExperimentState::Succeeded,
        metric: exp.spec.objective.metric.clone(),
        goal: exp.spec.objective.goal,
        best_value: summary.best_value,
        best_trial: summary.best_trial(),
        best_params: summary.best.map(|t| t.params.clone()),
        trials: trials.len(),
        wall_seconds: exp.wall_seconds,
        report: report.display().to_string(),
        message: exp.message.clone(),
        evaluation: exp.evaluation.clone().map(Box::new),
    }));
}

/// The table people read at the end of a Jenkins console: the chosen trial
/// (marked `*`) and the rest by value.
fn print_summary(exp: &ExperimentRecord, trials: &[TrialRecord]) {
    let summary = ExperimentSummary::new(exp, trials);
    let metric = summary.metric;
    emit_plain(&format!(
        "experiment {}: {} ({})",
        exp.id,
        exp.state.as_str(),
        exp.message.as_deref().unwrap_or("")
    ));
    if let Some(e) = &exp.evaluation {
        emit_plain(&format!(
            "chosen trial {}: validation accuracy {} (95%; selected on)",
            e.trial,
            e.validation.describe()
        ));
        match &e.test {
            Some(t) => emit_plain(&format!(
                "chosen trial {}: test accuracy       {} (95%; never seen)",
                e.trial,
                t.describe()
            )),
            None => emit_plain(&format!(
                "chosen trial {}: test accuracy       {}",
                e.trial,
                mlci_core::NO_TEST_SPLIT
            )),
        }
    }
    emit_plain(&format!(
        "{:>5}  {:<10} {:>12} {:>9} {:>10}  params",
        "trial", "state", metric, "seconds", "weights"
    ));
    let mut sorted = summary.trials.clone();
    sorted.sort_by(|a, b| summary.cmp_values(a.value, b.value).then(a.number.cmp(&b.number)));
    for t in sorted {
        let mark = if Some(t.number) == summary.best_trial() {
            "*"
        } else {
            " "
        };
        let value = t.value.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        let weights = t.param_count.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let mut params = mlci_core::describe(&t.params);
        if let Some(f) = &t.failure {
            if t.state == TrialState::Failed {
                params = format!("{params}  [{}]", f);
            }
        }
        emit_plain(&format!(
            "{mark}{:>4}  {:<10} {:>12} {:>9.1} {:>10}  {params}",
            t.number,
            t.state.as_str(),
            value,
            t.seconds,
            weights
        ));
    }
}

pub(crate) fn cmd_experiments(cmd: ExperimentsCommand, cfg: &Config) -> anyhow::Result<Exit> {
    let store = open_store(cfg)?;
    match cmd {
        ExperimentsCommand::List { json } => {
            let exps = store.experiments()?;
            if json {
                for e in &exps {
                    crate::progress::emit(&serde_json::to_value(e).expect("experiment serialises"));
                }
            } else {
                emit_plain(&format!("{:<32} {:<17} {:>6}  message", "id", "state", "trials"));
                for e in &exps {
                    let n = store.trials(&e.id)?.len();
                    emit_plain(&format!(
                        "{:<32} {:<17} {:>6}  {}",
                        e.id,
                        e.state.as_str(),
                        n,
                        e.message.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        ExperimentsCommand::Show { id, json } => {
            let exp = store
                .experiment(&id)?
                .ok_or_else(|| bad(format!("no experiment `{id}` in the store")))?;
            let trials = store.trials(&id)?;
            if json {
                let events = store.events(&id)?;
                crate::progress::emit(
                    &serde_json::json!({"experiment": exp, "trials": trials, "events": events}),
                );
            } else {
                print_summary(&exp, &trials);
            }
        }
    }
    Ok(Exit::Success)
}
