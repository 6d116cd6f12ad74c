//! The JSON lines protocol: what `mlci train`, `mlci tune` and trial commands
//! print on stdout, one event per line, and what every reader (the step
//! service, the container, Swarm and subprocess executors) parses back.
//!
//! A line is a JSON object tagged by `"event"` and versioned by `"v"`:
//!
//! ```text
//! {"event":"epoch","v":1,"epoch":3,"loss":0.52,…,"epochs":10}
//! {"event":"result","v":1,"best_epoch":7,"val_accuracy":0.81,…}
//! {"event":"experiment","v":1,"id":"cats-1a2b3c","state":"succeeded","met":true,…}
//! ```
//!
//! Lines written before the version field existed carry no `"v"` and are read
//! as version 1. Adding a field keeps the version (readers ignore fields they
//! do not know); changing or removing one raises it, and a reader refuses a
//! version newer than [`VERSION`] with [`EventError::NewerVersion`] rather than
//! misread it. An `"event"` of a kind this reader does not know is
//! [`EventError::UnknownKind`]. Anything else (log lines, a user's own JSON
//! without an `"event"` string) is not an event: [`parse_line`] returns
//! `Ok(None)`.

use std::path::Path;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::{EpochMetrics, ExperimentState, Params, StopReason};

/// The protocol version this crate writes and the newest it reads.
pub const VERSION: u64 = 1;

/// The kinds of event this version knows, as they appear in `"event"`.
pub const KINDS: [&str; 3] = ["epoch", "result", "experiment"];

/// One line of mlci's machine-readable output.
///
/// Serialises with its `"event"` tag and `"v":`[`VERSION`]; read lines with
/// [`parse_line`], which checks both.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An epoch of training finished (`mlci train`, once per epoch).
    Epoch(EpochEvent),
    /// Training finished (`mlci train`, last line).
    Result(ResultEvent),
    /// An experiment ended (`mlci tune`, last line).
    Experiment(ExperimentEvent),
}

impl Event {
    /// The value of `"event"` for this event.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Epoch(_) => "epoch",
            Event::Result(_) => "result",
            Event::Experiment(_) => "experiment",
        }
    }

    /// The event as one line of JSON (no trailing newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("protocol events serialise (string keys, no fallible fields)")
    }
}

/// The tag and version first, then the event's own fields.
#[derive(Serialize)]
struct Tagged<'a, T> {
    event: &'static str,
    v: u64,
    #[serde(flatten)]
    body: &'a T,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (event, v) = (self.kind(), VERSION);
        match self {
            Event::Epoch(body) => Tagged { event, v, body }.serialize(serializer),
            Event::Result(body) => Tagged { event, v, body }.serialize(serializer),
            Event::Experiment(body) => Tagged { event, v, body }.serialize(serializer),
        }
    }
}

/// `{"event":"epoch",…}`: the metrics of a finished epoch and how many
/// epochs the run has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochEvent {
    #[serde(flatten)]
    pub metrics: EpochMetrics,
    /// Epochs configured for the run.
    pub epochs: usize,
}

/// `{"event":"result",…}`: how a training run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultEvent {
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// Validation accuracy of the kept epoch.
    pub val_accuracy: f64,
    /// Validation loss of the kept epoch.
    pub val_loss: f64,
    pub param_count: usize,
    pub stop_reason: StopReason,
    /// Sum of epoch seconds over the whole run.
    pub total_seconds: f64,
    /// The output folder (model, metrics, checkpoint).
    pub out: String,
}

/// `{"event":"experiment",…}`: how an experiment ended. Every field is
/// written, absent values as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentEvent {
    /// The experiment's id (`name-xxxxxx`).
    pub id: String,
    pub state: ExperimentState,
    /// Whether the goal was met (the experiment succeeded).
    pub met: bool,
    /// The objective's metric.
    pub metric: String,
    pub goal: Option<f64>,
    /// The chosen trial's objective value.
    pub best_value: Option<f64>,
    /// The chosen trial's number.
    pub best_trial: Option<u32>,
    /// The chosen trial's parameters.
    pub best_params: Option<Params>,
    /// Trials run (in every state).
    pub trials: usize,
    /// Wall seconds over every run of the tuning loop.
    pub wall_seconds: f64,
    /// The HTML report's path.
    pub report: String,
    /// Why the experiment ended, for people.
    pub message: Option<String>,
    /// The chosen model's accuracy on the validation images it was selected on and on
    /// the test images never seen, each with its interval (absent when not evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Box<crate::Evaluation>>,
}

impl ResultEvent {
    /// The output folder as a path.
    pub fn out_dir(&self) -> &Path {
        Path::new(&self.out)
    }
}

