//! f64 CPU references for the kernels, shared by the native op tests and the browser test.
#![allow(dead_code)]

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
