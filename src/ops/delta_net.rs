//! Gated DeltaNet, Qwen3.5's linear-attention mixer (`shaders/delta_net.wgsl`; formulas in
//! docs/qwen35.md §5): the causal depthwise conv with its rolling state, the gated delta-rule
//! recurrence over a per-head state `S [dk, dv]` (f32), and the gated RMSNorm of its output.
//! A prefill runs the recurrence token by token inside one dispatch (each invocation keeps its
//! state column in registers), so it equals single-token steps exactly; see ARCHITECTURE.md.

use super::{check_len, Pos};
use crate::gpu::{ensure, Context, CopyAfter, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/delta_net.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 64;
/// Largest key head dim: an invocation keeps a state column of dk values in registers.
pub const MAX_DK: u32 = 128;
/// Widest conv.
pub const MAX_K: u32 = 8;

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
/// gated RMSNorm in place. Three dispatches.
#[allow(clippy::too_many_arguments)]
pub fn delta_net<'a>(
    ctx: &Context,
    shape: &DeltaNetShape,
    proj: &wgpu::Buffer,
    w: &DeltaWeights,
    state: &DeltaState,
    c: &wgpu::Buffer,
    out: &wgpu::Buffer,
    t: u32,
    pos: impl Into<Pos<'a>>,
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
    let rec = Kernel::new(
        ctx,
        &key("recurrence"),
        &[(1, proj), (4, c), (5, w.a_log), (6, w.dt_bias), (7, &state.s), (8, out), (10, &step)],
        Some(uniform.clone()),
        ctx.grid(nv * tiles),
    )?;
    let norm =
        Kernel::new(ctx, &key("gated_norm"), &[(1, proj), (8, out), (9, w.norm)], Some(uniform), ctx.grid(t * nv))?;
    Ok(vec![conv, rec, norm])
}
