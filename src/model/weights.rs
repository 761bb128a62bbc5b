//! A model's weights on the GPU, named as in Hugging Face checkpoints. Where the bytes come from
//! (a converted package streamed from disk or the network, or CPU arrays in tests) is behind
//! `TensorSource`.

use super::config::{Config, DeltaNetShape};
use super::error::{ModelError, Result};
use crate::gpu::{Context, GpuError};
use crate::ops::add::add_scalar;
use crate::ops::matmul::QuantMatrix;
use crate::quant::{quantize, WeightFormat};

/// Supplies one tensor at a time by its checkpoint name.
pub trait TensorSource {
    /// A 2-D weight `[n outputs, k inputs]` in whatever format it is stored.
    fn matrix(&mut self, ctx: &Context, name: &str) -> Result<QuantMatrix>;
    /// A 1-D f32 tensor (norm weight, bias) of `len` elements.
    fn vector(&mut self, ctx: &Context, name: &str, len: u32) -> Result<wgpu::Buffer>;
}

/// A projection and its optional bias.
pub struct Linear {
    pub w: QuantMatrix,
    pub bias: Option<wgpu::Buffer>,
}

/// The projections that fill a q|k|v row (`[q_dim + 2 kv_dim]`), each with the column it starts
/// at: one matrix (Phi-3's `qkv_proj`, or q, k, v stacked at load), two (q|k stacked and v, when
/// v has another format, as in llama.cpp's Q4_K_M), or three.
pub struct Qkv {
    pub parts: Vec<(Linear, u32)>,
}

/// gate/up: two matrices, or Phi-3's fused `gate_up_proj` (rows gate, then up).
pub enum GateUp {
    Separate { gate: QuantMatrix, up: QuantMatrix },
    Fused(QuantMatrix),
}

/// Softmax attention's weights.
pub struct Attention {
    pub qkv: Qkv,
    /// Qwen3's per-head RMSNorm weights for q and k, each (head_dim).
    pub qk_norm: Option<(wgpu::Buffer, wgpu::Buffer)>,
    pub o: Linear, // (hidden, q_dim)
    /// Qwen3.5's output gate (q_dim, hidden): q_proj's gate rows, split from the query's at load.
    pub gate: Option<QuantMatrix>,
}

/// A Gated DeltaNet layer's weights (Qwen3.5; docs/qwen35.md §2).
pub struct DeltaNet {
    /// in_proj_qkv | in_proj_z | in_proj_b | in_proj_a, side by side in one row (as `Qkv`).
    pub proj: Qkv,
    /// conv1d.weight as `[conv_dim, k]`.
    pub conv: wgpu::Buffer,
    pub a_log: wgpu::Buffer,   // (nv)
    pub dt_bias: wgpu::Buffer, // (nv)
    /// The gated RMSNorm's plain weight (dv).
    pub norm: wgpu::Buffer,
    pub out: QuantMatrix, // (hidden, nv·dv)
}

/// What mixes positions in a layer.
pub enum Mixer {
    Attention(Attention),
    DeltaNet(DeltaNet),
}

