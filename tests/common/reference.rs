//! f64 CPU references for the kernels, shared by the native op tests and the browser test.
#![allow(dead_code)]

use webgpu_llm::ops::rope::{RopeConfig, RopePairing, RopeScaling};

/// RMSNorm of each row: `x / sqrt(mean(x²) + eps) * w`.
pub fn rmsnorm(x: &[f32], w: &[f32], rows: usize, dim: usize, eps: f64) -> Vec<f64> {
    let mut out = vec![0.0; rows * dim];
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for i in 0..dim {
            out[r * dim + i] = row[i] as f64 * inv * w[i] as f64;
        }
    }
    out
}

/// f64 attention: `k`, `v` rows `[pos, n_kv * head_dim]` (values as held), q `[t, n_heads * head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f64],
    v: &[f64],
    n_heads: usize,
    n_kv: usize,
    hd: usize,
    pos0: usize,
    t: usize,
    scale: f64,
) -> Vec<f64> {
    let group = n_heads / n_kv;
    let kv_dim = n_kv * hd;
    let mut out = vec![0.0; t * n_heads * hd];
    for i in 0..t {
        for h in 0..n_heads {
            let qh = &q[(i * n_heads + h) * hd..][..hd];
            let kvh = h / group;
            let n_keys = pos0 + i + 1;
            let scores: Vec<f64> = (0..n_keys)
                .map(|j| (0..hd).map(|d| qh[d] as f64 * k[j * kv_dim + kvh * hd + d]).sum::<f64>() * scale)
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f64 = w.iter().sum();
            for d in 0..hd {
                out[(i * n_heads + h) * hd + d] =
                    (0..n_keys).map(|j| w[j] * v[j * kv_dim + kvh * hd + d]).sum::<f64>() / l;
            }
        }
    }
    out
}

/// Index of the largest value; ties to the lowest index, NaN never wins (all NaN: u32::MAX).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(u32::MAX, |(i, _)| i as u32)
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` in f64.
pub fn matmul(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|c| x[i * k + c] as f64 * w[j * k + c] as f64).sum();
        }
    }
    y
}

/// sqrt(1 + ln(max/orig) / ln(orig)) for LongRoPE (HF's default attention factor), else 1; HF
/// multiplies the f32 cos/sin by it, so it is rounded to f32 here.
pub fn rope_mscale(cfg: &RopeConfig) -> f64 {
    match &cfg.scaling {
        RopeScaling::LongRope { original_max_position: o, max_position: m, attention_factor, .. } => {
            let a = attention_factor.unwrap_or_else(|| {
                let s = *m as f64 / *o as f64;
                if s <= 1.0 {
                    1.0
                } else {
                    (1.0 + s.ln() / (*o as f64).ln()).sqrt()
                }
            });
            a as f32 as f64
        }
        _ => 1.0,
    }
}

/// RoPE of x[t, n_heads * head_dim] at positions pos0.., given the f32 inverse frequencies: the
/// angle as HF's f32 product, cos/sin and the rotation in f64.
pub fn rope(x: &[f32], cfg: &RopeConfig, inv: &[f32], mscale: f64, n_heads: usize, t: usize, pos0: u32) -> Vec<f64> {
    let (hd, half) = (cfg.head_dim as usize, cfg.rotary_dim as usize / 2);
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for r in 0..t {
        let pos = (pos0 + r as u32) as f32;
        for h in 0..n_heads {
            let base = (r * n_heads + h) * hd;
            for (i, &f) in inv.iter().enumerate() {
                let angle = (pos * f) as f64;
                let (s, c) = (angle.sin() * mscale, angle.cos() * mscale);
                let (a, b) = match cfg.pairing {
                    RopePairing::Half => (base + i, base + i + half),
                    RopePairing::Interleaved => (base + 2 * i, base + 2 * i + 1),
                };
                let (x0, x1) = (x[a] as f64, x[b] as f64);
                out[a] = x0 * c - x1 * s;
                out[b] = x1 * c + x0 * s;
            }
        }
    }
    out
}
