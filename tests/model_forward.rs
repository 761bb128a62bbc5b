//! The Llama-family forward pass on the GPU against an f64 CPU forward pass
//! (tests/common/reference.rs::transformer) for all four architectures, on tiny random models
//! with awkward shapes (9/3 heads, hidden 96, ffn 160, vocab 301), f32 and 4-bit weights.
//!
//! Tolerance: logits are O(1–5); every kernel is within ~1e-5 relative of f64 and two layers of
//! f32 accumulation over k ≤ 288 keep the logits within ~1e-4. 2e-3 absolute + 1e-3 relative
//! leaves margin; a wrong bias, norm, RoPE pairing, head mapping or residual moves logits by 0.1+.
//! The 4-bit runs compare against the reference fed the *dequantized* weights, so quantization
//! error is not counted as kernel error and the same tolerance holds.

mod common;
use common::reference::transformer;
use common::*;
use serde_json::json;
use std::collections::HashMap;
use webgpu_llm::model::{Config, CpuTensors, Logits, Model, QuantPolicy, StateOptions};
use webgpu_llm::ops::attention::KvDtype;
use webgpu_llm::quant::{dequantize, quantize};

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

const ATOL: f64 = 2e-3;
const RTOL: f64 = 1e-3;
const CONTEXT: u32 = 96;

fn config(arch: &str) -> serde_json::Value {
    let mut c = json!({
        "model_type": arch, "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 32, "intermediate_size": 160, "vocab_size": 301,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512,
        "tie_word_embeddings": arch == "llama" || arch == "qwen3",
    });
    match arch {
        "llama" => {
            c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        }
        "phi3" => {
            // Phi-3 derives head_dim = hidden / heads: 3 heads of 32, 1 KV head.
            c["num_attention_heads"] = json!(3);
            c["num_key_value_heads"] = json!(1);
            c["max_position_embeddings"] = json!(256);
            c["original_max_position_embeddings"] = json!(64);
            let short: Vec<f64> = (0..16).map(|i| 1.0 + i as f64 * 0.05).collect();
            let long: Vec<f64> = (0..16).map(|i| 1.0 + i as f64 * 0.2).collect();
            c["rope_scaling"] = json!({"type": "longrope", "short_factor": short, "long_factor": long});
        }
        _ => {}
    }
    c
}

/// Random checkpoint tensors for `cfg`, named as in Hugging Face checkpoints.
fn random_tensors(cfg: &Config, rng: &mut Rng) -> Tensors {
    let (h, qd, kvd, ffn) = (cfg.hidden as usize, cfg.q_dim() as usize, cfg.kv_dim() as usize, cfg.ffn as usize);
    let mut t = Tensors::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n = shape.iter().product();
        t.insert(name, (shape, (0..n).map(|_| offset + scale * rng.uniform()).collect()));
    };
    let mat = |n: usize, k: usize| (vec![n, k], 1.5 / (k as f32).sqrt());
    put("model.embed_tokens.weight".into(), vec![cfg.vocab as usize, h], 1.0, 0.0);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        put(format!("{p}.input_layernorm.weight"), vec![h], 0.1, 1.0);
        put(format!("{p}.post_attention_layernorm.weight"), vec![h], 0.1, 1.0);
        if cfg.fused_proj {
            let (s, sc) = mat(qd + 2 * kvd, h);
            put(format!("{p}.self_attn.qkv_proj.weight"), s, sc, 0.0);
            let (s, sc) = mat(2 * ffn, h);
            put(format!("{p}.mlp.gate_up_proj.weight"), s, sc, 0.0);
        } else {
            for (which, n) in [("q", qd), ("k", kvd), ("v", kvd)] {
                let (s, sc) = mat(n, h);
                put(format!("{p}.self_attn.{which}_proj.weight"), s, sc, 0.0);
                if cfg.qkv_bias {
                    put(format!("{p}.self_attn.{which}_proj.bias"), vec![n], 0.1, 0.0);
                }
            }
            for which in ["gate", "up"] {
                let (s, sc) = mat(ffn, h);
                put(format!("{p}.mlp.{which}_proj.weight"), s, sc, 0.0);
            }
        }
        if cfg.qk_norm {
            put(format!("{p}.self_attn.q_norm.weight"), vec![cfg.head_dim as usize], 0.1, 1.0);
            put(format!("{p}.self_attn.k_norm.weight"), vec![cfg.head_dim as usize], 0.1, 1.0);
        }
        let (s, sc) = mat(h, qd);
        put(format!("{p}.self_attn.o_proj.weight"), s, sc, 0.0);
        let (s, sc) = mat(h, ffn);
        put(format!("{p}.mlp.down_proj.weight"), s, sc, 0.0);
    }
    put("model.norm.weight".into(), vec![h], 0.1, 1.0);
    if !cfg.tied_embeddings {
        put("lm_head.weight".into(), vec![cfg.vocab as usize, h], 1.5 / (h as f32).sqrt(), 0.0);
    }
    t
}

