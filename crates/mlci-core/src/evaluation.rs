//! Accuracy as evidence: a count of correct answers on a number of images, with its
//! Wilson score interval, and the chosen model's evaluation at an experiment's end
//! (on the validation images it was selected on, and on test images nobody looked at).
//!
//! Why an interval: with 2,000 validation images, an accuracy near 0.80 has a standard
//! error of about 0.9 points, so a model chosen because it crossed 0.80 on them is a coin
//! flip on the next photos. The Wilson interval (Wilson 1927; Agresti & Coull 1998) keeps
//! its coverage near the nominal level for proportions near 0 or 1 and small counts, where
//! the normal approximation does not.

use serde::{Deserialize, Serialize};

/// The confidence of the intervals people read when no other is asked for.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// A two-sided interval at `confidence`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    pub confidence: f64,
}

/// `correct` right answers out of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accuracy {
    pub correct: u64,
    pub total: u64,
}

impl Accuracy {
    pub fn new(correct: u64, total: u64) -> Self {
        Self { correct, total }
    }

    /// From a measured fraction of `total` (rounded to the nearest count).
    pub fn from_fraction(fraction: f64, total: u64) -> Self {
        let correct = (fraction.clamp(0.0, 1.0) * total as f64).round() as u64;
        Self { correct, total }
    }

    /// The point estimate; 0 with no images.
    pub fn value(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    /// The Wilson score interval at `confidence` (e.g. 0.95); `[0, 1]` with no images.
    pub fn wilson(self, confidence: f64) -> Interval {
        if self.total == 0 {
            return Interval {
                low: 0.0,
                high: 1.0,
                confidence,
            };
        }
        let z = z_score(confidence);
        let n = self.total as f64;
        let p = self.value();
        let z2 = z * z;
        let center = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
        Interval {
            low: (center - half).max(0.0),
            high: (center + half).min(1.0),
            confidence,
        }
    }
}

/// The two-sided standard normal quantile for `confidence` (1.96 for 0.95).
pub fn z_score(confidence: f64) -> f64 {
    normal_quantile(0.5 + confidence.clamp(0.0, 0.999_999) / 2.0)
}

/// The standard normal quantile function, by Peter Acklam's rational approximation
/// (relative error below 1.2e-9 on (0, 1)).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p < LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// One split's accuracy as reported: the count, the point estimate and its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitAccuracy {
    /// Images evaluated.
    pub images: u64,
    pub correct: u64,
    pub accuracy: f64,
    pub interval: Interval,
}

impl SplitAccuracy {
    pub fn new(accuracy: Accuracy, confidence: f64) -> Self {
        Self {
            images: accuracy.total,
            correct: accuracy.correct,
            accuracy: accuracy.value(),
            interval: accuracy.wilson(confidence),
        }
    }

    /// `0.8125 [0.795, 0.829] (n=2000)`, for logs and mail.
    pub fn describe(&self) -> String {
        format!(
            "{:.4} [{:.4}, {:.4}] (n={})",
            self.accuracy, self.interval.low, self.interval.high, self.images
        )
    }
}

/// The chosen model measured once, when the experiment ended: on the validation images
/// it was selected on, and on the test images that no trial and no choice ever saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The trial whose model was evaluated (the chosen one).
    pub trial: u32,
    /// "selected on": the images the tuner chose by. Optimistic by construction.
    pub validation: SplitAccuracy,
    /// "never seen": the held-out test images, when the dataset has them (else see
    /// [`NO_TEST_SPLIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<SplitAccuracy>,
}

/// What the views say in place of a test accuracy when the dataset has no test split.
pub const NO_TEST_SPLIT: &str =
    "none: the dataset has no test split (add DIR/test/<class>/ or dataset.test_split)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_scores_match_the_tables() {
        assert!((z_score(0.95) - 1.959_963_984_540_054).abs() < 1e-8);
        assert!((z_score(0.99) - 2.575_829_303_548_901).abs() < 1e-8);
        assert!((z_score(0.90) - 1.644_853_626_951_472).abs() < 1e-8);
        assert!((z_score(0.6827) - 1.000_0).abs() < 1e-3);
    }

    #[test]
    fn wilson_intervals_match_published_values() {
        // Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662 at 95%.
        let i = Accuracy::new(81, 263).wilson(0.95);
        assert!(
            (i.low - 0.2553).abs() < 5e-5 && (i.high - 0.3662).abs() < 5e-5,
            "{i:?}"
        );
        // 15/148 -> 0.0624 to 0.1605.
        let i = Accuracy::new(15, 148).wilson(0.95);
        assert!(
            (i.low - 0.0624).abs() < 5e-5 && (i.high - 0.1605).abs() < 5e-5,
            "{i:?}"
        );
        // All right still leaves room below 1; none right leaves room above 0.
        let i = Accuracy::new(29, 29).wilson(0.95);
        assert!((i.low - 0.8830).abs() < 5e-5 && i.high == 1.0, "{i:?}");
        let i = Accuracy::new(0, 20).wilson(0.95);
        assert!(i.low == 0.0 && (i.high - 0.1611).abs() < 5e-5, "{i:?}");
    }

    #[test]
    fn an_accuracy_of_080_on_2000_images_is_give_or_take_under_2_points() {
        let i = Accuracy::new(1600, 2000).wilson(0.95);
        assert!(
            (i.low - 0.7820).abs() < 1e-3 && (i.high - 0.8168).abs() < 1e-3,
            "{i:?}"
        );
        assert_eq!(Accuracy::from_fraction(0.8, 2000), Accuracy::new(1600, 2000));
        assert_eq!(Accuracy::new(0, 0).wilson(0.95).low, 0.0);
    }

    #[test]
    fn with_a_confidence_the_goal_needs_the_intervals_lower_bound() {
        let mut o = crate::Objective {
            goal: Some(0.8),
            ..crate::Objective::default()
        };
        assert!(o.meets_goal(Some(0.82), Some(100)));
        o.confidence = Some(0.95);
        assert!(
            !o.meets_goal(Some(0.82), Some(100)),
            "0.82 of 100 is 0.73 at worst"
        );
        assert!(
            o.meets_goal(Some(0.82), Some(20_000)),
            "0.82 of 20,000 is 0.815 at worst"
        );
        assert!(!o.meets_goal(Some(0.82), None), "the count must be known");
        let bad = crate::ExperimentSpec::from_yaml(
            "name: x\nobjective: { metric: val_loss, direction: minimize, goal: 0.3, confidence: 0.95 }",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("objective.confidence"), "{bad}");
        let bad = crate::ExperimentSpec::from_yaml("name: x\nobjective: { confidence: 1.5 }").unwrap_err();
        assert!(bad.to_string().contains("objective.confidence"), "{bad}");
        let bad =
            crate::ExperimentSpec::from_yaml("name: x\ndataset: { path: /d, test_split: 0 }").unwrap_err();
        assert!(bad.to_string().contains("dataset.test_split"), "{bad}");
    }
}
