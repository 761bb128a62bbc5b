//! Gated DeltaNet, Qwen3.5's linear-attention mixer (`shaders/delta_net.wgsl`; formulas in
//! docs/qwen35.md §5): the causal depthwise conv with its rolling state, the gated delta-rule
//! recurrence over a per-head state `S [dk, dv]` (f32), and the gated RMSNorm of its output.
//!
//! Two forms of the recurrence, the same function up to f32 rounding:
//! - decode and steps under [`CHUNK_MIN_ROWS`] rows run it token by token inside one dispatch
//!   (`recurrence`: each invocation keeps its state column in registers; two workgroup reductions
//!   and their barriers per token);
//! - longer prefill steps take the chunked WY/UT form of docs/qwen35.md §6 (transformers'
//!   `torch_chunk_gated_delta_rule`, FLA's `chunk_gated_delta_rule`) with chunks of [`CHUNK`] rows:
//!   `l2norm` and `chunk` are parallel over rows / (chunk, head) and write W, U, (QKᵀ)⊙D and G to
//!   a scratch buffer; `scan` is sequential over chunks only, with no barriers. See ARCHITECTURE.md.

use super::{check_len, Pos};
use crate::gpu::{ensure, Context, CopyAfter, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/delta_net.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 64;
/// Largest key head dim: an invocation keeps a state column of dk values in registers.
pub const MAX_DK: u32 = 128;
/// Widest conv.
pub const MAX_K: u32 = 8;
/// Rows per chunk of the chunked prefill; equals `CHUNK` in the shader. 16, not transformers' 64:
/// - 64 cannot work here: the `chunk` kernel keeps A and T = (I + A)⁻¹ (C × C f32 each) in
///   workgroup memory, which at 64 is 2 × 16 KiB, over WebGPU's 16 KiB limit (2 KiB at 16).
/// - `scan` gives each invocation one state column for every row, so its serial work per row
///   (3·dk + C/2 multiply-adds) barely depends on C. The `chunk` kernel's work per row (A, P, W
///   and U) grows with C. Measured on lavapipe at Qwen3.5-9B's sizes, C = 32 made `chunk` twice
///   as slow as C = 16 did, and the whole chunked step slower than the token form
///   (BENCHMARKS.md, "Chunked Gated DeltaNet prefill").
/// - `scan` takes ⌈t / 16⌉ sequential steps (8 for a 128-row prefill), none with a barrier.
pub const CHUNK: u32 = 16;
/// Steps of at least this many rows take the chunked form; shorter ones (decode, t = 1) the
/// token-by-token `recurrence`. Below it the per-token barrier chain is short, while the chunked
/// form adds two dispatches and writes W, U, P (t·nv·(dk + dv + CHUNK) floats) that `scan` reads
/// back. From half a chunk on, the chunked form's critical path is a fraction of the token chain
/// (on lavapipe the chunked form is already ~1.2× faster at 8 rows; BENCHMARKS.md). The engine
/// prefills in calls of up to max_batch rows, so a long prompt's tail call may fall on either side.
pub const CHUNK_MIN_ROWS: u32 = 8;

/// The two forms of the recurrence (same function, different f32 rounding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Token by token in one dispatch (`recurrence`).
    Tokens,
    /// The chunked WY/UT form (`l2norm`, `chunk`, `scan`); needs the scratch.
    Chunked,
}

impl Form {
    /// The form [`delta_net`] takes for a step of `t` rows: chunked from [`CHUNK_MIN_ROWS`].
    pub fn for_rows(t: u32) -> Self {
        if t >= CHUNK_MIN_ROWS {
            Form::Chunked
        } else {
            Form::Tokens
        }
    }
}

/// A Gated DeltaNet layer's sizes (Qwen3.5's `linear_*` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaNetShape {
    /// q/k heads (nk) and value heads (nv, a multiple of nk).
    pub nk: u32,
    pub nv: u32,
    /// Key (dk) and value (dv) head dims.
    pub dk: u32,
    pub dv: u32,
    /// The causal depthwise conv's width.
    pub conv_k: u32,
    /// Value head h reads q/k head h mod nk (llama.cpp's GGUF order, value heads tiled), not
    /// h / (nv / nk) (Hugging Face's, grouped).
    pub tiled: bool,
}

