//! Write a tiny reference fixture (`tests/fixtures/<name>`) as a Hugging Face model directory:
//! config.json, tokenizer.json, tokenizer_config.json and model.safetensors (f16, the checkpoint's
//! tensor names), the weights regenerated from the fixture's seed by tests/common/fixture.rs and
//! checked against weights.json's sha256 before anything is written.
//!
//!   cargo run --example write_fixture -- <fixture-name | encoders/<name>> <out-dir> [--embedding]
//!
//! `--embedding`: as Qwen3-Embedding saves a checkpoint (no `model.` prefix, no lm_head,
//! sentence-transformers files for last-token pooling, normalised, at most 64 tokens).
//!
//! The browser tests (tests/browser/models.mjs, structured.mjs) convert its output with
//! `webgpu-llm convert`, so the package they load holds exactly the weights transformers ran.

#[path = "../tests/common/fixture.rs"]
mod fixture;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, out, embedding) = match args.as_slice() {
        [name, out] => (name, out, false),
        [name, out, flag] if flag == "--embedding" => (name, out, true),
        _ => {
            eprintln!(
                "usage: cargo run --example write_fixture -- <fixture-name> <out-dir> [--embedding]  (fixtures: tests/fixtures/*)"
            );
            return ExitCode::from(2);
        }
    };
    // "encoders/<name>": tests/fixtures/encoders (BERT, nomic-bert)
    let f = match name.strip_prefix("encoders/") {
        Some(encoder) => fixture::Fixture::encoder(encoder),
        None => fixture::Fixture::load(name),
    };
    // The same recipe as the Python side: a wrong byte here would make every comparison meaningless.
    for (spec, (_, _, values)) in f.tensor_specs().iter().zip(f.weights()) {
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
        let sha = fixture::sha256_hex(&bytes);
        if sha != spec.sha256 {
            eprintln!(
                "fixture {name}: {}: regenerated weights' sha256 {sha} ≠ weights.json's {}",
                spec.name, spec.sha256
            );
            return ExitCode::FAILURE;
        }
    }
    let out = Path::new(out);
    if embedding {
        f.write_embedding_dir(out, 64);
    } else {
        f.write_hf_dir(out);
    }
    println!("{}: fixture {name} ({} tensors, seed {})", out.display(), f.tensor_specs().len(), f.seed());
    ExitCode::SUCCESS
}
