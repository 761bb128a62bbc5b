//! A Hugging Face `tokenizer.json` built from a GGUF's `tokenizer.ggml.*` metadata (llama.cpp's
//! vocabulary, `llama-vocab.cpp`), so the engine's tokenizer, detokenizer and chat template code is
//! the same whichever way a model arrives. Two vocabulary kinds:
//!
//! - `gpt2`: byte-level BPE. Tokens are already in GPT-2's byte-to-unicode form and merges are
//!   `"left right"` strings, as in a tokenizer.json. The pre-tokenizer regexes depend on
//!   `tokenizer.ggml.pre` (llama.cpp's `llm_tokenizer_bpe`): we write the regex each model's own
//!   tokenizer.json has (llama.cpp's are rewritten equivalents for its regex engine).
//! - `llama`: SentencePiece BPE with scores and byte fallback. Hugging Face's Llama tokenizer is BPE
//!   with merges derived from the scores (transformers' `SentencePieceExtractor`: every split of a
//!   piece into two pieces, ordered by the piece's score), a `▁` prepended to each text segment and
//!   spaces replaced by `▁`, which is what llama.cpp's `llm_tokenizer_spm` does.
//!
//! Token types (llama.cpp's `llama_token_type`): CONTROL and UNKNOWN tokens, and the bos/eos/unk/
//! pad/eot/eom ids (llama.cpp forces those to CONTROL), become special added tokens; USER_DEFINED
//! ones non-special added tokens. Both are matched in text before the model runs, as llama.cpp's
//! `tokenizer_st_partition` does with `parse_special`.

use std::collections::HashSet;

use serde_json::{json, Map, Value};
use tokenizers::Tokenizer;

use super::gguf::{GgufError, Metadata};

// llama_token_type (gguf-py's TokenType).
const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// GPT-2's pre-tokenizer regex (ByteLevel's `use_regex`), the second of the smollm pair.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's tokenizer.json regex (digits in runs of up to 3).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// o200k's split (llama.cpp's LLAMA_VOCAB_PRE_TYPE_GPT4O, as GPT-4o's and Phi-4-mini's tokenizer.json have it).
const GPT4O_REGEX: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);
/// Qwen2's tokenizer.json regex (single digits).
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen3.5's tokenizer.json regex (llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN35): Qwen2's with combining
/// marks (`\p{M}`) inside letter runs and out of the punctuation runs.
const QWEN35_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT: four regexes applied in turn.
const DEFAULT_REGEXES: [&str; 4] = [r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"];

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Metadata(#[from] GgufError),

    #[error("tokenizer.ggml.model {0:?} is not supported (gpt2: byte-level BPE; llama: SentencePiece)")]
    UnsupportedModel(String),

    #[error(
        "tokenizer.ggml.pre {0:?} is not supported (default, gpt2, llama3/llama-bpe, qwen2, qwen35, gpt-4o, smollm, starcoder, …)"
    )]
    UnsupportedPre(String),

    #[error("{key} has {got} entries but tokenizer.ggml.tokens has {expected}")]
    Length { key: &'static str, expected: usize, got: usize },

    #[error("{key} = {id} is outside the vocabulary of {vocab} tokens")]
    IdOutOfRange { key: &'static str, id: u32, vocab: usize },

    #[error("tokenizer.ggml.merges[{index}] = {merge:?} is not two tokens separated by a space")]
    BadMerge { index: usize, merge: String },

    #[error("the tokenizer built from the GGUF was rejected: {0}")]
    Build(String),
}

/// llama.cpp's pre-tokenizer families (`llama_vocab_pre_type`) that we can express.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pre {
    Default,
    Gpt2,
    /// `\p{N}` isolated, then GPT-2's regex (STARCODER, SMOLLM, …).
    DigitsGpt2,
    Llama3,
    Qwen2,
    /// Qwen2's with combining marks in words (Qwen3.5's new vocabulary).
    Qwen35,
    /// o200k (GPT-4o's regex): Phi-4-mini, Llama 4.
    Gpt4o,
}

