//! Experiment specs: parsing, validation naming the field, and applying
//! parameters to a model.

use mlci_core::{apply_params, ExperimentSpec, ModelSpec, ParamValue, Params};

fn parse(yaml: &str) -> Result<ExperimentSpec, mlci_core::SpecError> {
    ExperimentSpec::from_yaml(yaml)
}

fn field(yaml: &str) -> String {
    let e = parse(yaml).expect_err("should be rejected");
    format!("{}: {}", e.field, e.message)
}

#[test]
fn defaults_are_katib_like() {
    let spec = parse("name: x\nsearch_space: { filters: { type: int, min: 8, max: 64 } }").unwrap();
    assert_eq!(spec.objective.metric, "val_accuracy");
    assert_eq!(spec.objective.goal, Some(0.80));
    assert_eq!(spec.budget.parallel_trials, 1);
    assert_eq!(spec.algorithm.name, mlci_core::Algorithm::Tpe);
}

#[test]
fn the_examples_in_the_repo_parse() {
    for text in [
        include_str!("../../../examples/experiment.yaml"),
        include_str!("../../../examples/demo-experiment.yaml"),
    ] {
        parse(text).unwrap();
    }
}

#[test]
fn bad_specs_name_their_field() {
    let cases = [
        ("name: ''\nsearch_space: { filters: { type: int, min: 1, max: 2 } }", "name"),
        ("name: x\nsearch_space: { filters: { type: int, min: 9, max: 2 } }", "search_space.filters.max"),
        ("name: x\nsearch_space: { training.learning_rate: { type: float, min: 0, max: 1, log: true } }", "search_space.training.learning_rate.min"),
        ("name: x\nsearch_space: { filters: { type: categorical, values: [] } }", "search_space.filters.values"),
        ("name: x\nsearch_space: { dropout: { type: float, min: 0, max: 0.5, when: { param: nope, values: [1] } } }", "search_space.dropout.when.param"),
        ("name: x\nsearch_space: { gizmos: { type: int, min: 1, max: 2 } }", "search_space.gizmos"),
        ("name: x\nsearch_space: { filters: { type: int, min: 1, max: 2 } }\nbudget: { max_trials: 0 }", "budget.max_trials"),
        ("name: x\nsearch_space: { filters: { type: int, min: 1, max: 2 } }\nearly_stopping: { rule: asha, reduction_factor: 1 }", "early_stopping.reduction_factor"),
        ("name: x\nsearch_space: { x: { type: int, min: 1, max: 2 } }\ntrial: { executor: subprocess }", "trial.command"),
        ("name: x\nsearch_space: {}", "search_space"),
        ("name: x\nsearch_space: { filters: { type: int, min: 1, max: 2 } }\nbudget: { max_trails: 3 }", "max_trails"),
        ("name: x\nsearch_space: { conv_blocks: { type: int, min: 9, max: 12 } }", "conv_blocks"),
    ];
    for (yaml, expected) in cases {
        let got = field(yaml);
        assert!(
            got.contains(expected),
            "{yaml}\n  -> {got}\n  expected a mention of {expected}"
        );
    }
}

#[test]
fn command_trials_accept_any_parameter_name() {
    let spec = parse("name: x\nsearch_space: { lr: { type: float, min: 0.001, max: 0.1, log: true } }\ntrial: { executor: subprocess, command: [python, train.py] }").unwrap();
    assert_eq!(spec.trial.command.unwrap()[1], "train.py");
}