pub struct LayerWeights {
    pub attn_norm: wgpu::Buffer, // (hidden)
    pub mixer: Mixer,
    pub ffn_norm: wgpu::Buffer, // (hidden)
    pub gate_up: GateUp,        // (ffn, hidden) each
    pub down: QuantMatrix,      // (hidden, ffn)
    /// Gemma's norms of the attention and MLP outputs, each (hidden).
    pub post_norms: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

pub struct Weights {
    pub embed: QuantMatrix, // (vocab, hidden)
    pub layers: Vec<LayerWeights>,
    pub norm: wgpu::Buffer, // (hidden)
    /// None when tied to `embed`.
    pub lm_head: Option<QuantMatrix>,
}

fn expect_shape(name: &str, m: &QuantMatrix, n: u32, k: u32) -> Result<()> {
    if m.n != n || m.k != k {
        return Err(ModelError::TensorShape {
            name: name.into(),
            found: format!("{}×{}", m.n, m.k),
            expected: format!("{n}×{k}"),
        });
    }
    Ok(())
}

impl Weights {
    /// Every GPU buffer of the weights (for `Context::release_all`).
    pub fn buffers(&self) -> Vec<&wgpu::Buffer> {
        let mut out: Vec<&wgpu::Buffer> = self.embed.buffers().collect();
        for l in &self.layers {
            out.push(&l.attn_norm);
            match &l.mixer {
                Mixer::Attention(a) => {
                    for (p, _) in &a.qkv.parts {
                        out.extend(p.w.buffers().chain(p.bias.as_ref()));
                    }
                    if let Some((q, k)) = &a.qk_norm {
                        out.extend([q, k]);
                    }
                    out.extend(a.o.w.buffers().chain(a.o.bias.as_ref()));
                    out.extend(a.gate.iter().flat_map(|g| g.buffers()));
                }
                Mixer::DeltaNet(d) => {
                    for (p, _) in &d.proj.parts {
                        out.extend(p.w.buffers());
                    }
                    out.extend([&d.conv, &d.a_log, &d.dt_bias, &d.norm]);
                    out.extend(d.out.buffers());
                }
            }
            out.push(&l.ffn_norm);
            match &l.gate_up {
                GateUp::Separate { gate, up } => out.extend(gate.buffers().chain(up.buffers())),
                GateUp::Fused(m) => out.extend(m.buffers()),
            }
            out.extend(l.down.buffers());
            if let Some((a, m)) = &l.post_norms {
                out.extend([a, m]);
            }
        }
        out.push(&self.norm);
        out.extend(self.lm_head.iter().flat_map(|m| m.buffers()));
        out
    }

    /// Bytes of every weight on the GPU.
    pub fn bytes(&self) -> u64 {
        self.bytes_per_token() + if self.lm_head.is_some() { self.embed.bytes() } else { 0 }
    }

    /// Weight bytes one decoded token reads: every layer, the final norm and the lm_head (the
    /// embedding table when tied); an untied embedding table is read one row at a time, which
    /// is not counted.
    pub fn bytes_per_token(&self) -> u64 {
        let lin = |l: &Linear| l.w.bytes() + l.bias.as_ref().map_or(0, |b| b.size());
        let mut total = self.norm.size() + self.lm_head.as_ref().unwrap_or(&self.embed).bytes();
        for l in &self.layers {
            total += l.attn_norm.size() + l.ffn_norm.size() + l.down.bytes();
            total += match &l.mixer {
                Mixer::Attention(a) => {
                    lin(&a.o)
                        + a.qkv.parts.iter().map(|(p, _)| lin(p)).sum::<u64>()
                        + a.qk_norm.as_ref().map_or(0, |(q, k)| q.size() + k.size())
                        + a.gate.as_ref().map_or(0, |g| g.bytes())
                }
                Mixer::DeltaNet(d) => {
                    d.proj.parts.iter().map(|(p, _)| lin(p)).sum::<u64>()
                        + [&d.conv, &d.a_log, &d.dt_bias, &d.norm].iter().map(|b| b.size()).sum::<u64>()
                        + d.out.bytes()
                }
            };
            total += l.post_norms.as_ref().map_or(0, |(a, m)| a.size() + m.size());
            total += match &l.gate_up {
                GateUp::Separate { gate, up } => gate.bytes() + up.bytes(),
                GateUp::Fused(f) => f.bytes(),
            };
        }
        total
    }

