//! The fixture weights regenerated in Rust are the ones transformers ran (tests/fixtures/*/weights.json,
//! written by tests/reference/make_fixtures.py): sums, first values and sha256 of every tensor; our
//! quantizer reproduces the Python emulation of the Q4/Q8 variant bit for bit; and `write_hf_dir`
//! produces a safetensors checkpoint that reads back unchanged.

#[allow(unused_imports)] // common re-exports check::*, which this test does not need
mod common;
use common::fixture::{f16_nearest, sha256_hex, Fixture, NAMES};
use half::f16;
use safetensors::{Dtype, SafeTensors};
use webgpu_llm::quant::{dequantize, quantize, WeightFormat};

fn f16_bytes(v: &[f16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

#[test]
fn f16_nearest_rounds_once() {
    // Just above a tie: f64 → f32 → f16 would land on the tie and round to even (1.0).
    assert_eq!(f16_nearest(1.0 + 2f64.powi(-11) + 2f64.powi(-40)).to_f64(), 1.0 + 2f64.powi(-10));
    assert_eq!(f16_nearest(1.0 + 2f64.powi(-11)).to_f64(), 1.0, "a tie goes to even");
    assert_eq!(f16_nearest(1.0 + 3.0 * 2f64.powi(-11)).to_f64(), 1.0 + 2f64.powi(-9), "a tie goes to even");
    assert_eq!(f16_nearest(-(1.0 + 2f64.powi(-11) + 2f64.powi(-40))).to_f64(), -(1.0 + 2f64.powi(-10)));
    assert_eq!(f16_nearest(3e-8).to_f64(), 2f64.powi(-24), "subnormal");
    assert_eq!(f16_nearest(1e-8).to_bits(), 0);
    assert_eq!(f16_nearest(0.1).to_f64(), 0.0999755859375);
}

#[test]
fn regenerated_weights_match_weights_json() {
    for name in NAMES {
        let fx = Fixture::load(name);
        let specs = fx.tensor_specs();
        let weights = fx.weights();
        let tied = fx.config["tie_word_embeddings"].as_bool().unwrap_or(true);
        assert_eq!(weights.iter().any(|(n, _, _)| n == "lm_head.weight"), !tied, "{name}: lm_head iff untied");
        for (s, (n, shape, v)) in specs.iter().zip(&weights) {
            assert_eq!((&s.name, &s.shape), (n, shape));
            assert_eq!(v.len(), shape.iter().product::<usize>(), "{name}/{n}");
            let first: Vec<f64> = v.iter().take(8).map(|x| x.to_f64()).collect();
            assert_eq!(first, s.first, "{name}/{n}: first values");
            // weights.json holds the correctly rounded sum; a plain f64 sum of ≤ 15M values O(1) is
            // far closer than 1e-9 relative.
            let sum: f64 = v.iter().map(|x| x.to_f64()).sum();
            assert!((sum - s.sum).abs() <= 1e-9 * s.sum.abs().max(1.0), "{name}/{n}: sum {sum} vs {}", s.sum);
            assert_eq!(sha256_hex(&f16_bytes(v)), s.sha256, "{name}/{n}: f16 bytes");
        }
    }
}

#[test]
fn quantized_weights_match_the_python_emulation() {
    for name in NAMES {
        let fx = Fixture::load(name);
        for (s, (n, shape, v)) in fx.tensor_specs().iter().zip(fx.weights()) {
            let format = match s.quant.as_deref() {
                None => continue,
                Some("Q4") => WeightFormat::Q4,
                Some("Q8") => WeightFormat::Q8,
                Some(other) => panic!("{name}/{n}: unknown quant {other}"),
            };
            let data: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            let packed = quantize(format, &data, shape[0], shape[1]).unwrap();
            let deq = dequantize(&packed).unwrap();
            let bytes: Vec<u8> = deq.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(Some(sha256_hex(&bytes)), s.quant_sha256, "{name}/{n}: {format:?} dequantized values");
        }
    }
}

#[test]
fn hf_dir_round_trips() {
    for name in NAMES {
        let fx = Fixture::load(name);
        let out = std::env::temp_dir().join(format!("webgpu-llm-fixture-{name}-{}", std::process::id()));
        fx.write_hf_dir(&out);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config, fx.config);
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(fx.tokenizer_dir.join(f)).unwrap());
        }
        let file = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&file).unwrap();
        let weights = fx.weights();
        assert_eq!(st.len(), weights.len(), "{name}: tensor count");
        for (n, shape, v) in &weights {
            let t = st.tensor(n).unwrap_or_else(|e| panic!("{name}/{n}: {e}"));
            assert_eq!((t.dtype(), t.shape()), (Dtype::F16, shape.as_slice()), "{name}/{n}");
            assert!(t.data() == f16_bytes(v).as_slice(), "{name}/{n}: data");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}