impl DeltaNetShape {
    /// Channels of the conv: q, k (nk·dk each) and v (nv·dv).
    pub fn conv_dim(&self) -> u32 {
        2 * self.nk * self.dk + self.nv * self.dv
    }
    /// Width of the gate z and of the output: nv·dv.
    pub fn value_dim(&self) -> u32 {
        self.nv * self.dv
    }
    /// The projection row: qkv | z | b | a.
    pub fn in_width(&self) -> u32 {
        self.conv_dim() + self.value_dim() + 2 * self.nv
    }
    /// Bytes of the chunked prefill's scratch for steps of up to `max_t` rows: per row and value
    /// head, W (dk) | U (dv) | P (CHUNK) | G (1), f32.
    pub fn scratch_bytes(&self, max_t: u32) -> u64 {
        4 * max_t as u64 * self.nv as u64 * (self.dk + self.dv + CHUNK + 1) as u64
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    in_w: u32,
    conv_dim: u32,
    k: u32,
    nk: u32,
    nv: u32,
    dk: u32,
    dv: u32,
    eps: f32,
    tiled: u32,
    _pad: [u32; 2],
}

/// One layer's recurrent state: the conv's last `k − 1` inputs `[conv_dim, k − 1]` and the
/// delta-rule state `[nv, dk, dv]`, both f32. A step at position 0 starts from zeros. `saved`
/// holds a copy of both (the state at the end of the last prompt), so a prompt that extends it
/// can resume there: a recurrent state cannot be rewound like a KV cache.
pub struct DeltaState {
    pub conv: wgpu::Buffer,
    pub s: wgpu::Buffer,
    pub saved: [wgpu::Buffer; 2],
}

impl DeltaState {
    pub fn new(ctx: &Context, label: &str, shape: &DeltaNetShape) -> Result<Self> {
        let conv_bytes = shape.conv_dim() as u64 * (shape.conv_k - 1) as u64 * 4;
        let s_bytes = Self::state_elems(shape) * 4;
        let conv = ctx.storage(&format!("{label}.conv"), conv_bytes)?;
        let s = ctx.storage(&format!("{label}.s"), s_bytes)?;
        let saved = [
            ctx.storage(&format!("{label}.saved.conv"), conv_bytes)?,
            ctx.storage(&format!("{label}.saved.s"), s_bytes)?,
        ];
        Ok(Self { conv, s, saved })
    }

    /// Copies that save the state (`save`) or bring the saved one back.
    pub fn copies(&self, save: bool) -> [CopyAfter<'_>; 2] {
        fn copy<'a>(save: bool, live: &'a wgpu::Buffer, saved: &'a wgpu::Buffer) -> CopyAfter<'a> {
            let (src, dst) = if save { (live, saved) } else { (saved, live) };
            CopyAfter { src, src_offset: 0, dst, dst_offset: 0, bytes: live.size() }
        }
        [copy(save, &self.conv, &self.saved[0]), copy(save, &self.s, &self.saved[1])]
    }

    fn state_elems(shape: &DeltaNetShape) -> u64 {
        shape.nv as u64 * shape.dk as u64 * shape.dv as u64
    }

    /// Its GPU buffers.
    pub fn buffers(&self) -> [&wgpu::Buffer; 4] {
        [&self.conv, &self.s, &self.saved[0], &self.saved[1]]
    }

    /// Bytes one layer's state takes on the GPU, its saved copy included.
    pub fn bytes(shape: &DeltaNetShape) -> u64 {
        2 * 4 * (Self::state_elems(shape) + shape.conv_dim() as u64 * (shape.conv_k - 1) as u64)
    }

    /// Bytes one decoded token reads and writes: the delta-rule state in and out, the conv state in and out.
    pub fn traffic_per_token(shape: &DeltaNetShape) -> u64 {
        2 * 4 * (Self::state_elems(shape) + shape.conv_dim() as u64 * (shape.conv_k - 1) as u64)
    }
}

/// The layer's weights the kernels read: conv `[conv_dim, k]`, `A_log [nv]`, `dt_bias [nv]`,
/// the gated norm's weight `[dv]`.
pub struct DeltaWeights<'a> {
    pub conv: &'a wgpu::Buffer,
    pub a_log: &'a wgpu::Buffer,
    pub dt_bias: &'a wgpu::Buffer,
    pub norm: &'a wgpu::Buffer,
    pub eps: f32,
}

/// `out[t, nv·dv]` = the Gated DeltaNet mixer before out_proj, for rows of `proj [t, qkv | z | b | a]`
/// at positions `pos`…: conv + SiLU into `c [t, conv_dim]`, the recurrence into `out`, then the
/// gated RMSNorm in place. Three dispatches below [`CHUNK_MIN_ROWS`] rows; five from there (the
/// chunked form: q, k normalised in place in `c`, `scratch` of at least
/// [`DeltaNetShape::scratch_bytes`]`(t)`; shorter steps do not touch it, so any buffer will do).
#[allow(clippy::too_many_arguments)]
pub fn delta_net<'a>(
    ctx: &Context,
    shape: &DeltaNetShape,
    proj: &wgpu::Buffer,
    w: &DeltaWeights,
    state: &DeltaState,
    c: &wgpu::Buffer,
    out: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
    t: u32,
    pos: impl Into<Pos<'a>>,
) -> Result<Vec<Kernel>> {
    delta_net_form(ctx, shape, proj, w, state, c, out, scratch, t, pos, Form::for_rows(t))
}

