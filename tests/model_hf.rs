//! The whole engine against Hugging Face transformers (tests/fixtures, made by
//! tests/reference/make_fixtures.py): each fixture's weights are regenerated, written as a HF
//! directory, converted by our `convert` (f16: exact; q4: our default 4-bit package) and loaded
//! like any model. Then:
//! (a) f16 package: logits at every prompt position and 15 teacher-forced continuation steps equal
//!     transformers' float32 logits (the 40 top ids and 128 probe ids per row), and free-running
//!     greedy generation reproduces transformers' 16-token continuation;
//! (b) q4 package: the same rows equal transformers run on the *dequantized* weights, and the
//!     argmax agrees wherever the reference's top-2 margin exceeds ARGMAX_MARGIN;
//! (c) tokenization of awkward strings equals the HF tokenizer's;
//! (d) rendered chat prompts equal `apply_chat_template`.
//!
//! Tolerance: logits spread over ~±3; our f32 kernels differ from torch's f32 CPU matmuls in
//! summation order only, ~1e-6 relative per op, so ~1e-5 after two layers. 1e-3 absolute is 100×
//! that and 1000× below what a wrong weight, bias or rotation does (0.1 to 10). The fixtures'
//! smallest greedy margin is 0.023, so greedy continuations must match exactly.

mod common;
use common::fixture::Fixture;
use common::*;
use serde_json::Value;
use webgpu_llm::chat::Message;
use webgpu_llm::engine::{open_package, Engine, EngineError, GenerateOptions, OpenOptions};
use webgpu_llm::loader::convert::{convert, ConvertOptions};
use webgpu_llm::loader::manifest::Quant;
use webgpu_llm::model::{Logits, State, StateOptions};
use webgpu_llm::ops::attention::KvDtype;

const ATOL: f64 = 1e-3;
const ARGMAX_MARGIN: f64 = 5e-3;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("float list").iter().map(|x| x.as_f64().expect("float")).collect()
}

/// Convert fixture `f` with `quant` into a fresh package and open it.
fn open(f: &Fixture, quant: Quant) -> Engine {
    let base = std::env::temp_dir().join(format!("webgpu-llm-hf-{}-{}-{:?}", f.name, std::process::id(), quant));
    let (hf, pkg) = (base.join("hf"), base.join("pkg"));
    f.write_hf_dir(&hf);
    convert(&hf, &pkg, ConvertOptions { quant, shard_mb: 8 }).unwrap();
    let engine = open_package(ctx(), &pkg, OpenOptions { context: Some(128), kv_dtype: KvDtype::F32, max_batch: 32 })
        .unwrap_or_else(|e| panic!("{}: {e}", f.name));
    std::fs::remove_dir_all(&base).ok();
    engine
}

/// Our logits for every row of `tokens`, with the KV cache sized to the sequence (Phi-3's
/// LongRoPE picks its factors from it, as transformers does per forward pass), prefilled in
/// chunks of 32 rows (31 where a last chunk of one row would take the decode path, whose int8
/// activations on quantized weights are checked with their own tolerance in model_forward).
fn all_logits(engine: &mut Engine, tokens: &[u32]) -> Vec<f32> {
    let max_batch = if tokens.len() % 32 == 1 { 31 } else { 32 };
    let opts = StateOptions { context: tokens.len() as u32, max_batch, kv_dtype: KvDtype::F32, all_logits: true };
    engine.model.state = State::new(ctx(), &engine.model.config, opts).unwrap();
    pollster::block_on(engine.model.logits(ctx(), tokens, 0, Logits::All)).unwrap()
}

/// Compare rows of our logits with a reference record (top ids/logits and probe ids/logits).
fn compare_rows(what: &str, got: &[f32], vocab: usize, rec: &Value, probe_ids: &[u32], argmax: Option<&Value>) {
    let tops = rec["top_ids"].as_array().unwrap();
    for (r, top) in tops.iter().enumerate() {
        let row = &got[r * vocab..(r + 1) * vocab];
        let (top_ids, top_logits) = (ids(top), floats(&rec["top_logits"][r]));
        let probe = floats(&rec["probe_logits"][r]);
        let mut sel: Vec<f32> = top_ids.iter().map(|&i| row[i as usize]).collect();
        sel.extend(probe_ids.iter().map(|&i| row[i as usize]));
        let want: Vec<f64> = top_logits.iter().chain(&probe).copied().collect();
        assert_close(&format!("{what} row {r}"), &sel, &want, ATOL, 0.0);
        if let Some(am) = argmax {
            let margin = top_logits[0] - top_logits[1];
            let best = row.iter().enumerate().fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
            if margin > ARGMAX_MARGIN {
                assert_eq!(best as u64, am[r].as_u64().unwrap(), "{what} row {r}: argmax (margin {margin:.4})");
            }
        }
    }
}

