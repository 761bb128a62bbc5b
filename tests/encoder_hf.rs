//! The encoders against Hugging Face transformers on two tiny random-weight models
//! (tests/fixtures/encoders, made by tests/reference/make_encoder_fixtures.py): a `BertModel` and a
//! nomic-bert (rotary positions, fused bias-free Wqkv, SwiGLU with fc12 as the gate), both with a
//! cut-down all-MiniLM WordPiece tokenizer. Weights are regenerated from the seed (the decoder
//! fixtures' recipe), written as a Hugging Face directory under the checkpoint's own tensor names
//! and config keys, converted by `convert` and loaded like any package.
//!
//! - f16 package: the fixture's weights are f16 values, so it is exact. Every real token's final
//!   hidden state, of every case encoded in one padded batch, within 1e-4 of transformers' float32;
//!   the pooled vectors (mean → normalised, and CLS) the same. The states are O(1) (the final
//!   LayerNorm's gains are 1 ± 0.1); our f32 kernels differ from torch's only in summation order
//!   (~1e-6 relative per op) and expected.json keeps 7 significant digits, so 1e-4 is ~20× what is
//!   measured, while a wrong rotation layout or gate order moves states by 0.1 to 1.
//! - one at a time equals the batch (padding and batch mates change nothing) to 1e-6.
//! - nomic's 86-token case is longer than its `max_trained_positions` (32): rotary positions go on.
//! - the `Embedder` (open_embedder) gives the reference's token ids and normalised means.
//! - Q8 package (lossy, 8-bit weights), and `--quant q4`, which keeps an encoder's matrices Q8 (4-bit
//!   weights gave the tiny nomic 0.987): pooled cosine ≥ 0.999.

mod common;
use common::fixture::json_floats as floats;
use common::fixture::{sha256_hex, Fixture};
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use webgpu_llm::embed::{open_embedder, EmbedOptions, Pooling};
use webgpu_llm::loader::convert::{convert, ConvertOptions};
use webgpu_llm::loader::{Package, Quant};
use webgpu_llm::model::encoder::{encode, EncoderConfig, EncoderState, EncoderWeights, FeedForward, Positions};
use webgpu_llm::quant::WeightFormat;

const ATOL: f64 = 1e-4;

/// `name` converted with `quant`, once per test process (tests run in parallel: one conversion at a time).
fn package(name: &str, quant: Quant) -> PathBuf {
    static DONE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("encoder-{name}-{quant:?}"));
    let (hf, pkg) = (base.join("hf"), base.join("pkg"));
    if done.contains(&pkg) {
        return pkg;
    }
    std::fs::remove_dir_all(&base).ok();
    let f = Fixture::encoder(name);
    // the regenerated weights are the ones the reference ran
    for (s, (n, _, v)) in f.tensor_specs().iter().zip(f.weights()) {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
        assert_eq!(sha256_hex(&bytes), s.sha256, "{name}/{n}: regenerated weights differ");
    }
    f.write_hf_dir(&hf);
    convert(&hf, &pkg, ConvertOptions { quant, shard_mb: 8 }).unwrap();
    done.push(pkg.clone());
    pkg
}

fn ids(c: &Value) -> Vec<u32> {
    c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, y)| (x as f64 - y).abs()).fold(0.0, f64::max)
}

/// A package's encoder, loaded directly (not through the Embedder), to read every token's state.
struct Encoder {
    cfg: EncoderConfig,
    w: EncoderWeights,
    s: EncoderState,
}

impl Encoder {
    fn open(pkg: &Path) -> Encoder {
        let package = Package::open(pkg).unwrap();
        let mut tensors = package.load(ctx()).unwrap();
        let cfg = EncoderConfig::from_hf(&package.manifest.architecture).unwrap();
        let w = EncoderWeights::load(ctx(), &cfg, &mut tensors, "").unwrap();
        let s = EncoderState::new(ctx(), &cfg, 1024).unwrap();
        Encoder { cfg, w, s }
    }