/// `tokenizer.ggml.pre` → family, with llama.cpp's aliases (`llama_vocab::impl::load`).
fn pre_type(name: &str) -> Option<Pre> {
    Some(match name {
        "default" => Pre::Default,
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" => Pre::Llama3,
        "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" | "jais" => Pre::Gpt2,
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => Pre::Qwen2,
        "qwen35" => Pre::Qwen35,
        "gpt-4o" | "llama4" => Pre::Gpt4o,
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => Pre::DigitsGpt2,
        _ => return None,
    })
}

fn split(regex: &str) -> Value {
    json!({ "type": "Split", "pattern": { "Regex": regex }, "behavior": "Isolated", "invert": false })
}

fn byte_level(use_regex: bool) -> Value {
    json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex })
}

/// The tokenizer of a GGUF, as Hugging Face files.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    /// A complete tokenizer.json.
    pub json: Value,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Whether encoding adds BOS (and EOS): `tokenizer.ggml.add_bos_token`, else llama.cpp's
    /// default for the vocabulary (SentencePiece and Llama 3: yes).
    pub add_bos: bool,
    pub add_eos: bool,
}

impl GgufTokenizer {
    pub fn from_metadata(md: &Metadata) -> Result<Self, TokenizerError> {
        let model = md.str("tokenizer.ggml.model")?;
        let tokens = md.str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types = if md.contains("tokenizer.ggml.token_type") {
            let t = md.int_array("tokenizer.ggml.token_type")?;
            if t.len() != n {
                return Err(TokenizerError::Length { key: "tokenizer.ggml.token_type", expected: n, got: t.len() });
            }
            t
        } else {
            vec![NORMAL; n]
        };
        let id = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            match md.opt_u32(key)? {
                Some(id) if id as usize >= n => Err(TokenizerError::IdOutOfRange { key, id, vocab: n }),
                other => Ok(other),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = match id("tokenizer.ggml.eos_token_id")? {
            // BERT's [SEP] may be given only as the separator.
            None if model == "bert" => id("tokenizer.ggml.seperator_token_id")?,
            eos => eos,
        };
        let unk = id("tokenizer.ggml.unknown_token_id")?;
        let special_ids: HashSet<u32> = [
            bos,
            eos,
            unk,
            id("tokenizer.ggml.padding_token_id")?,
            id("tokenizer.ggml.eot_token_id")?,
            id("tokenizer.ggml.eom_token_id")?,
        ]
        .into_iter()
        .flatten()
        .collect();
        // BERT's WordPiece pieces as tokenizer.json has them: llama.cpp's converter wrote `##x` as `x`
        // and a word-initial `x` as `▁x` ("phantom space"), control tokens as they are.
        let unphantom = |(t, &ty): (&String, &i64)| -> String {
            if ty == CONTROL {
                t.clone()
            } else if let Some(word) = t.strip_prefix('\u{2581}') {
                word.to_string()
            } else {
                format!("##{t}")
            }
        };
        let bert_pieces: Vec<String>;
        let tokens: &[String] = if model == "bert" {
            bert_pieces = tokens.iter().zip(&types).map(unphantom).collect();
            &bert_pieces
        } else {
            tokens
        };
        let token = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize)).cloned();