    /// Load every tensor `cfg` needs from `src`, checking shapes against the config.
    pub fn load(ctx: &Context, cfg: &Config, src: &mut dyn TensorSource) -> Result<Self> {
        let (h, ffn) = (cfg.hidden, cfg.ffn);
        // RMSNorm weights, with Gemma's (and Qwen3.5's) 1 added on the GPU as they arrive.
        let norm = |src: &mut dyn TensorSource, name: &str, len: u32| -> Result<wgpu::Buffer> {
            let b = src.vector(ctx, name, len)?;
            if cfg.norm_offset != 0.0 {
                ctx.run(&[&add_scalar(ctx, &b, cfg.norm_offset, len)?]);
            }
            Ok(b)
        };
        let matrix = |src: &mut dyn TensorSource, name: &str, n: u32, k: u32| -> Result<QuantMatrix> {
            let m = src.matrix(ctx, name)?;
            expect_shape(name, &m, n, k)?;
            Ok(m)
        };
        let embed = matrix(src, "model.embed_tokens.weight", cfg.vocab, h)?;
        let mut layers = Vec::with_capacity(cfg.n_layers as usize);
        for l in 0..cfg.n_layers {
            let p = format!("model.layers.{l}");
            let mixer = match cfg.delta {
                Some(dn) if cfg.linear.get(l as usize).copied().unwrap_or(false) => {
                    Mixer::DeltaNet(load_delta_net(ctx, src, &p, h, &dn, &matrix)?)
                }
                _ => Mixer::Attention(load_attention(ctx, cfg, src, &p, &matrix, &norm)?),
            };
            let gate_up = if cfg.fused_proj {
                GateUp::Fused(matrix(src, &format!("{p}.mlp.gate_up_proj.weight"), 2 * ffn, h)?)
            } else {
                let gate = matrix(src, &format!("{p}.mlp.gate_proj.weight"), ffn, h)?;
                let up = matrix(src, &format!("{p}.mlp.up_proj.weight"), ffn, h)?;
                // Stacked, decode runs gate, up and SwiGLU as one GEMV.
                match QuantMatrix::stack(ctx, &format!("{p}.mlp.gate_up"), &[&gate, &up])? {
                    Some(stacked) => {
                        gate.release(ctx);
                        up.release(ctx);
                        GateUp::Fused(stacked)
                    }
                    None => GateUp::Separate { gate, up },
                }
            };
            // Gemma: post_attention_layernorm norms the attention output; the MLP's input norm is
            // pre_feedforward_layernorm. Llama: post_attention_layernorm is the MLP's input norm.
            let (ffn_norm, post_norms) = if cfg.post_norms {
                let ffn_norm = norm(src, &format!("{p}.pre_feedforward_layernorm.weight"), h)?;
                let after_attn = norm(src, &format!("{p}.post_attention_layernorm.weight"), h)?;
                let after_mlp = norm(src, &format!("{p}.post_feedforward_layernorm.weight"), h)?;
                (ffn_norm, Some((after_attn, after_mlp)))
            } else {
                (norm(src, &format!("{p}.post_attention_layernorm.weight"), h)?, None)
            };
            layers.push(LayerWeights {
                attn_norm: norm(src, &format!("{p}.input_layernorm.weight"), h)?,
                mixer,
                ffn_norm,
                gate_up,
                down: matrix(src, &format!("{p}.mlp.down_proj.weight"), h, ffn)?,
                post_norms,
            });
        }
        let norm = norm(src, "model.norm.weight", h)?;
        let lm_head = if cfg.tied_embeddings { None } else { Some(matrix(src, "lm_head.weight", cfg.vocab, h)?) };
        Ok(Weights { embed, layers, norm, lm_head })
    }
}

type MatrixFn<'a> = dyn Fn(&mut dyn TensorSource, &str, u32, u32) -> Result<QuantMatrix> + 'a;
type NormFn<'a> = dyn Fn(&mut dyn TensorSource, &str, u32) -> Result<wgpu::Buffer> + 'a;

/// A softmax-attention layer's weights under `p` (`model.layers.{l}`).
fn load_attention(
    ctx: &Context,
    cfg: &Config,
    src: &mut dyn TensorSource,
    p: &str,
    matrix: &MatrixFn,
    norm: &NormFn,
) -> Result<Attention> {
    let (h, qd, kvd) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim());
    let bias = |src: &mut dyn TensorSource, on: bool, name: String, len: u32| -> Result<Option<wgpu::Buffer>> {
        if on {
            src.vector(ctx, &name, len).map(Some)
        } else {
            Ok(None)
        }
    };
    let mut gate = None;
    let qkv = if cfg.fused_proj {
        let w = matrix(src, &format!("{p}.self_attn.qkv_proj.weight"), qd + 2 * kvd, h)?;
        Qkv { parts: vec![(Linear { w, bias: None }, 0)] }
    } else {
        let lin = |src: &mut dyn TensorSource, which: &str, n: u32| -> Result<Linear> {
            let w = matrix(src, &format!("{p}.self_attn.{which}_proj.weight"), n, h)?;
            let b = bias(src, cfg.qkv_bias, format!("{p}.self_attn.{which}_proj.bias"), n)?;
            Ok(Linear { w, bias: b })
        };
        let q = if cfg.attn_output_gate {
            // Qwen3.5: per head, hd query rows then hd gate rows; split into two matrices.
            let name = format!("{p}.self_attn.q_proj.weight");
            let both = matrix(src, &name, 2 * qd, h)?;
            let hd = cfg.head_dim;
            let runs = |first: u32| (0..cfg.n_heads).map(|i| (2 * i * hd + first, hd)).collect::<Vec<_>>();
            let split = |label: &str, first| {
                QuantMatrix::gather_rows(ctx, &format!("{p}.self_attn.{label}"), &both, &runs(first))?.ok_or_else(
                    || ModelError::TensorShape {
                        name: name.clone(),
                        found: format!("{:?} rows of {} that cannot be split per head", both.format, both.k),
                        expected: "query and gate rows on scale-word boundaries".into(),
                    },
                )
            };
            let (q, g) = (split("q", 0)?, split("gate", hd)?);
            both.release(ctx);
            gate = Some(g);
            Linear { w: q, bias: bias(src, cfg.qkv_bias, format!("{p}.self_attn.q_proj.bias"), qd)? }
        } else {
            lin(src, "q", qd)?
        };
        let parts = vec![(q, 0), (lin(src, "k", kvd)?, qd), (lin(src, "v", kvd)?, qd + kvd)];
        Qkv { parts: stack_runs(ctx, &format!("{p}.self_attn.qkv"), parts)? }
    };
    let qk_norm = if cfg.qk_norm {
        Some((
            norm(src, &format!("{p}.self_attn.q_norm.weight"), cfg.head_dim)?,
            norm(src, &format!("{p}.self_attn.k_norm.weight"), cfg.head_dim)?,
        ))
    } else {
        None
    };
    let o = Linear {
        w: matrix(src, &format!("{p}.self_attn.o_proj.weight"), h, qd)?,
        bias: bias(src, cfg.o_bias, format!("{p}.self_attn.o_proj.bias"), h)?,
    };
    Ok(Attention { qkv, qk_norm, o, gate })
}

