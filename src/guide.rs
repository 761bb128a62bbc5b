//! Constrained decoding: which tokens may come next so the output matches a JSON Schema, a regex
//! or a grammar. The grammar engine is llguidance (the one inside llama.cpp, vLLM and SGLang: an
//! Earley parser over a lexer, walking a trie of the tokenizer's token bytes); this module gives
//! it our tokenizer and turns its masks into the bitmask the GPU sampler reads
//! (`ops::sample::SampleState::set_allowed`).
//!
//! [`Guidance`] is built once per tokenizer (the trie and the lexer slices, tens to hundreds of
//! ms for a 150k vocabulary) and starts a [`Guide`] per generation.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{self, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use tokenizers::Tokenizer;

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// Any JSON object (OpenAI's `response_format: {type: "json_object"}`).
    JsonObject,
    /// A value valid under this JSON Schema (draft 2020-12 as llguidance supports it).
    JsonSchema(serde_json::Value),
    /// The whole output matches this regex (Rust `regex` syntax).
    Regex(String),
    /// llguidance's Lark-like grammar (`start: …`; `%json {…}` embeds a schema).
    Grammar(String),
}

impl Constraint {
    /// The option name a bad constraint is reported under.
    pub fn option(&self) -> &'static str {
        match self {
            Constraint::JsonObject | Constraint::JsonSchema(_) => "json_schema",
            Constraint::Regex(_) => "regex",
            Constraint::Grammar(_) => "grammar",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuideError {
    /// The schema, regex or grammar cannot be compiled: a syntax error, an unsupported keyword
    /// (the message names it) or an unsatisfiable schema. Nothing was generated.
    #[error("{option}: {message}")]
    Invalid { option: &'static str, message: String },
    /// The tokenizer's tokens could not be mapped to bytes (an unknown decoder).
    #[error("constrained decoding needs the tokens' bytes: {0}")]
    Tokenizer(String),
    /// The grammar engine failed mid-generation (the token was in its own mask, so this is a bug
    /// or a limit such as its step budget).
    #[error("constraint engine: {0}")]
    Engine(String),
}

/// JSON as OpenAI's structured outputs print it (`{"a": 1, "b": [2, 3]}`): fixed separators and no
/// free whitespace, so a value ends where its last brace does and a model cannot pad it forever.
/// A schema may choose otherwise with llguidance's own `x-guidance` key.
fn json_options() -> serde_json::Value {
    serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// Each token's bytes, as the tokenizer's decoder would produce them: byte-level BPE (GPT-2,
/// Llama 3, Qwen) maps characters back to bytes; SentencePiece-style vocabularies use `▁` for a
/// space and `<0xNN>` byte-fallback tokens. Special added tokens get llguidance's 0xFF marker
/// (a grammar names them as `<|im_end|>`); ids past the tokenizer (padded vocabularies) are empty
/// and never allowed.
pub fn token_bytes(tokenizer: &Tokenizer, vocab: u32) -> Result<Vec<Vec<u8>>, GuideError> {
    let decoder = serde_json::to_value(tokenizer.get_decoder()).unwrap_or(serde_json::Value::Null);
    let kinds: Vec<String> = match decoder["type"].as_str() {
        Some("Sequence") => decoder["decoders"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x["type"].as_str().map(String::from)).collect())
            .unwrap_or_default(),
        Some(t) => vec![t.to_string()],
        None => Vec::new(),
    };
    let has = |k: &str| kinds.iter().any(|x| x == k);
    let byte_level = has("ByteLevel");
    if !byte_level && !has("ByteFallback") && !has("Metaspace") && !has("Replace") {
        return Err(GuideError::Tokenizer(format!("unsupported decoder {:?}", decoder["type"])));
    }
    let unicode_to_byte = byte_level_map();
    let mut out = vec![Vec::new(); vocab as usize];
    for (piece, id) in tokenizer.get_vocab(false) {
        let Some(slot) = out.get_mut(id as usize) else { continue };
        *slot = if byte_level {
            piece
                .chars()
                .map(|c| unicode_to_byte.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| GuideError::Tokenizer(format!("token {id} {piece:?} is not byte-level")))?
        } else if let Some(b) = byte_fallback(&piece) {
            vec![b]
        } else {
            piece.replace('\u{2581}', " ").into_bytes()
        };
    }
    for (id, added) in tokenizer.get_added_tokens_decoder() {
        let Some(slot) = out.get_mut(id as usize) else { continue };
        let mut bytes = added.content.as_bytes().to_vec();
        if added.special {
            bytes.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
        }
        *slot = bytes;
    }
    Ok(out)
}

/// `<0x0A>` → 0x0A.
fn byte_fallback(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's bytes_to_unicode, inverted: printable Latin-1 maps to itself, the other bytes to
/// U+0100 onwards in byte order.
fn byte_level_map() -> std::collections::HashMap<char, u8> {
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut next = 0x100u32;
    for b in 0..=255u8 {
        let c = b as char;
        if matches!(c, '!'..='~' | '\u{A1}'..='\u{AC}' | '\u{AE}'..='\u{FF}') {
            map.insert(c, b);
        } else {
            map.insert(char::from_u32(next).expect("below U+0200"), b);
            next += 1;
        }
    }
    map
}

/// llguidance's view of our tokenizer: the trie, and the real tokenizer for the text it needs
/// tokenized (forced prefixes), so its tokens are the ones the model would see.
struct Env {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<toktrie::TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) => match self.tokenizer.encode(text, false) {
                Ok(enc) => enc.get_ids().to_vec(),
                Err(_) => self.trie.greedy_tokenize(s),
            },
            // Bytes that are not whole characters: the trie's longest matches.
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// The grammar engine for one tokenizer: build once, start a [`Guide`] per generation.
pub struct Guidance {
    factory: ParserFactory,
    /// Ids that end a turn; the grammar's end allows all of them.
    stop_ids: Vec<u32>,
    vocab: u32,
    env: TokEnv,
}

impl Guidance {
    /// For `tokenizer` over a model of `vocab` logits; `stop_ids` end a generation (the first
    /// is the one llguidance calls EOS).
    pub fn new(tokenizer: Arc<Tokenizer>, vocab: u32, stop_ids: &[u32]) -> Result<Self, GuideError> {
        let words = token_bytes(&tokenizer, vocab)?;
        let eos =
            *stop_ids.first().ok_or_else(|| GuideError::Tokenizer("the model has no end-of-turn token".into()))?;
        let info = TokRxInfo::new(vocab, eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Env { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| GuideError::Tokenizer(e.to_string()))?;
        // Warnings and errors come back as values; nothing is printed.
        factory.quiet();
        Ok(Self { factory, stop_ids: stop_ids.to_vec(), vocab, env })
    }

    /// A token's bytes as the grammar sees them (special tokens start with 0xFF).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        if id < self.vocab {
            self.env.tok_trie().token(id)
        } else {
            &[]
        }
    }

    /// Compile `constraint` (errors name what is wrong in it) and start matching from the first
    /// generated token.
    pub fn start(&self, constraint: &Constraint) -> Result<Guide, GuideError> {
        let grammar = match constraint {
            Constraint::JsonObject => {
                let mut schema = serde_json::json!({"type": "object"});
                schema["x-guidance"] = json_options();
                TopLevelGrammar::from_json_schema(schema)
            }
            Constraint::JsonSchema(schema) => {
                let mut schema = schema.clone();
                // `true` / `false` are schemas too; anything else is not.
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(GuideError::Invalid {
                        option: "json_schema",
                        message: "a schema is a JSON object (or true/false)".into(),
                    });
                }
                if let Some(obj) = schema.as_object_mut() {
                    obj.entry("x-guidance").or_insert_with(json_options);
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Grammar(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        let invalid = |message: String| GuideError::Invalid { option: constraint.option(), message };
        let parser = self.factory.create_parser(grammar).map_err(|e| invalid(format!("{e:#}")))?;
        let mut matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(e));
        }
        // A grammar that accepts nothing would fail on its first mask: say so now.
        let first = matcher.compute_mask().map_err(|e| invalid(e.to_string()))?;
        Ok(Guide { matcher, first: Some(first), stop_ids: self.stop_ids.clone(), vocab: self.vocab, stopped: false })
    }
}

/// One generation's position in the grammar.
pub struct Guide {
    matcher: Matcher,
    /// The first mask, computed by `start` to check the grammar.
    first: Option<toktrie::SimpleVob>,
    stop_ids: Vec<u32>,
    vocab: u32,
    stopped: bool,
}

impl Guide {
    /// u32 words of the bitmask over `vocab` tokens.
    pub fn words(vocab: u32) -> usize {
        vocab.div_ceil(32) as usize
    }

    /// The tokens allowed next, as a bitmask (bit `id % 32` of word `id / 32`). Where the grammar
    /// may end, every end-of-turn token is allowed.
    pub fn mask(&mut self, out: &mut [u32]) -> Result<(), GuideError> {
        let vob = match self.first.take() {
            Some(v) => v,
            None => self.matcher.compute_mask().map_err(|e| GuideError::Engine(e.to_string()))?,
        };
        let src = vob.as_slice();
        let n = Self::words(self.vocab);
        out[..n].fill(0);
        let m = n.min(src.len());
        out[..m].copy_from_slice(&src[..m]);
        // llguidance knows one EOS; the model ends a turn with any of its stop ids.
        let eos = self.stop_ids[0];
        if vob.is_allowed(eos) {
            for &id in &self.stop_ids {
                if id < self.vocab {
                    out[id as usize / 32] |= 1 << (id % 32);
                }
            }
        }
        // Bits past the vocabulary stay clear.
        if self.vocab % 32 != 0 {
            out[n - 1] &= (1u32 << (self.vocab % 32)) - 1;
        }
        Ok(())
    }

    /// Advance over the chosen token. An end-of-turn id ends the match.
    pub fn consume(&mut self, id: u32) -> Result<(), GuideError> {
        self.first = None;
        if self.stop_ids.contains(&id) {
            self.stopped = true;
            return Ok(());
        }
        self.matcher.consume_token(id).map_err(|e| GuideError::Engine(e.to_string()))?;
        if self.matcher.is_stopped() {
            self.stopped = true;
        }
        Ok(())
    }

    /// Advance over tokens already generated (a lazy constraint starting after them), if the
    /// grammar allows them all; `false` (and no change) if not.
    pub fn replay(&mut self, ids: &[u32]) -> Result<bool, GuideError> {
        let valid = self.matcher.validate_tokens(ids).map_err(|e| GuideError::Engine(e.to_string()))?;
        if ids.iter().any(|id| self.stop_ids.contains(id)) || valid < ids.len() {
            return Ok(false);
        }
        self.first = None;
        self.matcher.consume_tokens(ids).map_err(|e| GuideError::Engine(e.to_string()))?;
        self.stopped = self.matcher.is_stopped();
        Ok(true)
    }

    /// The grammar is complete and admits nothing more: generation ends here.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
}
