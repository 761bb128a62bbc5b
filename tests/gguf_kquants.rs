//! GGUFs in the types llama.cpp's quantizer writes for Q4_K_M, Q5_K_M, Q6_K and Q5_1
//! (tests/fixtures/kquant/*.gguf: tiny random llama-arch models, 2 layers, hidden 256, FFN 512,
//! 4/2 heads, the 288-token vocabulary of tests/fixtures/gguf/tok-gpt2-smollm.gguf), against what
//! llama.cpp did with them and against an exact f64 forward of their dequantized weights, both
//! recorded in tests/fixtures/kquant/llamacpp.json by tests/reference/make_kquant_fixtures.py.
//!
//! Type mix (llama.cpp's choice, recorded per file in `tensor_types` and checked here): norms F32;
//! - tiny-q4_k_m: Q4_K, with output.weight and layer 1's attn_v / ffn_down in Q6_K (untied);
//! - tiny-q5_k_m: Q5_K, the same three in Q6_K (untied);
//! - tiny-q6_k: Q6_K throughout, tied (no output.weight: the classifier is token_embd.weight);
//! - tiny-q5_1: Q5_1, output.weight in Q6_K (untied).
//!
//! Dequantization: for 2-3 tensors of each of Q4_K/Q5_K/Q6_K/Q5_1 per file (the embedding or
//! classifier, ffn_down whose 512-long rows hold two super-blocks, a 128-row attn_k), `read_matrix`
//! then `quant::dequantize` must give gguf-py's `gguf.quants.dequantize` values bit for bit (sha256
//! of the little-endian f32 bytes, and the first 64 values). The generator checked that gguf-py's
//! values equal ggml's own `to_float` bit for bit, so this is llama.cpp's dequantization.
//!
//! Margins and tolerances:
//! - Exact reference (`prompts[].exact`, logits to 7 significant digits): our f32 kernels on the
//!   GGUF's own values differ from f64 only by f32 rounding through 2 layers. The logits are large
//!   here (the models are built to be decisive: top-10 logits up to ~170, median ~40), so f32
//!   rounding is ~1e-4 absolute (ulp(128) = 1.5e-5, sums of 256-512 terms). Measured on lavapipe:
//!   at most 1.5e-4 over every top-10 logit of all four files; EXACT_ATOL = 2e-3 leaves 13× margin
//!   and is still ~200× below llama.cpp's own deviation (0.33-0.53 rms). The worst error is printed.
//! - llama.cpp quantizes the activations to 8 bits for its dot products (Q8_K blocks of 256 for
//!   K-quant weights, Q8_1 blocks of 32 for Q5_1) and keeps K/V in f16. On these models that moves
//!   its logits by 0.33-0.53 rms, up to 1.2-2.2 on a top-10 logit, 2.7 anywhere
//!   (models[].agreement.llamacpp_vs_exact). So against llama.cpp:
//!   - prompt ids must be equal;
//!   - teacher-forced top-1 must be equal wherever llama.cpp's top-2 margin is ≥ LLAMACPP_MARGIN:
//!     the exact forward's argmax differs from llama.cpp's on 4 of 920 rows, where llama.cpp's
//!     margin is at most 1.59 (agreement.argmax_differs_max_llamacpp_margin); 2.0 clears that, and
//!     llama.cpp's margin is ≥ 2.0 on 878 of the 920 rows (median margin 24-49), so the check
//!     covers nearly every row;
//!   - our top-5 must share at least 3 ids with llama.cpp's top-5 at every row (exact: ≥ 4);
//!   - free-running greedy output must equal llama.cpp's up to the first step where llama.cpp's
//!     margin is below LLAMACPP_MARGIN (the exact forward's greedy equals llama.cpp's on all 12
//!     prompts), and the exact forward's own greedy run (`exact.greedy`) up to the first step whose
//!     exact margin is below EXACT_GREEDY_MARGIN (smallest recorded: 0.26; our f32 error is ≪ 0.05).
//!
//! Until the Q4_K/Q5_K/Q6_K/Q5_1 kernels exist these fail with `UnsupportedType`.

