//! Reference fixtures from Hugging Face transformers (float32, CPU) for nine tiny random-weight
//! models, made by `tests/reference/make_fixtures.py` (see its header for every field):
//! `tests/fixtures/<name>/{config.json, weights.json, expected.json}`. No weights are committed: every
//! tensor is regenerated here from the seed, bit-identical to what the Python side fed the model.
//! Pure CPU; no GPU needed.
#![allow(dead_code)]

use half::f16;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The fixtures, by directory name.
pub const NAMES: [&str; 9] = ["llama", "qwen2", "qwen3", "phi3", "phi4mini", "smollm3", "gemma3", "gemma2", "qwen35"];

/// splitmix64's increment (2⁶⁴/φ).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

pub struct Fixture {
    pub name: String,
    /// `tests/fixtures/<name>`.
    pub dir: PathBuf,
    /// HF's config.json as transformers 4.x writes it (`rope_scaling`, `rope_theta`, …).
    pub config: Value,
    /// expected.json: `probe_ids`, `prompts` (ids, greedy `continuation`, `margins`, per-position
    /// `top_ids`/`top_logits`/`probe_logits`), `q4`, `tokenize`, `chat`.
    pub expected: Value,
    /// weights.json: `seed` and per tensor `name`, `shape`, `scale`, `offset`, `sum`, `first`,
    /// `sha256` (of the f16 bytes), `quant` ("Q4", "Q8" or null), `quant_sha256`.
    pub weights_spec: Value,
    /// `models/tokenizers/<tok>` holding tokenizer.json and tokenizer_config.json.
    pub tokenizer_dir: PathBuf,
}

