//! The Llama-family forward pass (Llama, Qwen2, Qwen3, Phi-3, SmolLM3, Gemma 2/3): one function
//! that reads top to bottom like llama2.c's `forward()`. It only builds kernels; the caller records and submits them,
//! and nothing is read back inside it.

use super::config::Config;
use super::weights::{GateUp, Mixer, Weights};
use std::collections::HashMap;

use crate::gpu::{ensure, Context, Kernel, ReadbackRing, Result};
use crate::ops::act_q8::{act_q8, ActQ8};
use crate::ops::argmax::{argmax_into, ArgmaxScratch};
use crate::ops::attention::{attention, AttentionScratch, AttentionShape, KvCacheShape, KvDtype};
use crate::ops::delta_net::{delta_net, DeltaState, DeltaWeights};
use crate::ops::matmul::{
    fold_norm, matmul, matmul_q8, matmul_swiglu, matmul_swiglu_q8, q8_format, swiglu_fusable, Epilogue, Norm,
    QuantMatrix,
};
use crate::ops::rmsnorm::{rms_norm, rms_norm_add};
use crate::ops::rope::{rope_kv, QkNorm, RopeTable};
use crate::ops::sample::{sample, SampleOut, SampleState};
use crate::ops::softcap::softcap;
use crate::ops::swiglu::Act;
use crate::ops::{embedding::embedding, swiglu, Pos, StepBuffer};

/// Decode steps that may be in flight at once, each with its id on the way back: the size of
/// the id readback ring, and the engine's pipelining depth (the step being read and up to two
/// surplus past a stop).
pub const PIPELINE: usize = 3;

/// Sizes the activations and the KV cache are allocated for.
#[derive(Clone, Copy, Debug)]
pub struct StateOptions {
    /// Tokens the KV cache holds (the context window in use).
    pub context: u32,
    /// Most tokens one forward call processes (a prompt longer than this is prefilled in chunks).
    pub max_batch: u32,
    pub kv_dtype: KvDtype,
    /// Room for every row's logits (`Logits::All`: max_batch × vocab floats, for tests and
    /// scoring); otherwise one row, all generation needs (1 MiB instead of 128 at Gemma's 262k
    /// vocabulary and the default max_batch).
    pub all_logits: bool,
}

impl StateOptions {
    /// Rows of the logits buffer.
    pub fn logit_rows(&self) -> u32 {
        if self.all_logits {
            self.max_batch
        } else {
            1
        }
    }
}

/// Activations, the KV cache, per-step values and the decode plans, allocated once. Shapes:
/// t ≤ max_batch rows. Everything a step binds lives here, so replacing a model's state drops
/// the plans built on it.
pub struct State {
    pub opts: StateOptions,
    ids: wgpu::Buffer,  // (max_batch) u32 token ids of this step
    x: wgpu::Buffer,    // (t, hidden) the residual stream
    xb: wgpu::Buffer,   // (t, hidden) normed x
    q: wgpu::Buffer,    // (t, q_dim)
    qkv: wgpu::Buffer,  // (t, q_dim + 2 kv_dim): the q|k|v projections, side by side
    att: wgpu::Buffer,  // (t, q_dim) attention output
    gate: wgpu::Buffer, // (t, 2 ffn): gate, or gate|up when stacked
    up: wgpu::Buffer,   // (t, ffn)
    hb: wgpu::Buffer,   // (t, ffn) swiglu(gate, up)
    // One row of int8 activations per projection input width (hidden, q_dim, ffn), where the
    // adapter takes the integer-dot GEMVs (`Capabilities::int8_dot`) and the width allows.
    xq_hidden: Option<ActQ8>,
    xq_att: Option<ActQ8>,
    xq_ffn: Option<ActQ8>,
    pub logits: wgpu::Buffer,  // (logit_rows, vocab)
    pub next_id: wgpu::Buffer, // (logit_rows) u32 chosen token per logits row
    kv_shape: KvCacheShape,
    /// The sliding layers' ring cache, where it is shorter than the context (`kv_shapes`).
    pub kv_local: Option<KvCacheShape>,
    /// One past the highest position written since the last step at position 0 (pipelined
    /// surplus steps included): what a ring may have overwritten (`can_resume_at`).
    kv_end: std::cell::Cell<u32>,
    /// Per layer: (K, V) `(n_kv_heads, context, head_dim)` for attention, the recurrent state for
    /// a Gated DeltaNet layer.
    cache: Vec<LayerCache>,
    /// Qwen3.5: the attention output gate `(t, q_dim)`.
    att_gate: Option<wgpu::Buffer>,
    /// Gated DeltaNet scratch: projections `(t, qkv | z | b | a)`, conv output `(t, conv_dim)`,
    /// mixer output `(t, nv·dv)`, the chunked prefill's W | U | P | G (`DeltaNetShape::scratch_bytes`).
    dn: Option<[wgpu::Buffer; 4]>,
    scratch: AttentionScratch,
    rope: RopeTable,
    /// The sliding layers' RoPE where it differs (Gemma 3).
    rope_local: Option<RopeTable>,
    /// Position of this step's row 0, read by RoPE, the KV write and attention.
    pub(crate) step: StepBuffer,
    argmax: ArgmaxScratch,
    /// The GPU sampler's settings, history and counters.
    pub(crate) sampler: SampleState,
    /// Chosen ids on their way back to the CPU, one slot per step in flight.
    pub(crate) ids_back: ReadbackRing,
    /// The last logits row on its way back (`Readback::Logits`: tests read what a step computed).
    pub(crate) logits_back: ReadbackRing,
    /// Decode-step kernels (t = 1, the token in `next_id[0]`), built once per attention split
    /// count (it changes every `KEYS_PER_SPLIT` positions) and way of choosing, then only recorded.
    pub(crate) plans: HashMap<(u32, Choose), Vec<Kernel>>,
}