fn check_fixture(name: &str) {
    let f = Fixture::load(name);
    let exp = &f.expected;
    let probe_ids = ids(&exp["probe_ids"]);

    let mut engine = open(&f, Quant::F16);
    let vocab = engine.model.config.vocab as usize;
    for p in exp["prompts"].as_array().unwrap() {
        let pname = p["name"].as_str().unwrap();
        let (prompt, cont) = (ids(&p["ids"]), ids(&p["continuation"]));
        let tokens: Vec<u32> = prompt.iter().chain(&cont[..cont.len() - 1]).copied().collect();
        // (a) teacher-forced logits
        let got = all_logits(&mut engine, &tokens);
        compare_rows(&format!("{name}/{pname} f16"), &got, vocab, p, &probe_ids, None);
        // (a) free-running greedy
        let opts = StateOptions {
            context: (prompt.len() + cont.len()) as u32,
            max_batch: 32,
            kv_dtype: KvDtype::F32,
            all_logits: false,
        };
        engine.model.state = State::new(ctx(), &engine.model.config, opts).unwrap();
        engine.reset();
        engine.stop_ids.clear();
        let gen = GenerateOptions { max_tokens: cont.len() as u32, ..Default::default() };
        let summary = pollster::block_on(engine.generate(ctx(), &prompt, &gen, &mut |_| true)).unwrap();
        assert_eq!(summary.generated, cont, "{name}/{pname}: greedy continuation");
    }
    // (c) tokenization
    for case in exp["tokenize"]["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(engine.encode(text, false).unwrap(), ids(&case["ids"]), "{name}: tokenize {text:?}");
    }
    // (d) chat templates (and Qwen's enable_thinking=false, a template variable)
    for conv in exp["chat"]["conversations"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(conv["messages"].clone()).unwrap();
        assert_eq!(engine.render_chat(&messages).unwrap(), conv["text"].as_str().unwrap(), "{name}: chat");
    }
    if let Some(conv) = exp["chat"].get("enable_thinking_false") {
        let messages: Vec<Message> = serde_json::from_value(conv["messages"].clone()).unwrap();
        let kwargs = serde_json::json!({"enable_thinking": false}).as_object().unwrap().clone();
        let text = engine.render_chat_with(&messages, None, &kwargs).unwrap();
        assert_eq!(text, conv["text"].as_str().unwrap(), "{name}: chat with enable_thinking=false");
        let reserved = serde_json::json!({"messages": []}).as_object().unwrap().clone();
        let err = engine.render_chat_with(&messages, None, &reserved).unwrap_err();
        assert!(matches!(err, EngineError::InvalidOption { option: "chat_template_kwargs", .. }), "{err}");
    }

    // (b) q4 package vs transformers on the dequantized weights, teacher-forced
    let mut engine = open(&f, Quant::Q4);
    for (p, q) in exp["prompts"].as_array().unwrap().iter().zip(exp["q4"]["prompts"].as_array().unwrap()) {
        let (prompt, cont) = (ids(&p["ids"]), ids(&p["continuation"]));
        let tokens: Vec<u32> = prompt.iter().chain(&cont[..cont.len() - 1]).copied().collect();
        let got = all_logits(&mut engine, &tokens);
        let what = format!("{name}/{} q4", p["name"].as_str().unwrap());
        compare_rows(&what, &got, vocab, q, &probe_ids, Some(&q["argmax"]));
    }
}

#[test]
fn llama_matches_transformers() {
    check_fixture("llama");
}

