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
use webgpu_llm::engine::{open_package, Engine, GenerateOptions, OpenOptions};
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
/// LongRoPE picks its factors from it, as transformers does per forward pass).
fn all_logits(engine: &mut Engine, tokens: &[u32]) -> Vec<f32> {
    let opts = StateOptions { context: tokens.len() as u32, max_batch: 32, kv_dtype: KvDtype::F32 };
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
        let opts = StateOptions { context: (prompt.len() + cont.len()) as u32, max_batch: 32, kv_dtype: KvDtype::F32 };
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
    // (d) chat templates
    for conv in exp["chat"]["conversations"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(conv["messages"].clone()).unwrap();
        assert_eq!(engine.render_chat(&messages).unwrap(), conv["text"].as_str().unwrap(), "{name}: chat");
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

/// SmolLM3: layer 1 of the fixture's two skips RoPE (`no_rope_layers` [1, 0]).
#[test]
fn smollm3_matches_transformers() {
    check_fixture("smollm3");
}
