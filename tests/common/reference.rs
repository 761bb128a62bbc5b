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

/// f64 attention: `k`, `v` rows `[pos, n_kv * head_dim]` (values as held), q `[t, n_heads * head_dim]`;
/// a query at position p sees keys p − window < k ≤ p (window 0: all), scaled scores soft-capped
/// as `softcap · tanh(s / softcap)` (0: not).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    n_heads: usize,
    n_kv: usize,
    hd: usize,
    pos0: usize,
    t: usize,
    scale: f64,
    window: usize,
    softcap: f64,
) -> Vec<f64> {
    let group = n_heads / n_kv;
    let kv_dim = n_kv * hd;
    let mut out = vec![0.0; t * n_heads * hd];
    for i in 0..t {
        for h in 0..n_heads {
            let qh = &q[(i * n_heads + h) * hd..][..hd];
            let kvh = h / group;
            let n_keys = pos0 + i + 1;
            let first = if window > 0 { n_keys.saturating_sub(window) } else { 0 };
            let scores: Vec<f64> = (first..n_keys)
                .map(|j| (0..hd).map(|d| qh[d] * k[j * kv_dim + kvh * hd + d]).sum::<f64>() * scale)
                .map(|s| if softcap > 0.0 { softcap * (s / softcap).tanh() } else { s })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f64 = w.iter().sum();
            for d in 0..hd {
                out[(i * n_heads + h) * hd + d] =
                    (first..n_keys).map(|j| w[j - first] * v[j * kv_dim + kvh * hd + d]).sum::<f64>() / l;
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
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    rope_f64(&mut out, cfg, inv, mscale, n_heads, t, pos0);
    out
}

/// `rope` in place on f64 values.
pub fn rope_f64(x: &mut [f64], cfg: &RopeConfig, inv: &[f32], mscale: f64, n_heads: usize, t: usize, pos0: u32) {
    let (hd, half) = (cfg.head_dim as usize, cfg.rotary_dim as usize / 2);
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
                let (x0, x1) = (x[a], x[b]);
                x[a] = x0 * c - x1 * s;
                x[b] = x1 * c + x0 * s;
            }
        }
    }
}

/// `y[t, n] = x[t, k] · W[n, k]ᵀ (+ b)` in f64 with f32 weights.
fn linear64(x: &[f64], t: usize, w: &[f32], n: usize, k: usize, b: Option<&[f32]>) -> Vec<f64> {
    let mut y = vec![0.0; t * n];
    for i in 0..t {
        for j in 0..n {
            let dot: f64 = (0..k).map(|c| x[i * k + c] * w[j * k + c] as f64).sum();
            y[i * n + j] = dot + b.map_or(0.0, |b| b[j] as f64);
        }
    }
    y
}

/// RMSNorm with weights `offset + w` (Gemma's 1 + w).
fn rmsnorm64(x: &[f64], w: &[f32], dim: usize, eps: f64, offset: f64) -> Vec<f64> {
    x.chunks(dim)
        .flat_map(|row| {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / dim as f64 + eps).sqrt();
            row.iter().zip(w).map(move |(v, &g)| v * inv * (offset + g as f64))
        })
        .collect()
}

