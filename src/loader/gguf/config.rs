//! The model as Hugging Face describes it: checkpoint tensor names for GGUF ones ([`hf_name`]),
//! what the model takes from each tensor and how ([`TensorMap`], [`Fix`]: the one place that says
//! which tensors need more than repacking), and a config.json from the `<arch>.*` metadata
//! ([`hf_config`]).

use serde_json::{json, Value};

use super::header::{GgufFile, GgufSource, TensorInfo};
use super::repack::vector_of;
use super::value::{MetaArray, MetaValue, Metadata};
use super::{GgufError, Result};

/// The checkpoint (Hugging Face) name of GGUF tensor `name` in a model of architecture `arch`
/// (llama.cpp's `LLM_TENSOR_NAMES` read backwards), or `None` for tensors the model does not take
/// (rope factor tables are read into the config instead). The name only: [`TensorMap::target`]
/// also leaves out MTP blocks and says which tensors the model takes otherwise than as they are.
pub fn hf_name(arch: &str, name: &str) -> Option<String> {
    if arch == "bert" || arch == "nomic-bert" {
        return encoder_name(arch == "nomic-bert", name);
    }
    let global = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(g) = global {
        return Some(g.to_string());
    }
    let (layer, rest) = block(name)?;
    // Qwen3.5's DeltaNet parameters are bare in the checkpoint; llama.cpp names A as ssm_a (no
    // suffix) and dt_bias as the bias of ssm_dt.
    if arch == "qwen35" {
        match rest {
            "ssm_a" => return Some(format!("model.layers.{layer}.linear_attn.A_log")),
            "ssm_dt.bias" => return Some(format!("model.layers.{layer}.linear_attn.dt_bias")),
            _ => {}
        }
    }
    let (base, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let qwen35 = arch == "qwen35";
    let hf = match base {
        "attn_norm" => "input_layernorm",
        // Qwen3.5: the MLP's input norm is post_attention_norm; the Gated DeltaNet's projections
        // are attn_qkv (q, k, v), attn_gate (z), ssm_beta (b) and ssm_alpha (a).
        "post_attention_norm" if qwen35 => "post_attention_layernorm",
        "attn_qkv" if qwen35 => "linear_attn.in_proj_qkv",
        "attn_gate" if qwen35 => "linear_attn.in_proj_z",
        "ssm_beta" if qwen35 => "linear_attn.in_proj_b",
        "ssm_alpha" if qwen35 => "linear_attn.in_proj_a",
        "ssm_conv1d" if qwen35 => "linear_attn.conv1d",
        "ssm_norm" if qwen35 => "linear_attn.norm",
        "ssm_out" if qwen35 => "linear_attn.out_proj",
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

/// `blk.<layer>.<rest>` → (layer, rest), the layer all digits.
fn block(name: &str) -> Option<(&str, &str)> {
    let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    (!layer.is_empty() && layer.bytes().all(|b| b.is_ascii_digit())).then_some((layer, rest))
}

/// The checkpoint names of llama.cpp's encoder tensors: BERT's (`LLM_ARCH_BERT` → `BertModel`, no
/// `bert.` prefix) or, with `nomic`, nomic-ai's (`LLM_ARCH_NOMIC_BERT` → what `model::encoder` reads
/// for `nomic_bert`: q|k|v fused as `attn_qkv`, fc11 (the up) as `ffn_up`, fc12 (the gate) as
/// `ffn_gate`).
fn encoder_name(nomic: bool, name: &str) -> Option<String> {
    let (base, suffix) = name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let global = match (nomic, base) {
        (_, "token_embd") => Some("embeddings.word_embeddings"),
        (false, "position_embd") => Some("embeddings.position_embeddings"),
        (_, "token_types") => Some("embeddings.token_type_embeddings"),
        (false, "token_embd_norm") => Some("embeddings.LayerNorm"),
        (true, "token_embd_norm") => Some("emb_ln"),
        _ => None,
    };
    if let Some(g) = global {
        return Some(format!("{g}.{suffix}"));
    }
    let (layer, rest) = block(base)?;
    let hf = match (nomic, rest) {
        (false, "attn_q") => "attention.self.query",
        (false, "attn_k") => "attention.self.key",
        (false, "attn_v") => "attention.self.value",
        (false, "attn_output") => "attention.output.dense",
        (false, "attn_output_norm") => "attention.output.LayerNorm",
        (false, "ffn_up") => "intermediate.dense",
        (false, "ffn_down") => "output.dense",
        (false, "layer_output_norm") => "output.LayerNorm",
        (true, "attn_qkv") => "attn.Wqkv",
        (true, "attn_output") => "attn.out_proj",
        (true, "attn_output_norm") => "norm1",
        (true, "ffn_up") => "mlp.fc11",
        (true, "ffn_gate") => "mlp.fc12",
        (true, "ffn_down") => "mlp.fc2",
        (true, "layer_output_norm") => "norm2",
        _ => return None,
    };
    let layers = if nomic { "encoder.layers" } else { "encoder.layer" };
    Some(format!("{layers}.{layer}.{hf}.{suffix}"))
}

/// nomic-bert's config.json (nomic-ai's keys, as `model::encoder` reads them) from llama.cpp's
/// `nomic-bert.*` keys. The converter accepts only what this says: SwiGLU, no biases, post-LN, full
/// rotary, not interleaved; `rope.freq_base` is `rotary_emb_base`.
fn nomic_bert_config(file: &GgufFile) -> Result<Value> {
    let md = &file.metadata;
    let k = |s: &str| format!("nomic-bert.{s}");
    if md.opt_bool(&k("attention.causal"))? == Some(true) {
        return Err(GgufError::Unsupported { what: k("attention.causal"), detail: "true".into() });
    }
    let vocab = md.array("tokenizer.ggml.tokens")?.len() as u64;
    let types = md.opt_u32("tokenizer.ggml.token_type_count")?.unwrap_or(2);
    let bias = file.tensor("blk.0.attn_qkv.bias").is_some();
    Ok(json!({
        "model_type": "nomic_bert",
        "n_embd": md.u32(&k("embedding_length"))?,
        "n_layer": md.u32(&k("block_count"))?,
        "n_head": md.u32(&k("attention.head_count"))?,
        "n_inner": md.u32(&k("feed_forward_length"))?,
        "n_positions": md.u32(&k("context_length"))?,
        "vocab_size": vocab,
        "type_vocab_size": types,
        "layer_norm_epsilon": md.float(&k("attention.layer_norm_epsilon"))?,
        "rotary_emb_base": md.opt_float(&k("rope.freq_base"))?.unwrap_or(10_000.0),
        "rotary_emb_fraction": 1.0,
        "rotary_emb_interleaved": false,
        "activation_function": "swiglu",
        "qkv_proj_bias": bias,
        "mlp_fc1_bias": bias,
        "mlp_fc2_bias": bias,
        "prenorm": false,
        "causal": false,
    }))
}

/// A BERT encoder's config.json from llama.cpp's `bert.*` keys (`LLM_ARCH_BERT`: post-LayerNorm,
/// erf-GELU, learned absolute positions; `attention.causal` must be false).
fn bert_config(file: &GgufFile) -> Result<Value> {
    let md = &file.metadata;
    if md.opt_bool("bert.attention.causal")? == Some(true) {
        return Err(GgufError::Unsupported { what: "bert.attention.causal".into(), detail: "true".into() });
    }
    if file.tensor("blk.0.attn_qkv.weight").is_some() {
        return Err(GgufError::Unsupported {
            what: "blk.0.attn_qkv".into(),
            detail: "fused q|k|v (--fuse-qkv)".into(),
        });
    }
    let vocab = md.array("tokenizer.ggml.tokens")?.len() as u64;
    let types = match md.opt_u32("tokenizer.ggml.token_type_count")? {
        Some(n) => n as u64,
        None => file.require("token_types.weight")?.dims.get(1).copied().unwrap_or(1),
    };
    Ok(json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": md.u32("bert.embedding_length")?,
        "num_hidden_layers": md.u32("bert.block_count")?,
        "num_attention_heads": md.u32("bert.attention.head_count")?,
        "intermediate_size": md.u32("bert.feed_forward_length")?,
        "max_position_embeddings": md.u32("bert.context_length")?,
        "vocab_size": vocab,
        "type_vocab_size": types,
        "layer_norm_eps": md.float("bert.attention.layer_norm_epsilon")?,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
    }))
}

/// `<arch>.pooling_type` (llama.cpp's `LLAMA_POOLING_TYPE_*`): how an embedding model pools, `None`
/// when the file does not say (or says NONE, per-token output).
pub fn pooling(md: &Metadata) -> Result<Option<crate::ops::pool::Pooling>> {
    use crate::ops::pool::Pooling;
    let arch = md.str("general.architecture")?;
    let key = format!("{arch}.pooling_type");
    Ok(match md.opt_u32(&key)? {
        None | Some(0) => None,
        Some(1) => Some(Pooling::Mean),
        Some(2) => Some(Pooling::Cls),
        Some(3) => Some(Pooling::Last),
        Some(other) => {
            let what = if other == 4 { "4 (rank: a reranker)".to_string() } else { other.to_string() };
            return Err(GgufError::Unsupported { what: key, detail: what });
        }
    })
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
    if arch == "bert" {
        return bert_config(file);
    }
    if arch == "nomic-bert" {
        return nomic_bert_config(file);
    }
    if !matches!(arch, "llama" | "qwen2" | "qwen3" | "phi3" | "smollm3" | "gemma2" | "gemma3" | "qwen35") {
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
            "qwen35" => "Qwen3_5ForCausalLM",
            _ => "Phi3ForCausalLM",
        }],
        "model_type": match arch {
            "gemma3" => "gemma3_text",
            "qwen35" => "qwen3_5_text",
            _ => arch,
        },
        "hidden_size": hidden,
        "num_hidden_layers": n_layers(md, arch)?,
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
    if arch == "qwen35" {
        qwen35_config(md, arch, obj)?;
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

/// The model's layers: `<arch>.block_count` less the multi-token-prediction blocks llama.cpp's
/// converter appends after them (`<arch>.nextn_predict_layers`, Qwen3.5's MTP head), which the
/// model does not run.
fn n_layers(md: &Metadata, arch: &str) -> Result<u32> {
    let key = format!("{arch}.block_count");
    let blocks = md.u32(&key)?;
    let nextn = md.opt_u32(&format!("{arch}.nextn_predict_layers"))?.unwrap_or(0);
    if nextn >= blocks {
        return Err(GgufError::Unsupported { what: key, detail: format!("{blocks} blocks with {nextn} MTP blocks") });
    }
    Ok(blocks - nextn)
}

/// Qwen3.5 as llama.cpp's `llama_model_qwen35::load_arch_hparams` reads it: the layer kinds
/// (`attention.recurrent_layers`, else every `full_attention_interval`-th layer full, default 4),
/// the DeltaNet sizes from the `ssm.*` keys (below), and norms that hold 1 + w already (the
/// converter adds 1 to every `*norm.weight` but the gated `linear_attn.norm`). Its interleaved
/// M-RoPE (`rope.dimension_sections`) rotates text exactly as plain partial RoPE (every token's
/// three positions are equal), and `rope.dimension_count` gives the partial factor. The converter
/// (`_LinearAttentionVReorderBase`) tiles the value heads (the checkpoint's head g·r + j, the j-th
/// of key head g with r = nv / nk, is at j·nk + g) in every per-value-head row, column, channel and
/// value, so ggml broadcasts key heads by repeating them; `linear_value_heads_tiled` has the model
/// read them in that order, so no tensor is reordered (a K-quant ssm_out's blocks span heads).
fn qwen35_config(md: &Metadata, arch: &str, obj: &mut serde_json::Map<String, Value>) -> Result<()> {
    let n = n_layers(md, arch)? as usize;
    let key = format!("{arch}.attention.recurrent_layers");
    let linear: Vec<bool> = match md.get(&key) {
        Some(MetaValue::Array(MetaArray::Bool(v))) => v.clone(),
        Some(MetaValue::Array(a)) => match a.to_i64() {
            Some(v) => v.into_iter().map(|x| x != 0).collect(),
            None => return Err(GgufError::Unsupported { what: key, detail: format!("an array of {}", a.type_name()) }),
        },
        Some(MetaValue::Bool(b)) => vec![*b; n],
        Some(v) => match v.as_u64() {
            Some(x) => vec![x != 0; n],
            None => return Err(GgufError::Unsupported { what: key, detail: v.type_name() }),
        },
        None => {
            let every = md.opt_u32(&format!("{arch}.full_attention_interval"))?.unwrap_or(4);
            if every == 0 {
                return Err(GgufError::Unsupported {
                    what: format!("{arch}.full_attention_interval"),
                    detail: "0".into(),
                });
            }
            (0..n as u32).map(|i| (i + 1) % every != 0).collect()
        }
    };
    if linear.len() < n {
        return Err(GgufError::Unsupported { what: key, detail: format!("{} entries for {n} layers", linear.len()) });
    }
    let kinds: Vec<&str> = linear[..n].iter().map(|&l| if l { "linear_attention" } else { "full_attention" }).collect();
    let d = Delta::from_metadata(md, arch)?;
    obj.insert("layer_types".into(), json!(kinds));
    obj.insert("linear_num_key_heads".into(), json!(d.nk));
    obj.insert("linear_num_value_heads".into(), json!(d.nv));
    obj.insert("linear_key_head_dim".into(), json!(d.dk));
    obj.insert("linear_value_head_dim".into(), json!(d.dv));
    obj.insert("linear_conv_kernel_dim".into(), json!(d.conv_k));
    // The converter tiles the value heads (below); the model reads them in that order.
    obj.insert("linear_value_heads_tiled".into(), Value::Bool(true));
    obj.insert("norm_weights_include_one".into(), Value::Bool(true));
    obj.insert("attention_bias".into(), Value::Bool(false));
    Ok(())
}

/// Qwen3.5's Gated DeltaNet sizes from llama.cpp's `ssm.*` keys (Qwen3NextModel's
/// `set_gguf_parameters`): group_count = key heads, time_step_rank = value heads, state_size =
/// key head dim, inner_size = value heads × value head dim, conv_kernel = the conv width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Delta {
    nk: u64,
    nv: u64,
    dk: u64,
    dv: u64,
    conv_k: u64,
}

impl Delta {
    fn from_metadata(md: &Metadata, arch: &str) -> Result<Self> {
        let get = |k: &str| -> Result<u64> { Ok(md.u32(&format!("{arch}.ssm.{k}"))? as u64) };
        let (nk, nv, dk, inner, conv_k) =
            (get("group_count")?, get("time_step_rank")?, get("state_size")?, get("inner_size")?, get("conv_kernel")?);
        if nk == 0 || nv == 0 || nv % nk != 0 || inner % nv != 0 {
            return Err(GgufError::Unsupported {
                what: format!("{arch}.ssm.*"),
                detail: format!("{nk} key heads, {nv} value heads, inner size {inner}"),
            });
        }
        Ok(Self { nk, nv, dk, dv: inner / nv, conv_k })
    }

    fn conv_dim(&self) -> u64 {
        2 * self.nk * self.dk + self.nv * self.dv
    }

    /// How checkpoint tensor `hf` (of the linear-attention layers) is taken from GGUF tensor `t`.
    /// The value heads stay in the file's (tiled) order, which `linear_value_heads_tiled` tells the
    /// model, so only the conv's shape and A_log differ from the checkpoint.
    fn fix(&self, hf: &str, t: &TensorInfo) -> Result<Fix> {
        Ok(match hf.rsplit_once(".linear_attn.").map(|(_, w)| w) {
            // The converter stores ssm_a = −exp(A_log) (Qwen3NextModel.modify_tensors).
            Some("A_log") => Fix::NegLog,
            // [conv_dim, 1, K] squeezed to [conv_dim, K] (GGUF dims [K, conv_dim]): each channel's K
            // taps, the last for the current token, which is the model's flat [conv_dim · K].
            Some("conv1d.weight") => {
                if t.dims != [self.conv_k, self.conv_dim()] {
                    return Err(t.shape_error(format!("expected [{}, {}]", self.conv_k, self.conv_dim())));
                }
                Fix::Flat
            }
            _ => Fix::None,
        })
    }
}

/// How the model takes a GGUF tensor's values, beyond its name: as they are, or one of the few
/// changes llama.cpp's converter calls for (Qwen3.5's DeltaNet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fix {
    /// The values as they are: a matrix in our layout, or a 1-D vector.
    None,
    /// Taken as one f32 vector whatever its rank, in row-major order (Qwen3.5's conv1d).
    Flat,
    /// Taken as an f32 vector of `ln(−x)` for each value x (A_log from llama.cpp's `−exp(A_log)`).
    NegLog,
}

