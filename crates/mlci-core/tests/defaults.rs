//! Defaults that apply only where they make sense, and shapes serde would accept but a
//! spec must not have (issue 11).

use mlci_core::{Direction, EnvironmentState, ExperimentSpec, ModelSpec};

fn experiment(objective: &str) -> ExperimentSpec {
    ExperimentSpec::from_yaml(&format!(
        "name: t\n{objective}search_space:\n  training.learning_rate: {{ type: float, min: 0.001, max: 0.01 }}\n"
    ))
    .unwrap()
}

#[test]
fn the_default_goal_belongs_to_the_default_objective_only() {
    assert_eq!(experiment("").objective.goal, Some(0.80));
    assert_eq!(
        experiment("objective: { metric: val_accuracy }\n").objective.goal,
        Some(0.80)
    );
    assert_eq!(
        experiment("objective: { metric: val_accuracy, direction: maximize }\n")
            .objective
            .goal,
        Some(0.80)
    );
    let loss = experiment("objective: { metric: val_loss, direction: minimize }\n");
    assert_eq!(
        (loss.objective.direction, loss.objective.goal),
        (Direction::Minimize, None)
    );
    assert_eq!(experiment("objective: { metric: value }\n").objective.goal, None);
    assert_eq!(
        experiment("objective: { metric: val_accuracy, direction: minimize }\n")
            .objective
            .goal,
        None
    );
    // Given, it is kept; `null` is no goal for any objective.
    assert_eq!(
        experiment("objective: { metric: val_loss, direction: minimize, goal: 0.1 }\n")
            .objective
            .goal,
        Some(0.1)
    );
    assert_eq!(experiment("objective: { goal: null }\n").objective.goal, None);
    // What is stored reads back the same (the goal is explicit in the JSON).
    let stored = serde_json::to_string(&loss).unwrap();
    assert_eq!(ExperimentSpec::from_yaml(&stored).unwrap(), loss);
}

#[test]
fn a_model_spec_is_an_object_and_so_is_each_of_its_parts() {
    for (text, field) in [
        ("[]", "(spec)"),
        ("[64]", "(spec)"),
        ("3", "(spec)"),
        (r#"{"training": []}"#, "training"),
        (r#"{"augmentation": [10]}"#, "augmentation"),
        (
            r#"{"training": {"early_stopping": [3]}}"#,
            "training.early_stopping",
        ),
        (r#"{"conv_blocks": [{"filters": 8}, [16, 3]]}"#, "conv_blocks[1]"),
        (r#"{"dense": [[128, 0.5]]}"#, "dense[0]"),
    ] {
        let e = ModelSpec::from_json(text).unwrap_err();
        assert_eq!(e.field, field, "{text}: {e}");
        assert!(e.message.contains("must be a JSON object"), "{text}: {e}");
    }
    // `{}` is the all-default spec, as documented; `null` early stopping is off.
    assert_eq!(ModelSpec::from_json("{}").unwrap(), ModelSpec::default());
    ModelSpec::from_json(r#"{"training": {"early_stopping": null}}"#).unwrap();
}

#[test]
fn an_environment_state_round_trips_through_its_name() {
    for s in [
        EnvironmentState::Running,
        EnvironmentState::Waiting,
        EnvironmentState::Completed,
        EnvironmentState::CrashLoop,
        EnvironmentState::Failed,
    ] {
        assert_eq!(EnvironmentState::parse(s.as_str()), Some(s));
    }
}