/// The Llama-family forward pass in f64 over the whole sequence, from f32 checkpoint tensors
/// (HF names): logits `[t, vocab]`. RoPE frequencies come from `rope_inv` (f32, as HF keeps them)
/// with cos/sin multiplied by `mscale`; Gemma 3's sliding layers use `cfg.rope_local`'s. Gemma:
/// embeddings · √hidden, (1 + w) norms, norms of the attention and MLP outputs, tanh-GELU, the
/// query_pre_attn_scalar scale, sliding windows and (Gemma 2) soft-capped scores and logits.
pub fn transformer(
    cfg: &webgpu_llm::model::Config,
    w: &std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
    tokens: &[u32],
    rope_inv: &[f32],
    mscale: f64,
) -> Vec<f64> {
    let get = |name: &str| -> &[f32] { &w.get(name).unwrap_or_else(|| panic!("missing {name}")).1 };
    let opt = |name: &str| w.get(name).map(|t| &t.1[..]);
    let (h, hd, nh, nkv) = (cfg.hidden as usize, cfg.head_dim as usize, cfg.n_heads as usize, cfg.n_kv_heads as usize);
    let (qd, kvd, ffn, vocab) = (nh * hd, nkv * hd, cfg.ffn as usize, cfg.vocab as usize);
    let (t, eps) = (tokens.len(), cfg.norm_eps as f64);
    let embed = get("model.embed_tokens.weight");
    let off = cfg.norm_offset as f64;
    let norm = |x: &[f64], name: &str, dim: usize| rmsnorm64(x, get(name), dim, eps, off);
    let es = cfg.embed_scale;
    let mut x: Vec<f64> =
        tokens.iter().flat_map(|&id| embed[id as usize * h..][..h].iter().map(move |&v| (v * es) as f64)).collect();
    let local_inv = cfg.rope_local.as_ref().map(|r| r.inv_freq(t as u32).unwrap());
    for l in 0..cfg.n_layers as usize {
        let p = format!("model.layers.{l}");
        let sliding = cfg.sliding.get(l).copied().unwrap_or(false);
        let xb = norm(&x, &format!("{p}.input_layernorm.weight"), h);
        let (mut q, mut k, v) = if cfg.fused_proj {
            let qkv = linear64(&xb, t, get(&format!("{p}.self_attn.qkv_proj.weight")), qd + 2 * kvd, h, None);
            let col = |r: usize, c0: usize, wd: usize| qkv[r * (qd + 2 * kvd) + c0..][..wd].to_vec();
            let split = |c0, wd| (0..t).flat_map(|r| col(r, c0, wd)).collect::<Vec<f64>>();
            (split(0, qd), split(qd, kvd), split(qd + kvd, kvd))
        } else {
            let proj = |which: &str, n| {
                let b = opt(&format!("{p}.self_attn.{which}_proj.bias"));
                linear64(&xb, t, get(&format!("{p}.self_attn.{which}_proj.weight")), n, h, b)
            };
            (proj("q", qd), proj("k", kvd), proj("v", kvd))
        };
        if cfg.qk_norm {
            q = norm(&q, &format!("{p}.self_attn.q_norm.weight"), hd);
            k = norm(&k, &format!("{p}.self_attn.k_norm.weight"), hd);
        }
        // SmolLM3's NoPE layers leave q and k as they are.
        if !cfg.no_rope.get(l).copied().unwrap_or(false) {
            let (rc, inv, ms) = match (&cfg.rope_local, &local_inv) {
                (Some(rc), Some(inv)) if sliding => (rc, &inv[..], 1.0),
                _ => (&cfg.rope, rope_inv, mscale),
            };
            rope_f64(&mut q, rc, inv, ms, nh, t, 0);
            rope_f64(&mut k, rc, inv, ms, nkv, t, 0);
        }
        let window = if sliding { cfg.sliding_window as usize } else { 0 };
        let att = attention(&q, &k, &v, nh, nkv, hd, 0, t, cfg.attn_scale as f64, window, cfg.attn_softcap as f64);
        let o = linear64(
            &att,
            t,
            get(&format!("{p}.self_attn.o_proj.weight")),
            h,
            qd,
            opt(&format!("{p}.self_attn.o_proj.bias")),
        );
        let o = if cfg.post_norms { norm(&o, &format!("{p}.post_attention_layernorm.weight"), h) } else { o };
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        let ffn_norm = if cfg.post_norms { "pre_feedforward_layernorm" } else { "post_attention_layernorm" };
        let xb = norm(&x, &format!("{p}.{ffn_norm}.weight"), h);
        let (g, u) = if cfg.fused_proj {
            let gu = linear64(&xb, t, get(&format!("{p}.mlp.gate_up_proj.weight")), 2 * ffn, h, None);
            let part = |c0: usize| (0..t).flat_map(|r| gu[r * 2 * ffn + c0..][..ffn].to_vec()).collect::<Vec<f64>>();
            (part(0), part(ffn))
        } else {
            (
                linear64(&xb, t, get(&format!("{p}.mlp.gate_proj.weight")), ffn, h, None),
                linear64(&xb, t, get(&format!("{p}.mlp.up_proj.weight")), ffn, h, None),
            )
        };
        // silu(g) = g·sigmoid(g); tanh-GELU(g) = g·sigmoid(2√(2/π)(g + 0.044715 g³))
        let gelu = cfg.act == webgpu_llm::ops::swiglu::Act::GeluTanh;
        let arg =
            |g: f64| if gelu { 2.0 * (2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g) } else { g };
        let hb: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| g / (1.0 + (-arg(g)).exp()) * u).collect();
        let d = linear64(&hb, t, get(&format!("{p}.mlp.down_proj.weight")), h, ffn, None);
        let d = if cfg.post_norms { norm(&d, &format!("{p}.post_feedforward_layernorm.weight"), h) } else { d };
        x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
    }
    let xb = norm(&x, "model.norm.weight", h);
    let head = if cfg.tied_embeddings { embed } else { get("lm_head.weight") };
    let mut logits = linear64(&xb, t, head, vocab, h, None);
    if cfg.final_softcap > 0.0 {
        let c = cfg.final_softcap as f64;
        logits.iter_mut().for_each(|v| *v = c * (*v / c).tanh());
    }
    logits
}

