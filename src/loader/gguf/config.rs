//! The model as Hugging Face describes it: checkpoint tensor names for GGUF ones ([`hf_name`])
//! and a config.json from the `<arch>.*` metadata ([`hf_config`]).

use serde_json::{json, Value};

use super::header::{GgufFile, GgufSource};
use super::repack::vector_of;
use super::{GgufError, Result};

/// The checkpoint (Hugging Face) name of GGUF tensor `name` in a model of architecture `arch`
/// (llama.cpp's `LLM_TENSOR_NAMES` read backwards), or `None` for tensors the model does not take
/// (rope factor tables are read into the config instead).
pub fn hf_name(arch: &str, name: &str) -> Option<String> {
    let global = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(g) = global {
        return Some(g.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (base, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf = match base {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_qkv" => "self_attn.qkv_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        // Gemma 2/3: ffn_norm is the MLP's input norm and the attention output has its own.
        "ffn_norm" if is_gemma(arch) => "pre_feedforward_layernorm",
        "post_attention_norm" if is_gemma(arch) => "post_attention_layernorm",
        "post_ffw_norm" if is_gemma(arch) => "post_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        // Phi-3's converter stores the fused gate_up_proj (gate rows first) as ffn_up.
        "ffn_up" if arch == "phi3" => "mlp.gate_up_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

fn is_gemma(arch: &str) -> bool {
    matches!(arch, "gemma2" | "gemma3")
}

/// A Hugging Face–style config.json for the model, from the `<arch>.*` keys (llama.cpp's
/// `LLM_KV_*` names), the token list and the tensor table, so `Config::from_hf` resolves it.
/// Reads the small rope-factor tensors from `src` when the file has them.
pub fn hf_config(file: &GgufFile, src: &mut dyn GgufSource) -> Result<Value> {
    let md = &file.metadata;
    let arch = file.architecture()?;
    if !matches!(arch, "llama" | "qwen2" | "qwen3" | "phi3" | "smollm3" | "gemma2" | "gemma3") {
        return Err(GgufError::UnsupportedArch { arch: arch.to_string() });
    }
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = md.u32(&key("embedding_length"))?;
    let n_heads = md.u32(&key("attention.head_count"))?;
    let n_kv_heads = md.opt_u32(&key("attention.head_count_kv"))?.unwrap_or(n_heads);
    if n_heads == 0 {
        return Err(GgufError::Unsupported { what: key("attention.head_count"), detail: "0 heads".into() });
    }
    let head_dim = md.opt_u32(&key("attention.key_length"))?.unwrap_or(hidden / n_heads);
    let rope_dims = md.opt_u32(&key("rope.dimension_count"))?.unwrap_or(head_dim);
    let context = md.u32(&key("context_length"))?;
    let vocab = match md.get("tokenizer.ggml.tokens") {
        Some(_) => md.array("tokenizer.ggml.tokens")?.len() as u64,
        None => match md.opt_u32(&key("vocab_size"))? {
            Some(v) => v as u64,
            None => file.require("token_embd.weight")?.dims.get(1).copied().unwrap_or(0),
        },
    };
    let mut c = json!({
        "architectures": [match arch {
            "llama" => "LlamaForCausalLM",
            "qwen2" => "Qwen2ForCausalLM",
            "qwen3" => "Qwen3ForCausalLM",
            "smollm3" => "SmolLM3ForCausalLM",
            "gemma2" => "Gemma2ForCausalLM",
            "gemma3" => "Gemma3ForCausalLM",
            _ => "Phi3ForCausalLM",
        }],
        "model_type": if arch == "gemma3" { "gemma3_text" } else { arch },
        "hidden_size": hidden,
        "num_hidden_layers": md.u32(&key("block_count"))?,
        "intermediate_size": md.u32(&key("feed_forward_length"))?,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": md.float(&key("attention.layer_norm_rms_epsilon"))?,
        "rope_theta": md.opt_float(&key("rope.freq_base"))?.unwrap_or(10_000.0),
        "max_position_embeddings": context,
        "vocab_size": vocab,
        // llama.cpp ties the classifier to the embedding when output.weight is absent.
        "tie_word_embeddings": file.tensor("output.weight").is_none(),
    });
    let obj = c.as_object_mut().ok_or_else(|| GgufError::Unsupported { what: "config".into(), detail: "".into() })?;
    if arch == "llama" || arch == "smollm3" {
        // convert_hf_to_gguf.py permutes q/k rows for these (LlamaModel and its subclasses).
        obj.insert("rope_interleaved".into(), Value::Bool(true));
        let bias = file.tensor("blk.0.attn_q.bias").is_some() || file.tensor("blk.0.attn_output.bias").is_some();
        obj.insert("attention_bias".into(), Value::Bool(bias));
    }
    if arch == "smollm3" {
        // llama.cpp hard-codes SmolLM3's NoPE step (no GGUF key): layer il skips RoPE when (il + 1) % 4 == 0.
        obj.insert("no_rope_layer_interval".into(), json!(4));
    }
    if is_gemma(arch) {
        gemma_config(file, arch, obj, hidden, n_heads, head_dim)?;
    }
    if rope_dims != head_dim {
        // from_hf takes rotary_dim = trunc(head_dim · factor) & !1; check that gives rope_dims back.
        let factor = rope_dims as f64 / head_dim as f64;
        if ((head_dim as f64 * factor) as u32) & !1 != rope_dims {
            return Err(GgufError::Unsupported {
                what: key("rope.dimension_count"),
                detail: format!("{rope_dims} of head_dim {head_dim}"),
            });
        }
        obj.insert("partial_rotary_factor".into(), json!(factor));
    }
    for (k, id) in [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")] {
        if let Some(v) = md.opt_u32(id)? {
            obj.insert(k.into(), json!(v));
        }
    }
    if let Some(s) = rope_scaling(file, src, arch, context)? {
        obj.insert("rope_scaling".into(), s);
    }
    Ok(c)
}

/// Gemma 2/3 as llama.cpp's `llm_load_hparams` reads them: softcaps (Gemma 2: keys, defaults 50 and
/// 30), the sliding window (Gemma 2: default 4096; Gemma 3 without the key: no sliding layers),
/// the layer pattern (every 2nd / 6th layer global: Config's defaults), the local RoPE base (Gemma 3:
/// 10k, unscaled) and the attention scale (1/√head_dim, but 1/√(hidden/heads) for the 27B models,
/// known by their layer count). The converter stores norm weights as 1 + w.
fn gemma_config(
    file: &GgufFile,
    arch: &str,
    obj: &mut serde_json::Map<String, Value>,
    hidden: u32,
    n_heads: u32,
    head_dim: u32,
) -> Result<()> {
    let md = &file.metadata;
    let key = |k: &str| format!("{arch}.{k}");
    let n_layers = md.u32(&key("block_count"))?;
    obj.insert("norm_weights_include_one".into(), Value::Bool(true));
    obj.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
    let big = (arch == "gemma2" && n_layers == 46) || (arch == "gemma3" && n_layers == 62);
    obj.insert("query_pre_attn_scalar".into(), json!(if big { hidden / n_heads } else { head_dim }));
    if arch == "gemma2" {
        let attn = md.opt_float(&key("attn_logit_softcapping"))?.unwrap_or(50.0);
        let last = md.opt_float(&key("final_logit_softcapping"))?.unwrap_or(30.0);
        obj.insert("attn_logit_softcapping".into(), json!(attn));
        obj.insert("final_logit_softcapping".into(), json!(last));
        obj.insert("sliding_window".into(), json!(md.opt_u32(&key("attention.sliding_window"))?.unwrap_or(4096)));
    } else {
        if let Some(c) = md.opt_float(&key("final_logit_softcapping"))?.filter(|&c| c > 0.0) {
            obj.insert("final_logit_softcapping".into(), json!(c));
        }
        match md.opt_u32(&key("attention.sliding_window"))?.filter(|&w| w > 0) {
            Some(w) => {
                obj.insert("sliding_window".into(), json!(w));
                obj.insert("rope_local_base_freq".into(), json!(10_000.0));
            }
            None => {
                obj.insert("layer_types".into(), json!(vec!["full_attention"; n_layers as usize]));
            }
        }
    }
    Ok(())
}

/// `rope_scaling` for the config: `<arch>.rope.scaling.*` keys, or the factor tables llama.cpp's
/// converter stores as tensors (which the model then divides the frequencies by, as ggml_rope_ext's
/// `freq_factors` does).
fn rope_scaling(file: &GgufFile, src: &mut dyn GgufSource, arch: &str, context: u32) -> Result<Option<Value>> {
    let md = &file.metadata;
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let original = md.opt_u32(&key("original_context_length"))?;
    // Phi-3 LongRoPE: short and long factor tables, attn_factor precomputed by the converter.
    if let (Some(long), Some(short)) =
        (file.tensor("rope_factors_long.weight"), file.tensor("rope_factors_short.weight"))
    {
        let original = original.ok_or_else(|| GgufError::MissingKey { key: key("original_context_length") })?;
        let mut s = json!({
            "type": "longrope",
            "long_factor": vector_of(long, src)?,
            "short_factor": vector_of(short, src)?,
            "original_max_position_embeddings": original,
        });
        if let (Some(a), Some(o)) = (md.opt_float(&key("attn_factor"))?, s.as_object_mut()) {
            o.insert("attention_factor".into(), json!(a));
        }
        return Ok(Some(s));
    }
    // Llama 3.1+: convert_hf_to_gguf.py stores the llama3 frequency divisors as rope_freqs.weight
    // instead of the scaling parameters. Dividing each frequency by its factor is what LongRoPE
    // does with one table for both lengths and no attention scaling.
    if let Some(t) = file.tensor("rope_freqs.weight") {
        let f = vector_of(t, src)?;
        return Ok(Some(json!({
            "rope_type": "longrope",
            "short_factor": f,
            "long_factor": f,
            "original_max_position_embeddings": context,
            "attention_factor": 1.0,
        })));
    }
    match md.opt_str(&key("type"))? {
        None | Some("none") => Ok(None),
        Some("linear") => {
            let factor = md.float(&key("factor"))?;
            Ok(Some(json!({ "rope_type": "linear", "factor": factor })))
        }
        Some(other) => Err(GgufError::Unsupported { what: key("type"), detail: format!("{other:?} scaling") }),
    }
}