impl State {
    pub fn new(ctx: &Context, cfg: &Config, opts: StateOptions) -> Result<Self> {
        ensure(opts.context > 0 && opts.max_batch > 0, "State", || format!("empty state {opts:?}"))?;
        let t = opts.max_batch as u64;
        let f32s = |label: &str, elems: u64| ctx.storage(label, elems * 4);
        let (kv_shape, kv_local) = kv_shapes(cfg, &opts);
        let mut cache = Vec::with_capacity(cfg.n_layers as usize);
        for l in 0..cfg.n_layers {
            let layer_kv = layer_kv_shape(cfg, l as usize, kv_shape, kv_local);
            cache.push(match cfg.delta {
                Some(dn) if cfg.linear.get(l as usize).copied().unwrap_or(false) => {
                    LayerCache::Delta(DeltaState::new(ctx, &format!("delta.{l}"), &dn)?)
                }
                _ => LayerCache::Kv(
                    ctx.storage(&format!("cache.k.{l}"), layer_kv.bytes())?,
                    ctx.storage(&format!("cache.v.{l}"), layer_kv.bytes())?,
                ),
            });
        }
        let dn = match cfg.delta {
            Some(dn) => Some([
                f32s("dn.proj", t * dn.in_width() as u64)?,
                f32s("dn.c", t * dn.conv_dim() as u64)?,
                f32s("dn.out", t * dn.value_dim() as u64)?,
                ctx.storage("dn.scratch", dn.scratch_bytes(opts.max_batch))?,
            ]),
            None => None,
        };
        let gate_width = 2 * cfg.ffn as u64; // gate|up stacked (any arch; see Weights::load)
        let xq = |label: &str, k: u32| -> Result<Option<ActQ8>> {
            if !ctx.caps.int8_dot || k % crate::ops::act_q8::BLOCK != 0 {
                return Ok(None);
            }
            ActQ8::new(ctx, label, 1, k).map(Some)
        };
        Ok(Self {
            opts,
            ids: ctx.storage("ids", t * 4)?,
            x: f32s("x", t * cfg.hidden as u64)?,
            xb: f32s("xb", t * cfg.hidden as u64)?,
            q: f32s("q", t * cfg.q_dim() as u64)?,
            qkv: f32s("qkv", t * (cfg.q_dim() + 2 * cfg.kv_dim()) as u64)?,
            att: f32s("att", t * cfg.q_dim() as u64)?,
            gate: f32s("gate", t * gate_width)?,
            up: f32s("up", t * cfg.ffn as u64)?,
            hb: f32s("hb", t * cfg.ffn as u64)?,
            xq_hidden: xq("xq.hidden", cfg.hidden)?,
            xq_att: xq("xq.att", cfg.q_dim())?,
            xq_ffn: xq("xq.ffn", cfg.ffn)?,
            logits: f32s("logits", opts.logit_rows() as u64 * cfg.vocab as u64)?,
            next_id: ctx.storage("next_id", opts.logit_rows() as u64 * 4)?,
            kv_shape,
            kv_local,
            kv_end: std::cell::Cell::new(0),
            cache,
            att_gate: if cfg.attn_output_gate { Some(f32s("att_gate", t * cfg.q_dim() as u64)?) } else { None },
            dn,
            scratch: AttentionScratch::new(ctx, scratch_rows(cfg, &opts), cfg.n_heads, cfg.head_dim, MAX_SPLITS)?,
            rope: RopeTable::new(ctx, &cfg.rope, opts.context)?,
            rope_local: cfg.rope_local.as_ref().map(|r| RopeTable::new(ctx, r, opts.context)).transpose()?,
            step: StepBuffer::new(ctx),
            argmax: ArgmaxScratch::new(ctx, opts.logit_rows(), cfg.vocab)?,
            // the history holds the context and the id chosen after its last position
            sampler: SampleState::new(ctx, 1, cfg.vocab, opts.context + 1)?,
            ids_back: ReadbackRing::new(ctx, "ids_back", PIPELINE, 4)?,
            logits_back: ReadbackRing::new(ctx, "logits_back", 1, cfg.vocab as u64 * 4)?,
            plans: HashMap::new(),
        })
    }
}

