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
use webgpu_llm::model::weights::Mixer;
use webgpu_llm::model::{Config, CpuTensors, Logits, Model, QuantPolicy, Readback, StateOptions};
use webgpu_llm::ops::attention::KvDtype;
use webgpu_llm::quant::{dequantize, quantize, WeightFormat};

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

const ATOL: f64 = 2e-3;
const RTOL: f64 = 1e-3;
/// Decode on adapters with integer dot products (`Capabilities::int8_dot`) multiplies with x
/// rounded to int8 blocks (ops::act_q8: 1/254 of each block's largest |x|), so its logits are
/// compared relative to the row's largest |logit|: measured ≤ 1.2% through these two-layer
/// random models; a wrong kernel moves logits by their own size.
const INT8_RTOL: f64 = 0.02;

/// A decode row (one token, or the last row of a prefill) against the reference: ATOL/RTOL on
/// f32 activations, INT8_RTOL of the row's scale with int8 ones. With a final soft-cap c (Gemma 2)
/// the scale is the uncapped logits' (c·atanh(w/c)): tanh only shrinks an error, but the capped
/// row's maximum understates the size the int8 error scales with.
fn assert_decode_close(
    ctx: &webgpu_llm::Context,
    what: &str,
    got: &[f32],
    want: &[f64],
    (atol, rtol): (f64, f64),
    softcap: f32,
) {
    if !ctx.caps.int8_dot {
        return assert_close(what, got, want, atol, rtol);
    }
    let c = softcap as f64;
    let raw = |w: f64| if c > 0.0 { c * (w / c).clamp(-1.0 + 1e-9, 1.0 - 1e-9).atanh() } else { w };
    let scale = want.iter().fold(0.0f64, |a, &v| a.max(raw(v).abs()));
    let worst = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    assert!(worst <= INT8_RTOL * scale, "{what}: int8 decode off by {worst:.4}, over {INT8_RTOL} × {scale:.3}");
}
const CONTEXT: u32 = 96;

fn config(arch: &str) -> serde_json::Value {
    let mut c = json!({
        "model_type": arch, "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 32, "intermediate_size": 160, "vocab_size": 301,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512,
        "tie_word_embeddings": arch == "llama" || arch == "qwen3" || arch.starts_with("gemma"),
    });
    match arch {
        "llama" => {
            c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        }
        // Every second layer without RoPE (SmolLM3 has every fourth).
        "smollm3" => {
            c["no_rope_layer_interval"] = json!(2);
        }
        // Layer 0 slides over 4 keys (11 tokens run well past it), layer 1 is global; Gemma 3's
        // local layer has its own RoPE base, the global one linear scaling; Gemma 2 caps scores
        // and logits low enough to bend them (scores reach ~±5, logits ~±10).
        "gemma3_text" | "gemma2" => {
            c["layer_types"] = json!(["sliding_attention", "full_attention"]);
            c["sliding_window"] = json!(4);
            c["query_pre_attn_scalar"] = json!(24);
            c["hidden_activation"] = json!("gelu_pytorch_tanh");
            if arch == "gemma3_text" {
                c["rope_theta"] = json!(1_000_000.0);
                c["rope_local_base_freq"] = json!(10_000.0);
                c["rope_scaling"] = json!({"rope_type": "linear", "factor": 8.0});
            } else {
                c["attn_logit_softcapping"] = json!(2.0);
                c["final_logit_softcapping"] = json!(3.0);
            }
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
    // norm weights around 1 as used: Gemma's are w in (1 + w)
    let nw = 1.0 - cfg.norm_offset;
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        put(format!("{p}.input_layernorm.weight"), vec![h], 0.1, nw);
        put(format!("{p}.post_attention_layernorm.weight"), vec![h], 0.1, nw);
        if cfg.post_norms {
            put(format!("{p}.pre_feedforward_layernorm.weight"), vec![h], 0.1, nw);
            put(format!("{p}.post_feedforward_layernorm.weight"), vec![h], 0.1, nw);
        }
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
            put(format!("{p}.self_attn.q_norm.weight"), vec![cfg.head_dim as usize], 0.1, nw);
            put(format!("{p}.self_attn.k_norm.weight"), vec![cfg.head_dim as usize], 0.1, nw);
        }
        let (s, sc) = mat(h, qd);
        put(format!("{p}.self_attn.o_proj.weight"), s, sc, 0.0);
        let (s, sc) = mat(h, ffn);
        put(format!("{p}.mlp.down_proj.weight"), s, sc, 0.0);
    }
    put("model.norm.weight".into(), vec![h], 0.1, nw);
    if !cfg.tied_embeddings {
        put("lm_head.weight".into(), vec![cfg.vocab as usize, h], 1.5 / (h as f32).sqrt(), 0.0);
    }
    t
}

