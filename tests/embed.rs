//! Sentence embeddings from the real all-MiniLM-L6-v2 (scripts/fetch-embedder.sh) through `convert`
//! and the GPU encoder, against sentence-transformers (tests/fixtures/minilm/expected.json, made by
//! tests/reference/make_embed_fixture.py): token ids equal, and cosine ≥ 0.9999 for the f16
//! package (f16 weights move each value by ≤ 2⁻¹¹ relative; through 6 layers that leaves cosines
//! around 0.99999). A wrong pooling, mask or layer norm gives cosines below 0.99.
//! Also: a batch equals one input at a time (padding changes nothing), the pooling/normalise
//! overrides and Matryoshka truncation against the reference's raw vectors, and typed errors for
//! empty and too-long inputs, after which the embedder still works.

mod common;
use common::fixture::json_floats as floats;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use webgpu_llm::embed::{open_embedder, EmbedOptions, Embedder, Pooling};
use webgpu_llm::engine::EngineError;
use webgpu_llm::loader::convert::{convert, ConvertOptions};
use webgpu_llm::loader::manifest::Quant;

fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(dir.join("model.safetensors").is_file(), "{} is missing: run scripts/fetch-embedder.sh", dir.display());
    dir
}

fn expected() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm/expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The package, converted once per test process (f16).
fn package() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        // under target/tmp, replaced by each run (no copy piles up)
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("minilm-f16");
        let report = convert(&model_dir(), &out, ConvertOptions { quant: Quant::F16, shard_mb: 32 }).unwrap();
        assert!(report.notes.iter().any(|n| n.contains("position_ids")), "{:?}", report.notes);
        out
    })
}

fn open(max_rows: u32) -> Embedder {
    open_embedder(ctx(), package(), max_rows).unwrap()
}

fn texts(exp: &Value) -> Vec<String> {
    exp["cases"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap().to_string()).collect()
}

fn check(e: &Embedder, exp: &Value, min_cos: f64, what: &str) {
    let cases = exp["cases"].as_array().unwrap();
    let opts = EmbedOptions { truncate: true, ..Default::default() };
    let got = pollster::block_on(e.embed(ctx(), &texts(exp), &opts)).unwrap();
    assert_eq!((got.dims, got.pooling, got.normalize), (384, Pooling::Mean, true), "{what}: settings");
    for (i, c) in cases.iter().enumerate() {
        let ids: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(got.ids[i], ids, "{what}: ids of {:?}", c["text"]);
        let cos = cosine(&got.embeddings[i], &floats(&c["embedding"]));
        assert!(cos >= min_cos, "{what}: cosine {cos} for {:?}", c["text"]);
        let norm: f32 = got.embeddings[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{what}: |v| = {norm}");
    }
    assert_eq!(got.tokens, cases.iter().map(|c| c["ids"].as_array().unwrap().len()).sum::<usize>());
}

#[test]
fn minilm_matches_sentence_transformers() {
    let exp = expected();
    assert_eq!(exp["max_seq_length"], 256);
    check(&open(4096), &exp, 0.9999, "f16");
}

/// One embedder, many requests: batching, overrides, truncation, errors.
#[test]
fn minilm_requests() {
    let exp = expected();
    let cases = exp["cases"].as_array().unwrap();
    // 300 rows per pass: the 256-token input goes alone, the others share passes
    let e = open(300);
    let all = texts(&exp);
    let run = |inputs: &[String], opts: &EmbedOptions| pollster::block_on(e.embed(ctx(), inputs, opts));
    let trunc = EmbedOptions { truncate: true, ..Default::default() };
    let batch = run(&all, &trunc).unwrap();
    assert!(batch.passes >= 2, "{} passes", batch.passes);
    // a batch equals one at a time: padding and batch mates change nothing
    for (i, text) in all.iter().enumerate().take(4) {
        let one = run(std::slice::from_ref(text), &trunc).unwrap();
        let diff = one.embeddings[0].iter().zip(&batch.embeddings[i]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-5, "{text:?}: batch vs alone differ by {diff}");
    }
    let short = &all[..3];
    // overrides against the reference's raw vectors: mean unnormalised, CLS, Matryoshka cut
    let raw = run(short, &EmbedOptions { normalize: Some(false), ..Default::default() }).unwrap();
    let cls = run(short, &EmbedOptions { pooling: Some(Pooling::Cls), normalize: Some(false), ..Default::default() })
        .unwrap();
    let cut = run(short, &EmbedOptions { dimensions: Some(64), ..Default::default() }).unwrap();
    for (i, case) in cases.iter().enumerate().take(3) {
        let mean = floats(&case["mean"]);
        let c = cosine(&raw.embeddings[i], &mean);
        assert!(c > 0.9999, "mean pooling, not normalised: cosine {c}");
        let ratio = raw.embeddings[i].iter().map(|x| x * x).sum::<f32>().sqrt() as f64
            / mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((ratio - 1.0).abs() < 1e-3, "unnormalised length ratio {ratio}");
        assert!(cosine(&cls.embeddings[i], &floats(&case["cls"])) > 0.9999, "CLS pooling");
        assert_eq!(cut.embeddings[i].len(), 64);
        assert!(cosine(&cut.embeddings[i], &mean[..64]) > 0.9999, "the first 64 dims, renormalised");
        let n: f32 = cut.embeddings[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5);
    }
    // errors name the problem, and the embedder keeps working
    let long = all.last().unwrap();
    match run(std::slice::from_ref(long), &EmbedOptions::default()) {
        Err(EngineError::InputTooLong { index: 0, tokens, max: 256 }) => assert!(tokens > 256),
        other => panic!("too long: {:?}", other.map(|r| r.dims)),
    }
    assert!(matches!(run(&[], &trunc), Err(EngineError::EmptyInput { index: None })));
    let with_empty = vec!["fine".to_string(), String::new()];
    assert!(matches!(run(&with_empty, &trunc), Err(EngineError::EmptyInput { index: Some(1) })));
    let bad = run(short, &EmbedOptions { dimensions: Some(385), ..Default::default() });
    assert!(matches!(bad, Err(EngineError::InvalidOption { option: "dimensions", .. })));
    let again = run(short, &trunc).unwrap();
    assert_eq!(again.embeddings, batch.embeddings[..3].to_vec(), "the same vectors after the errors");
}
