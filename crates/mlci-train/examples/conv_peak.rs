//! How close the training step's convolutions come to the machine's peak.
//!
//! 1. **Peak**: the best rate of the `gemm` crate (the kernels candle and our convolution
//!    call) on square f32 products (1024, 2048), on `--threads` rayon threads: what this
//!    CPU does when nothing but multiply-adds stand in the way.
//! 2. **Convolutions of a training step**: the conv blocks of the benchmark model
//!    (`--model`, default `examples/catsdogs.json`; batch 32 at its input size), forward
//!    (im2col, gemm, bias and ReLU) and backward (weight, bias and, after the first layer,
//!    input gradients) through `mlci_train::ops`, each layer timed alone with its pooling
//!    left out. FLOPs counted: 2·N·Ho·Wo·k²·Cin·Cout per product (forward, weight gradient,
//!    input gradient), nothing for bias, ReLU or im2col, so the rate is a lower bound of
//!    what the multiply-adds run at.
//!
//! `cargo run --release -p mlci-train --example conv_peak -- --threads 2`
//! (`scripts/bench-train` runs it and prints its lines.)

// A benchmark's report is its standard output.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use candle_core::{CustomOp3, Device, Tensor, Var};
use mlci_core::{ModelSpec, Padding};
use mlci_train::ops::Conv2d;

// The allocator of the mlci binary, with the same purge setting (crates/mlci/src/main.rs):
// freed step buffers are reused, not returned to the OS and faulted in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Best GFLOP/s of `reps` products of two `n`x`n` matrices.
fn gemm_rate(n: usize, reps: usize, threads: usize) -> f64 {
    let a = vec![1.0f32 / n as f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0f32; n * n];
    let parallelism = if threads == 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    let mut best = 0f64;
    for _ in 0..reps {
        let t = Instant::now();
        // SAFETY: three n*n row-major buffers, strides (n, 1); dst does not alias.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        let s = t.elapsed().as_secs_f64();
        best = best.max(2.0 * (n * n * n) as f64 / s / 1e9);
    }
    assert!(c[0].is_finite());
    best
}

fn main() -> anyhow::Result<()> {
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = libmimalloc_sys::mi_option_use_numa_nodes - 1;
    // SAFETY: sets a plain integer option before any allocation-heavy work.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let mut threads = 2usize;
    let mut model = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/catsdogs.json"
    ));
    let mut reps = 10usize;
    let mut batch = 32usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"));
        match a.as_str() {
            "--threads" => threads = value()?.parse()?,
            "--model" => model = value()?.into(),
            "--reps" => reps = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            other => anyhow::bail!("unknown argument {other} (--threads N --model FILE --reps N --batch N)"),
        }
    }
    let spec: ModelSpec = serde_json::from_str(&std::fs::read_to_string(&model)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    pool.install(|| -> anyhow::Result<()> {
        let peak = [1024, 2048]
            .into_iter()
            .map(|n| gemm_rate(n, reps.max(3), threads))
            .fold(0f64, f64::max);
        println!("gemm peak: {peak:.1} GFLOP/s (f32, square 1024 and 2048, {threads} threads)");

        let (mut size, mut channels) = (spec.input_size, 3usize);
        let (mut total_flops, mut total_secs) = (0f64, 0f64);
        for (i, block) in spec.conv_blocks.iter().enumerate() {
            let (k, f) = (block.kernel_size, block.filters);
            let pad = match block.padding {
                Padding::Valid => 0,
                Padding::Same => k / 2,
            };
            let out = size + 2 * pad + 1 - k;
            let x = Tensor::rand(0f32, 1f32, (batch, size, size, channels), &Device::Cpu)?;
            // The first layer's input is the image batch: no gradient for it, as in training.
            let x = if i == 0 { x } else { Var::from_tensor(&x)?.as_tensor().clone() };
            let w = Var::from_tensor(&Tensor::rand(-0.1f32, 0.1f32, (k, k, channels, f), &Device::Cpu)?)?;
            let b = Var::from_tensor(&Tensor::zeros(f, candle_core::DType::F32, &Device::Cpu)?)?;
            let products = if i == 0 { 2.0 } else { 3.0 };
            let flops = products * 2.0 * (batch * out * out * k * k * channels * f) as f64;
            // The op's own forward and backward, as training calls them (the gradient from
            // the layer above is a plain contiguous tensor here).
            let grad = Tensor::rand(-1f32, 1f32, (batch, out, out, f), &Device::Cpu)?;
            let (mut times, mut fwd) = (Vec::new(), Vec::new());
            for _ in 0..reps + 1 {
                let op = Conv2d::new(pad, true, i > 0);
                let t = Instant::now();
                let y = x.apply_op3_no_bwd(w.as_tensor(), b.as_tensor(), &op)?;
                let forward = t.elapsed().as_secs_f64();
                let (dx, dw, _) = op.bwd(&x, w.as_tensor(), b.as_tensor(), &y, &grad)?;
                times.push(t.elapsed().as_secs_f64());
                fwd.push(forward);
                assert!(dw.is_some() && dx.is_some() == (i > 0));
            }
            times.remove(0); // the first call warms the allocator and caches
            fwd.remove(0);
            let (s, fwd) = (median(times), median(fwd));
            total_flops += flops;
            total_secs += s;
            println!(
                "conv{} {k}x{k} {channels}->{f} at {size}x{size}, batch {batch}: {:.2} ms forward+backward ({:.2} forward), {:.1} GFLOP/s ({:.0}% of peak)",
                i + 1,
                s * 1e3,
                fwd * 1e3,
                flops / s / 1e9,
                100.0 * flops / s / 1e9 / peak
            );
            size = out / 2;
            channels = f;
        }
        let rate = total_flops / total_secs / 1e9;
        println!(
            "convolutions of one training step: {:.1} GFLOP in {:.1} ms: {rate:.1} GFLOP/s, {:.0}% of the gemm peak",
            total_flops / 1e9,
            total_secs * 1e3,
            100.0 * rate / peak
        );
        Ok(())
    })
}
