//! A model's hyperparameters, resolved from a Hugging Face `config.json` into one plain struct.
//! The Llama family differs by data, not by code: Qwen2 adds q/k/v biases, Qwen3 per-head q/k
//! RMSNorm, Phi-3 fused qkv / gate_up projections and LongRoPE, SmolLM3 layers without RoPE,
//! Gemma 2/3 (1 + w) norms, scaled embeddings, GeGLU, norms after attention and the MLP,
//! sliding-window layers with their own RoPE base, and (Gemma 2) soft-capped scores and logits.

use serde_json::Value;

pub use crate::ops::delta_net::DeltaNetShape;
use crate::ops::rope::{RopeConfig, RopePairing, RopeScaling};
use crate::ops::swiglu::Act;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3.x, SmolLM2, SmolLM3, Mistral-style dense models.
    Llama,
    Qwen2,
    Qwen3,
    Phi3,
    Gemma2,
    /// Gemma 3's text model (`gemma3_text`, or the `text_config` of a multimodal `gemma3`).
    Gemma3,
    /// Qwen3.5's text model (`qwen3_5_text`, or the `text_config` of a multimodal `qwen3_5`):
    /// Gated DeltaNet layers and gated full-attention layers (docs/qwen35.md).
    Qwen35,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config.json: unsupported model_type `{0}` (supported: llama, mistral, smollm3, qwen2, qwen3, phi3, gemma2, gemma3_text, gemma3)"
    )]
    UnsupportedArch(String),
    #[error("config.json: missing or invalid `{0}`")]
    Missing(&'static str),
    #[error("config.json: {0}")]
    Invalid(String),
}

/// Resolved hyperparameters. Shapes in comments use these names.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub hidden: u32,
    pub n_layers: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// FFN inner size (gate/up outputs).
    pub ffn: u32,
    pub vocab: u32,
    pub norm_eps: f32,
    pub max_position: u32,
    pub rope: RopeConfig,
    /// lm_head shares the embedding matrix.
    pub tied_embeddings: bool,
    /// Biases on the q, k, v projections (Qwen2; Llama with attention_bias).
    pub qkv_bias: bool,
    /// Bias on o_proj (Llama with attention_bias).
    pub o_bias: bool,
    /// RMSNorm over each q and k head before RoPE (Qwen3).
    pub qk_norm: bool,
    /// One qkv_proj and one gate_up_proj matrix (Phi-3).
    pub fused_proj: bool,
    /// Per layer: q and k go unrotated (SmolLM3's NoPE layers); empty = RoPE everywhere.
    pub no_rope: Vec<bool>,
    /// Added to every RMSNorm weight at load: Gemma multiplies by (1 + w); 0 where the weights
    /// already hold 1 + w (llama.cpp's Gemma GGUFs) or are used as they are.
    pub norm_offset: f32,
    /// Multiplies the embeddings (Gemma: √hidden); 1 elsewhere.
    pub embed_scale: f32,
    /// The MLP gate's activation: silu (SwiGLU) or tanh-GELU (Gemma's GeGLU).
    pub act: Act,
    /// RMSNorms on the attention and MLP outputs before the residual adds (Gemma 2/3); the MLP's
    /// input norm is then `pre_feedforward_layernorm`.
    pub post_norms: bool,
    /// Multiplies q·k: 1/√head_dim, or `query_pre_attn_scalar`^-½ (Gemma).
    pub attn_scale: f32,
    /// `c · tanh(s / c)` on attention scores (Gemma 2); 0 = none.
    pub attn_softcap: f32,
    /// The same on the final logits (Gemma 2); 0 = none.
    pub final_softcap: f32,
    /// Keys a sliding-window layer attends to (itself included).
    pub sliding_window: u32,
    /// Per layer: attention over the last `sliding_window` keys only (Gemma's local layers);
    /// empty = every layer global.
    pub sliding: Vec<bool>,
    /// RoPE of the sliding layers where it differs from `rope` (Gemma 3: base 10k, no scaling).
    pub rope_local: Option<RopeConfig>,
    /// Per layer: a Gated DeltaNet layer instead of attention (Qwen3.5's "linear_attention");
    /// empty = attention everywhere.
    pub linear: Vec<bool>,
    /// The DeltaNet layers' sizes, with `linear`.
    pub delta: Option<DeltaNetShape>,
    /// The attention output is multiplied by sigmoid(gate), the gate coming from q_proj's rows
    /// interleaved per head with the query's (Qwen3.5).
    pub attn_output_gate: bool,
}

