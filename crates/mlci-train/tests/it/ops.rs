//! The custom conv and pool ops against candle's own ops and finite differences.

use candle_core::{Tensor, Var};
use mlci_train::ops::{conv2d, max_pool2};

use crate::{max_rel_diff, random, values};

/// candle's NCHW conv2d on NHWC tensors with HWIO weights: the reference.
fn reference_conv(x: &Tensor, w: &Tensor, b: &Tensor, pad: usize, relu: bool) -> Tensor {
    let xn = x.permute((0, 3, 1, 2)).unwrap();
    let wn = w.permute((3, 2, 0, 1)).unwrap().contiguous().unwrap();
    let y = xn.conv2d(&wn, pad, 1, 1, 1).unwrap();
    let y = y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap();
    let y = if relu { y.relu().unwrap() } else { y };
    y.permute((0, 2, 3, 1)).unwrap()
}

fn check_conv(n: usize, hw: usize, c: usize, k: usize, f: usize, pad: usize, relu: bool) {
    let x = Var::from_tensor(&random(&[n, hw, hw, c], 1)).unwrap();
    let w = Var::from_tensor(&(random(&[k, k, c, f], 2) * 0.5).unwrap()).unwrap();
    let b = Var::from_tensor(&(random(&[f], 3) * 0.1).unwrap()).unwrap();
    let ours = conv2d(&x, &w, &b, pad, relu, true).unwrap();
    let theirs = reference_conv(&x, &w, &b, pad, relu);
    assert_eq!(ours.dims(), theirs.dims());
    assert!(
        max_rel_diff(&values(&ours), &values(&theirs)) < 1e-4,
        "forward differs"
    );

    // Weighted sum so every output position has its own gradient.
    let probe = random(ours.dims(), 4);
    let g_ours = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    let g_theirs = (theirs * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
        let a = values(g_ours.get(v).unwrap_or_else(|| panic!("no gradient for {name}")));
        let e = values(g_theirs.get(v).unwrap());
        let d = max_rel_diff(&a, &e);
        assert!(
            d < 1e-3,
            "gradient of {name} differs by {d} (n={n} hw={hw} c={c} k={k} f={f} pad={pad})"
        );
    }
}

#[test]
fn conv_matches_candle_forward_and_backward() {
    check_conv(2, 7, 3, 3, 4, 0, true);
    check_conv(3, 9, 5, 3, 8, 1, true);
    check_conv(2, 8, 2, 5, 3, 2, false);
    check_conv(1, 6, 4, 1, 2, 0, true);
    check_conv(4, 11, 3, 4, 6, 0, false);
}

#[test]
fn conv_skips_the_gradient_of_an_untracked_input() {
    let x = random(&[2, 6, 6, 3], 1);
    let w = Var::from_tensor(&random(&[3, 3, 3, 4], 2)).unwrap();
    let b = Var::from_tensor(&random(&[4], 3)).unwrap();
    let y = conv2d(&x, &w, &b, 0, true, true).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(&w).is_some());
}

/// Exact max pooling by crop + reshape + max: the reference for the op.
fn reference_pool(x: &Tensor) -> Tensor {
    let (n, h, w, c) = x.dims4().unwrap();
    let (ho, wo) = (h / 2, w / 2);
    let x = x.narrow(1, 0, ho * 2).unwrap().narrow(2, 0, wo * 2).unwrap();
    x.reshape((n, ho, 2, wo, 2, c))
        .unwrap()
        .max(4)
        .unwrap()
        .max(2)
        .unwrap()
}

#[test]
fn max_pool_matches_exact_reference_including_odd_sizes() {
    for (hw, c) in [(4, 3), (7, 2), (29, 4), (6, 1)] {
        let x = Var::from_tensor(&random(&[2, hw, hw, c], hw as u64)).unwrap();
        let ours = max_pool2(&x, true).unwrap();
        let theirs = reference_pool(&x);
        assert_eq!(values(&ours), values(&theirs), "forward differs at {hw}x{hw}");
        let probe = random(ours.dims(), 9);
        let ga = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (theirs * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            values(ga.get(&x).unwrap()),
            values(gb.get(&x).unwrap()),
            "gradient differs at {hw}x{hw}"
        );
    }
}

