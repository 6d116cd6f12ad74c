//! Keras `ImageDataGenerator`-style augmentation: rotation, width/height
//! shift, shear, zoom and horizontal flip, composed into one affine map and
//! sampled bilinearly with "nearest" fill (edge pixels extend outwards).
//!
//! Each image gets its own RNG seeded from the training stream, so a batch is
//! the same whatever the thread count. Only training batches are augmented.

use mlci_core::Augmentation;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// Scale RGB bytes to `[0, 1]` floats.
pub fn to_unit(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from(*s) / 255.0;
    }
}

/// Write a randomly transformed copy of `src` (`size` x `size` RGB bytes,
/// HWC) into `dst` as `[0, 1]` floats. The transform is drawn from `seed`.
pub fn augment(src: &[u8], dst: &mut [f32], size: usize, aug: &Augmentation, seed: u64) {
    if aug.is_identity() {
        return to_unit(src, dst);
    }
    let mut rng = Pcg64::seed_from_u64(seed);
    let mut sym = |range: f32| {
        if range > 0.0 {
            rng.random_range(-range..=range)
        } else {
            0.0
        }
    };
    let theta = sym(aug.rotation).to_radians();
    let tx = sym(aug.width_shift) * size as f32;
    let ty = sym(aug.height_shift) * size as f32;
    let shear = sym(aug.shear).to_radians();
    let (zx, zy) = (1.0 + sym(aug.zoom), 1.0 + sym(aug.zoom));
    let flip = aug.horizontal_flip && rng.random_bool(0.5);

    // Output pixel -> input pixel, about the image centre (as Keras does):
    // p_in = c + R(theta) * Shear * Zoom * (p_out - c) - t
    let (sin, cos) = theta.sin_cos();
    // with R = [[cos, -sin], [sin, cos]], Shear = [[1, -sin s], [0, cos s]], Zoom = diag(zx, zy).
    let (shear_sin, shear_cos) = shear.sin_cos();
    let (a, b) = (cos * zx, -(cos * shear_sin + sin * shear_cos) * zy);
    let (c, d) = (sin * zx, (cos * shear_cos - sin * shear_sin) * zy);
    let centre = (size as f32 - 1.0) / 2.0;
    let max = (size - 1) as f32;
    for oy in 0..size {
        for ox in 0..size {
            let x = if flip { (size - 1 - ox) as f32 } else { ox as f32 } - centre;
            let y = oy as f32 - centre;
            let sx = (a * x + b * y + centre - tx).clamp(0.0, max);
            let sy = (c * x + d * y + centre - ty).clamp(0.0, max);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(size - 1), (y0 + 1).min(size - 1));
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            let px = |yy: usize, xx: usize, ch: usize| f32::from(src[(yy * size + xx) * 3 + ch]);
            let out = &mut dst[(oy * size + ox) * 3..][..3];
            for (ch, o) in out.iter_mut().enumerate() {
                let top = px(y0, x0, ch) * (1.0 - fx) + px(y0, x1, ch) * fx;
                let bottom = px(y1, x0, ch) * (1.0 - fx) + px(y1, x1, ch) * fx;
                *o = (top * (1.0 - fy) + bottom * fy) / 255.0;
            }
        }
    }
}