/// [`delta_net`] in the given form, whatever the row count (benchmarks and tests compare them).
#[allow(clippy::too_many_arguments)]
pub fn delta_net_form<'a>(
    ctx: &Context,
    shape: &DeltaNetShape,
    proj: &wgpu::Buffer,
    w: &DeltaWeights,
    state: &DeltaState,
    c: &wgpu::Buffer,
    out: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
    t: u32,
    pos: impl Into<Pos<'a>>,
    form: Form,
) -> Result<Vec<Kernel>> {
    const OP: &str = "delta_net";
    let DeltaNetShape { nk, nv, dk, dv, conv_k, tiled } = *shape;
    ensure(t > 0, OP, || "t = 0".into())?;
    ensure(nk > 0 && nv % nk == 0 && dk > 0 && dv > 0, OP, || format!("heads {nk}/{nv}, dims {dk}/{dv}"))?;
    ensure(dk <= MAX_DK, OP, || format!("key head dim {dk} > {MAX_DK}"))?;
    ensure((2..=MAX_K).contains(&conv_k), OP, || format!("conv width {conv_k} outside 2..={MAX_K}"))?;
    let (conv_dim, vd, in_w) = (shape.conv_dim(), shape.value_dim(), shape.in_width());
    ensure(t as u64 * in_w as u64 <= u32::MAX as u64, OP, || format!("{t} rows of {in_w} exceed u32 indexing"))?;
    check_len(OP, "proj", proj, t as u64 * in_w as u64)?;
    check_len(OP, "conv weights", w.conv, conv_dim as u64 * conv_k as u64)?;
    check_len(OP, "A_log", w.a_log, nv as u64)?;
    check_len(OP, "dt_bias", w.dt_bias, nv as u64)?;
    check_len(OP, "norm", w.norm, dv as u64)?;
    check_len(OP, "conv state", &state.conv, conv_dim as u64 * (conv_k - 1) as u64)?;
    check_len(OP, "state", &state.s, DeltaState::state_elems(shape))?;
    check_len(OP, "c", c, t as u64 * conv_dim as u64)?;
    check_len(OP, "out", out, t as u64 * vd as u64)?;
    let chunked = form == Form::Chunked;
    if chunked {
        let bytes = shape.scratch_bytes(t);
        ensure(bytes / 4 <= u32::MAX as u64, OP, || format!("scratch of {t} rows exceeds u32 indexing"))?;
        check_len(OP, "scratch", scratch, bytes / 4)?;
    }
    let params = Params { t, in_w, conv_dim, k: conv_k, nk, nv, dk, dv, eps: w.eps, tiled: tiled as u32, _pad: [0; 2] };
    let uniform = ctx.uniform("delta_net.params", &params);
    let step = pos.into().buffer(ctx);
    let key = |entry| PipelineKey::new(Shader::DeltaNet, entry);
    let conv = Kernel::new(
        ctx,
        &key("conv"),
        &[(1, proj), (2, w.conv), (3, &state.conv), (4, c), (10, &step)],
        Some(uniform.clone()),
        ctx.grid(conv_dim.div_ceil(WG)),
    )?;
    let tiles = dv.div_ceil(WG);
    let mut kernels = vec![conv];
    if chunked {
        let u = || Some(uniform.clone());
        kernels.push(Kernel::new(ctx, &key("l2norm"), &[(4, c)], u(), ctx.grid(t * nk))?);
        kernels.push(Kernel::new(
            ctx,
            &key("chunk"),
            &[(1, proj), (4, c), (5, w.a_log), (6, w.dt_bias), (11, scratch)],
            u(),
            ctx.grid(t.div_ceil(CHUNK) * nv),
        )?);
        kernels.push(Kernel::new(
            ctx,
            &key("scan"),
            &[(4, c), (7, &state.s), (8, out), (10, &step), (11, scratch)],
            u(),
            ctx.grid(nv * tiles),
        )?);
    } else {
        kernels.push(Kernel::new(
            ctx,
            &key("recurrence"),
            &[(1, proj), (4, c), (5, w.a_log), (6, w.dt_bias), (7, &state.s), (8, out), (10, &step)],
            Some(uniform.clone()),
            ctx.grid(nv * tiles),
        )?);
    }
    kernels.push(Kernel::new(
        ctx,
        &key("gated_norm"),
        &[(1, proj), (8, out), (9, w.norm)],
        Some(uniform),
        ctx.grid(t * nv),
    )?);
    Ok(kernels)
}