/// Key splits a flash-decoding attention step may use (`AttentionScratch`'s room).
const MAX_SPLITS: u32 = 32;

/// Rows the attention scratch holds: those a step of up to `max_batch` rows may split.
fn scratch_rows(cfg: &Config, opts: &StateOptions) -> u32 {
    opts.max_batch.min(crate::ops::attention::max_split_rows(cfg.n_heads))
}

impl State {
    /// Bytes `new` allocates, within tens of KB: the buffers that grow with the rows, the context,
    /// the layers or the vocabulary (K/V or recurrent state, activations, attention scratch, logits
    /// and sampler); uniforms, RoPE tables and the one-row int8 activations are left out.
    pub fn bytes(cfg: &Config, opts: &StateOptions) -> u64 {
        let t = opts.max_batch as u64;
        let (h, q, kv, ffn) = (cfg.hidden as u64, cfg.q_dim() as u64, cfg.kv_dim() as u64, cfg.ffn as u64);
        let (full, local) = kv_shapes(cfg, opts);
        let cache: u64 = (0..cfg.n_layers as usize)
            .map(|l| match cfg.delta {
                Some(dn) if cfg.linear.get(l).copied().unwrap_or(false) => DeltaState::bytes(&dn),
                _ => 2 * layer_kv_shape(cfg, l, full, local).bytes(),
            })
            .sum();
        // ids; x, xb; q; qkv; att; gate|up; up; hb; the output gate
        let gate = if cfg.attn_output_gate { q } else { 0 };
        let activations = 4 * t * (1 + 2 * h + q + (q + 2 * kv) + q + 2 * ffn + 2 * ffn + gate);
        let dn = cfg.delta.map_or(0, |d| {
            4 * t * (d.in_width() + d.conv_dim() + d.value_dim()) as u64 + d.scratch_bytes(opts.max_batch)
        });
        let scratch = AttentionScratch::bytes_for(scratch_rows(cfg, opts), cfg.n_heads, cfg.head_dim, MAX_SPLITS);
        // logits rows, the sampler's counts, the logits readback, its allowed-token bits; its history
        let vocab = 4 * cfg.vocab as u64 * (opts.logit_rows() as u64 + 2)
            + 4 * cfg.vocab.div_ceil(32) as u64
            + 4 * (opts.context as u64 + 1);
        cache + activations + dn + scratch + vocab
    }
}

/// The K/V cache shapes: the attention layers' (`context` positions) and, where it is shorter,
/// the sliding-window layers' ring (Gemma's local layers): `window + max_batch − 1` slots, the
/// fewest with which a step of up to `max_batch` rows never overwrites a key one of its rows
/// reads. Gemma-3-4B at 4k: 5 of every 6 layers keep 1151 positions instead of 4096.
pub fn kv_shapes(cfg: &Config, opts: &StateOptions) -> (KvCacheShape, Option<KvCacheShape>) {
    let full = KvCacheShape {
        n_kv_heads: cfg.n_kv_heads,
        head_dim: cfg.head_dim,
        capacity: opts.context,
        dtype: opts.kv_dtype,
        ring: false,
    };
    let ring = cfg.sliding_window as u64 + opts.max_batch as u64 - 1;
    let local = (cfg.sliding.iter().any(|&s| s) && cfg.sliding_window > 0 && ring < opts.context as u64)
        .then_some(KvCacheShape { capacity: ring as u32, ring: true, ..full });
    (full, local)
}