/// Gated DeltaNet in f64 (docs/qwen35.md §5) over a whole sequence from zero state: `proj`
/// rows `[T, qkv | z | b | a]` (f32), conv weights `[conv_dim, k]`, `A_log`, `dt_bias` `[nv]`, the
/// gated norm's weight `[dv]`; `tiled`: value head h reads q/k head h mod nk (else h / (nv/nk)).
/// Returns the mixer output `[T, nv·dv]` (before out_proj).
#[allow(clippy::too_many_arguments)]
pub fn delta_net(
    proj: &[f32],
    t_len: usize,
    (nk, nv, dk, dv, kw, tiled): (usize, usize, usize, usize, usize, bool),
    conv_w: &[f32],
    a_log: &[f32],
    dt_bias: &[f32],
    norm_w: &[f32],
    eps: f64,
) -> Vec<f64> {
    let key_dim = nk * dk;
    let conv_dim = 2 * key_dim + nv * dv;
    let in_w = conv_dim + nv * dv + 2 * nv;
    let x = |r: usize, ch: usize| proj[r * in_w + ch] as f64;
    let silu = |g: f64| g / (1.0 + (-g).exp());
    let mut state = vec![0.0f64; nv * dk * dv]; // [h][i][j]
    let mut out = vec![0.0; t_len * nv * dv];
    for r in 0..t_len {
        // conv over the last kw inputs (zeros before the sequence), then SiLU
        let c: Vec<f64> = (0..conv_dim)
            .map(|ch| {
                let acc: f64 = (0..kw)
                    .map(|j| {
                        let s = r as i64 - (kw as i64 - 1) + j as i64;
                        if s < 0 {
                            0.0
                        } else {
                            conv_w[ch * kw + j] as f64 * x(s as usize, ch)
                        }
                    })
                    .sum();
                silu(acc)
            })
            .collect();
        for h in 0..nv {
            let kh = if tiled { h % nk } else { h / (nv / nk) };
            let l2 = |v: &[f64]| {
                let n = (v.iter().map(|a| a * a).sum::<f64>() + 1e-6).sqrt();
                v.iter().map(|a| a / n).collect::<Vec<f64>>()
            };
            let q: Vec<f64> = l2(&c[kh * dk..(kh + 1) * dk]).iter().map(|a| a / (dk as f64).sqrt()).collect();
            let k = l2(&c[key_dim + kh * dk..key_dim + (kh + 1) * dk]);
            let v = &c[2 * key_dim + h * dv..2 * key_dim + (h + 1) * dv];
            let b = x(r, conv_dim + nv * dv + h);
            let a = x(r, conv_dim + nv * dv + nv + h);
            let beta = 1.0 / (1.0 + (-b).exp());
            let sp = |z: f64| if z > 20.0 { z } else { (1.0 + z.exp()).ln() };
            let decay = (-(a_log[h] as f64).exp() * sp(a + dt_bias[h] as f64)).exp();
            let s = &mut state[h * dk * dv..(h + 1) * dk * dv];
            s.iter_mut().for_each(|e| *e *= decay);
            let m: Vec<f64> = (0..dv).map(|j| (0..dk).map(|i| s[i * dv + j] * k[i]).sum()).collect();
            let u: Vec<f64> = (0..dv).map(|j| beta * (v[j] - m[j])).collect();
            for i in 0..dk {
                for j in 0..dv {
                    s[i * dv + j] += k[i] * u[j];
                }
            }
            let o: Vec<f64> = (0..dv).map(|j| (0..dk).map(|i| s[i * dv + j] * q[i]).sum()).collect();
            let inv = 1.0 / (o.iter().map(|a| a * a).sum::<f64>() / dv as f64 + eps).sqrt();
            for j in 0..dv {
                let z = x(r, conv_dim + h * dv + j);
                out[(r * nv + h) * dv + j] = o[j] * inv * norm_w[j] as f64 * silu(z);
            }
        }
    }
    out
}

