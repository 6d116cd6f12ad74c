//! The standard normal distribution truncated to `[a, b]`, in log space where
//! it matters (the same formulas as Optuna's `_truncnorm`, which follows
//! SciPy): log CDF with an asymptotic series far in the left tail, log mass
//! of an interval worked out in the more accurate tail, and an inverse CDF
//! by Newton's method on the log CDF.

use std::f64::consts::{FRAC_1_SQRT_2, SQRT_2};

/// `ln(sqrt(2 pi))`.
pub(crate) const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// The standard normal CDF.
pub(crate) fn ndtr(a: f64) -> f64 {
    let x = a / SQRT_2;
    if x < -FRAC_1_SQRT_2 {
        0.5 * libm::erfc(-x)
    } else if x < FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        1.0 - 0.5 * libm::erfc(x)
    }
}

/// `ln(ndtr(a))`, accurate in both tails.
pub(crate) fn log_ndtr(a: f64) -> f64 {
    if a > 6.0 {
        return (-ndtr(-a)).ln_1p();
    }
    if a > -20.0 {
        return ndtr(a).ln();
    }
    if a == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    // ln(pdf(a) / -a) + ln(1 - 1/a^2 + 3/a^4 - 15/a^6 + ...), an asymptotic
    // series whose terms shrink long before they would diverge for a <= -20.
    let log_lhs = -0.5 * a * a - (-a).ln() - LN_SQRT_2PI;
    let (mut last, mut sum, mut numerator, mut denom, mut sign) = (0.0, 1.0_f64, 1.0, 1.0, 1.0);
    let inv_a2 = 1.0 / (a * a);
    let mut i = 0.0;
    while (last - sum).abs() > f64::EPSILON && i < 200.0 {
        i += 1.0;
        last = sum;
        sign = -sign;
        denom *= inv_a2;
        numerator *= 2.0 * i - 1.0;
        sum += sign * numerator * denom;
    }
    log_lhs + sum.ln()
}

/// `ln(e^p - e^q)` for `p >= q`.
fn log_diff(log_p: f64, log_q: f64) -> f64 {
    if log_q == f64::NEG_INFINITY {
        return log_p;
    }
    log_p + (-(log_q - log_p).exp()).ln_1p()
}

/// `ln(e^p + e^q)`.
fn log_sum(log_p: f64, log_q: f64) -> f64 {
    let m = log_p.max(log_q);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((log_p - m).exp() + (log_q - m).exp()).ln()
}

/// `ln(ndtr(b) - ndtr(a))` for `a <= b`.
pub(crate) fn log_gauss_mass(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        log_diff(log_ndtr(b), log_ndtr(a))
    } else if a > 0.0 {
        log_diff(log_ndtr(-a), log_ndtr(-b))
    } else {
        (-ndtr(a) - ndtr(-b)).ln_1p()
    }
}

/// `x` with `log_ndtr(x) = y` (`y <= 0`), by Newton's method from the tail
/// asymptote or a logistic approximation.
fn ndtri_exp(y: f64) -> f64 {
    let flipped = y > -1e-2;
    let z = if flipped { (-y.exp_m1()).ln() } else { y };
    let mut x = if z < -5.0 {
        -(-2.0 * (z + LN_SQRT_2PI)).sqrt()
    } else {
        -(3.0_f64.sqrt() / std::f64::consts::PI) * (-z).exp_m1().ln()
    };
    for _ in 0..100 {
        let log_ndtr_x = log_ndtr(x);
        let log_pdf_x = -0.5 * x * x - LN_SQRT_2PI;
        let dx = (log_ndtr_x - z) * (log_ndtr_x - log_pdf_x).exp();
        if !dx.is_finite() {
            break;
        }
        x -= dx;
        if dx.abs() < 1e-8 * x.abs() {
            break;
        }
    }
    if flipped {
        -x
    } else {
        x
    }
}

/// The quantile `q` of the standard normal truncated to `[a, b]`, given
/// `log_mass = log_gauss_mass(a, b)`.
pub(crate) fn ppf(q: f64, a: f64, b: f64, log_mass: f64) -> f64 {
    if a >= b || q <= 0.0 {
        return a;
    }
    if q >= 1.0 {
        return b;
    }
    let x = if a < 0.0 {
        ndtri_exp(log_sum(log_ndtr(a), q.ln() + log_mass))
    } else {
        -ndtri_exp(log_sum(log_ndtr(-b), (-q).ln_1p() + log_mass))
    };
    if x.is_nan() {
        a
    } else {
        x.clamp(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ndtr_matches_known_values() {
        assert!((log_ndtr(0.0) - 0.5_f64.ln()).abs() < 1e-15);
        // scipy.special.log_ndtr(-30) = -454.32124395634...
        assert!((log_ndtr(-30.0) + 454.321_243_956_343).abs() < 1e-8);
        // Continuity where the series takes over.
        assert!((log_ndtr(-20.000_001) - log_ndtr(-19.999_999)).abs() < 1e-4);
        assert!((log_ndtr(8.0) + 6.220_960_574_271_82e-16).abs() < 1e-25);
    }

    #[test]
    fn ppf_inverts_the_truncated_cdf() {
        for &(a, b) in &[(-1.0, 2.0), (-50.0, -40.0), (3.0, 9.0), (-0.5, 0.5), (-8.0, 30.0)] {
            let m = log_gauss_mass(a, b);
            for &q in &[1e-9, 0.01, 0.3, 0.5, 0.9, 0.999_999] {
                let x = ppf(q, a, b, m);
                assert!((a..=b).contains(&x), "{x} outside [{a}, {b}]");
                let back = (log_gauss_mass(a, x) - m).exp();
                assert!(
                    (back - q).abs() < 1e-6 * q.max(1e-3),
                    "q {q} -> {x} -> {back} on [{a}, {b}]"
                );
            }
        }
    }
}