impl Fix {
    /// Whether the model takes the tensor as a vector even when the file holds a matrix.
    pub fn flattens(self) -> bool {
        self != Fix::None
    }
}

/// What the model takes from one GGUF tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Its checkpoint (Hugging Face) name.
    pub name: String,
    pub fix: Fix,
}

/// The checkpoint tensors of a GGUF model, per GGUF tensor ([`TensorMap::target`]): [`hf_name`]
/// with what the `<arch>.*` keys add — the [`Fix`] of the few tensors llama.cpp's converter changed
/// (Qwen3.5's conv1d and ssm_a), and the MTP blocks past the model's layers left out. The GPU
/// loader ([`GgufStream`](crate::loader::gguf_stream::GgufStream)), the CPU reader
/// ([`read_fixed`](super::read_fixed)) and the package converter all take tensors through it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMap {
    arch: String,
    n_layers: u64,
    delta: Option<Delta>,
}

impl TensorMap {
    pub fn new(md: &Metadata) -> Result<Self> {
        let arch = md.str("general.architecture")?.to_string();
        let n_layers = match md.opt_u32(&format!("{arch}.block_count"))? {
            Some(_) => n_layers(md, &arch)? as u64,
            None => u64::MAX,
        };
        let delta = if arch == "qwen35" { Some(Delta::from_metadata(md, &arch)?) } else { None };
        Ok(Self { arch, n_layers, delta })
    }

    /// The model's use of tensor `t`, `None` for tensors it does not take; an error if a tensor it
    /// takes has a shape the fix cannot handle.
    pub fn target(&self, t: &TensorInfo) -> Result<Option<Target>> {
        let Some(name) = hf_name(&self.arch, &t.name) else { return Ok(None) };
        let layer =
            t.name.strip_prefix("blk.").and_then(|r| r.split_once('.')).and_then(|(l, _)| l.parse::<u64>().ok());
        if layer.is_some_and(|l| l >= self.n_layers) {
            return Ok(None);
        }
        let fix = match &self.delta {
            Some(d) => d.fix(&name, t)?,
            None => Fix::None,
        };
        Ok(Some(Target { name, fix }))
    }
}