/// Layer `l`'s K/V cache shape (of `kv_shapes`' two).
pub fn layer_kv_shape(cfg: &Config, l: usize, full: KvCacheShape, local: Option<KvCacheShape>) -> KvCacheShape {
    match local {
        Some(ring) if cfg.sliding.get(l).copied().unwrap_or(false) => ring,
        _ => full,
    }
}

/// One layer's memory of the sequence.
enum LayerCache {
    Kv(wgpu::Buffer, wgpu::Buffer),
    Delta(DeltaState),
}

/// Where a step's token ids come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// `t` ids the caller wrote to the state's id buffer (`State::write_ids`).
    Ids(u32),
    /// One id: `next_id[0]`, the previous step's choice (decode), so it never leaves the GPU.
    Chosen,
}

impl State {
    /// Every GPU buffer of the state (for `Context::release_all`); the decode plans' uniforms go
    /// with the plans.
    pub fn buffers(&self) -> Vec<&wgpu::Buffer> {
        let mut out = vec![
            &self.ids,
            &self.x,
            &self.xb,
            &self.q,
            &self.qkv,
            &self.att,
            &self.gate,
            &self.up,
            &self.hb,
            &self.logits,
            &self.next_id,
        ];
        for xq in [&self.xq_hidden, &self.xq_att, &self.xq_ffn].into_iter().flatten() {
            out.extend(xq.buffers());
        }
        for c in &self.cache {
            match c {
                LayerCache::Kv(k, v) => out.extend([k, v]),
                LayerCache::Delta(d) => out.extend(d.buffers()),
            }
        }
        out.extend(self.att_gate.iter());
        out.extend(self.dn.iter().flatten());
        out.extend(self.scratch.buffers());
        out.extend(self.rope.buffers());
        out.extend(self.rope_local.iter().flat_map(|r| r.buffers()));
        out.push(self.step.buffer());
        out.extend(self.argmax.buffers());
        out.extend(self.sampler.buffers());
        out.extend(self.ids_back.buffers());
        out.extend(self.logits_back.buffers());
        out
    }

    /// Put `tokens` in the id buffer for an `Input::Ids` step; they are checked against `vocab`.
    /// The final-normed hidden rows a `Logits::Hidden` forward leaves, `(t, hidden)` f32.
    pub fn hidden(&self) -> &wgpu::Buffer {
        &self.xb
    }

    pub fn write_ids(&self, ctx: &Context, tokens: &[u32], vocab: u32) -> super::error::Result<()> {
        ensure(!tokens.is_empty() && tokens.len() <= self.opts.max_batch as usize, "forward", || {
            format!("{} tokens in one step; the state holds 1..={}", tokens.len(), self.opts.max_batch)
        })?;
        super::error::check_ids(tokens, vocab)?;
        ctx.write(&self.ids, 0, bytemuck::cast_slice(tokens));
        Ok(())
    }

    /// Copies saving every Gated DeltaNet layer's state (`save`), or restoring the saved one.
    pub(crate) fn recurrent_copies(&self, save: bool) -> Vec<crate::gpu::CopyAfter<'_>> {
        self.cache
            .iter()
            .filter_map(|c| match c {
                LayerCache::Delta(d) => Some(d.copies(save)),
                LayerCache::Kv(..) => None,
            })
            .flatten()
            .collect()
    }

    /// The GPU sampler's buffers (its token history, for tests).
    pub fn sampler(&self) -> &SampleState {
        &self.sampler
    }

    /// Set the position of the next step's row 0.
    pub fn set_pos(&self, ctx: &Context, pos0: u32) {
        self.step.set(ctx, pos0);
    }

    /// Note a step that writes K/V at positions `pos0..pos0 + t`.
    pub(crate) fn wrote(&self, pos0: u32, t: u32) {
        let end = pos0.saturating_add(t);
        self.kv_end.set(if pos0 == 0 { end } else { self.kv_end.get().max(end) });
    }

    /// Whether a step at `pos` can use the K/V cached before it. Always, unless ring caches may
    /// have overwritten a key it reads: position x ≥ pos + 1 − window lives while nothing at
    /// x + capacity was written, and with `kv_shapes`' capacity (window + max_batch − 1) that
    /// is everything written so far ending at or before pos + max_batch.
    pub fn can_resume_at(&self, pos: u32) -> bool {
        self.kv_local.is_none() || self.kv_end.get() as u64 <= pos as u64 + self.opts.max_batch as u64
    }

    /// The decode plan a step at `pos` uses: its attention split count.
    pub(crate) fn plan_key(&self, cfg: &Config, pos: u32) -> u32 {
        crate::ops::attention::auto_splits(&AttentionShape::new(cfg.n_heads, self.kv_shape), pos, 1, &self.scratch)
    }
}