/// Central finite differences of `f(x)` against its autograd gradient.
fn finite_difference_check(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) {
    let xv = Var::from_tensor(x).unwrap();
    let grad = values(f(&xv).backward().unwrap().get(&xv).unwrap());
    let base = values(x);
    let eps = 1e-2f32;
    for i in (0..base.len()).step_by(7) {
        let eval = |delta: f32| {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, x.shape(), x.device()).unwrap();
            f64::from(f(&t).to_scalar::<f32>().unwrap())
        };
        let numeric = ((eval(eps) - eval(-eps)) / (2.0 * f64::from(eps))) as f32;
        assert!(
            (numeric - grad[i]).abs() < 2e-2,
            "element {i}: numeric {numeric} vs autograd {}",
            grad[i]
        );
    }
}

#[test]
fn conv_and_pool_gradients_match_finite_differences() {
    let w = random(&[3, 3, 2, 3], 5);
    let b = random(&[3], 6);
    let probe = random(&[2, 4, 4, 3], 7);
    // conv (no relu, so the function is smooth) then a weighted sum.
    finite_difference_check(&random(&[2, 9, 9, 2], 8), |x| {
        let y = conv2d(x, &w, &b, 0, false, true).unwrap();
        let y = max_pool2(&y, true)
            .unwrap()
            .narrow(1, 0, 3)
            .unwrap()
            .narrow(2, 0, 3)
            .unwrap();
        (y * probe.narrow(1, 0, 3).unwrap().narrow(2, 0, 3).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
    });
}

/// One optimizer step on f(p) = sum(p * c), whose gradient is c, against
/// the update rules written out by hand.
#[test]
fn optimizer_steps_follow_their_update_rules() {
    use mlci_core::{OptimizerKind, TrainingConfig};
    use mlci_train::optim::Optimizer;
    let p0 = [0.5f32, -1.0, 2.0];
    let c = [0.1f32, -0.2, 0.3];
    let (lr, mu, wd) = (0.1f32, 0.9f32, 0.01f32);
    for kind in OptimizerKind::ALL {
        let cfg = TrainingConfig {
            optimizer: kind,
            learning_rate: f64::from(lr),
            momentum: f64::from(mu),
            weight_decay: f64::from(wd),
            ..TrainingConfig::default()
        };
        let var = Var::from_slice(&p0, 3, &candle_core::Device::Cpu).unwrap();
        let mut opt = Optimizer::new(&cfg, vec![("p".into(), var.clone())]);
        let ct = Tensor::from_slice(&c, 3, &candle_core::Device::Cpu).unwrap();
        for _ in 0..2 {
            let grads = (var.as_tensor() * &ct)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            opt.step(&grads).unwrap();
        }
        // The same two steps by hand.
        let mut expected = p0;
        for i in 0..3 {
            let (mut m, mut v, mut p) = (0f32, 0f32, p0[i]);
            for t in 1..=2 {
                let g = if kind == OptimizerKind::AdamW {
                    c[i]
                } else {
                    c[i] + wd * p
                };
                match kind {
                    OptimizerKind::Adam | OptimizerKind::AdamW => {
                        m = 0.9 * m + 0.1 * g;
                        v = 0.999 * v + 0.001 * g * g;
                        let (mh, vh) = (m / (1.0 - 0.9f32.powi(t)), v / (1.0 - 0.999f32.powi(t)));
                        if kind == OptimizerKind::AdamW {
                            p -= lr * wd * p;
                        }
                        p -= lr * mh / (vh.sqrt() + 1e-7);
                    }
                    OptimizerKind::RmsProp => {
                        v = 0.9 * v + 0.1 * g * g;
                        p -= lr * g / (v.sqrt() + 1e-7);
                    }
                    OptimizerKind::Sgd => {
                        m = mu * m + g;
                        p -= lr * m;
                    }
                }
            }
            expected[i] = p;
        }
        let got = values(var.as_tensor());
        assert!(
            max_rel_diff(&got, &expected) < 1e-5,
            "{kind:?}: {got:?} vs {expected:?}"
        );
    }
}
