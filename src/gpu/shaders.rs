//! Every WGSL source, and the one place where sources are composed: an op's file, then the
//! libraries it uses from `shaders/lib/` (weight-format helpers; the workgroup reduction with
//! subgroup builtins when the device has them, shared memory otherwise), and for the browser
//! `enable subgroups;` (required by Chrome, rejected by naga). Matmul also gets its tile type:
//! `alias tile = f16;` after `enable f16;` where `Capabilities::f16_gemm`, else `f32`.

use super::context::Capabilities;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Matmul,
    RmsNorm,
    Rope,
    Attention,
    KvWrite,
    SwiGlu,
    Add,
    Embedding,
    Argmax,
    Sample,
    Copy,
    ActQ8,
    Softcap,
    DeltaNet,
    Pool,
    LayerNorm,
    Gelu,
    EncoderAttention,
}

impl Shader {
    pub const ALL: &'static [Shader] = &[
        Shader::Matmul,
        Shader::RmsNorm,
        Shader::Rope,
        Shader::Attention,
        Shader::KvWrite,
        Shader::SwiGlu,
        Shader::Add,
        Shader::Embedding,
        Shader::Argmax,
        Shader::Sample,
        Shader::Copy,
        Shader::ActQ8,
        Shader::Softcap,
        Shader::DeltaNet,
        Shader::Pool,
        Shader::LayerNorm,
        Shader::Gelu,
        Shader::EncoderAttention,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shader::Matmul => "matmul",
            Shader::RmsNorm => "rmsnorm",
            Shader::Rope => "rope",
            Shader::Attention => "attention",
            Shader::KvWrite => "kv_write",
            Shader::SwiGlu => "swiglu",
            Shader::Add => "add",
            Shader::Embedding => "embedding",
            Shader::Argmax => "argmax",
            Shader::Sample => "sample",
            Shader::Copy => "copy",
            Shader::ActQ8 => "act_q8",
            Shader::Softcap => "softcap",
            Shader::DeltaNet => "delta_net",
            Shader::LayerNorm => "layer_norm",
            Shader::Gelu => "gelu",
            Shader::EncoderAttention => "encoder_attention",
            Shader::Pool => "pool",
        }
    }

    /// The op's own file, `shaders/<name>.wgsl`.
    pub fn source(self) -> &'static str {
        match self {
            Shader::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Shader::RmsNorm => include_str!("../../shaders/rmsnorm.wgsl"),
            Shader::Rope => include_str!("../../shaders/rope.wgsl"),
            Shader::Attention => include_str!("../../shaders/attention.wgsl"),
            Shader::KvWrite => include_str!("../../shaders/kv_write.wgsl"),
            Shader::SwiGlu => include_str!("../../shaders/swiglu.wgsl"),
            Shader::Add => include_str!("../../shaders/add.wgsl"),
            Shader::Embedding => include_str!("../../shaders/embedding.wgsl"),
            Shader::Argmax => include_str!("../../shaders/argmax.wgsl"),
            Shader::Sample => include_str!("../../shaders/sample.wgsl"),
            Shader::Copy => include_str!("../../shaders/copy.wgsl"),
            Shader::ActQ8 => include_str!("../../shaders/act_q8.wgsl"),
            Shader::Softcap => include_str!("../../shaders/softcap.wgsl"),
            Shader::DeltaNet => include_str!("../../shaders/delta_net.wgsl"),
            Shader::LayerNorm => include_str!("../../shaders/layer_norm.wgsl"),
            Shader::Gelu => include_str!("../../shaders/gelu.wgsl"),
            Shader::EncoderAttention => include_str!("../../shaders/encoder_attention.wgsl"),
            Shader::Pool => include_str!("../../shaders/pool.wgsl"),
        }
    }

    /// Whether the op calls `wg_sum` (and so declares `const WG` and gets a reduction library).
    pub fn uses_reduce(self) -> bool {
        self.source().contains("wg_sum(")
    }

    /// Whether the op reads packed weights (declares `override FORMAT`) and gets lib/dequant.wgsl.
    pub fn uses_dequant(self) -> bool {
        self.source().contains("override FORMAT")
    }
}

pub const REDUCE_SHARED: &str = include_str!("../../shaders/lib/reduce_shared.wgsl");
pub const REDUCE_SUBGROUP: &str = include_str!("../../shaders/lib/reduce_subgroup.wgsl");
pub const DEQUANT: &str = include_str!("../../shaders/lib/dequant.wgsl");

/// The full WGSL for `shader` on a device with `caps`; `web` selects the browser's dialect.
pub fn compose(shader: Shader, caps: &Capabilities, web: bool) -> String {
    let mut s = String::new();
    let subgroup_lib = shader.uses_reduce() && caps.subgroups;
    let f16_tiles = shader == Shader::Matmul && caps.f16_gemm;
    if f16_tiles {
        s.push_str("enable f16;\n");
    }
    if web && subgroup_lib {
        s.push_str("enable subgroups;\n");
    }
    if shader == Shader::Matmul {
        s.push_str(if f16_tiles { "alias tile = f16;\n" } else { "alias tile = f32;\n" });
    }
    s.push_str(shader.source());
    if shader.uses_dequant() {
        s.push('\n');
        s.push_str(DEQUANT);
    }
    if shader.uses_reduce() {
        s.push('\n');
        s.push_str(if subgroup_lib { REDUCE_SUBGROUP } else { REDUCE_SHARED });
    }
    s
}