mod common;
use common::fixture::{f32_bytes_sha, json_ids, sha256_hex, top_k};
use serde_json::Value;
use std::path::PathBuf;
use webgpu_llm::engine::{open_gguf, GenerateOptions, OpenOptions};
use webgpu_llm::loader::gguf::{open, read_matrix};
use webgpu_llm::model::Logits;
use webgpu_llm::ops::attention::KvDtype;
use webgpu_llm::quant::dequantize;

const EXACT_ATOL: f64 = 2e-3;
const LLAMACPP_MARGIN: f64 = 2.0;
const EXACT_GREEDY_MARGIN: f64 = 0.05;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kquant")
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(dir().join("llamacpp.json")).expect("tests/fixtures/kquant/llamacpp.json");
    serde_json::from_str(&text).unwrap()
}

fn model(fx: &Value, file: &str) -> Value {
    let m = fx["models"].as_array().unwrap().iter().find(|m| m["file"] == file);
    m.unwrap_or_else(|| panic!("{file} is not in llamacpp.json")).clone()
}

/// The file's tensor types are those recorded, and the recorded tensors dequantize bit-exactly.
fn check_dequant(file: &str) {
    let m = model(&fixture(), file);
    let path = dir().join(file);
    assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), m["sha256"].as_str().unwrap(), "{file}: sha256");
    let (gguf, mut src) = open(&path).unwrap();
    let want_types = m["tensor_types"].as_object().unwrap();
    assert_eq!(gguf.tensors.len(), want_types.len(), "{file}: tensor count");
    for t in &gguf.tensors {
        let want = want_types.get(&t.name).unwrap_or_else(|| panic!("{file}: {} not recorded", t.name));
        assert_eq!(format!("{:?}", t.ty), want.as_str().unwrap(), "{file}: type of {}", t.name);
    }
    for d in m["dequant"].as_array().unwrap() {
        let name = d["name"].as_str().unwrap();
        let dims: Vec<u64> = d["dims"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(gguf.tensor(name).unwrap().dims, dims, "{file} {name}: dims");
        let packed = read_matrix(&gguf, &mut src, name).unwrap_or_else(|e| panic!("{file} {name}: {e}"));
        let got = dequantize(&packed).unwrap_or_else(|e| panic!("{file} {name}: {e}"));
        assert_eq!(got.len() as u64, dims[0] * dims[1], "{file} {name}: length");
        let head: Vec<f32> = d["head"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        for (i, (a, b)) in got.iter().zip(&head).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{file} {name} ({}): value {i} is {a}, gguf-py {b}", d["type"]);
        }
        assert_eq!(f32_bytes_sha(&got), d["sha256"].as_str().unwrap(), "{file} {name} ({}): sha256", d["type"]);
    }
}