        // Later duplicates win, as in llama.cpp's token_to_id.
        let mut vocab = Map::new();
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), json!(i));
        }
        let (model_json, normalizer, pre_tokenizer, decoder, default_add_bos) = match model {
            "gpt2" => {
                let pre_name = md.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
                let pre = pre_type(pre_name).ok_or_else(|| TokenizerError::UnsupportedPre(pre_name.to_string()))?;
                let merges = gpt2_merges(md.str_array("tokenizer.ggml.merges")?, &vocab)?;
                let steps: Vec<Value> = match pre {
                    Pre::Gpt2 => vec![byte_level(true)],
                    // The Digits pre-tokenizer SmolLM2's tokenizer.json has = llama.cpp's "\p{N}".
                    Pre::DigitsGpt2 => vec![json!({ "type": "Digits", "individual_digits": true }), byte_level(true)],
                    Pre::Llama3 => vec![split(LLAMA3_REGEX), byte_level(false)],
                    Pre::Qwen2 => vec![split(QWEN2_REGEX), byte_level(false)],
                    Pre::Qwen35 => vec![split(QWEN35_REGEX), byte_level(false)],
                    Pre::Gpt4o => vec![split(GPT4O_REGEX), byte_level(false)],
                    Pre::Default => DEFAULT_REGEXES.iter().map(|r| split(r)).chain([byte_level(false)]).collect(),
                };
                let model_json = json!({
                    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                    // llama.cpp sets ignore_merges for the Llama 3 family (a whole word in the vocabulary wins).
                    "ignore_merges": pre == Pre::Llama3,
                    "vocab": Value::Object(vocab), "merges": merges,
                });
                // Qwen's tokenizer.json normalizes to NFC first.
                let normalizer =
                    if matches!(pre, Pre::Qwen2 | Pre::Qwen35) { json!({ "type": "NFC" }) } else { Value::Null };
                let decoder =
                    json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true });
                (
                    model_json,
                    normalizer,
                    json!({ "type": "Sequence", "pretokenizers": steps }),
                    decoder,
                    pre == Pre::Llama3,
                )
            }
            "llama" => {
                let scores = md.f32_array("tokenizer.ggml.scores")?;
                if scores.len() != n {
                    return Err(TokenizerError::Length {
                        key: "tokenizer.ggml.scores",
                        expected: n,
                        got: scores.len(),
                    });
                }
                let merges = spm_merges(tokens, &scores, &vocab);
                let model_json = json!({
                    "type": "BPE", "dropout": null, "unk_token": token(unk).or_else(|| token(Some(0))),
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                    "vocab": Value::Object(vocab), "merges": merges,
                });
                // llama.cpp: a space before the text and after each special token, then ' ' → '▁'.
                let mut norms = Vec::new();
                if md.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true) {
                    norms.push(json!({ "type": "Prepend", "prepend": "▁" }));
                }
                norms.push(json!({ "type": "Replace", "pattern": { "String": " " }, "content": "▁" }));
                let decoder = json!({ "type": "Sequence", "decoders": [
                    { "type": "Replace", "pattern": { "String": "▁" }, "content": " " },
                    { "type": "ByteFallback" }, { "type": "Fuse" },
                    { "type": "Strip", "content": " ", "start": 1, "stop": 0 },
                ]});
                (model_json, json!({ "type": "Sequence", "normalizers": norms }), Value::Null, decoder, true)
            }
            // llama.cpp's WPM tokenizer: lowercase, accents stripped, split at whitespace and
            // punctuation (CJK characters alone), greedy longest-match WordPiece; [CLS] … [SEP].
            "bert" => {
                let model_json = json!({
                    "type": "WordPiece", "unk_token": token(unk).unwrap_or_else(|| "[UNK]".into()),
                    "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                    "vocab": Value::Object(vocab),
                });
                let normalizer = json!({
                    "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                    "strip_accents": null, "lowercase": true,
                });
                let decoder = json!({ "type": "WordPiece", "prefix": "##", "cleanup": true });
                (model_json, normalizer, json!({ "type": "BertPreTokenizer" }), decoder, true)
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let add_bos = md.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        // WordPiece (BERT) adds [SEP] as well as [CLS] unless told otherwise.
        let add_eos = md.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(model == "bert");

        let mut added = Vec::new();
        for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
            let special = ty == CONTROL || ty == UNKNOWN || special_ids.contains(&(i as u32));
            if special || ty == USER_DEFINED {
                added.push(json!({
                    "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": special,
                }));
            }
        }
        let post_processor = post_processor(
            add_bos.then(|| bos.zip(token(bos))).flatten(),
            add_eos.then(|| eos.zip(token(eos))).flatten(),
        );
        let json = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": decoder,
            "model": model_json,
        });
        Ok(Self {
            json,
            chat_template: md.opt_str("tokenizer.chat_template")?.map(str::to_owned),
            bos_token: token(bos),
            eos_token: token(eos),
            add_bos,
            add_eos,
        })
    }

    /// The tokenizer.json bytes (what `Engine::new` takes).
    pub fn tokenizer_json(&self) -> Result<Vec<u8>, TokenizerError> {
        serde_json::to_vec(&self.json).map_err(|e| TokenizerError::Build(e.to_string()))
    }

    pub fn tokenizer(&self) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_bytes(self.tokenizer_json()?).map_err(|e| TokenizerError::Build(e.to_string()))
    }

    /// A tokenizer_config.json with the chat template and the special tokens it is rendered with.
    pub fn tokenizer_config_json(&self) -> String {
        let mut c = Map::new();
        if let Some(t) = &self.chat_template {
            c.insert("chat_template".into(), json!(t));
        }
        if let Some(b) = &self.bos_token {
            c.insert("bos_token".into(), json!(b));
        }
        if let Some(e) = &self.eos_token {
            c.insert("eos_token".into(), json!(e));
        }
        c.insert("add_bos_token".into(), json!(self.add_bos));
        c.insert("add_eos_token".into(), json!(self.add_eos));
        Value::Object(c).to_string()
    }
}

