//! Fast CPU kernels as candle custom ops, each with its own backward.
//!
//! The network works in NHWC (channels last, Keras' layout): an im2col row
//! is then `kernel_size` contiguous runs of channels, the convolution is one
//! gemm whose output is already NHWC, and the weights are stored HWIO as in
//! Keras. Why not candle's own `conv2d`/`max_pool2d`: on CPU its input
//! gradient is a direct loop that bypasses gemm, it always computes the
//! gradient for the input image (which nobody needs), and `max_pool2d`'s
//! backward is wrong in candle 0.11 (it spreads the gradient over the window
//! and misplaces it for odd sizes). Every op here is checked against candle's
//! ops and finite differences in the tests.
//!
//! Determinism: every reduction uses a fixed split that does not depend on
//! the thread count, so results are bit-identical across runs and resumes.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows per chunk when a reduction over the batch is split across threads.
/// Fixed, so the summation order never depends on the thread count.
const REDUCE_CHUNKS: usize = 16;

fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(data) => data,
        _ => candle_core::bail!("{what}: expected an f32 tensor"),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

/// Copy a tensor's f32 data out (making it contiguous first if needed).
fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Run `f` on a tensor's f32 values without copying them when the tensor
/// is contiguous (the usual case for gradients and op outputs).
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => Ok(f(slice(cpu, layout, "tensor")?)),
        _ => candle_core::bail!("mlci ops run on the CPU only"),
    }
}