/// A Gated DeltaNet layer's weights under `p`.
fn load_delta_net(
    ctx: &Context,
    src: &mut dyn TensorSource,
    p: &str,
    h: u32,
    dn: &DeltaNetShape,
    matrix: &MatrixFn,
) -> Result<DeltaNet> {
    let (cd, vd, nv) = (dn.conv_dim(), dn.value_dim(), dn.nv);
    let a = format!("{p}.linear_attn");
    let lin = |src: &mut dyn TensorSource, which: &str, n: u32| -> Result<Linear> {
        Ok(Linear { w: matrix(src, &format!("{a}.in_proj_{which}.weight"), n, h)?, bias: None })
    };
    let parts = vec![
        (lin(src, "qkv", cd)?, 0),
        (lin(src, "z", vd)?, cd),
        (lin(src, "b", nv)?, cd + vd),
        (lin(src, "a", nv)?, cd + vd + nv),
    ];
    Ok(DeltaNet {
        proj: Qkv { parts: stack_runs(ctx, &format!("{a}.in_proj"), parts)? },
        conv: src.vector(ctx, &format!("{a}.conv1d.weight"), cd * dn.conv_k)?,
        a_log: src.vector(ctx, &format!("{a}.A_log"), nv)?,
        dt_bias: src.vector(ctx, &format!("{a}.dt_bias"), nv)?,
        norm: src.vector(ctx, &format!("{a}.norm.weight"), dn.dv)?,
        out: matrix(src, &format!("{a}.out_proj.weight"), h, vd)?,
    })
}