    /// (final hidden states [batch · seq, hidden], pooled [batch, hidden]) of `seqs` in one pass.
    fn run(&self, seqs: &[Vec<u32>], pooling: Pooling) -> (Vec<f32>, Vec<f32>, u32) {
        let shape = self.s.write_batch(ctx(), &self.cfg, seqs).unwrap();
        let h = self.cfg.hidden;
        let k = encode(ctx(), &self.cfg, &self.w, &self.s, shape, pooling, h, pooling == Pooling::Mean).unwrap();
        ctx().run(&k.iter().collect::<Vec<_>>());
        let (batch, seq) = shape;
        let hidden = read_f32(ctx(), self.s.hidden(), (batch * seq * h) as usize);
        let pooled = read_f32(ctx(), &self.s.out, (batch * h) as usize);
        (hidden, pooled, seq)
    }
}

/// Every case in one padded batch vs transformers, then each alone vs the batch; returns the worst
/// hidden-state error.
fn check_exact(name: &str) -> f64 {
    let f = Fixture::encoder(name);
    let cases = f.expected["cases"].as_array().unwrap().clone();
    let enc = Encoder::open(&package(name, Quant::F16));
    let h = enc.cfg.hidden as usize;
    let seqs: Vec<Vec<u32>> = cases.iter().map(ids).collect();
    let (hidden, mean, seq) = enc.run(&seqs, Pooling::Mean);
    let (_, cls, _) = enc.run(&seqs, Pooling::Cls);
    let mut worst: f64 = 0.0;
    for (b, c) in cases.iter().enumerate() {
        let what = format!("{name} {:?}", c["text"]);
        for (t, row) in c["hidden"].as_array().unwrap().iter().enumerate() {
            let at = (b * seq as usize + t) * h;
            let d = max_diff(&hidden[at..at + h], &floats(row));
            assert!(d <= ATOL, "{what}: token {t}'s hidden state is off by {d}");
            worst = worst.max(d);
        }
        let d = max_diff(&mean[b * h..(b + 1) * h], &floats(&c["embedding"]));
        assert!(d <= ATOL, "{what}: normalised mean off by {d}");
        let d = max_diff(&cls[b * h..(b + 1) * h], &floats(&c["cls"]));
        assert!(d <= ATOL, "{what}: CLS off by {d}");
    }
    // one at a time: padding and batch mates change nothing
    for (b, s) in seqs.iter().enumerate() {
        let (one, _, _) = enc.run(std::slice::from_ref(s), Pooling::Mean);
        let at = b * seq as usize * h;
        let alone: Vec<f64> = one.iter().map(|&x| x as f64).collect();
        let d = max_diff(&hidden[at..at + s.len() * h], &alone);
        assert!(d <= 1e-6, "{name} case {b}: batched vs alone differ by {d}");
    }
    eprintln!("{name}: {} cases (padded to {seq}), worst |hidden - transformers| {worst:.2e}", cases.len());
    worst
}

#[test]
fn bert_tiny_matches_transformers() {
    let f = Fixture::encoder("bert");
    let cfg = EncoderConfig::from_hf(&f.config).unwrap();
    assert_eq!((cfg.positions, cfg.feed_forward, cfg.attn_bias), (Positions::Absolute, FeedForward::Gelu, true));
    check_exact("bert");
}

#[test]
fn nomic_tiny_matches_transformers() {
    let f = Fixture::encoder("nomic");
    let cfg = EncoderConfig::from_hf(&f.config).unwrap();
    assert_eq!(cfg.positions, Positions::Rotary { base: 1000.0, rotary_dim: 16, interleaved: false });
    assert_eq!((cfg.feed_forward, cfg.attn_bias, cfg.ffn_bias), (FeedForward::SwiGlu, false, (false, false)));
    assert_eq!(cfg.ffn, 256, "n_inner 200 rounded up to a multiple of 256, as NomciBertGatedMLP does");
    let longest = f.expected["cases"].as_array().unwrap().iter().map(|c| ids(c).len()).max().unwrap();
    assert!(longest as u64 > f.expected["max_trained_positions"].as_u64().unwrap(), "a case past the training length");
    check_exact("nomic");
}