/// One entry of weights.json's `tensors`.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub scale: f64,
    pub offset: f64,
    /// f64 sum of the f16 values (correctly rounded, Python's `math.fsum`).
    pub sum: f64,
    /// The first 8 values.
    pub first: Vec<f64>,
    /// sha256 of the little-endian f16 bytes, row-major.
    pub sha256: String,
    /// The converter's default format for this tensor: "Q4", "Q8", or None (kept as is).
    pub quant: Option<String>,
    /// sha256 of the quantized-then-dequantized values as little-endian f32 bytes.
    pub quant_sha256: Option<String>,
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Fixture {
    /// Load `tests/fixtures/<name>`. Panics if the fixture or the tokenizer files it names are missing.
    pub fn load(name: &str) -> Fixture {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("tests/fixtures").join(name);
        assert!(dir.is_dir(), "no fixture {name:?} in {} (known: {NAMES:?})", dir.display());
        let expected = read_json(&dir.join("expected.json"));
        let tok = expected["tokenizer"].as_str().expect("expected.json: tokenizer").to_string();
        let tokenizer_dir = root.join("models/tokenizers").join(&tok);
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            assert!(
                tokenizer_dir.join(f).is_file(),
                "fixture {name}: {} is missing: run scripts/fetch-tokenizers.sh",
                tokenizer_dir.join(f).display()
            );
        }
        Fixture {
            name: name.to_string(),
            config: read_json(&dir.join("config.json")),
            weights_spec: read_json(&dir.join("weights.json")),
            expected,
            tokenizer_dir,
            dir,
        }
    }

    /// `tests/fixtures/encoders/<name>` (tests/reference/make_encoder_fixtures.py), the tokenizer shared
    /// one level up.
    pub fn encoder(name: &str) -> Fixture {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders");
        let dir = root.join(name);
        assert!(dir.is_dir(), "no encoder fixture {name:?} in {}", root.display());
        Fixture {
            name: name.to_string(),
            config: read_json(&dir.join("config.json")),
            expected: read_json(&dir.join("expected.json")),
            weights_spec: read_json(&dir.join("weights.json")),
            tokenizer_dir: root,
            dir,
        }
    }

    /// Every fixture, in [`NAMES`] order.
    pub fn all() -> Vec<Fixture> {
        NAMES.iter().map(|n| Fixture::load(n)).collect()
    }

    pub fn seed(&self) -> u64 {
        self.weights_spec["seed"].as_u64().expect("weights.json: seed")
    }

    /// The tensors in checkpoint order (sorted by name; tied models have no `lm_head.weight`).
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        let tensors = self.weights_spec["tensors"].as_array().expect("weights.json: tensors");
        let f = |t: &Value, k: &str| t[k].as_f64().unwrap_or_else(|| panic!("weights.json: {k} in {t}"));
        let specs: Vec<TensorSpec> = tensors
            .iter()
            .map(|t| TensorSpec {
                name: t["name"].as_str().expect("weights.json: name").to_string(),
                shape: t["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().unwrap() as usize).collect(),
                scale: f(t, "scale"),
                offset: f(t, "offset"),
                sum: f(t, "sum"),
                first: t["first"].as_array().expect("first").iter().map(|v| v.as_f64().unwrap()).collect(),
                sha256: t["sha256"].as_str().expect("sha256").to_string(),
                quant: t["quant"].as_str().map(str::to_string),
                quant_sha256: t["quant_sha256"].as_str().map(str::to_string),
            })
            .collect();
        // The tensor index t is part of the recipe, so the order must be the sorted one.
        assert!(specs.windows(2).all(|w| w[0].name < w[1].name), "{}: weights.json tensors not sorted", self.name);
        specs
    }

    /// Every tensor (name, shape, row-major f16 values), regenerated from the seed.
    pub fn weights(&self) -> Vec<(String, Vec<usize>, Vec<f16>)> {
        let seed = self.seed();
        self.tensor_specs()
            .into_iter()
            .enumerate()
            .map(|(t, s)| {
                let n = s.shape.iter().product();
                let values = fixture_tensor(seed, t, n, s.scale, s.offset);
                (s.name, s.shape, values)
            })
            .collect()
    }

    /// Write a Hugging Face-style model directory to `out` (created if needed): config.json,
    /// model.safetensors (f16, the checkpoint's tensor names), tokenizer.json, tokenizer_config.json.
    pub fn write_hf_dir(&self, out: &Path) {
        self.write_hf_dir_with(out, &|name| name.to_string(), Vec::new());
    }

    /// `write_hf_dir` with the checkpoint's tensor names passed through `rename` and `extra`
    /// tensors (name, shape, values) added: other checkpoint layouts of the same model.
    pub fn write_hf_dir_with(
        &self,
        out: &Path,
        rename: &dyn Fn(&str) -> String,
        extra: Vec<(String, Vec<usize>, Vec<f16>)>,
    ) {
        std::fs::create_dir_all(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        let copy = |from: &Path, to: &str| {
            std::fs::copy(from, out.join(to)).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        };
        copy(&self.dir.join("config.json"), "config.json");
        copy(&self.tokenizer_dir.join("tokenizer.json"), "tokenizer.json");
        copy(&self.tokenizer_dir.join("tokenizer_config.json"), "tokenizer_config.json");

        let mut weights: Vec<(String, Vec<usize>, Vec<f16>)> =
            self.weights().into_iter().map(|(name, shape, v)| (rename(&name), shape, v)).collect();
        weights.extend(extra);
        let bytes: Vec<Vec<u8>> =
            weights.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()).collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = weights
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), b)| {
                let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), b)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                (name.clone(), view)
            })
            .collect();
        let metadata = Some([("format".to_string(), "pt".to_string())].into_iter().collect());
        let path = out.join("model.safetensors");
        safetensors::serialize_to_file(views, metadata, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Fixture {
    /// The fixture as Qwen3-Embedding saves a checkpoint: tensor names without `model.`, no lm_head,
    /// and sentence-transformers files asking for last-token pooling, normalisation and at most
    /// `max_seq_length` tokens (tests/embed_decoder.rs, tests/browser/embeddings.mjs).
    pub fn write_embedding_dir(&self, out: &Path, max_seq_length: u32) {
        self.write_hf_dir_with(out, &|n| n.strip_prefix("model.").unwrap_or(n).to_string(), Vec::new());
        let hidden = self.config["hidden_size"].as_u64().expect("config: hidden_size");
        let write = |p: &str, v: Value| {
            let path = out.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, v.to_string()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        };
        let module = |idx: u32, path: &str, kind: &str| {
            serde_json::json!({"idx": idx, "name": idx.to_string(), "path": path,
                               "type": format!("sentence_transformers.models.{kind}")})
        };
        write(
            "modules.json",
            serde_json::json!([
                module(0, "", "Transformer"),
                module(1, "1_Pooling", "Pooling"),
                module(2, "2_Normalize", "Normalize")
            ]),
        );
        write(
            "1_Pooling/config.json",
            serde_json::json!({"word_embedding_dimension": hidden, "pooling_mode_cls_token": false,
                               "pooling_mode_mean_tokens": false, "pooling_mode_lasttoken": true}),
        );
        write(
            "sentence_bert_config.json",
            serde_json::json!({"max_seq_length": max_seq_length, "do_lower_case": false}),
        );
    }
}

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Tensor `t` (0-based in sorted-name order) of a fixture with `seed`: element i is
/// `f16(offset + scale·(2u − 1))`, u = (mix(key + (i+1)·GOLDEN) >> 40) / 2²⁴, key = mix(seed + (t+1)·GOLDEN).
pub fn fixture_tensor(seed: u64, t: usize, n: usize, scale: f64, offset: f64) -> Vec<f16> {
    let key = mix(seed.wrapping_add((t as u64 + 1).wrapping_mul(GOLDEN)));
    (0..n as u64)
        .map(|i| {
            let u = (mix(key.wrapping_add((i + 1).wrapping_mul(GOLDEN))) >> 40) as f64 / (1u64 << 24) as f64;
            f16_nearest(offset + scale * (2.0 * u - 1.0))
        })
        .collect()
}

/// `x` rounded once to the nearest f16, ties to even (numpy's `astype(float16)`). `f16::from_f64`
/// goes through f32 where F16C is present, which double-rounds values just above a tie
/// (1 + 2⁻¹¹ + 2⁻⁴⁰ → 1 instead of 1 + 2⁻¹⁰); it is within one step, so pick among its neighbours.
/// Finite `x` within f16 range only.
pub fn f16_nearest(x: f64) -> f16 {
    let sign = if x.is_sign_negative() { 0x8000u16 } else { 0 };
    let a = x.abs();
    let guess = f16::from_f64(a).to_bits();
    let (mut best, mut best_err) = (guess, (f16::from_bits(guess).to_f64() - a).abs());
    for c in [guess.checked_sub(1), guess.checked_add(1).filter(|&c| c < 0x7C00)].into_iter().flatten() {
        // Exact (Sterbenz) when c is within a factor 2 of a; otherwise c = 2⁻²⁴ against a < 2⁻²⁵,
        // where 0 is nearer by far, so a rounded difference cannot change the pick.
        let err = (f16::from_bits(c).to_f64() - a).abs();
        if err < best_err || (err == best_err && c % 2 == 0) {
            (best, best_err) = (c, err);
        }
    }
    f16::from_bits(best | sign)
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Token ids in a fixture's JSON array.
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// A JSON list of numbers, as f64.
pub fn json_floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("float list").iter().map(|x| x.as_f64().expect("float")).collect()
}

/// The `k` largest entries of `row`, largest first (ties by lower id).
pub fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.select_nth_unstable_by(k, |&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    let mut top = idx[..k].to_vec();
    top.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    top
}

/// SHA-256 of f32 values' little-endian bytes (how the fixtures record dequantized tensors).
pub fn f32_bytes_sha(v: &[f32]) -> String {
    sha256_hex(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
}