/// Adjacent projections `(linear, first column)` stacked into as few matrices as their formats
/// allow (one dispatch each): all of them, else the longest stackable run from the front or the
/// back. The stacked parts' buffers are released.
fn stack_runs(ctx: &Context, label: &str, mut parts: Vec<(Linear, u32)>) -> Result<Vec<(Linear, u32)>> {
    let n = parts.len();
    for len in (2..=n).rev() {
        for start in [0, n - len] {
            let run = &parts[start..start + len];
            let mats: Vec<&QuantMatrix> = run.iter().map(|(l, _)| &l.w).collect();
            let Some(w) = QuantMatrix::stack(ctx, label, &mats)? else { continue };
            let bias = if run.iter().all(|(l, _)| l.bias.is_some()) {
                let vecs: Vec<(&wgpu::Buffer, u64)> =
                    run.iter().filter_map(|(l, _)| l.bias.as_ref().map(|b| (b, l.w.n as u64 * 4))).collect();
                Some(ctx.concat(&format!("{label}.bias"), &vecs)?)
            } else {
                None
            };
            let col = run[0].1;
            for (l, _) in parts.splice(start..start + len, [(Linear { w, bias }, col)]) {
                l.w.release(ctx);
                if let Some(b) = l.bias {
                    ctx.release(b);
                }
            }
            return Ok(parts);
        }
    }
    Ok(parts)
}

/// Which format a 2-D checkpoint tensor gets when quantizing on the fly (what `convert` writes
/// by default): projections 4-bit, embeddings and lm_head 8-bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantPolicy {
    Q4,
    Q8,
    F16,
    F32,
}

impl QuantPolicy {
    pub fn format_for(self, name: &str) -> WeightFormat {
        let big_table = name.ends_with("embed_tokens.weight") || name.ends_with("lm_head.weight");
        // (convert's choose_format is the package policy; this mirrors it for CPU tensors)
        match self {
            QuantPolicy::Q4 if big_table => WeightFormat::Q8,
            QuantPolicy::Q4 => WeightFormat::Q4,
            QuantPolicy::Q8 => WeightFormat::Q8,
            QuantPolicy::F16 => WeightFormat::F16,
            QuantPolicy::F32 => WeightFormat::F32,
        }
    }
}

/// Tensors held as f32 arrays on the CPU (tests, small models): matrices are packed with `policy`
/// on upload.
pub struct CpuTensors {
    pub tensors: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub policy: QuantPolicy,
}

impl CpuTensors {
    fn take(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.tensors.remove(name).ok_or_else(|| ModelError::MissingTensor { name: name.into() })
    }
}

impl TensorSource for CpuTensors {
    fn matrix(&mut self, ctx: &Context, name: &str) -> Result<QuantMatrix> {
        let (shape, data) = self.take(name)?;
        let [n, k] = shape[..] else {
            return Err(ModelError::TensorShape {
                name: name.into(),
                found: format!("{shape:?}"),
                expected: "a 2-D matrix".into(),
            });
        };
        let packed = quantize(self.policy.format_for(name), &data, n, k).map_err(GpuError::from)?;
        Ok(QuantMatrix::upload(ctx, name, &packed)?)
    }

    fn vector(&mut self, ctx: &Context, name: &str, len: u32) -> Result<wgpu::Buffer> {
        let (shape, data) = self.take(name)?;
        if data.len() != len as usize {
            return Err(ModelError::TensorShape {
                name: name.into(),
                found: format!("{shape:?}"),
                expected: format!("{len} values"),
            });
        }
        Ok(ctx.storage_init(name, bytemuck::cast_slice(&data))?)
    }
}