/// The tensors as the GPU will hold them under `policy` (quantized then dequantized).
fn as_held(tensors: &Tensors, policy: QuantPolicy) -> Tensors {
    as_held_by(tensors, |name| policy.format_for(name))
}

fn as_held_by(tensors: &Tensors, format: impl Fn(&str) -> WeightFormat) -> Tensors {
    tensors
        .iter()
        .map(|(name, (shape, data))| {
            let held = match shape[..] {
                [n, k] => dequantize(&quantize(format(name), data, n, k).unwrap()).unwrap(),
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
    let opts = StateOptions { context: CONTEXT, max_batch: 8, kv_dtype, all_logits: true };
    let mut src = CpuTensors { tensors, policy };
    let model = Model::new(ctx, cfg.clone(), &mut src, opts).unwrap();

    // Sliding layers keep a ring of window + max_batch − 1 = 11 slots (model::kv_shapes): 30
    // tokens wrap it twice, in prefill chunks and in decode steps.
    let n = if cfg.sliding.iter().any(|&s| s) { 30 } else { 11 };
    let ring = webgpu_llm::model::kv_shapes(&cfg, &opts).1.map(|r| r.capacity);
    assert_eq!(ring, cfg.sliding.iter().any(|&s| s).then_some(11), "{arch}: the sliding layers' ring");
    let tokens: Vec<u32> = (0..n).map(|_| rng.below(cfg.vocab as u64) as u32).collect();
    let inv = cfg.rope.inv_freq(CONTEXT).unwrap();
    let want = transformer(&cfg, &held, &tokens, &inv, cfg.rope.attention_factor());
    let vocab = cfg.vocab as usize;
    let what = format!("{arch} {policy:?} {kv_dtype:?}");

    // prefill the tokens in chunks of 8 with every row's logits
    let got = pollster::block_on(model.logits(ctx, &tokens, 0, Logits::All)).unwrap();
    // An f16 cache rounds K and V by up to 2^-11 relative; through two layers that moves logits
    // by ~1e-3, so that case gets 5× the tolerance.
    let (atol, rtol) = if kv_dtype == KvDtype::F16 { (5.0 * ATOL, 5.0 * RTOL) } else { (ATOL, RTOL) };
    assert_close(&format!("{what}: prefill logits"), &got, &want, atol, rtol);

    // prefill 5, then decode one token at a time: the last row must match at every step
    let first = pollster::block_on(model.logits(ctx, &tokens[..5], 0, Logits::Last)).unwrap();
    let cap = cfg.final_softcap;
    assert_decode_close(
        ctx,
        &format!("{what}: logits after 5"),
        &first,
        &want[4 * vocab..5 * vocab],
        (atol, rtol),
        cap,
    );
    for i in 5..tokens.len() {
        let step = pollster::block_on(model.logits(ctx, &tokens[i..=i], i as u32, Logits::Last)).unwrap();
        assert_decode_close(
            ctx,
            &format!("{what}: decode step at {i}"),
            &step,
            &want[i * vocab..(i + 1) * vocab],
            (atol, rtol),
            cap,
        );
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
fn smollm3_matches_reference() {
    check_arch("smollm3", QuantPolicy::F32, KvDtype::F32);
}

#[test]
fn gemma3_matches_reference() {
    check_arch("gemma3_text", QuantPolicy::F32, KvDtype::F32);
}

#[test]
fn gemma2_matches_reference() {
    check_arch("gemma2", QuantPolicy::F32, KvDtype::F32);
}

#[test]
fn quantized_models_match_reference_on_dequantized_weights() {
    check_arch("llama", QuantPolicy::Q4, KvDtype::F32);
    check_arch("phi3", QuantPolicy::Q4, KvDtype::F32);
    check_arch("qwen2", QuantPolicy::F16, KvDtype::F32);
    check_arch("gemma2", QuantPolicy::Q4, KvDtype::F32);
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
    let model = Model::new(
        ctx,
        cfg.clone(),
        &mut src,
        StateOptions { context: 8, max_batch: 4, kv_dtype: KvDtype::F32, all_logits: false },
    )
    .unwrap();
    let err = pollster::block_on(model.logits(ctx, &[1, 2, 3, 4, 5, 6, 7, 8, 9], 0, Logits::Last)).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let err = pollster::block_on(model.logits(ctx, &[400], 0, Logits::Last)).unwrap_err();
    assert!(err.to_string().contains("vocab"), "{err}");
    // a generation state keeps one logits row
    let err = pollster::block_on(model.logits(ctx, &[1, 2], 0, Logits::All)).unwrap_err();
    assert!(err.to_string().contains("all_logits"), "{err}");
    assert_eq!(model.state.logits.size(), cfg.vocab as u64 * 4, "one row");
    pollster::block_on(model.logits(ctx, &[1, 2], 0, Logits::Last)).expect("the last row still works");
    let mut missing = CpuTensors { tensors: random_tensors(&cfg, &mut rng), policy: QuantPolicy::F32 };
    missing.tensors.remove("model.layers.1.mlp.down_proj.weight");
    let err = Model::new(
        ctx,
        cfg,
        &mut missing,
        StateOptions { context: 8, max_batch: 4, kv_dtype: KvDtype::F32, all_logits: false },
    )
    .err()
    .expect("a missing tensor");
    assert!(err.to_string().contains("down_proj"), "{err}");
    assert!(Config::from_hf(&json!({"model_type": "gpt2"})).is_err());
}

/// The decode plan: built at a step's first use of an attention split count, then only recorded.
/// Pipelined greedy steps (each reading the id the previous one chose on the GPU) give the ids
/// of the per-call path, across the 256-key boundary where the split count (and so the plan)
/// changes; a steady-state step creates no buffer, bind group or pipeline, submits once, writes
/// only the 16-byte step uniform and reads back 4 bytes; a step fed a token from the CPU gives
/// the per-call path's logits bit for bit (same kernels, same order).
#[test]
fn decode_plan_is_built_once_and_matches_the_per_call_path() {
    // Contexts of its own: the shared ones count other tests' work running alongside.
    for portable in [false, true] {
        let row_gemv = portable.then(|| !ctx().caps.row_gemv);
        let int8_dot = portable.then(|| !ctx().caps.int8_dot);
        let own = webgpu_llm::Context::new_blocking(webgpu_llm::ContextOptions {
            portable_only: portable,
            row_gemv,
            int8_dot,
            ..Default::default()
        })
        .unwrap();
        check_decode_plan(&own);
    }
}

fn check_decode_plan(ctx: &webgpu_llm::Context) {
    let mut rng = Rng::new(seed("decode plan"));
    let cfg = Config::from_hf(&config("qwen2")).unwrap();
    let mut src = CpuTensors { tensors: random_tensors(&cfg, &mut rng), policy: QuantPolicy::Q4 };
    let opts = StateOptions { context: 300, max_batch: 64, kv_dtype: KvDtype::F16, all_logits: false };
    let mut model = Model::new(ctx, cfg.clone(), &mut src, opts).unwrap();
    let prompt: Vec<u32> = (0..250).map(|_| rng.below(cfg.vocab as u64) as u32).collect();
    let steps = 11u32;

    // The per-call path: kernels built for each call, greedy ids read from next_id.
    let mut want_ids = Vec::new();
    let mut want_logits = Vec::new();
    let mut logits = pollster::block_on(model.logits(ctx, &prompt, 0, Logits::Last)).unwrap();
    for i in 0..=steps {
        let id = read_u32(ctx, &model.state.next_id, 1)[0];
        want_ids.push(id);
        want_logits.push(logits.clone());
        if i < steps {
            logits = pollster::block_on(model.logits(ctx, &[id], 250 + i, Logits::Last)).unwrap();
        }
    }

    // Pipelined: up to 3 steps in flight, ids stay on the GPU between steps.
    model.submit_prompt(ctx, &prompt, 0, Readback::Id).unwrap();
    let mut got = vec![pollster::block_on(model.read_id(ctx)).unwrap()];
    let mut submitted = 0;
    for j in 0..steps {
        while submitted < (j + 3).min(steps) {
            model.submit_decode(ctx, 250 + submitted, None, Readback::Id).unwrap();
            submitted += 1;
        }
        got.push(pollster::block_on(model.read_id(ctx)).unwrap());
    }
    assert_eq!(got, want_ids, "pipelined greedy ids vs the per-call path");

    // Steady state: the plan for positions < 256 exists now.
    model.submit_prompt(ctx, &prompt, 0, Readback::Id).unwrap();
    pollster::block_on(model.read_id(ctx)).unwrap();
    let before = ctx.counters();
    for pos in 250..256 {
        model.submit_decode(ctx, pos, None, Readback::Id).unwrap();
        pollster::block_on(model.read_id(ctx)).unwrap();
    }
    let d = ctx.counters().since(&before);
    assert_eq!((d.buffers_created, d.bind_groups_created, d.pipelines_created), (0, 0, 0), "{d:?}");
    assert_eq!((d.submits, d.bytes_read_back, d.bytes_written), (6, 6 * 4, 6 * 16), "{d:?}");
    // Per layer: stacked q|k|v (its RMSNorm folded in), RoPE + KV write, attention, o, stacked
    // gate|up with the norm and SwiGLU folded in, down; then embedding, lm_head (final norm
    // folded in), argmax (vocab ≤ 2048: one pass). CPU-emulated GPUs keep the 3 norm kernels.
    // With int8 activations, act_q8 before each of the 4 projection inputs and the lm_head
    // (it does the norms).
    let (per_layer, last) = match (ctx.caps.int8_dot, ctx.caps.row_gemv) {
        (true, _) => (4, 1),
        (false, true) => (2, 1),
        (false, false) => (0, 0),
    };
    assert_eq!(d.dispatches, 6 * ((6 + per_layer) * cfg.n_layers as u64 + 3 + last), "{d:?}");

    // Tokens from the CPU (sampling), the logits row back.
    model.submit_prompt(ctx, &prompt, 0, Readback::Logits).unwrap();
    assert_eq!(pollster::block_on(model.read_logits(ctx)).unwrap(), want_logits[0]);
    for i in 0..steps {
        model.submit_decode(ctx, 250 + i, Some(want_ids[i as usize]), Readback::Logits).unwrap();
        let row = pollster::block_on(model.read_logits(ctx)).unwrap();
        assert_eq!(row, want_logits[i as usize + 1], "logits after step {i}");
    }

    // Bad input is an error and leaves the model usable.
    assert!(model.submit_decode(ctx, 300, None, Readback::Id).is_err(), "past the context");
    assert!(model.submit_decode(ctx, 10, Some(cfg.vocab), Readback::Id).is_err(), "id ≥ vocab");
    model.submit_decode(ctx, 250, Some(want_ids[0]), Readback::Id).unwrap();
    assert_eq!(pollster::block_on(model.read_id(ctx)).unwrap(), want_ids[1]);
}

/// llama.cpp's Q4_K_M keeps attn_v in Q6_K in some layers: q and k (Q4) are stacked into one
/// matrix and v stays apart (two projection dispatches), and the logits still match the f64
/// reference on the dequantized weights, prefill and decode.
#[test]
fn mixed_format_qkv_stacks_what_it_can() {
    struct VInQ8(CpuTensors);
    impl webgpu_llm::model::TensorSource for VInQ8 {
        fn matrix(
            &mut self,
            ctx: &webgpu_llm::Context,
            name: &str,
        ) -> Result<webgpu_llm::ops::matmul::QuantMatrix, webgpu_llm::model::ModelError> {
            if !name.contains("v_proj") {
                return self.0.matrix(ctx, name);
            }
            let (shape, data) = self.0.tensors.remove(name).unwrap();
            let packed = quantize(WeightFormat::Q8, &data, shape[0], shape[1]).unwrap();
            Ok(webgpu_llm::ops::matmul::QuantMatrix::upload(ctx, name, &packed)?)
        }
        fn vector(
            &mut self,
            ctx: &webgpu_llm::Context,
            name: &str,
            len: u32,
        ) -> Result<wgpu::Buffer, webgpu_llm::model::ModelError> {
            self.0.vector(ctx, name, len)
        }
    }
    let ctx = ctx();
    let mut rng = Rng::new(seed("mixed qkv"));
    let cfg = Config::from_hf(&config("qwen2")).unwrap(); // q/k/v biases too
    let tensors = random_tensors(&cfg, &mut rng);
    let format = |name: &str| if name.contains("v_proj") { WeightFormat::Q8 } else { QuantPolicy::Q4.format_for(name) };
    let held = as_held_by(&tensors, format);
    let opts = StateOptions { context: CONTEXT, max_batch: 8, kv_dtype: KvDtype::F32, all_logits: true };
    let mut src = VInQ8(CpuTensors { tensors, policy: QuantPolicy::Q4 });
    let mut model = Model::new(ctx, cfg.clone(), &mut src, opts).unwrap();
    let Mixer::Attention(a) = &model.weights.layers[0].mixer else { panic!("an attention layer") };
    let cols: Vec<u32> = a.qkv.parts.iter().map(|(_, c)| *c).collect();
    assert_eq!(cols, vec![0, cfg.q_dim() + cfg.kv_dim()], "q|k stacked, v apart");

    let tokens: Vec<u32> = (0..7).map(|_| rng.below(cfg.vocab as u64) as u32).collect();
    let inv = cfg.rope.inv_freq(CONTEXT).unwrap();
    let want = transformer(&cfg, &held, &tokens, &inv, cfg.rope.attention_factor());
    let vocab = cfg.vocab as usize;
    let got = pollster::block_on(model.logits(ctx, &tokens, 0, Logits::All)).unwrap();
    assert_close("mixed qkv: prefill logits", &got, &want, ATOL, RTOL);
    model.submit_prompt(ctx, &tokens[..6], 0, Readback::Logits).unwrap();
    pollster::block_on(model.read_logits(ctx)).unwrap();
    model.submit_decode(ctx, 6, Some(tokens[6]), Readback::Logits).unwrap();
    let step = pollster::block_on(model.read_logits(ctx)).unwrap();
    assert_decode_close(ctx, "mixed qkv: decode logits", &step, &want[6 * vocab..], (ATOL, RTOL), 0.0);
}