fn gemm_threads() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` for row-major matrices, where the
/// strides let either operand be read transposed.
#[allow(clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    parallelism: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n);
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(k == 0 || n == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the asserts above keep every index gemm computes from these
    // dimensions and strides inside the three slices; `dst` does not alias.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Geometry of one stride-1 convolution in NHWC.
#[derive(Debug, Clone, Copy)]
struct ConvGeom {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    pad: usize,
    f: usize,
    ho: usize,
    wo: usize,
}

impl ConvGeom {
    /// Columns of an im2col row: `k * k * c`.
    fn kk(&self) -> usize {
        self.k * self.k * self.c
    }
    fn rows_per_sample(&self) -> usize {
        self.ho * self.wo
    }

    /// Fill one sample's im2col block (`ho*wo` rows of `kk` values). In NHWC
    /// one kernel row is `k * c` contiguous input values, so each is one copy
    /// (clipped at the padded borders).
    fn im2col_sample(&self, x: &[f32], col: &mut [f32]) {
        let (k, c, kk, pad) = (self.k, self.c, self.kk(), self.pad as isize);
        for oy in 0..self.ho {
            for ox in 0..self.wo {
                let row = &mut col[(oy * self.wo + ox) * kk..][..kk];
                // Input columns [ix0, ix1) of this window that are inside the image.
                let left = ox as isize - pad;
                let ix0 = left.max(0) as usize;
                let ix1 = ((left + k as isize).min(self.w as isize)).max(0) as usize;
                for ky in 0..k {
                    let dst = &mut row[ky * k * c..][..k * c];
                    let iy = (oy + ky) as isize - pad;
                    if iy < 0 || iy >= self.h as isize || ix1 <= ix0 {
                        dst.fill(0.0);
                        continue;
                    }
                    let skip = ((ix0 as isize - left) as usize) * c;
                    let len = (ix1 - ix0) * c;
                    dst[..skip].fill(0.0);
                    let src = (iy as usize * self.w + ix0) * c;
                    dst[skip..skip + len].copy_from_slice(&x[src..src + len]);
                    dst[skip + len..].fill(0.0);
                }
            }
        }
    }

    /// Scatter-add one sample's im2col gradient back onto its input gradient.
    fn col2im_sample(&self, dcol: &[f32], dx: &mut [f32]) {
        let (k, c, kk) = (self.k, self.c, self.kk());
        for oy in 0..self.ho {
            for ox in 0..self.wo {
                let row = &dcol[(oy * self.wo + ox) * kk..][..kk];
                for ky in 0..k {
                    let iy = (oy + ky) as isize - self.pad as isize;
                    if iy < 0 || iy >= self.h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox + kx) as isize - self.pad as isize;
                        if ix < 0 || ix >= self.w as isize {
                            continue;
                        }
                        let dst = &mut dx[(iy as usize * self.w + ix as usize) * c..][..c];
                        for (d, s) in dst.iter_mut().zip(&row[(ky * k + kx) * c..][..c]) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

/// `relu?(conv2d(x, w) + b)` for `x: [n, h, w, c]`, `w: [k, k, c, f]`,
/// `b: [f]`, stride 1, zero padding `pad`. The im2col matrix of the forward
/// pass is kept for the weight gradient.
#[derive(Debug)]
pub struct Conv2d {
    pub pad: usize,
    pub relu: bool,
    /// Whether to compute the gradient with respect to the input. The first
    /// layer's input is the image batch, whose gradient nobody needs.
    pub input_grad: bool,
    col: Mutex<Option<Vec<f32>>>,
}

impl Conv2d {
    pub fn new(pad: usize, relu: bool, input_grad: bool) -> Self {
        Self {
            pad,
            relu,
            input_grad,
            col: Mutex::new(None),
        }
    }

    fn geom(&self, x: &[usize], w: &[usize]) -> Result<ConvGeom> {
        let (&[n, h, wd, c], &[k, k2, wc, f]) = (x, w) else {
            candle_core::bail!("conv2d: expected x [n,h,w,c] and w [k,k,c,f], got {x:?} and {w:?}")
        };
        if k != k2 || wc != c {
            candle_core::bail!("conv2d: weight {w:?} does not match input {x:?}");
        }
        let (hp, wp) = (h + 2 * self.pad, wd + 2 * self.pad);
        if hp < k || wp < k {
            candle_core::bail!("conv2d: kernel {k}x{k} larger than padded input {hp}x{wp}");
        }
        Ok(ConvGeom {
            n,
            h,
            w: wd,
            c,
            k,
            pad: self.pad,
            f,
            ho: hp - k + 1,
            wo: wp - k + 1,
        })
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "mlci-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(xl.dims(), wl.dims())?;
        let (x, w, b) = (
            slice(xs, xl, "conv2d x")?,
            slice(ws, wl, "conv2d w")?,
            slice(bs, bl, "conv2d b")?,
        );
        if b.len() != g.f {
            candle_core::bail!("conv2d: bias has {} values for {} filters", b.len(), g.f);
        }
        let (kk, rows) = (g.kk(), g.rows_per_sample());
        let m = g.n * rows;
        let mut col = vec![0f32; m * kk];
        col.par_chunks_mut(rows * kk)
            .zip(x.par_chunks(g.h * g.w * g.c))
            .for_each(|(col, x)| g.im2col_sample(x, col));
        let mut out = vec![0f32; m * g.f];
        matmul(
            &mut out,
            false,
            (m, g.f, kk),
            &col,
            (kk, 1),
            w,
            (g.f, 1),
            gemm_threads(),
        );
        let relu = self.relu;
        out.par_chunks_mut(g.f * 256).for_each(|chunk| {
            for row in chunk.chunks_mut(g.f) {
                for (v, bias) in row.iter_mut().zip(b) {
                    let s = *v + bias;
                    *v = if relu && s < 0.0 { 0.0 } else { s };
                }
            }
        });
        *self.col.lock().expect("conv2d cache poisoned") = Some(col);
        Ok((CpuStorage::F32(out), Shape::from_dims(&[g.n, g.ho, g.wo, g.f])))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom(x.dims(), w.dims())?;
        let (kk, rows, f) = (g.kk(), g.rows_per_sample(), g.f);
        let m = g.n * rows;
        let cached = self.col.lock().expect("conv2d cache poisoned");
        let recomputed;
        let col: &[f32] = match cached.as_ref() {
            Some(col) => col,
            None => {
                let x = to_vec(x)?;
                let mut col = vec![0f32; m * kk];
                col.par_chunks_mut(rows * kk)
                    .zip(x.par_chunks(g.h * g.w * g.c))
                    .for_each(|(col, x)| g.im2col_sample(x, col));
                recomputed = col;
                &recomputed
            }
        };
        // Gradient through the (fused) ReLU.
        let dz: Vec<f32> = if self.relu {
            with_values(grad, |g| {
                with_values(res, |out| {
                    g.par_iter()
                        .zip(out.par_iter())
                        .map(|(g, o)| if *o > 0.0 { *g } else { 0.0 })
                        .collect()
                })
            })??
        } else {
            to_vec(grad)?
        };
        // Weight and bias gradients: partial sums over fixed row chunks,
        // added in chunk order.
        let chunk_rows = m.div_ceil(REDUCE_CHUNKS).max(1);
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dz
            .par_chunks(chunk_rows * f)
            .zip(col.par_chunks(chunk_rows * kk))
            .map(|(dz, col)| {
                let r = dz.len() / f;
                let mut dw = vec![0f32; kk * f];
                matmul(
                    &mut dw,
                    false,
                    (kk, f, r),
                    col,
                    (1, kk),
                    dz,
                    (f, 1),
                    gemm::Parallelism::None,
                );
                let mut db = vec![0f32; f];
                for row in dz.chunks(f) {
                    for (s, v) in db.iter_mut().zip(row) {
                        *s += v;
                    }
                }
                (dw, db)
            })
            .collect();
        let (mut dw, mut db) = (vec![0f32; kk * f], vec![0f32; f]);
        for (pw, pb) in &partials {
            dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
        let dw = Tensor::from_vec(dw, w.shape(), w.device())?;
        let db = Tensor::from_vec(db, f, w.device())?;

        let dx = if self.input_grad && x.track_op() {
            let wv = to_vec(w)?;
            let mut dx = vec![0f32; g.n * g.h * g.w * g.c];
            dx.par_chunks_mut(g.h * g.w * g.c)
                .zip(dz.par_chunks(rows * f))
                .for_each(|(dx, dz)| {
                    let mut dcol = vec![0f32; rows * kk];
                    // dcol = dz · wᵀ, with w stored [kk × f].
                    matmul(
                        &mut dcol,
                        false,
                        (rows, kk, f),
                        dz,
                        (f, 1),
                        &wv,
                        (1, f),
                        gemm::Parallelism::None,
                    );
                    g.col2im_sample(&dcol, dx);
                });
            Some(Tensor::from_vec(dx, x.shape(), x.device())?)
        } else {
            None
        };
        Ok((dx, Some(dw), Some(db)))
    }
}

/// 2x2 max pooling with stride 2 on `[n, h, w, c]`; odd trailing rows and
/// columns are dropped (Keras' "valid" pooling). The argmax of every window
/// is kept, so the backward pass routes each gradient to exactly one input.
#[derive(Debug, Default)]
pub struct MaxPool2 {
    argmax: Mutex<Option<Vec<u8>>>,
}

impl MaxPool2 {
    pub fn new() -> Self {
        Self::default()
    }
}

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "mlci-maxpool2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, h, w, c] = layout.dims() else {
            candle_core::bail!("maxpool2: expected [n,h,w,c], got {:?}", layout.dims())
        };
        let x = slice(storage, layout, "maxpool2 x")?;
        let (ho, wo) = (h / 2, w / 2);
        if ho == 0 || wo == 0 {
            candle_core::bail!("maxpool2: input {h}x{w} is smaller than the 2x2 window");
        }
        let per_out = ho * wo * c;
        let mut out = vec![0f32; n * per_out];
        let mut arg = vec![0u8; n * per_out];
        out.par_chunks_mut(per_out)
            .zip(arg.par_chunks_mut(per_out))
            .zip(x.par_chunks(h * w * c))
            .for_each(|((out, arg), x)| {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let o = (oy * wo + ox) * c;
                        let base = |dy: usize, dx: usize| ((2 * oy + dy) * w + 2 * ox + dx) * c;
                        let taps = [base(0, 0), base(0, 1), base(1, 0), base(1, 1)];
                        for ch in 0..c {
                            let (mut best, mut which) = (x[taps[0] + ch], 0u8);
                            for (t, &tap) in taps.iter().enumerate().skip(1) {
                                let v = x[tap + ch];
                                if v > best {
                                    best = v;
                                    which = t as u8;
                                }
                            }
                            out[o + ch] = best;
                            arg[o + ch] = which;
                        }
                    }
                }
            });
        *self.argmax.lock().expect("maxpool cache poisoned") = Some(arg);
        Ok((CpuStorage::F32(out), Shape::from_dims(&[n, ho, wo, c])))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        let &[n, h, w, c] = arg.dims() else {
            candle_core::bail!("maxpool2 bwd: bad input shape")
        };
        let (ho, wo) = (h / 2, w / 2);
        let cached = self.argmax.lock().expect("maxpool cache poisoned");
        let Some(argmax) = cached.as_ref() else {
            candle_core::bail!("maxpool2 bwd: no forward pass recorded")
        };
        let per_out = ho * wo * c;
        let mut dx = vec![0f32; n * h * w * c];
        with_values(grad, |g| {
            dx.par_chunks_mut(h * w * c)
                .zip(g.par_chunks(per_out))
                .zip(argmax.par_chunks(per_out))
                .for_each(|((dx, g), arg)| {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let o = (oy * wo + ox) * c;
                            for ch in 0..c {
                                let t = arg[o + ch] as usize;
                                let (dy, ddx) = (t / 2, t % 2);
                                dx[((2 * oy + dy) * w + 2 * ox + ddx) * c + ch] += g[o + ch];
                            }
                        }
                    }
                })
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Convolution (+ optional fused ReLU) through [`Conv2d`]. With `train`
/// false the op records nothing for a backward pass.
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, pad: usize, relu: bool, train: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    if train {
        let input_grad = x.track_op();
        x.apply_op3(w, b, Conv2d::new(pad, relu, input_grad))
    } else {
        x.apply_op3_no_bwd(w, b, &Conv2d::new(pad, relu, false))
    }
}

/// 2x2 max pooling through [`MaxPool2`].
pub fn max_pool2(x: &Tensor, train: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    if train {
        x.apply_op1(MaxPool2::new())
    } else {
        x.apply_op1_no_bwd(&MaxPool2::new())
    }
}