fn get_u32(c: &Value, key: &'static str) -> Result<u32, ConfigError> {
    c.get(key).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()).ok_or(ConfigError::Missing(key))
}

fn get_f64(c: &Value, key: &'static str) -> Option<f64> {
    c.get(key).and_then(Value::as_f64)
}

fn f32_list(v: Option<&Value>, key: &'static str) -> Result<Vec<f32>, ConfigError> {
    v.and_then(Value::as_array)
        .ok_or(ConfigError::Missing(key))?
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32).ok_or(ConfigError::Missing(key)))
        .collect()
}

impl Config {
    /// From a Hugging Face `config.json` value.
    pub fn from_hf(c: &Value) -> Result<Self, ConfigError> {
        let model_type = c.get("model_type").and_then(Value::as_str).ok_or(ConfigError::Missing("model_type"))?;
        // A multimodal Gemma 3 / Qwen3.5 checkpoint: its text model's config (the vision tower is not run).
        if model_type == "gemma3" || model_type == "qwen3_5" {
            let text = c.get("text_config").filter(|t| t.is_object()).ok_or(ConfigError::Missing("text_config"))?;
            let mut text = text.clone();
            text["model_type"] = format!("{model_type}_text").into();
            // transformers reads the wrapper's tie_word_embeddings for these.
            if let Some(tie) = c.get("tie_word_embeddings") {
                text["tie_word_embeddings"] = tie.clone();
            }
            return Self::from_hf(&text);
        }
        let arch = match model_type {
            "llama" | "mistral" | "smollm3" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "phi3" => Arch::Phi3,
            "gemma2" => Arch::Gemma2,
            "gemma3_text" => Arch::Gemma3,
            "qwen3_5_text" => Arch::Qwen35,
            other => return Err(ConfigError::UnsupportedArch(other.to_string())),
        };
        let qwen35 = arch == Arch::Qwen35;
        // transformers 5 keeps rope_theta / partial_rotary_factor inside rope_parameters.
        let rope_params = c.get("rope_parameters").filter(|v| v.is_object());
        let rope_key = |k: &'static str| rope_params.and_then(|p| get_f64(p, k)).or_else(|| get_f64(c, k));
        let gemma = matches!(arch, Arch::Gemma2 | Arch::Gemma3);
        let hidden = get_u32(c, "hidden_size")?;
        let n_heads = get_u32(c, "num_attention_heads")?;
        let n_kv_heads = get_u32(c, "num_key_value_heads").unwrap_or(n_heads);
        let head_dim = match c.get("head_dim").and_then(Value::as_u64) {
            Some(d) => u32::try_from(d).map_err(|_| ConfigError::Missing("head_dim"))?,
            None if n_heads > 0 => hidden / n_heads,
            None => return Err(ConfigError::Missing("num_attention_heads")),
        };
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(ConfigError::Invalid(format!(
                "num_attention_heads {n_heads} must be a positive multiple of num_key_value_heads {n_kv_heads}"
            )));
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ConfigError::Invalid(format!("head_dim {head_dim} must be even and positive")));
        }
        let max_position = get_u32(c, "max_position_embeddings").unwrap_or(4096);
        let attention_bias = c.get("attention_bias").and_then(Value::as_bool).unwrap_or(false);
        let partial = rope_key("partial_rotary_factor").unwrap_or(1.0);
        let rotary_dim = ((head_dim as f64 * partial) as u32) & !1;
        let rope = RopeConfig {
            head_dim,
            rotary_dim,
            theta: rope_key("rope_theta").unwrap_or(10_000.0),
            // Hugging Face checkpoints rotate halves (rotate_half); llama-architecture GGUFs have
            // permuted q/k rows and interleave (`rope_interleaved`, set by loader::gguf::hf_config).
            pairing: if c.get("rope_interleaved").and_then(Value::as_bool) == Some(true) {
                RopePairing::Interleaved
            } else {
                RopePairing::Half
            },
            scaling: rope_scaling(c, max_position)?,
        };
        let n_layers = get_u32(c, "num_hidden_layers")?;
        let (linear, delta) = if qwen35 { delta_layers(c, n_layers)? } else { (Vec::new(), None) };
        let sliding = if qwen35 { Vec::new() } else { layer_types(c, arch, n_layers)? };
        let sliding_window = match get_u32(c, "sliding_window") {
            Ok(w) if w > 0 => w,
            _ if sliding.iter().any(|&s| s) => return Err(ConfigError::Missing("sliding_window")),
            _ => 0,
        };
        // Gemma 3's local layers: their own base and no scaling (transformers' rotary_emb_local).
        let rope_local = match get_f64(c, "rope_local_base_freq") {
            Some(theta) if arch == Arch::Gemma3 => {
                Some(RopeConfig { theta, scaling: RopeScaling::None, ..rope.clone() })
            }
            _ => None,
        };
        let attn_scale = match get_f64(c, "query_pre_attn_scalar") {
            Some(s) if gemma && s > 0.0 => (1.0 / s.sqrt()) as f32,
            Some(s) if gemma => {
                return Err(ConfigError::Invalid(format!("query_pre_attn_scalar {s} must be positive")))
            }
            _ => 1.0 / (head_dim as f32).sqrt(),
        };
        let softcap = |key: &'static str| -> Result<f32, ConfigError> {
            match c.get(key).filter(|v| !v.is_null()) {
                None => Ok(0.0),
                Some(v) => match v.as_f64() {
                    Some(x) if x > 0.0 && x.is_finite() => Ok(x as f32),
                    _ => Err(ConfigError::Invalid(format!("{key} must be a positive number or null; got {v}"))),
                },
            }
        };
        let config = Config {
            arch,
            hidden,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn: get_u32(c, "intermediate_size")?,
            vocab: get_u32(c, "vocab_size")?,
            norm_eps: get_f64(c, "rms_norm_eps").unwrap_or(1e-6) as f32,
            max_position,
            rope,
            // Absent, it is the config class's default: transformers leaves defaults out of config.json,
            // and SmolLM3Config/Gemma's keep PretrainedConfig's true where the others set false.
            tied_embeddings: c
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(model_type == "smollm3" || gemma),
            qkv_bias: arch == Arch::Qwen2 || attention_bias,
            o_bias: arch == Arch::Llama && attention_bias,
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3 | Arch::Qwen35),
            fused_proj: arch == Arch::Phi3,
            no_rope: if model_type == "smollm3" { no_rope_layers(c, n_layers)? } else { Vec::new() },
            // `norm_weights_include_one`: set by loader::gguf::hf_config (llama.cpp's converter adds the 1).
            norm_offset: if (gemma || qwen35)
                && c.get("norm_weights_include_one").and_then(Value::as_bool) != Some(true)
            {
                1.0
            } else {
                0.0
            },
            embed_scale: if gemma { (hidden as f32).sqrt() } else { 1.0 },
            act: activation(c, arch)?,
            post_norms: gemma,
            attn_scale,
            attn_softcap: if gemma { softcap("attn_logit_softcapping")? } else { 0.0 },
            final_softcap: if gemma { softcap("final_logit_softcapping")? } else { 0.0 },
            sliding_window,
            sliding,
            rope_local,
            linear,
            delta,
            attn_output_gate: qwen35,
        };
        if let Some(r) = &config.rope_local {
            r.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        config.rope.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(config)
    }

    /// Query width n_heads · head_dim.
    pub fn q_dim(&self) -> u32 {
        self.n_heads * self.head_dim
    }

    /// Key/value width n_kv_heads · head_dim.
    pub fn kv_dim(&self) -> u32 {
        self.n_kv_heads * self.head_dim
    }
}