/// How a step chooses its token from the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Choose {
    /// Greedy: argmax of the raw logits, for every row computed.
    Argmax,
    /// The GPU sampler with the state's settings (`ops::sample`), for the last row; the id is
    /// also appended to the sampler's history.
    Sample,
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (tests, scoring).
    All,
    /// None: every row's final-normed hidden state, left in the state's `hidden()` buffer
    /// (embeddings pool these; no lm_head, no choice).
    Hidden,
}

/// The int8 activations a one-row product with `w` takes, if it takes them: the state has them
/// for this width (the adapter takes integer-dot GEMVs) and `w`'s format has such a GEMV.
fn int8_input<'a>(xq: &'a Option<ActQ8>, rows: u32, w: &QuantMatrix) -> Option<&'a ActQ8> {
    xq.as_ref().filter(|q| rows == 1 && q.k == w.k && q8_format(w.format))
}

/// The input of projections `ws` after an RMSNorm of x: act_q8 (which does the norm) is pushed if
/// any of them takes int8 activations, and `normed`'s f32 path for those that do not.
#[allow(clippy::too_many_arguments)]
fn normed_inputs<'a>(
    ctx: &Context,
    k: &mut Vec<Kernel>,
    s: &'a State,
    ws: &[&QuantMatrix],
    weight: &'a wgpu::Buffer,
    t: u32,
    hidden: u32,
    eps: f32,
) -> Result<(&'a wgpu::Buffer, Option<Norm<'a>>)> {
    if let Some(q) = ws.iter().find_map(|w| int8_input(&s.xq_hidden, t, w)) {
        k.push(act_q8(ctx, &s.x, q, 1, 0, Some(Norm { weight, eps }))?);
        if ws.iter().all(|w| int8_input(&s.xq_hidden, t, w).is_some()) {
            return Ok((&s.x, None));
        }
    }
    normed(ctx, k, s, weight, t, hidden, eps)
}

/// `y = x·Wᵀ` per `at`, from the int8 activations `xq` where `w` takes them (they hold x as
/// `at.norm` and `at.x_row0` say), else from x.
fn project(
    ctx: &Context,
    x: &wgpu::Buffer,
    xq: &Option<ActQ8>,
    w: &QuantMatrix,
    y: &wgpu::Buffer,
    t: u32,
    at: Epilogue,
) -> Result<Vec<Kernel>> {
    match int8_input(xq, t, w) {
        Some(q) => matmul_q8(ctx, q, w, y, Epilogue { norm: None, x_row0: 0, ..at }),
        None => matmul(ctx, x, w, y, t, at),
    }
}

/// act_q8 of x (no norm) pushed when `w` takes int8 activations.
fn quantize_for(
    ctx: &Context,
    k: &mut Vec<Kernel>,
    x: &wgpu::Buffer,
    xq: &Option<ActQ8>,
    w: &QuantMatrix,
    t: u32,
) -> Result<()> {
    if let Some(q) = int8_input(xq, t, w) {
        k.push(act_q8(ctx, x, q, 1, 0, None)?);
    }
    Ok(())
}

/// The input of a projection after an RMSNorm of x: decode (one row, hidden ≤ NORM_MAX_K, see
/// `fold_norm`) folds the norm into the projection (x and the norm for its epilogue); otherwise
/// the norm kernel is pushed and its output xb is the input.
fn normed<'a>(
    ctx: &Context,
    k: &mut Vec<Kernel>,
    s: &'a State,
    weight: &'a wgpu::Buffer,
    t: u32,
    hidden: u32,
    eps: f32,
) -> Result<(&'a wgpu::Buffer, Option<Norm<'a>>)> {
    if fold_norm(ctx, t, hidden) {
        return Ok((&s.x, Some(Norm { weight, eps })));
    }
    k.push(rms_norm(ctx, &s.x, weight, &s.xb, t, hidden, eps)?);
    Ok((&s.xb, None))
}