#[test]
fn qwen2_matches_transformers() {
    check_fixture("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check_fixture("qwen3");
}

#[test]
fn phi3_matches_transformers() {
    check_fixture("phi3");
}

/// Phi-4-mini's shape: phi3 with partial rotary 0.75 (24 of 32 dims, 12 LongRoPE factors), tied
/// embeddings, GPT-4o's o200k tokenizer (no chat template offline).
#[test]
fn phi4mini_matches_transformers() {
    check_fixture("phi4mini");
}

/// SmolLM3: layer 3 of the fixture's four skips RoPE (`no_rope_layers` [1, 1, 1, 0]).
#[test]
fn smollm3_matches_transformers() {
    check_fixture("smollm3");
}

/// Gemma 3 (text): five sliding layers over 8 keys (prompts run well past them) and a global
/// one, the local RoPE base, (1 + w) norms, post-norms, GeGLU, q/k norms, √hidden embeddings,
/// 262k vocabulary.
#[test]
fn gemma3_matches_transformers() {
    check_fixture("gemma3");
}

/// Gemma 2: as Gemma 3 without q/k norms, with soft-capped attention scores and final logits.
#[test]
fn gemma2_matches_transformers() {
    check_fixture("gemma2");
}

/// A multimodal Gemma 3 checkpoint (the 4B+ layout): config.json wraps the text model's config in
/// `text_config`, the language model's tensors sit under `language_model.model.` (older saves) or
/// `model.language_model.` (transformers 4.52+), next to a vision tower and projector that
/// `convert` skips. The text model converts and gives transformers' logits.
#[test]
fn gemma3_multimodal_checkpoint_runs_its_text_model() {
    let f = Fixture::load("gemma3");
    let exp = &f.expected;
    let probe_ids = ids(&exp["probe_ids"]);
    for (prefix, lm_head) in
        [("language_model.model.", "language_model.lm_head.weight"), ("model.language_model.", "lm_head.weight")]
    {
        let base = std::env::temp_dir().join(format!("webgpu-llm-hf-gemma3mm-{}-{}", std::process::id(), prefix.len()));
        let (hf, pkg) = (base.join("hf"), base.join("pkg"));
        let rename = |n: &str| match n.strip_prefix("model.") {
            Some(rest) => format!("{prefix}{rest}"),
            None if n == "lm_head.weight" => lm_head.to_string(),
            None => n.to_string(),
        };
        let zeros = |n: usize| vec![half::f16::ZERO; n];
        let vision = vec![
            ("vision_tower.vision_model.embeddings.patch_embedding.weight".to_string(), vec![64, 48], zeros(64 * 48)),
            ("multi_modal_projector.mm_input_projection_weight".to_string(), vec![64, 96], zeros(64 * 96)),
        ];
        f.write_hf_dir_with(&hf, &rename, vision);
        let text = f.config.clone();
        let wrapped = serde_json::json!({
            "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
            "text_config": text, "vision_config": {"model_type": "siglip_vision_model"},
        });
        std::fs::write(hf.join("config.json"), wrapped.to_string()).unwrap();
        let report = convert(&hf, &pkg, ConvertOptions { quant: Quant::F16, shard_mb: 8 }).unwrap();
        assert!(report.notes.iter().any(|n| n.contains("2 vision tensors skipped")), "{:?}", report.notes);
        let mut engine =
            open_package(ctx(), &pkg, OpenOptions { context: Some(128), kv_dtype: KvDtype::F32, max_batch: 32 })
                .unwrap();
        std::fs::remove_dir_all(&base).ok();
        let p = &exp["prompts"][0];
        let (prompt, cont) = (ids(&p["ids"]), ids(&p["continuation"]));
        let tokens: Vec<u32> = prompt.iter().chain(&cont[..cont.len() - 1]).copied().collect();
        let got = all_logits(&mut engine, &tokens);
        let vocab = engine.model.config.vocab as usize;
        compare_rows(&format!("gemma3 multimodal ({prefix})"), &got, vocab, p, &probe_ids, None);
    }
}

/// Qwen3.5: three Gated DeltaNet layers (conv state, delta-rule state; the long prompt's 77
/// tokens prefill in chunks of 31/32 rows, the state carried) and a gated full-attention layer
/// (partial RoPE 0.25, (1 + w) q/k norms, sigmoid output gate from q_proj's interleaved rows).
#[test]
fn qwen35_matches_transformers() {
    check_fixture("qwen35");
}

/// Qwen3.5's recurrent state cannot be rewound like a KV cache: the engine saves it at the end of
/// each prompt and resumes there when the next prompt extends that one (a chat's next turn),
/// else prefills from position 0. Either way the tokens equal a fresh engine's on the same prompt.
#[test]
fn qwen35_resumes_only_a_prompt_it_extends() {
    let f = Fixture::load("qwen35");
    let exp = &f.expected;
    let mut engine = open(&f, Quant::F16);
    engine.stop_ids.clear();
    let long = ids(&exp["prompts"][2]["ids"]);
    let gen = GenerateOptions { max_tokens: 6, ..Default::default() };
    let run = |engine: &mut Engine, prompt: &[u32]| {
        pollster::block_on(engine.generate(ctx(), prompt, &gen, &mut |_| true)).unwrap()
    };
    let fresh = |prompt: &[u32]| {
        let mut e = open(&f, Quant::F16);
        e.stop_ids.clear();
        run(&mut e, prompt).generated
    };
    let first = run(&mut engine, &long[..40]);
    assert_eq!(first.reused_tokens, 0);
    // extends the saved prompt (not the generated tokens, which the state also absorbed)
    let second = run(&mut engine, &long[..60]);
    assert_eq!(second.reused_tokens, 40, "resumed at the saved prompt's end");
    assert_eq!(second.generated, fresh(&long[..60]), "resumed state gives a fresh engine's tokens");
    // shorter than the saved prompt: from position 0
    let third = run(&mut engine, &long[..30]);
    assert_eq!(third.reused_tokens, 0);
    assert_eq!(third.generated, fresh(&long[..30]));
    // the same prompt again: the saved state holds all of it, and a prompt's last token must run
    // for its logits, so only a longer prompt can resume; this one runs from 0
    let fourth = run(&mut engine, &long[..30]);
    assert_eq!(fourth.reused_tokens, 0);
    assert_eq!(fourth.generated, third.generated);
}

/// Gemma's sliding layers keep a ring of window + max_batch − 1 = 39 slots here (8 keys, steps of
/// 32 rows). A cached prefix is reused only while nothing written since overwrote the keys its
/// next query reads; otherwise the prompt runs from position 0. Either way the tokens equal a
/// fresh engine's.
#[test]
fn gemma3_reuses_a_prefix_only_while_its_ring_holds_it() {
    let f = Fixture::load("gemma3");
    let exp = &f.expected;
    let mut engine = open(&f, Quant::F16);
    assert_eq!(engine.model.state.kv_local.map(|r| r.capacity), Some(39));
    engine.stop_ids.clear();
    let long = ids(&exp["prompts"][2]["ids"]);
    assert!(long.len() >= 60, "the long prompt has {} tokens", long.len());
    let gen = GenerateOptions { max_tokens: 6, ..Default::default() };
    let run = |engine: &mut Engine, prompt: &[u32]| {
        pollster::block_on(engine.generate(ctx(), prompt, &gen, &mut |_| true)).unwrap()
    };
    let fresh = |prompt: &[u32]| {
        let mut e = open(&f, Quant::F16);
        e.stop_ids.clear();
        run(&mut e, prompt).generated
    };
    run(&mut engine, &long[..40]);
    // written up to ~50 (with pipelined steps), within 40 + 32: the keys before 40 are intact
    let second = run(&mut engine, &long[..60]);
    assert_eq!(second.reused_tokens, 40);
    assert_eq!(second.generated, fresh(&long[..60]), "a reused prefix gives a fresh engine's tokens");
    // back to 30: positions up to ~70 were written since, over the slots of 23..=29 it reads
    let third = run(&mut engine, &long[..30]);
    assert_eq!(third.reused_tokens, 0, "the ring no longer holds the prefix");
    assert_eq!(third.generated, fresh(&long[..30]));
    // the same prompt again: nothing since overwrote it (all but the last token reused)
    let fourth = run(&mut engine, &long[..30]);
    assert_eq!(fourth.reused_tokens, 29);
    assert_eq!(fourth.generated, third.generated);
}
