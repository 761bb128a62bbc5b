//! Embeddings from a GGUF as llama.cpp's converter lays out a BERT model
//! (models/all-MiniLM-L6-v2.f16.gguf, written by scripts/bert_to_gguf.py through llama.cpp's `gguf`
//! package when scripts/fetch-embedder.sh runs): the `bert.*` hyperparameters, the tensor names, the
//! WordPiece vocabulary in llama.cpp's "phantom space" form and `bert.pooling_type` give the same
//! token ids as sentence-transformers and vectors within cosine 0.9999 (f16 matrices, as for the
//! package in tests/embed.rs), and the tokenizer rebuilt from the metadata equals tokenizer.json's on
//! awkward text. llama.cpp's defaults where the GGUF is silent: normalised, the model's 512 positions
//! (not sentence-transformers' max_seq_length of 256, which a GGUF does not carry).

mod common;
use common::fixture::json_floats;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use webgpu_llm::embed::{open_embedder, EmbedOptions, Pooling};
use webgpu_llm::loader::gguf::{self, MetaValue, Metadata};
use webgpu_llm::loader::gguf_tokenizer::GgufTokenizer;

fn gguf_path() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2.f16.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-embedder.sh", p.display());
    p
}

fn expected() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm/expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn minilm_gguf_matches_sentence_transformers() {
    let exp = expected();
    let e = open_embedder(ctx(), &gguf_path(), 4096).unwrap();
    assert_eq!((e.settings.pooling, e.settings.normalize), (Pooling::Mean, true));
    assert_eq!(e.max_tokens(), 512, "a GGUF carries the model's positions, not max_seq_length");
    let cases = exp["cases"].as_array().unwrap();
    let short: Vec<&Value> = cases.iter().filter(|c| c["ids"].as_array().unwrap().len() < 256).collect();
    let texts: Vec<String> = short.iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
    let got = pollster::block_on(e.embed(ctx(), &texts, &EmbedOptions::default())).unwrap();
    for (i, c) in short.iter().enumerate() {
        assert_eq!(got.ids[i], ids(&c["ids"]), "{:?}: token ids", c["text"]);
        let cos = cosine(&got.embeddings[i], &json_floats(&c["embedding"]));
        assert!(cos >= 0.9999, "{:?}: cosine {cos}", c["text"]);
    }
    // The long case: sentence-transformers cut it at 256; here it runs to 512 (its ids begin alike).
    let long = cases.iter().find(|c| c["ids"].as_array().unwrap().len() == 256).unwrap();
    let text = vec![long["text"].as_str().unwrap().to_string()];
    let cut =
        pollster::block_on(e.embed(ctx(), &text, &EmbedOptions { truncate: true, ..Default::default() })).unwrap();
    assert_eq!(cut.ids[0].len(), 512);
    assert_eq!(cut.ids[0][..255], ids(&long["ids"])[..255]);
    assert_eq!(*cut.ids[0].last().unwrap(), 102, "[SEP] kept at the cut");
}

#[test]
fn gguf_wordpiece_equals_tokenizer_json() {
    let (header, _, _) = gguf::read_header_file(&gguf_path()).unwrap();
    let from_gguf = GgufTokenizer::from_metadata(&header.metadata).unwrap().tokenizer().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let mut hf = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    hf.with_padding(None);
    hf.with_truncation(None).unwrap();
    let long_word = "x".repeat(120);
    let texts = [
        "Hello, World! It's 3.14159 o'clock.",
        "  leading   and\ttrailing\nwhitespace  ",
        "Ünïcödé façade — naïve résumé; ÀÉÎÕÜ",
        "東京都 北京 서울 and Ελληνικά, Русский",
        "emoji 🎉🚀 and symbols ©®™ ½ ∑ √",
        "unaffable unbelievably antidisestablishmentarianism",
        "[CLS] [SEP] [MASK] [UNK] literal specials [PAD]",
        "email me: someone@example.com, https://example.org/a?b=c",
        long_word.as_str(),
        "",
    ];
    for t in texts {
        let a = from_gguf.encode(t, true).unwrap();
        let b = hf.encode(t, true).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "{t:?}");
        assert_eq!(from_gguf.decode(a.get_ids(), true).unwrap(), hf.decode(b.get_ids(), true).unwrap(), "{t:?}");
    }
}

#[test]
fn gguf_pooling_type() {
    let md = |v: Option<u32>| {
        let mut m = Metadata::new();
        m.insert("general.architecture", MetaValue::String("bert".into()));
        if let Some(v) = v {
            m.insert("bert.pooling_type", MetaValue::U32(v));
        }
        m
    };
    assert_eq!(gguf::pooling(&md(None)).unwrap(), None);
    assert_eq!(gguf::pooling(&md(Some(0))).unwrap(), None);
    assert_eq!(gguf::pooling(&md(Some(1))).unwrap(), Some(Pooling::Mean));
    assert_eq!(gguf::pooling(&md(Some(2))).unwrap(), Some(Pooling::Cls));
    assert_eq!(gguf::pooling(&md(Some(3))).unwrap(), Some(Pooling::Last));
    let rank = gguf::pooling(&md(Some(4))).unwrap_err().to_string();
    assert!(rank.contains("bert.pooling_type") && rank.contains("rank"), "{rank}");
}
