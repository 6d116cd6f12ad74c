//! A procedural two-class image dataset: stripe patterns that run mostly
//! across (`horizontal`) or mostly up and down (`vertical`), in random
//! colours, angles, frequencies and phases, under noise and a random disc
//! that hides part of the pattern.
//!
//! Both classes have the same colour and brightness statistics, so there is
//! no shortcut: a CNN has to learn oriented edge detectors, which a small one
//! does in a few epochs. Used by `mlci demo` and by tests that must run
//! anywhere.

use std::f32::consts::PI;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use rayon::prelude::*;

use crate::TrainError;

/// The class names, in label order (sorted, as the loader sorts folders).
pub const CLASSES: [&str; 2] = ["horizontal", "vertical"];

/// How many images to make.
#[derive(Debug, Clone, Copy)]
pub struct SynthSpec {
    pub train_per_class: usize,
    pub validation_per_class: usize,
    pub size: u32,
    pub seed: u64,
}

/// Render one image of class `label` (0 = horizontal, 1 = vertical stripes).
pub fn render(label: usize, size: u32, seed: u64) -> image::RgbImage {
    let mut rng = Pcg64::seed_from_u64(seed);
    let s = size as f32;
    let colour = |rng: &mut Pcg64| [rng.random::<f32>(), rng.random::<f32>(), rng.random::<f32>()];
    let (c0, c1, occluder) = (colour(&mut rng), colour(&mut rng), colour(&mut rng));
    // Stripes run within 35 degrees of their class's axis.
    let tilt = rng.random_range(-35f32..35.0).to_radians();
    let angle = if label == 0 { tilt } else { PI / 2.0 + tilt };
    let (sin, cos) = angle.sin_cos();
    let cycles = rng.random_range(2.0f32..6.0);
    let phase = rng.random_range(0.0..2.0 * PI);
    let noise = rng.random_range(0.05f32..0.20);
    let (ox, oy, r) = (
        rng.random_range(0.0..s),
        rng.random_range(0.0..s),
        rng.random_range(0.1..0.3) * s,
    );
    image::RgbImage::from_fn(size, size, |x, y| {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        // Distance across the stripes (normal to their direction).
        let across = -fx * sin + fy * cos;
        let t = 0.5 + 0.5 * (2.0 * PI * cycles * across / s + phase).sin();
        let hidden = (fx - ox).powi(2) + (fy - oy).powi(2) < r * r;
        let mut px = [0u8; 3];
        for ch in 0..3 {
            let v = if hidden {
                occluder[ch]
            } else {
                c0[ch] * (1.0 - t) + c1[ch] * t
            };
            let v = v + rng.random_range(-noise..noise);
            px[ch] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
        image::Rgb(px)
    })
}

/// Write the dataset as PNGs in `dir/{train,validation}/{discs,squares}/`.
pub fn generate(dir: &Path, spec: SynthSpec) -> Result<(), TrainError> {
    let mut jobs = Vec::new();
    for (split, count, salt) in [
        ("train", spec.train_per_class, 1u64),
        ("validation", spec.validation_per_class, 2),
    ] {
        for (label, class) in CLASSES.iter().enumerate() {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).map_err(TrainError::io(&folder))?;
            for i in 0..count {
                let seed =
                    spec.seed.wrapping_mul(1_000_003) ^ (salt << 40) ^ ((label as u64) << 32) ^ i as u64;
                jobs.push((folder.join(format!("{class}.{i:05}.png")), label, seed));
            }
        }
    }
    jobs.par_iter().try_for_each(|(path, label, seed)| {
        render(*label, spec.size, *seed)
            .save(path)
            .map_err(|e| TrainError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })
    })
}
