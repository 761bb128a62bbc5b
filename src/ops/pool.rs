//! Sentence embeddings from hidden states: CLS, mean or last-token pooling over each sequence's
//! real rows of a padded batch, Matryoshka truncation, L2 normalisation. Shader: `shaders/pool.wgsl`.

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/pool.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 256;
/// Values each invocation keeps in registers; equals `MAX_PER` in the shader.
pub const MAX_PER: u32 = 32;
/// Widest output.
pub const MAX_DIMS: u32 = WG * MAX_PER;

/// How a sequence's hidden states become one vector (sentence-transformers' pooling modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first token's state (BERT's [CLS]; bge).
    Cls,
    /// The mean over the real tokens (all-MiniLM, e5, nomic).
    Mean,
    /// The last real token's state (decoder embedders: Qwen3-Embedding).
    Last,
}

impl Pooling {
    fn mode(self) -> u32 {
        match self {
            Pooling::Cls => 0,
            Pooling::Mean => 1,
            Pooling::Last => 2,
        }
    }

    /// The name sentence-transformers and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Last => "last",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    seq: u32,
    dim: u32,
    dims: u32,
}

/// `out[b, ..dims]` = the pooled state of sequence b (rows `b·seq .. b·seq + lens[b]` of
/// `x [batch·seq, dim]`), its first `dims` values, divided by their L2 norm when `normalize`.
#[allow(clippy::too_many_arguments)]
pub fn pool(
    ctx: &Context,
    x: &wgpu::Buffer,
    lens: &wgpu::Buffer,
    out: &wgpu::Buffer,
    (batch, seq, dim): (u32, u32, u32),
    dims: u32,
    pooling: Pooling,
    normalize: bool,
) -> Result<Kernel> {
    const OP: &str = "pool";
    ensure(batch > 0 && seq > 0 && dim > 0, OP, || format!("empty batch {batch} × {seq} × {dim}"))?;
    ensure((1..=dim.min(MAX_DIMS)).contains(&dims), OP, || {
        format!("{dims} output dims: must be 1..={} (hidden size {dim})", dim.min(MAX_DIMS))
    })?;
    check_len(OP, "x", x, batch as u64 * seq as u64 * dim as u64)?;
    ensure(lens.size() >= batch as u64 * 4, OP, || format!("lens holds {} of {batch} lengths", lens.size() / 4))?;
    check_len(OP, "out", out, batch as u64 * dims as u64)?;
    let params = ctx.uniform("pool.params", &Params { batch, seq, dim, dims });
    let key =
        PipelineKey::new(Shader::Pool, "pool").constant("MODE", pooling.mode()).constant("NORMALIZE", normalize as u32);
    Kernel::new(ctx, &key, &[(1, x), (2, lens), (3, out)], Some(params), ctx.grid(batch))
}