/// Qwen3.5's layer kinds (`layer_types`: "linear_attention" / "full_attention", else every
/// `full_attention_interval`-th layer full, default 4) and its DeltaNet sizes.
fn delta_layers(c: &Value, n_layers: u32) -> Result<(Vec<bool>, Option<DeltaNetShape>), ConfigError> {
    let linear = match layer_flags(c, n_layers, "linear_attention")? {
        Some(flags) => flags,
        None => {
            let every = get_u32(c, "full_attention_interval").unwrap_or(4).max(1);
            (0..n_layers).map(|i| (i + 1) % every != 0).collect()
        }
    };
    let shape = DeltaNetShape {
        nk: get_u32(c, "linear_num_key_heads").unwrap_or(16),
        nv: get_u32(c, "linear_num_value_heads").unwrap_or(32),
        dk: get_u32(c, "linear_key_head_dim").unwrap_or(128),
        dv: get_u32(c, "linear_value_head_dim").unwrap_or(128),
        conv_k: get_u32(c, "linear_conv_kernel_dim").unwrap_or(4),
        // set by loader::gguf::hf_config: llama.cpp's converter tiles the value heads
        tiled: c.get("linear_value_heads_tiled").and_then(Value::as_bool) == Some(true),
    };
    let DeltaNetShape { nk, nv, dk, dv, conv_k, .. } = shape;
    if nk == 0 || nv % nk != 0 || dk == 0 || dv == 0 || !(2..=8).contains(&conv_k) {
        return Err(ConfigError::Invalid(format!(
            "linear attention: {nv} value heads must be a multiple of {nk} key heads, head dims {dk}/{dv} \
             positive, conv width {conv_k} in 2..=8"
        )));
    }
    if dk > crate::ops::delta_net::MAX_DK {
        return Err(ConfigError::Invalid(format!("linear_key_head_dim {dk} > {}", crate::ops::delta_net::MAX_DK)));
    }
    Ok((linear, Some(shape)))
}

