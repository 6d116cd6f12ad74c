//! Spec parsing and validation: every rejection names its field.

use mlci_core::{ModelSpec, SpecError};

/// Validate `json` for two classes; `Ok(params)` or the error.
fn check(json: &str) -> Result<usize, SpecError> {
    ModelSpec::from_json(json)?
        .architecture(2)
        .map(|a| a.param_count())
}

fn field_of(json: &str) -> String {
    check(json).expect_err("spec should be rejected").field
}

#[test]
fn default_spec_is_valid_and_counts_parameters() {
    let arch = ModelSpec::default().architecture(2).unwrap();
    // 64 -> conv3 62 -> pool 31 -> conv3 29 -> 14 -> conv3 12 -> 6; 6*6*128 = 4608 -> 128 -> 1
    let expected =
        (3 * 3 * 3 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (3 * 3 * 64 * 128 + 128) + (4608 * 128 + 128) + 129;
    assert_eq!(arch.param_count(), expected);
    assert_eq!(arch.outputs, 1);
    assert_eq!(arch.layers.last().unwrap().kind, "dense + sigmoid");
}

#[test]
fn more_than_two_classes_get_a_softmax_output() {
    let arch = ModelSpec::default().architecture(5).unwrap();
    assert_eq!(arch.outputs, 5);
    assert_eq!(arch.layers.last().unwrap().output, [5]);
}

#[test]
fn the_bench_architecture_has_the_expected_shapes() {
    let spec = ModelSpec::from_json(
        r#"{"input_size":64,"conv_blocks":[{"filters":32},{"filters":64}],"dense":[{"units":128}]}"#,
    )
    .unwrap();
    let arch = spec.architecture(2).unwrap();
    let shapes: Vec<_> = arch
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.output.clone()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("conv1", vec![62, 62, 32]),
            ("pool1", vec![31, 31, 32]),
            ("conv2", vec![29, 29, 64]),
            ("pool2", vec![14, 14, 64]),
            ("flatten", vec![12544]),
            ("dense1", vec![128]),
            ("output", vec![1]),
        ]
    );
}

#[test]
fn too_many_pooling_blocks_for_the_input_are_rejected() {
    let e =
        check(r#"{"input_size":16,"conv_blocks":[{"filters":8},{"filters":8},{"filters":8}]}"#).unwrap_err();
    assert!(e.field.starts_with("conv_blocks"), "{e}");
    assert!(e.to_string().contains("input_size 16"), "{e}");
}

#[test]
fn impossible_values_name_their_field() {
    assert_eq!(
        field_of(r#"{"conv_blocks":[{"filters":0}]}"#),
        "conv_blocks[0].filters"
    );
    assert_eq!(
        field_of(r#"{"conv_blocks":[{"filters":8},{"filters":8,"kernel_size":0}]}"#),
        "conv_blocks[1].kernel_size"
    );
    assert_eq!(
        field_of(r#"{"conv_blocks":[{"filters":8,"kernel_size":4,"padding":"same"}]}"#),
        "conv_blocks[0].kernel_size"
    );
    assert_eq!(field_of(r#"{"conv_blocks":[]}"#), "conv_blocks");
    assert_eq!(field_of(r#"{"dense":[{"units":0}]}"#), "dense[0].units");
    assert_eq!(
        field_of(r#"{"dense":[{"units":8,"dropout":1.0}]}"#),
        "dense[0].dropout"
    );
    assert_eq!(field_of(r#"{"input_size":2}"#), "input_size");
    assert_eq!(
        field_of(r#"{"training":{"learning_rate":0}}"#),
        "training.learning_rate"
    );
    assert_eq!(
        field_of(r#"{"training":{"batch_size":0}}"#),
        "training.batch_size"
    );
    assert_eq!(field_of(r#"{"training":{"epochs":0}}"#), "training.epochs");
    assert_eq!(
        field_of(r#"{"training":{"early_stopping":{"patience":0}}}"#),
        "training.early_stopping.patience"
    );
    assert_eq!(field_of(r#"{"augmentation":{"zoom":1.5}}"#), "augmentation.zoom");
    assert_eq!(
        field_of(r#"{"augmentation":{"rotation":-1}}"#),
        "augmentation.rotation"
    );
}

#[test]
fn unknown_fields_and_wrong_types_are_parse_errors_that_name_them() {
    let e = ModelSpec::from_json(r#"{"conv_blocks":[{"filters":8,"kernal_size":3}]}"#).unwrap_err();
    assert!(e.message.contains("kernal_size"), "{e}");
    let e = ModelSpec::from_json(r#"{"training":{"optimizer":"adagrad"}}"#).unwrap_err();
    assert!(e.message.contains("adagrad"), "{e}");
    let e = ModelSpec::from_json(r#"{"input_size":"big"}"#).unwrap_err();
    assert!(e.message.contains("line 1"), "{e}");
}

#[test]
fn fewer_than_two_classes_is_an_error() {
    assert_eq!(ModelSpec::default().architecture(1).unwrap_err().field, "classes");
}

#[test]
fn example_specs_in_the_repo_are_valid() {
    for text in [
        include_str!("../../../examples/demo.json"),
        include_str!("../../../examples/catsdogs.json"),
    ] {
        ModelSpec::from_json(text).unwrap().architecture(2).unwrap();
    }
}

#[test]
fn learning_rate_schedules_warm_up_then_follow_the_schedule() {
    use mlci_core::{LrSchedule, TrainingConfig};
    let mut t = TrainingConfig {
        epochs: 10,
        warmup_epochs: 1.0,
        ..TrainingConfig::default()
    };
    // 4 updates an epoch: warm-up over the first 4, then constant.
    let factors: Vec<f64> = (0..6).map(|s| t.lr_factor(s, 4)).collect();
    assert_eq!(factors, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    t.lr_schedule = LrSchedule::Cosine;
    assert_eq!(t.lr_factor(4, 4), 1.0, "the cosine starts where the warm-up ends");
    assert!(
        (t.lr_factor(4 + 18, 4) - 0.5).abs() < 1e-12,
        "half-way: half the rate"
    );
    assert!(t.lr_factor(39, 4) < 0.01, "near 0 at the last update");
    t.warmup_epochs = 0.0;
    assert_eq!(t.lr_factor(0, 4), 1.0);
    for (json, field) in [
        (r#"{"training": {"warmup_epochs": -1}}"#, "training.warmup_epochs"),
        (
            r#"{"training": {"epochs": 2, "warmup_epochs": 3}}"#,
            "training.warmup_epochs",
        ),
        (
            r#"{"training": {"label_smoothing": 0.5}}"#,
            "training.label_smoothing",
        ),
    ] {
        assert!(field_of(json).contains(field), "{json}: {}", field_of(json));
    }
    // An unknown schedule is a parse error naming the value, as an unknown optimizer is.
    let e = ModelSpec::from_json(r#"{"training":{"lr_schedule":"step"}}"#).unwrap_err();
    assert!(e.message.contains("step"), "{e}");
}