/// Kernels for one forward step over `input` at cache positions `pos0..pos0 + t`: logits into
/// `s.logits` (rows per `which`) and the ids chosen from them (`choose`) into `s.next_id`. Positions are read from
/// the state's step buffer when the kernels run, so kernels built here serve any later position
/// with the same attention split count (`pos0` is where they are checked and the split chosen).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    ctx: &Context,
    cfg: &Config,
    w: &Weights,
    s: &State,
    input: Input,
    pos0: u32,
    which: Logits,
    choose: Choose,
) -> Result<Vec<Kernel>> {
    let (t, ids) = match input {
        Input::Ids(t) => (t, &s.ids),
        Input::Chosen => (1, &s.next_id),
    };
    ensure(t > 0 && t <= s.opts.max_batch, "forward", || {
        format!("{t} tokens in one step; the state holds 1..={}", s.opts.max_batch)
    })?;
    ensure(pos0 as u64 + t as u64 <= s.opts.context as u64, "forward", || {
        format!("positions {pos0}..{} exceed the context of {} tokens", pos0 + t, s.opts.context)
    })?;
    let pos = Pos::Step { buf: &s.step, first: pos0 };
    let (h, eps) = (cfg.hidden, cfg.norm_eps);
    let global = AttentionShape {
        scale: cfg.attn_scale,
        softcap: cfg.attn_softcap,
        ..AttentionShape::new(cfg.n_heads, s.kv_shape)
    };
    let mut k: Vec<Kernel> = Vec::new();

    // x = embedding(tokens) (· √hidden for Gemma)
    k.extend(embedding(ctx, &w.embed, ids, &s.x, t, cfg.embed_scale)?);
    for (l, (layer, cache)) in w.layers.iter().zip(&s.cache).enumerate() {
        let post = layer.post_norms.as_ref();
        // the projection adds into x, or (Gemma) goes to xb for its norm to add
        let residual = |k: &mut Vec<Kernel>,
                        w: &QuantMatrix,
                        xin: &wgpu::Buffer,
                        xq: &Option<ActQ8>,
                        bias: Option<&wgpu::Buffer>|
         -> Result<()> {
            let (y, accumulate) = if post.is_some() { (&s.xb, false) } else { (&s.x, true) };
            k.extend(project(ctx, xin, xq, w, y, t, Epilogue { bias, accumulate, ..Default::default() })?);
            Ok(())
        };
        match (&layer.mixer, cache) {
            (Mixer::Attention(a), LayerCache::Kv(cache_k, cache_v)) => {
                // Gemma's local layers: a sliding window, and (Gemma 3) their own RoPE base
                let sliding = cfg.sliding.get(l).copied().unwrap_or(false);
                let kv = layer_kv_shape(cfg, l, s.kv_shape, s.kv_local);
                let att_shape = AttentionShape { kv, ..global };
                let att_shape =
                    if sliding { AttentionShape { window: cfg.sliding_window, ..att_shape } } else { att_shape };
                let rope_table = match &s.rope_local {
                    Some(local) if sliding => local,
                    _ => &s.rope,
                };
                // attention: q|k|v = rmsnorm(x)·Wqkv (+ b), side by side in one row (Qwen3.5: and
                // the output gate); decode on adapters with integer dot products: x normed into
                // int8 blocks by act_q8
                let mut parts: Vec<&QuantMatrix> = a.qkv.parts.iter().map(|(l, _)| &l.w).collect();
                parts.extend(a.gate.iter());
                let (xn, norm) = normed_inputs(ctx, &mut k, s, &parts, &layer.attn_norm, t, h, eps)?;
                let stride = cfg.q_dim() + 2 * cfg.kv_dim();
                for (lin, col) in &a.qkv.parts {
                    let at = Epilogue {
                        bias: lin.bias.as_ref(),
                        y_stride: stride,
                        y_col0: *col,
                        norm,
                        ..Default::default()
                    };
                    k.extend(project(ctx, xn, &s.xq_hidden, &lin.w, &s.qkv, t, at)?);
                }
                let gate = a.gate.as_ref().zip(s.att_gate.as_ref());
                if let Some((gw, gb)) = gate {
                    k.extend(project(ctx, xn, &s.xq_hidden, gw, gb, t, Epilogue { norm, ..Default::default() })?);
                }
                // (Qwen3/Gemma 3/Qwen3.5: RMSNorm over each head of q and k,) RoPE at positions
                // pos0.. (not on SmolLM3's NoPE layers), q into s.q, and k, v into the cache: one kernel
                let qk_norm = a.qk_norm.as_ref().map(|(q, kn)| QkNorm { q, k: kn, eps });
                let rotate = !cfg.no_rope.get(l).copied().unwrap_or(false);
                k.push(rope_kv(
                    ctx,
                    &s.qkv,
                    &s.q,
                    cache_k,
                    cache_v,
                    rope_table,
                    rotate,
                    cfg.n_heads,
                    &kv,
                    t,
                    pos,
                    qk_norm,
                )?);
                // att = softmax(q·Kᵀ/√d)·V over the cache, causal (scale, window and cap per the layer)
                k.extend(attention(ctx, &s.q, cache_k, cache_v, &s.att, &att_shape, pos, t, &s.scratch, None)?);
                // Qwen3.5: att · sigmoid(gate), into s.q (free again)
                let att = match gate {
                    Some((_, gb)) => {
                        k.push(swiglu::swiglu(ctx, gb, &s.att, &s.q, t, cfg.q_dim(), Act::Sigmoid)?);
                        &s.q
                    }
                    None => &s.att,
                };
                // x += att·Wo (+ b); Gemma: x += rmsnorm(att·Wo)
                quantize_for(ctx, &mut k, att, &s.xq_att, &a.o.w, t)?;
                residual(&mut k, &a.o.w, att, &s.xq_att, a.o.bias.as_ref())?;
            }
            (Mixer::DeltaNet(d), LayerCache::Delta(state)) => {
                // Gated DeltaNet: qkv | z | b | a = rmsnorm(x)·W, side by side; conv, the delta
                // rule over the layer's state, the gated norm; x += that·W_out
                let (Some([proj, c, out, scratch]), Some(shape)) = (&s.dn, &cfg.delta) else {
                    return Err(crate::gpu::GpuError::Validation("a DeltaNet layer without its state".into()));
                };
                let parts: Vec<&QuantMatrix> = d.proj.parts.iter().map(|(l, _)| &l.w).collect();
                let (xn, norm) = normed_inputs(ctx, &mut k, s, &parts, &layer.attn_norm, t, h, eps)?;
                for (lin, col) in &d.proj.parts {
                    let at = Epilogue { y_stride: shape.in_width(), y_col0: *col, norm, ..Default::default() };
                    k.extend(project(ctx, xn, &s.xq_hidden, &lin.w, proj, t, at)?);
                }
                let dw = DeltaWeights { conv: &d.conv, a_log: &d.a_log, dt_bias: &d.dt_bias, norm: &d.norm, eps };
                k.extend(delta_net(ctx, shape, proj, &dw, state, c, out, scratch, t, pos)?);
                residual(&mut k, &d.out, out, &None, None)?;
            }
            _ => return Err(crate::gpu::GpuError::Validation(format!("layer {l}: weights and state disagree"))),
        }
        if let Some((after_attn, _)) = post {
            k.push(rms_norm_add(ctx, &s.xb, after_attn, &s.x, t, h, eps)?);
        }

        // feed-forward: xn = rmsnorm(x); x += (act(xn·Wg) * (xn·Wu))·Wd (Gemma: rmsnorm of that)
        let ws: Vec<&QuantMatrix> = match &layer.gate_up {
            GateUp::Separate { gate, up } => vec![gate, up],
            GateUp::Fused(gate_up) => vec![gate_up],
        };
        let (xn, norm) = normed_inputs(ctx, &mut k, s, &ws, &layer.ffn_norm, t, h, eps)?;
        let at = Epilogue { norm, act: cfg.act, ..Default::default() };
        let xq = &s.xq_hidden;
        match &layer.gate_up {
            GateUp::Separate { gate, up } => {
                k.extend(project(ctx, xn, xq, gate, &s.gate, t, at)?);
                k.extend(project(ctx, xn, xq, up, &s.up, t, at)?);
                k.push(swiglu::swiglu(ctx, &s.gate, &s.up, &s.hb, t, cfg.ffn, cfg.act)?);
            }
            // decode: gate, up and the gated activation in one GEMV over the stacked rows
            GateUp::Fused(gate_up) if swiglu_fusable(gate_up, t) => match int8_input(xq, t, gate_up) {
                Some(q) => {
                    let at = Epilogue { act: cfg.act, ..Default::default() };
                    k.extend(matmul_swiglu_q8(ctx, q, gate_up, &s.hb, at)?)
                }
                None => k.extend(matmul_swiglu(ctx, xn, gate_up, &s.hb, at)?),
            },
            GateUp::Fused(gate_up) => {
                k.extend(project(ctx, xn, xq, gate_up, &s.gate, t, at)?);
                k.push(swiglu::swiglu_fused(ctx, &s.gate, &s.hb, t, cfg.ffn, cfg.act)?);
            }
        }
        quantize_for(ctx, &mut k, &s.hb, &s.xq_ffn, &layer.down, t)?;
        residual(&mut k, &layer.down, &s.hb, &s.xq_ffn, None)?;
        if let Some((_, after_mlp)) = post {
            k.push(rms_norm_add(ctx, &s.xb, after_mlp, &s.x, t, h, eps)?);
        }
    }

    // final norm, then logits = xb·W_lmᵀ for the rows asked for
    if which == Logits::Hidden {
        k.push(rms_norm(ctx, &s.x, &w.norm, &s.xb, t, h, eps)?);
        return Ok(k);
    }
    let lm_head = w.lm_head.as_ref().unwrap_or(&w.embed);
    let rows = match which {
        Logits::All | Logits::Hidden => t,
        Logits::Last => 1,
    };
    ensure(rows <= s.opts.logit_rows(), "forward", || {
        format!("logits for {rows} rows, but the state holds {} (StateOptions::all_logits)", s.opts.logit_rows())
    })?;
    // Logits::Last: only the last row, normed in the lm_head GEMV itself where it fits (or by
    // act_q8 into int8 blocks)
    if let Some(q) = int8_input(&s.xq_hidden, rows, lm_head) {
        k.push(act_q8(ctx, &s.x, q, 1, t - 1, Some(Norm { weight: &w.norm, eps }))?);
        k.extend(matmul_q8(ctx, q, lm_head, &s.logits, Epilogue::default())?);
        return choose_into(ctx, cfg, s, k, rows, t, pos, choose);
    }
    let lm_in = if which == Logits::Last && fold_norm(ctx, 1, h) {
        Epilogue { x_row0: t - 1, norm: Some(Norm { weight: &w.norm, eps }), ..Default::default() }
    } else {
        k.push(rms_norm(ctx, &s.x, &w.norm, &s.xb, t, h, eps)?);
        Epilogue { x_row0: if which == Logits::Last { t - 1 } else { 0 }, ..Default::default() }
    };
    let x_in = if lm_in.norm.is_some() { &s.x } else { &s.xb };
    k.extend(matmul(ctx, x_in, lm_head, &s.logits, rows, lm_in)?);
    choose_into(ctx, cfg, s, k, rows, t, pos, choose)
}

/// The final soft-cap (if any) and the choosing kernels after the logits (`choose`), appended to `k`.
#[allow(clippy::too_many_arguments)]
fn choose_into(
    ctx: &Context,
    cfg: &Config,
    s: &State,
    mut k: Vec<Kernel>,
    rows: u32,
    t: u32,
    pos: Pos,
    choose: Choose,
) -> Result<Vec<Kernel>> {
    // Gemma 2: logits = c · tanh(logits / c)
    if cfg.final_softcap > 0.0 {
        k.push(softcap(ctx, &s.logits, cfg.final_softcap, rows * cfg.vocab)?);
    }
    match choose {
        Choose::Argmax => k.extend(argmax_into(ctx, &s.logits, &s.next_id, rows, cfg.vocab, &s.argmax)?),
        Choose::Sample => {
            ensure(rows == 1, "forward", || "the GPU sampler chooses after the last row only".into())?;
            let out = SampleOut { append: true, mask: None };
            k.push(sample(ctx, &s.logits, &s.next_id, 1, t, pos, &s.sampler, out)?);
        }
    }
    Ok(k)
}