fn params(pairs: &[(&str, ParamValue)]) -> Params {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

#[test]
fn structure_changes_apply_before_per_layer_values() {
    let base = ModelSpec::default(); // 3 blocks: 32, 64, 128
    let spec = apply_params(
        &base,
        &params(&[
            ("conv_blocks", ParamValue::Int(2)),
            ("filters", ParamValue::Int(16)),
        ]),
    )
    .unwrap();
    let filters: Vec<usize> = spec.conv_blocks.iter().map(|b| b.filters).collect();
    assert_eq!(filters, [16, 32]);
    let spec = apply_params(
        &base,
        &params(&[
            ("conv_blocks", ParamValue::Int(4)),
            ("kernel_size", ParamValue::Int(3)),
            ("batch_norm", ParamValue::Bool(true)),
            ("conv_blocks[3].filters", ParamValue::Int(96)),
            ("input_size", ParamValue::Int(96)),
            ("dense_layers", ParamValue::Int(2)),
            ("dense_units", ParamValue::Int(64)),
            ("dropout", ParamValue::Float(0.25)),
            ("training.optimizer", ParamValue::Text("rmsprop".into())),
            ("training.learning_rate", ParamValue::Float(1e-4)),
            ("training.epochs", ParamValue::Int(7)),
            ("augmentation.zoom", ParamValue::Float(0.1)),
            ("augmentation.horizontal_flip", ParamValue::Bool(true)),
        ]),
    )
    .unwrap();
    assert_eq!(spec.conv_blocks.len(), 4);
    assert_eq!(spec.conv_blocks[3].filters, 96);
    assert!(spec.conv_blocks.iter().all(|b| b.batch_norm));
    assert_eq!(spec.dense.len(), 2);
    assert!(spec.dense.iter().all(|d| d.units == 64 && d.dropout == 0.25));
    assert_eq!(spec.training.optimizer, mlci_core::OptimizerKind::RmsProp);
    assert_eq!(spec.training.epochs, 7);
    assert_eq!(spec.augmentation.zoom, 0.1);
    assert!(spec.augmentation.horizontal_flip);
}

#[test]
fn impossible_models_and_wrong_types_are_errors_naming_the_parameter() {
    let base = ModelSpec::default();
    let e = apply_params(&base, &params(&[("conv_blocks", ParamValue::Int(7))])).unwrap_err();
    assert!(e.message.contains("conv_blocks=7"), "{e}");
    let e = apply_params(
        &base,
        &params(&[("training.optimizer", ParamValue::Text("adagrad".into()))]),
    )
    .unwrap_err();
    assert_eq!(e.field, "search_space.training.optimizer");
    let e = apply_params(&base, &params(&[("filters", ParamValue::Text("many".into()))])).unwrap_err();
    assert_eq!(e.field, "search_space.filters");
    let e = apply_params(&base, &params(&[("conv_blocks[5].filters", ParamValue::Int(8))])).unwrap_err();
    assert!(e.message.contains("3 conv blocks"), "{e}");
}

#[test]
fn the_base_model_as_a_point_of_the_space() {
    let spec = parse(
        "name: x
search_space:
  conv_blocks: { type: int, min: 1, max: 5 }
  filters: { type: int, min: 8, max: 128, log: true }
  kernel_size: { type: int, min: 3, max: 7, step: 2 }
  dropout: { type: float, min: 0.0, max: 0.5 }
  training.optimizer: { type: categorical, values: [adam, sgd] }
  training.momentum: { type: float, min: 0.5, max: 0.99, when: { param: training.optimizer, values: [sgd] } }
  training.learning_rate: { type: float, min: 0.0001, max: 0.1, log: true }
  augmentation.horizontal_flip: { type: categorical, values: [true, false] }
trial:
  model:
    conv_blocks: [{ filters: 32 }, { filters: 64 }, { filters: 128 }]
    dense: [{ units: 128, dropout: 0.2 }]
",
    )
    .unwrap();
    let base = spec.base_model();
    let point = mlci_core::base_params(&base, &spec.search_space).expect("the base model is in the space");
    let expected = params(&[
        ("conv_blocks", ParamValue::Int(3)),
        ("filters", ParamValue::Int(32)),
        ("kernel_size", ParamValue::Int(3)),
        // The f32 field's shortest decimal, as the user wrote it.
        ("dropout", ParamValue::Float(0.2)),
        ("training.optimizer", ParamValue::Text("adam".into())),
        ("training.learning_rate", ParamValue::Float(1e-3)),
        ("augmentation.horizontal_flip", ParamValue::Bool(false)),
    ]);
    // The condition (sgd) does not hold: momentum stays out.
    assert_eq!(point, expected);
    assert_eq!(
        apply_params(&base, &point).unwrap(),
        base,
        "the point is the base model itself"
    );

    // A condition that holds brings its key in.
    let mut sgd = spec.clone();
    sgd.trial.model.as_mut().unwrap().training.optimizer = mlci_core::OptimizerKind::Sgd;
    let point = mlci_core::base_params(&sgd.base_model(), &sgd.search_space).unwrap();
    assert_eq!(point.get("training.momentum"), Some(&ParamValue::Float(0.9)));

    // Outside a range, or a value the model does not have: not a point of the space.
    let mut narrow = spec.clone();
    narrow.search_space.insert(
        "filters".into(),
        mlci_core::ParamSpec::Int {
            min: 48,
            max: 128,
            step: None,
            log: false,
            when: None,
        },
    );
    assert_eq!(mlci_core::base_params(&base, &narrow.search_space), None);
    let mut no_dense = base.clone();
    no_dense.dense.clear();
    assert_eq!(mlci_core::base_params(&no_dense, &spec.search_space), None);
}