/// LayerNorm of each row of `y` (torch.nn.LayerNorm: biased variance), in f64 from the f32 values
/// given: `(y − mean) / sqrt(var + eps) · w + b`.
pub fn layer_norm(y: &[f32], w: &[f32], b: &[f32], rows: usize, dim: usize, eps: f64) -> Vec<f64> {
    let mut out = vec![0.0; rows * dim];
    for r in 0..rows {
        let row = &y[r * dim..(r + 1) * dim];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..dim {
            out[r * dim + i] = (row[i] as f64 - mean) * inv * w[i] as f64 + b[i] as f64;
        }
    }
    out
}

/// erfc in f64, relative error ≲ 1e-13 for every z: 1 − erf from the all-positive series
/// erf(z) = 2/√π · e^{−z²} · Σ 2ⁿ z^{2n+1} / (1·3···(2n+1)) (A&S 7.1.6) below 2 (no cancellation;
/// 1 − erf loses at most 1/erfc(2) ≈ 200× of f64's precision), the continued fraction
/// erfc(z) = e^{−z²}/√π · 1/(z + ½/(z + 1/(z + 3/2/(z + …)))) (A&S 7.1.14), 100 levels, from 2 on.
pub fn erfc(z: f64) -> f64 {
    if z < 0.0 {
        return 2.0 - erfc(-z);
    }
    let e = (-z * z).exp();
    if z < 2.0 {
        let (mut term, mut sum) = (z, z);
        for n in 1..200 {
            term *= 2.0 * z * z / (2 * n + 1) as f64;
            sum += term;
            if term <= 1e-17 * sum {
                break;
            }
        }
        1.0 - std::f64::consts::FRAC_2_SQRT_PI * e * sum
    } else {
        let mut f = z;
        for n in (1..=100).rev() {
            f = z + (n as f64 / 2.0) / f;
        }
        e / std::f64::consts::PI.sqrt() / f
    }
}

/// Exact GELU, x · ½ (1 + erf(x / √2)), written as ½ x · erfc(−x / √2) (accurate in the tails too).
pub fn gelu(x: f64) -> f64 {
    0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// f64 bidirectional attention over a padded batch: `qkv` rows `[batch·seq, (n_heads + 2·n_kv)·hd]`
/// (q | k | v), row i < lens[b] of sequence b attends to its keys 0..lens[b]; padded rows are 0.
/// Returns `[batch·seq, n_heads·hd]`.
#[allow(clippy::too_many_arguments)]
pub fn encoder_attention(
    qkv: &[f32],
    lens: &[u32],
    n_heads: usize,
    n_kv: usize,
    hd: usize,
    batch: usize,
    seq: usize,
    scale: f64,
) -> Vec<f64> {
    let (q_dim, kv_dim) = (n_heads * hd, n_kv * hd);
    let row_elems = q_dim + 2 * kv_dim;
    let group = n_heads / n_kv;
    let mut out = vec![0.0; batch * seq * q_dim];
    for b in 0..batch {
        let n = lens[b] as usize;
        let at = |j: usize, col: usize| qkv[(b * seq + j) * row_elems + col] as f64;
        for i in 0..n {
            for h in 0..n_heads {
                let (qc, kc) = (h * hd, q_dim + (h / group) * hd);
                let vc = kc + kv_dim;
                let scores: Vec<f64> =
                    (0..n).map(|j| (0..hd).map(|d| at(i, qc + d) * at(j, kc + d)).sum::<f64>() * scale).collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let l: f64 = w.iter().sum();
                for d in 0..hd {
                    out[(b * seq + i) * q_dim + qc + d] = (0..n).map(|j| w[j] * at(j, vc + d)).sum::<f64>() / l;
                }
            }
        }
    }
    out
}