/// An event line that cannot be read. Each message names the event kind.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    /// `"event"` names a kind this version does not know.
    #[error("unknown event kind `{kind}` (this mlci reads epoch, result and experiment events; is the producer a newer mlci?)")]
    UnknownKind { kind: String },
    /// `"v"` is newer than [`VERSION`].
    #[error("`{kind}` event of protocol version {version}, newer than the version {VERSION} this mlci reads; upgrade mlci")]
    NewerVersion { kind: String, version: u64 },
    /// `"v"` is not a whole number from 1.
    #[error("`{kind}` event: invalid protocol version `{found}` (a whole number from 1)")]
    BadVersion { kind: String, found: String },
    /// The fields do not make an event of this kind.
    #[error("malformed `{kind}` event: {reason}")]
    Malformed { kind: String, reason: String },
}

impl EventError {
    /// The `"event"` kind of the line at fault.
    pub fn kind(&self) -> &str {
        match self {
            EventError::UnknownKind { kind }
            | EventError::NewerVersion { kind, .. }
            | EventError::BadVersion { kind, .. }
            | EventError::Malformed { kind, .. } => kind,
        }
    }
}

/// Read one output line.
///
/// `Ok(None)` when the line is not an mlci event: not a JSON object, or one
/// without a string `"event"` (a log line, a user's own metrics). `Err` when
/// it is one this version cannot read: an unknown kind, a newer or invalid
/// version, or fields that do not fit the kind. A line without `"v"` is
/// version 1.
pub fn parse_line(line: &str) -> Result<Option<Event>, EventError> {
    let line = line.trim();
    if !line.starts_with('{') {
        return Ok(None);
    }
    let Ok(object) = serde_json::from_str::<Map<String, Value>>(line) else {
        return Ok(None);
    };
    let Some(kind) = object.get("event").and_then(Value::as_str).map(str::to_owned) else {
        return Ok(None);
    };
    if !KINDS.contains(&kind.as_str()) {
        return Err(EventError::UnknownKind { kind });
    }
    match object.get("v") {
        None => {}
        Some(Value::Number(n)) => match n.as_u64() {
            Some(version) if version > VERSION => return Err(EventError::NewerVersion { kind, version }),
            Some(1..) => {}
            _ => {
                return Err(EventError::BadVersion {
                    kind,
                    found: n.to_string(),
                })
            }
        },
        Some(other) => {
            return Err(EventError::BadVersion {
                kind,
                found: other.to_string(),
            })
        }
    }
    serde_json::from_value(Value::Object(object))
        .map(Some)
        .map_err(|e| EventError::Malformed {
            kind,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamValue;

    fn metrics() -> EpochMetrics {
        EpochMetrics {
            epoch: 2,
            loss: 0.5,
            accuracy: 0.7,
            val_loss: 0.6,
            val_accuracy: 0.65,
            seconds: 1.5,
            train_images: 100,
            images_per_second: 66.7,
            val_images: 40,
        }
    }

    fn events() -> Vec<Event> {
        vec![
            Event::Epoch(EpochEvent {
                metrics: metrics(),
                epochs: 5,
            }),
            Event::Result(ResultEvent {
                best_epoch: 2,
                val_accuracy: 0.8125,
                val_loss: 0.41,
                param_count: 12345,
                stop_reason: StopReason::EarlyStopped,
                total_seconds: 12.5,
                out: "/tmp/out".into(),
            }),
            Event::Experiment(ExperimentEvent {
                id: "cats-1a2b3c".into(),
                state: ExperimentState::Succeeded,
                met: true,
                metric: "val_accuracy".into(),
                goal: Some(0.8),
                best_value: Some(0.8125),
                best_trial: Some(3),
                best_params: Some(Params::from([
                    ("lr".to_owned(), ParamValue::Float(0.001)),
                    ("optimizer".to_owned(), ParamValue::Text("adam".into())),
                ])),
                trials: 4,
                wall_seconds: 200.0,
                report: "/tmp/report/report.html".into(),
                message: Some("goal 0.8 met by trial 3".into()),
                evaluation: None,
            }),
        ]
    }

    #[test]
    fn events_round_trip_with_their_tag_and_version() {
        for event in events() {
            let line = event.to_line();
            assert!(
                line.starts_with(&format!(r#"{{"event":"{}","v":1,"#, event.kind())),
                "{line}"
            );
            assert!(!line.contains('\n'));
            assert_eq!(parse_line(&line), Ok(Some(event)), "{line}");
        }
    }

    #[test]
    fn lines_keep_the_field_names_readers_know() {
        let [epoch, result, experiment] = events().try_into().unwrap();
        let keys = |e: &Event| {
            let v: Map<String, Value> = serde_json::from_str(&e.to_line()).unwrap();
            v.keys().cloned().collect::<Vec<_>>().join(",")
        };
        assert_eq!(
            keys(&epoch),
            "accuracy,epoch,epochs,event,images_per_second,loss,seconds,train_images,v,val_accuracy,val_images,val_loss"
        );
        assert_eq!(
            keys(&result),
            "best_epoch,event,out,param_count,stop_reason,total_seconds,v,val_accuracy,val_loss"
        );
        assert_eq!(
            keys(&experiment),
            "best_params,best_trial,best_value,event,goal,id,message,met,metric,report,state,trials,v,wall_seconds"
        );
        let none = Event::Experiment(ExperimentEvent {
            goal: None,
            best_value: None,
            best_trial: None,
            best_params: None,
            message: None,
            ..match experiment {
                Event::Experiment(e) => e,
                _ => unreachable!(),
            }
        });
        let line = none.to_line();
        assert!(
            line.contains(r#""best_value":null"#) && line.contains(r#""message":null"#),
            "absent values are written as null: {line}"
        );
        assert_eq!(parse_line(&line), Ok(Some(none)));
    }

    #[test]
    fn a_line_without_a_version_is_version_1() {
        // As `mlci train` printed them before the version field.
        let epoch = r#"{"accuracy":0.7,"epoch":2,"epochs":5,"event":"epoch","images_per_second":66.7,"loss":0.5,"seconds":1.5,"train_images":100,"val_accuracy":0.65,"val_loss":0.6}"#;
        assert_eq!(
            parse_line(epoch),
            Ok(Some(Event::Epoch(EpochEvent {
                metrics: EpochMetrics {
                    val_images: 0,
                    ..metrics()
                },
                epochs: 5
            })))
        );
        let result = r#"{"best_epoch":2,"event":"result","out":"out","param_count":10,"stop_reason":"completed","total_seconds":3.0,"val_accuracy":0.9,"val_loss":0.2}"#;
        let Ok(Some(Event::Result(r))) = parse_line(result) else {
            panic!("{:?}", parse_line(result))
        };
        assert_eq!((r.best_epoch, r.stop_reason), (2, StopReason::Completed));
        let experiment = r#"{"best_params":{"lr":0.01},"best_trial":2,"best_value":0.9,"event":"experiment","goal":0.8,"id":"x-1","message":null,"met":true,"metric":"val_accuracy","report":"r.html","state":"succeeded","trials":3,"wall_seconds":9.5}"#;
        let Ok(Some(Event::Experiment(e))) = parse_line(experiment) else {
            panic!("{:?}", parse_line(experiment))
        };
        assert_eq!(
            (e.best_trial, e.met, e.state),
            (Some(2), true, ExperimentState::Succeeded)
        );
        assert_eq!(e.best_params.unwrap()["lr"], ParamValue::Float(0.01));
    }

    #[test]
    fn unknown_kinds_and_newer_versions_are_errors_naming_them() {
        let err = parse_line(r#"{"event":"checkpoint","v":1,"epoch":3}"#).unwrap_err();
        assert_eq!(err.kind(), "checkpoint");
        assert!(matches!(err, EventError::UnknownKind { .. }));
        assert!(
            err.to_string().contains("unknown event kind `checkpoint`"),
            "{err}"
        );

        let line = events()[0].to_line().replace(r#""v":1"#, r#""v":2"#);
        let err = parse_line(&line).unwrap_err();
        assert_eq!(
            err,
            EventError::NewerVersion {
                kind: "epoch".into(),
                version: 2
            }
        );
        assert!(err.to_string().contains("protocol version 2"), "{err}");

        for bad in ["0", "-1", "1.5", "\"1\"", "null"] {
            let line = events()[1]
                .to_line()
                .replace(r#""v":1"#, &format!(r#""v":{bad}"#));
            assert!(
                matches!(parse_line(&line), Err(EventError::BadVersion { .. })),
                "v {bad}: {:?}",
                parse_line(&line)
            );
        }
    }

    #[test]
    fn a_known_kind_with_missing_fields_is_malformed_not_misread() {
        let err = parse_line(r#"{"event":"epoch","epoch":3,"val_accuracy":0.7}"#).unwrap_err();
        assert!(matches!(err, EventError::Malformed { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("malformed `epoch` event: missing field"),
            "{err}"
        );
        // A diverged run's NaN loss is written as null: not a number to read.
        let err = parse_line(&events()[0].to_line().replace("0.5", "null")).unwrap_err();
        assert_eq!(err.kind(), "epoch");
    }

    #[test]
    fn other_lines_are_not_events() {
        for line in [
            "",
            "INFO training",
            "epoch=3 val_accuracy=0.71",
            r#"{"epoch": 3, "val_accuracy": 0.71}"#,
            r#"{"event": 3, "loss": 0.5}"#,
            r#"{"event":"epoch""#,
            "[1, 2]",
            r#"{"experiment": {"id": "x"}, "trials": []}"#,
        ] {
            assert_eq!(parse_line(line), Ok(None), "{line:?}");
        }
        assert!(
            parse_line("  {\"event\":\"nope\"}  ").is_err(),
            "surrounding blanks are trimmed"
        );
    }
}