/// BOS/EOS around each sequence (as Hugging Face's Llama tokenizers do), or nothing.
fn post_processor(bos: Option<(u32, String)>, eos: Option<(u32, String)>) -> Value {
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let special = |t: &(u32, String)| json!({ "SpecialToken": { "id": t.1, "type_id": 0 } });
    let seq = |name: &str, type_id: u32| json!({ "Sequence": { "id": name, "type_id": type_id } });
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (out, parts) in [(&mut single, vec![("A", 0)]), (&mut pair, vec![("A", 0), ("B", 1)])] {
        for (name, type_id) in parts {
            out.extend(bos.iter().map(special));
            out.push(seq(name, type_id));
            out.extend(eos.iter().map(special));
        }
    }
    let mut tokens = Map::new();
    for (id, content) in bos.iter().chain(eos.iter()) {
        tokens.insert(content.clone(), json!({ "id": content, "ids": [id], "tokens": [content] }));
    }
    json!({ "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": tokens })
}

/// `"left right"` merges → `[left, right]` pairs (llama.cpp splits at the first space after the
/// first byte). Merges naming tokens that are not in the vocabulary could never produce a token,
/// and tokenizers rejects them, so they are left out.
fn gpt2_merges(merges: &[String], vocab: &Map<String, Value>) -> Result<Vec<Value>, TokenizerError> {
    let mut out = Vec::with_capacity(merges.len());
    for (index, m) in merges.iter().enumerate() {
        let at = m.bytes().enumerate().skip(1).find(|&(_, b)| b == b' ').map(|(p, _)| p);
        let (Some(l), Some(r)) = (at.and_then(|p| m.get(..p)), at.and_then(|p| m.get(p + 1..))) else {
            return Err(TokenizerError::BadMerge { index, merge: m.clone() });
        };
        if vocab.contains_key(l) && vocab.contains_key(r) && vocab.contains_key(&format!("{l}{r}")) {
            out.push(json!([l, r]));
        }
    }
    Ok(out)
}

/// SentencePiece scores → BPE merges, as transformers' `SentencePieceExtractor.extract`: for each
/// piece (in id order) every split into two pieces of the vocabulary, ordered by (left id, right
/// id); then all merges by descending score of the piece they make, stably.
fn spm_merges(tokens: &[String], scores: &[f32], vocab: &Map<String, Value>) -> Vec<Value> {
    let id_of = |s: &str| vocab.get(s).and_then(Value::as_u64);
    let mut merges: Vec<(f32, &str, &str)> = Vec::new();
    for (piece, &score) in tokens.iter().zip(scores) {
        let mut local: Vec<(u64, u64, &str, &str)> = Vec::new();
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(li), Some(ri)) = (id_of(l), id_of(r)) {
                local.push((li, ri, l, r));
            }
        }
        local.sort_by_key(|x| (x.0, x.1));
        merges.extend(local.into_iter().map(|(_, _, l, r)| (score, l, r)));
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges.into_iter().map(|(_, l, r)| json!([l, r])).collect()
}