/// Through `open_embedder`: the tokenizer, the settings (no sentence-transformers files: mean,
/// normalised) and the length-sorted batching give the reference's ids and vectors.
#[test]
fn encoder_fixtures_through_the_embedder() {
    for name in ["bert", "nomic"] {
        let f = Fixture::encoder(name);
        let cases = f.expected["cases"].as_array().unwrap();
        let e = open_embedder(ctx(), &package(name, Quant::F16), 256).unwrap();
        let texts: Vec<String> = cases.iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
        let got = pollster::block_on(e.embed(ctx(), &texts, &EmbedOptions::default())).unwrap();
        assert_eq!((got.pooling, got.normalize), (Pooling::Mean, true));
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(got.ids[i], ids(c), "{name}: ids of {:?}", c["text"]);
            let d = max_diff(&got.embeddings[i], &floats(&c["embedding"]));
            assert!(d <= ATOL, "{name} {:?}: off by {d}", c["text"]);
        }
        // Matryoshka: the first 32 values, renormalised
        let cut = pollster::block_on(e.embed(
            ctx(),
            &texts[..2],
            &EmbedOptions { dimensions: Some(32), ..Default::default() },
        ))
        .unwrap();
        for (i, c) in cases.iter().take(2).enumerate() {
            assert!(cosine(&cut.embeddings[i], &floats(&c["mean"])[..32]) > 0.99999, "{name}: dimensions 32");
        }
    }
}

#[test]
fn encoder_fixtures_quantized_packages() {
    for (name, quant) in [("bert", Quant::Q8), ("nomic", Quant::Q8), ("nomic", Quant::Q4)] {
        let f = Fixture::encoder(name);
        let cases = f.expected["cases"].as_array().unwrap();
        let pkg = package(name, quant);
        // `--quant q4` keeps an encoder's matrices Q8 (convert's choose_format)
        let manifest = Package::open(&pkg).unwrap().manifest;
        let formats: Vec<WeightFormat> =
            manifest.tensors.iter().filter(|t| t.shape.len() == 2).map(|t| t.format).collect();
        assert!(formats.iter().all(|&f| f == WeightFormat::Q8), "{name} {quant:?}: {formats:?}");
        let enc = Encoder::open(&pkg);
        let seqs: Vec<Vec<u32>> = cases.iter().map(ids).collect();
        let (_, mean, _) = enc.run(&seqs, Pooling::Mean);
        let h = enc.cfg.hidden as usize;
        let worst = cases
            .iter()
            .enumerate()
            .map(|(b, c)| cosine(&mean[b * h..(b + 1) * h], &floats(&c["embedding"])))
            .fold(1.0, f64::min);
        eprintln!("{name} {quant:?}: worst cosine {worst:.6}");
        assert!(worst >= 0.999, "{name} {quant:?}: cosine {worst}");
    }
}

/// nomic-ai's config variants: what the encoder takes, and what it refuses by name.
#[test]
fn nomic_configs() {
    let base = Fixture::encoder("nomic").config;
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        EncoderConfig::from_hf(&c)
    };
    assert!(EncoderConfig::is_encoder(&base));
    for (k, v) in [
        ("prenorm", json!(true)),
        ("rotary_scaling_factor", json!(2.0)),
        ("rotary_emb_scale_base", json!(512)),
        ("use_rms_norm", json!(true)),
        ("causal", json!(true)),
        ("activation_function", json!("geglu")),
        ("num_heads_kv", json!(2)),
        ("rotary_emb_fraction", json!(0.3)),
    ] {
        let err = with(k, v.clone()).expect_err(k).to_string();
        assert!(err.contains(k), "{k} = {v}: {err}");
    }
    let c = with("rotary_emb_interleaved", json!(true)).unwrap();
    assert!(matches!(c.positions, Positions::Rotary { interleaved: true, .. }));
    assert_eq!(with("rotary_emb_fraction", json!(0.5)).unwrap().rope().unwrap().rotary_dim, 8);
    assert_eq!(with("rotary_emb_fraction", json!(0.0)).unwrap().positions, Positions::Absolute);
    assert_eq!(with("pad_vocab_size_multiple", json!(64)).unwrap().vocab, 3963_u32.div_ceil(64) * 64);
    assert_eq!(with("n_inner", Value::Null).unwrap().ffn, 256, "8/3 · 64 = 170, rounded up to 256");
    let gelu = with("activation_function", json!("gelu")).unwrap();
    assert_eq!((gelu.feed_forward, gelu.ffn), (FeedForward::Gelu, 200));
    assert!(with("n_embd", Value::Null).is_err());
}