/// The tensors as the GPU will hold them under `policy` (quantized then dequantized).
fn as_held(tensors: &Tensors, policy: QuantPolicy) -> Tensors {
    tensors
        .iter()
        .map(|(name, (shape, data))| {
            let held = match shape[..] {
                [n, k] => dequantize(&quantize(policy.format_for(name), data, n, k).unwrap()).unwrap(),
                _ => data.clone(),
            };
            (name.clone(), (shape.clone(), held))
        })
        .collect()
}

fn check_arch(arch: &str, policy: QuantPolicy, kv_dtype: KvDtype) {
    let ctx = ctx();
    let mut rng = Rng::new(seed(&format!("model {arch} {policy:?}")));
    let cfg = Config::from_hf(&config(arch)).unwrap();
    let tensors = random_tensors(&cfg, &mut rng);
    let held = as_held(&tensors, policy);
    let opts = StateOptions { context: CONTEXT, max_batch: 8, kv_dtype };
    let mut src = CpuTensors { tensors, policy };
    let model = Model::new(ctx, cfg.clone(), &mut src, opts).unwrap();

    let tokens: Vec<u32> = (0..11).map(|_| rng.below(cfg.vocab as u64) as u32).collect();
    let inv = cfg.rope.inv_freq(CONTEXT).unwrap();
    let want = transformer(&cfg, &held, &tokens, &inv, cfg.rope.attention_factor());
    let vocab = cfg.vocab as usize;
    let what = format!("{arch} {policy:?} {kv_dtype:?}");

    // prefill 11 tokens in chunks of 8 with every row's logits
    let got = pollster::block_on(model.logits(ctx, &tokens, 0, Logits::All)).unwrap();
    // An f16 cache rounds K and V by up to 2^-11 relative; through two layers that moves logits
    // by ~1e-3, so that case gets 5× the tolerance.
    let (atol, rtol) = if kv_dtype == KvDtype::F16 { (5.0 * ATOL, 5.0 * RTOL) } else { (ATOL, RTOL) };
    assert_close(&format!("{what}: prefill logits"), &got, &want, atol, rtol);

    // prefill 5, then decode one token at a time: the last row must match at every step
    let first = pollster::block_on(model.logits(ctx, &tokens[..5], 0, Logits::Last)).unwrap();
    assert_close(&format!("{what}: logits after 5"), &first, &want[4 * vocab..5 * vocab], atol, rtol);
    for i in 5..tokens.len() {
        let step = pollster::block_on(model.logits(ctx, &tokens[i..=i], i as u32, Logits::Last)).unwrap();
        assert_close(&format!("{what}: decode step at {i}"), &step, &want[i * vocab..(i + 1) * vocab], atol, rtol);
        let id = read_u32(ctx, &model.state.next_id, 1)[0];
        let row = &step;
        let best = row.iter().enumerate().fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
        assert_eq!(id as usize, best, "{what}: GPU argmax at step {i}");
    }
}

#[test]
fn llama_matches_reference() {
    check_arch("llama", QuantPolicy::F32, KvDtype::F32);
}

#[test]
fn qwen2_matches_reference() {
    check_arch("qwen2", QuantPolicy::F32, KvDtype::F32);
}

#[test]
fn qwen3_matches_reference() {
    check_arch("qwen3", QuantPolicy::F32, KvDtype::F32);
}

#[test]
fn phi3_matches_reference() {
    check_arch("phi3", QuantPolicy::F32, KvDtype::F32);
}

#[test]
fn quantized_models_match_reference_on_dequantized_weights() {
    check_arch("llama", QuantPolicy::Q4, KvDtype::F32);
    check_arch("phi3", QuantPolicy::Q4, KvDtype::F32);
    check_arch("qwen2", QuantPolicy::F16, KvDtype::F32);
}

#[test]
fn f16_kv_cache_stays_close() {
    check_arch("qwen3", QuantPolicy::F32, KvDtype::F16);
}

#[test]
fn bad_inputs_are_errors() {
    let ctx = ctx();
    let cfg = Config::from_hf(&config("llama")).unwrap();
    let mut rng = Rng::new(1);
    let mut src = CpuTensors { tensors: random_tensors(&cfg, &mut rng), policy: QuantPolicy::F32 };
    let model =
        Model::new(ctx, cfg.clone(), &mut src, StateOptions { context: 8, max_batch: 4, kv_dtype: KvDtype::F32 })
            .unwrap();
    let err = pollster::block_on(model.logits(ctx, &[1, 2, 3, 4, 5, 6, 7, 8, 9], 0, Logits::Last)).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let err = pollster::block_on(model.logits(ctx, &[400], 0, Logits::Last)).unwrap_err();
    assert!(err.to_string().contains("vocab"), "{err}");
    let mut missing = CpuTensors { tensors: random_tensors(&cfg, &mut rng), policy: QuantPolicy::F32 };
    missing.tensors.remove("model.layers.1.mlp.down_proj.weight");
    let err = Model::new(ctx, cfg, &mut missing, StateOptions { context: 8, max_batch: 4, kv_dtype: KvDtype::F32 })
        .err()
        .expect("a missing tensor");
    assert!(err.to_string().contains("down_proj"), "{err}");
    assert!(Config::from_hf(&json!({"model_type": "gpt2"})).is_err());
}