/// `layer_types` as per-layer flags, true for `special` ("sliding_attention", "linear_attention")
/// and false for "full_attention"; `None` without the key. One entry per layer.
fn layer_flags(c: &Value, n_layers: u32, special: &str) -> Result<Option<Vec<bool>>, ConfigError> {
    let Some(list) = c.get("layer_types").filter(|v| !v.is_null()) else { return Ok(None) };
    let flags = list
        .as_array()
        .ok_or(ConfigError::Missing("layer_types"))?
        .iter()
        .map(|v| match v.as_str() {
            Some(k) if k == special => Ok(true),
            Some("full_attention") => Ok(false),
            _ => Err(ConfigError::Invalid(format!("layer_types: {v} is not supported ({special}, full_attention)"))),
        })
        .collect::<Result<Vec<bool>, _>>()?;
    if flags.len() != n_layers as usize {
        return Err(ConfigError::Invalid(format!("layer_types has {} entries for {n_layers} layers", flags.len())));
    }
    Ok(Some(flags))
}

/// The MLP activation from `hidden_activation` (Gemma) or `hidden_act`; absent, the family's.
fn activation(c: &Value, arch: Arch) -> Result<Act, ConfigError> {
    let name = c.get("hidden_activation").or_else(|| c.get("hidden_act")).filter(|v| !v.is_null());
    let Some(name) = name else {
        return Ok(if matches!(arch, Arch::Gemma2 | Arch::Gemma3) { Act::GeluTanh } else { Act::Silu });
    };
    match name.as_str() {
        Some("silu" | "swish") => Ok(Act::Silu),
        Some("gelu_pytorch_tanh" | "gelu_new" | "gelu_fast") => Ok(Act::GeluTanh),
        _ => Err(ConfigError::Invalid(format!(
            "activation {name} is not supported (silu, or gelu_pytorch_tanh / gelu_new)"
        ))),
    }
}