/// The model through `open_gguf` against llama.cpp and the exact reference (see the module docs).
fn check_model(file: &str) {
    let m = model(&fixture(), file);
    let ctx = common::ctx();
    std::fs::create_dir_all("/tmp/webgpu-llm-xdg").ok();
    let opts = OpenOptions { context: Some(128), kv_dtype: KvDtype::F32, max_batch: 128 };
    let mut engine = open_gguf(ctx, &dir().join(file), opts).unwrap_or_else(|e| panic!("{file}: {e}"));
    // every row's logits (an engine's state holds the last row's only)
    let all = webgpu_llm::model::StateOptions { all_logits: true, ..engine.model.state.opts };
    engine.model.state = webgpu_llm::model::State::new(ctx, &engine.model.config, all).unwrap();
    assert_eq!(engine.model.config.tied_embeddings, m["tied"].as_bool().unwrap(), "{file}: tied");
    let vocab = engine.model.config.vocab as usize;
    let mut worst_exact = 0.0f64;
    for p in m["prompts"].as_array().unwrap() {
        let name = format!("{file} {}", p["name"].as_str().unwrap());
        let (prompt, cont) = (json_ids(&p["ids"]), json_ids(&p["continuation"]));
        assert_eq!(engine.encode(p["text"].as_str().unwrap(), false).unwrap(), prompt, "{name}: prompt ids");

        // teacher-forced rows: ids + continuation[:-1]
        let tokens: Vec<u32> = prompt.iter().chain(&cont[..cont.len() - 1]).copied().collect();
        engine.reset();
        let got = pollster::block_on(engine.model.logits(ctx, &tokens, 0, Logits::All)).unwrap();
        assert_eq!(got.len(), tokens.len() * vocab, "{name}: logits");
        let exact = &p["exact"];
        for r in 0..tokens.len() {
            let row = &got[r * vocab..(r + 1) * vocab];
            for (id, want) in json_ids(&exact["top_ids"][r]).iter().zip(exact["top_logits"][r].as_array().unwrap()) {
                let err = (row[*id as usize] as f64 - want.as_f64().unwrap()).abs();
                worst_exact = worst_exact.max(err);
                assert!(err <= EXACT_ATOL, "{name} row {r}: logit of {id} off by {err:.4} from the exact reference");
            }
            let (ours, theirs) = (top_k(row, 5), json_ids(&p["top_ids"][r]));
            let margin = p["margins"][r].as_f64().unwrap();
            if margin >= LLAMACPP_MARGIN {
                assert_eq!(ours[0], theirs[0], "{name} row {r}: top-1 vs llama.cpp (its margin {margin:.3})");
            }
            let shared = ours.iter().filter(|id| theirs[..5].contains(id)).count();
            assert!(shared >= 3, "{name} row {r}: top-5 {ours:?} shares {shared} with llama.cpp's {:?}", &theirs[..5]);
        }

        // free-running greedy (EOG never wins in these models: llama.cpp ran the full length)
        assert!(!p["stopped_at_eog"].as_bool().unwrap(), "{name}: fixture stopped at EOG");
        engine.reset();
        let saved_stops = std::mem::take(&mut engine.stop_ids);
        let gen = GenerateOptions { max_tokens: cont.len() as u32, ..Default::default() };
        let summary = pollster::block_on(engine.generate(ctx, &prompt, &gen, &mut |_| true)).unwrap();
        engine.stop_ids = saved_stops;
        assert_eq!(summary.generated.len(), cont.len(), "{name}: generated length");
        // against the exact forward's own greedy run, up to its first near-tie (with int8
        // activations in decode, a tie within their rounding: llama.cpp's margin)
        let greedy_margin = if ctx.caps.int8_dot { LLAMACPP_MARGIN } else { EXACT_GREEDY_MARGIN };
        let (ex_greedy, ex_margins) = (json_ids(&exact["greedy"]), exact["greedy_margins"].as_array().unwrap());
        for (j, (&a, &b)) in summary.generated.iter().zip(&ex_greedy).enumerate() {
            let margin = ex_margins[j].as_f64().unwrap();
            if margin < greedy_margin {
                break;
            }
            assert_eq!(a, b, "{name}: greedy step {j} vs the exact forward's (its margin {margin:.3})");
        }
        // against llama.cpp's, up to its first near-tie
        let row0 = prompt.len() - 1;
        for (j, (&a, &b)) in summary.generated.iter().zip(&cont).enumerate() {
            if a == b {
                continue;
            }
            let margin = p["margins"][row0 + j].as_f64().unwrap();
            assert!(
                margin < LLAMACPP_MARGIN,
                "{name}: greedy step {j} gave {a}, llama.cpp {b}, at a margin of {margin:.3} (not a near-tie)"
            );
            eprintln!("{name}: greedy parts from llama.cpp at step {j}, a near-tie (margin {margin:.3})");
            break;
        }
        eprintln!("{name}: {:?}", summary.text);
    }
    eprintln!("{file}: largest |logit − exact| over all top-10s: {worst_exact:.5}");
}

#[test]
fn q4_k_m_dequantizes_like_ggml() {
    check_dequant("tiny-q4_k_m.gguf");
}

#[test]
fn q5_k_m_dequantizes_like_ggml() {
    check_dequant("tiny-q5_k_m.gguf");
}

