//! The tokenizer built from GGUF metadata: `GgufTokenizer::from_metadata`, then the Hugging Face
//! tokenizer it describes (`tokenizer()`, what the engine loads), encoding and decoding a little
//! text with it.
//!
//! Input: a .gguf file (starts with "GGUF": its header's metadata), or anything else, read with
//! `arbitrary` as tokenizer keys directly (vocabulary, types, scores, merges, special ids, flags),
//! so the fuzzer reaches odd vocabularies without first getting GGUF framing right.
//!
//! Properties: no panic, hang or unbounded allocation; a tokenizer that builds encodes and decodes.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use webgpu_llm::loader::gguf::{parse_header, MetaArray, MetaValue, Metadata};
use webgpu_llm::loader::gguf_tokenizer::GgufTokenizer;

#[derive(Arbitrary, Debug)]
struct Keys {
    spm: bool,
    pre: Option<u8>,
    tokens: Vec<String>,
    types: Option<Vec<i32>>,
    scores: Option<Vec<f32>>,
    merges: Option<Vec<String>>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eot: Option<u32>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    add_space_prefix: Option<bool>,
    text: String,
}

const PRES: [&str; 8] = ["default", "gpt2", "llama-bpe", "qwen2", "smollm", "starcoder", "olmo", "bogus"];

fn metadata(k: &Keys) -> Metadata {
    let mut md = Metadata::new();
    let s = |v: &str| MetaValue::String(v.to_string());
    md.insert("tokenizer.ggml.model", s(if k.spm { "llama" } else { "gpt2" }));
    if let Some(p) = k.pre {
        md.insert("tokenizer.ggml.pre", s(PRES[p as usize % PRES.len()]));
    }
    md.insert("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::String(k.tokens.clone())));
    if let Some(t) = &k.types {
        md.insert("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(t.clone())));
    }
    if let Some(sc) = &k.scores {
        md.insert("tokenizer.ggml.scores", MetaValue::Array(MetaArray::F32(sc.clone())));
    }
    if let Some(m) = &k.merges {
        md.insert("tokenizer.ggml.merges", MetaValue::Array(MetaArray::String(m.clone())));
    }
    for (key, v) in [
        ("tokenizer.ggml.bos_token_id", k.bos),
        ("tokenizer.ggml.eos_token_id", k.eos),
        ("tokenizer.ggml.unknown_token_id", k.unk),
        ("tokenizer.ggml.padding_token_id", k.pad),
        ("tokenizer.ggml.eot_token_id", k.eot),
    ] {
        if let Some(v) = v {
            md.insert(key, MetaValue::U32(v));
        }
    }
    for (key, v) in [
        ("tokenizer.ggml.add_bos_token", k.add_bos),
        ("tokenizer.ggml.add_eos_token", k.add_eos),
        ("tokenizer.ggml.add_space_prefix", k.add_space_prefix),
    ] {
        if let Some(v) = v {
            md.insert(key, MetaValue::Bool(v));
        }
    }
    md
}

fuzz_target!(|data: &[u8]| {
    let (md, text) = if data.starts_with(b"GGUF") {
        let Ok(h) = parse_header(data) else {
            return;
        };
        (h.metadata, "Hello world! <|im_start|>user 123 ü 👋\n".to_string())
    } else {
        let Ok(k) = Keys::arbitrary_take_rest(Unstructured::new(data)) else {
            return;
        };
        (metadata(&k), k.text)
    };
    let Ok(t) = GgufTokenizer::from_metadata(&md) else {
        return;
    };
    let _ = t.tokenizer_config_json();
    let Ok(tok) = t.tokenizer() else {
        return;
    };
    if let Ok(enc) = tok.encode(text.as_str(), true) {
        let _ = tok.decode(enc.get_ids(), false);
        let _ = tok.decode(enc.get_ids(), true);
    }
});