/// Which layers use sliding-window attention: `layer_types` ("sliding_attention" /
/// "full_attention"), else the family's pattern (Gemma 2: every other layer from the first; Gemma 3:
/// all but every `sliding_window_pattern`-th, default 6); none for the other families.
fn layer_types(c: &Value, arch: Arch, n_layers: u32) -> Result<Vec<bool>, ConfigError> {
    if let Some(kinds) = layer_flags(c, n_layers, "sliding_attention")? {
        if !kinds.iter().any(|&s| s) {
            return Ok(Vec::new()); // all full, as without the key (transformers writes it for every model now)
        }
        if !matches!(arch, Arch::Gemma2 | Arch::Gemma3) {
            return Err(ConfigError::Invalid("sliding_attention layers are supported for Gemma 2/3 only".into()));
        }
        return Ok(kinds);
    }
    Ok(match arch {
        Arch::Gemma2 => (0..n_layers).map(|i| (i + 1) % 2 != 0).collect(),
        Arch::Gemma3 => {
            let every = get_u32(c, "sliding_window_pattern").unwrap_or(6).max(1);
            (0..n_layers).map(|i| (i + 1) % every != 0).collect()
        }
        _ => Vec::new(),
    })
}

/// SmolLM3's layers without RoPE: `no_rope_layers` (1 = rotate, 0 = not, per layer), or every
/// `no_rope_layer_interval`-th layer (default 4, as transformers and llama.cpp have it).
fn no_rope_layers(c: &Value, n_layers: u32) -> Result<Vec<bool>, ConfigError> {
    if let Some(list) = c.get("no_rope_layers").filter(|v| !v.is_null()) {
        let flags = list
            .as_array()
            .ok_or(ConfigError::Missing("no_rope_layers"))?
            .iter()
            .map(|v| v.as_u64().map(|f| f == 0).ok_or(ConfigError::Missing("no_rope_layers")))
            .collect::<Result<Vec<bool>, _>>()?;
        if flags.len() != n_layers as usize {
            return Err(ConfigError::Invalid(format!(
                "no_rope_layers has {} entries for {n_layers} layers",
                flags.len()
            )));
        }
        return Ok(flags);
    }
    let every = get_u32(c, "no_rope_layer_interval").unwrap_or(4);
    if every == 0 {
        return Err(ConfigError::Invalid("no_rope_layer_interval must be at least 1".into()));
    }
    Ok((0..n_layers).map(|i| (i + 1) % every == 0).collect())
}

/// `rope_scaling` (key `rope_type`, or `type` in older configs) → our RopeScaling.
fn rope_scaling(c: &Value, max_position: u32) -> Result<RopeScaling, ConfigError> {
    let Some(s) = c.get("rope_scaling").filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
    let factor = get_f64(s, "factor");
    // Phi-3 keeps original_max_position_embeddings at the top level; newer configs inside rope_scaling.
    let original = s
        .get("original_max_position_embeddings")
        .or_else(|| c.get("original_max_position_embeddings"))
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok());
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor.ok_or(ConfigError::Missing("rope_scaling.factor"))? },
        "llama3" => RopeScaling::Llama3 {
            factor: factor.ok_or(ConfigError::Missing("rope_scaling.factor"))?,
            low_freq_factor: get_f64(s, "low_freq_factor")
                .ok_or(ConfigError::Missing("rope_scaling.low_freq_factor"))?,
            high_freq_factor: get_f64(s, "high_freq_factor")
                .ok_or(ConfigError::Missing("rope_scaling.high_freq_factor"))?,
            original_max_position: original.ok_or(ConfigError::Missing("original_max_position_embeddings"))?,
        },
        "longrope" | "su" => RopeScaling::LongRope {
            short_factor: f32_list(s.get("short_factor"), "rope_scaling.short_factor")?,
            long_factor: f32_list(s.get("long_factor"), "rope_scaling.long_factor")?,
            original_max_position: original.ok_or(ConfigError::Missing("original_max_position_embeddings"))?,
            max_position,
            attention_factor: get_f64(s, "attention_factor"),
        },
        other => return Err(ConfigError::Invalid(format!("rope_scaling type `{other}` is not supported"))),
    })
}