#[test]
fn q6_k_dequantizes_like_ggml() {
    check_dequant("tiny-q6_k.gguf");
}

#[test]
fn q5_1_dequantizes_like_ggml() {
    check_dequant("tiny-q5_1.gguf");
}

#[test]
fn q4_k_m_matches_llama_cpp() {
    check_model("tiny-q4_k_m.gguf");
}

#[test]
fn q5_k_m_matches_llama_cpp() {
    check_model("tiny-q5_k_m.gguf");
}

#[test]
fn q6_k_tied_matches_llama_cpp() {
    check_model("tiny-q6_k.gguf");
}

#[test]
fn q5_1_matches_llama_cpp() {
    check_model("tiny-q5_1.gguf");
}

/// Every type the fixtures are for is present somewhere (a llama.cpp upgrade could change its mix).
#[test]
fn fixtures_cover_every_new_type() {
    let fx = fixture();
    for ty in ["Q4_K", "Q5_K", "Q6_K", "Q5_1"] {
        let files: Vec<&str> = fx["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type_counts"].get(ty).is_some())
            .map(|m| m["file"].as_str().unwrap())
            .collect();
        let checked = fx["models"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["dequant"].as_array().unwrap())
            .any(|d| d["type"] == ty);
        assert!(!files.is_empty() && checked, "no {ty} tensor in the fixtures");
    }
}

/// Decode (one token per step) may take other kernels than the teacher-forced prefill above: on
/// adapters with integer dot products its GEMVs read x as int8 blocks (ops::act_q8), as llama.cpp's
/// do. Its logits over the fixture's rows, fed the same tokens, stay within INT8_DECODE_RTOL of the
/// exact forward's (relative to the row's largest top-10 logit; f32 x: within EXACT_ATOL).
/// Each block of x rounds to 1/254 of its largest |x| per projection, ~0.2% per layer in these
/// random models whose logits reach ±100, compounding over layers and steps; measured ≤ 1.7%
/// (Q6_K). A wrong scale, offset or element moves logits by their own size.
const INT8_DECODE_RTOL: f64 = 0.03;

#[test]
fn decode_logits_match_the_exact_forward() {
    for file in ["tiny-q5_1.gguf", "tiny-q4_k_m.gguf", "tiny-q5_k_m.gguf", "tiny-q6_k.gguf"] {
        let m = model(&fixture(), file);
        let ctx = common::ctx();
        let opts = OpenOptions { context: Some(128), kv_dtype: KvDtype::F32, max_batch: 128 };
        let mut engine = open_gguf(ctx, &dir().join(file), opts).unwrap();
        let mut worst = 0.0f64;
        for p in m["prompts"].as_array().unwrap() {
            let (prompt, cont) = (json_ids(&p["ids"]), json_ids(&p["continuation"]));
            let tokens: Vec<u32> = prompt.iter().chain(&cont[..cont.len() - 1]).copied().collect();
            engine.reset();
            let exact = &p["exact"];
            for r in prompt.len() - 1..tokens.len() {
                let row = if r == prompt.len() - 1 {
                    pollster::block_on(engine.model.logits(ctx, &tokens[..=r], 0, Logits::Last)).unwrap()
                } else {
                    pollster::block_on(engine.model.logits(ctx, &tokens[r..=r], r as u32, Logits::Last)).unwrap()
                };
                let wants: Vec<f64> =
                    exact["top_logits"][r].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                let scale = wants.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                let tol = if ctx.caps.int8_dot { INT8_DECODE_RTOL * scale } else { EXACT_ATOL };
                for (id, want) in json_ids(&exact["top_ids"][r]).iter().zip(&wants) {
                    let err = (row[*id as usize] as f64 - want).abs();
                    worst = worst.max(err / scale);
                    assert!(err <= tol, "{file} row {r}: decode logit of {id} off by {err:.4} (tolerance {tol:.4})");
                }
            }
        }
        eprintln!("{file}: decode logits within {:.3}% of the row's largest", 100.0 * worst);
    }
}
