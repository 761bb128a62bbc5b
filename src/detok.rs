//! Streaming text out of generated token ids: [`Detokenizer`] (ids → text chunks, never a broken
//! character), [`StopChecker`] (stop strings across chunk boundaries), [`StopIds`] and
//! [`TextStream`] (all three together, for the engine's decode loop).
//!
//! Decoding one token at a time is wrong for two reasons: a character may be split over several
//! byte-level tokens, and decoders rewrite text by context (SentencePiece `▁` → space, stripped at
//! the start of a text). So, as text-generation-inference's `Model.decode_token` (and HF's
//! `TextStreamer`) do, we decode a short window of ids twice: up to the last emitted token
//! (`prefix`) and including the new one, and emit the difference, unless the decoded text ends in
//! U+FFFD, which means the last character is still incomplete.

use std::borrow::Borrow;

use thiserror::Error;
use tokenizers::Tokenizer;

/// Prompt tokens decoded as context before the first generated one (TGI starts its
/// `prefix_offset` 5 tokens before the end of the prompt).
pub const DEFAULT_PROMPT_CONTEXT_TOKENS: usize = 5;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum DetokError {
    #[error("tokenizer failed to decode ids {ids:?}: {message}")]
    Decode { ids: Vec<u32>, message: String },
    #[error("stop string {index} is empty")]
    EmptyStopString { index: usize },
    #[error("stop token {token:?} is not in the tokenizer's vocabulary")]
    UnknownStopToken { token: String },
}

/// Options for [`Detokenizer::with_options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetokenizerOptions {
    /// Leave special tokens (`<|eot_id|>`, `<|im_end|>`, …) out of the text. Default true.
    pub skip_special_tokens: bool,
    /// How many prompt tokens to decode as context for the first generated tokens.
    pub prompt_context_tokens: usize,
}

impl Default for DetokenizerOptions {
    fn default() -> Self {
        Self { skip_special_tokens: true, prompt_context_tokens: DEFAULT_PROMPT_CONTEXT_TOKENS }
    }
}

/// Incremental decoder over one generation. `T` is `&Tokenizer`, `Arc<Tokenizer>`, … so the
/// engine can either borrow or share the tokenizer.
#[derive(Debug, Clone)]
pub struct Detokenizer<T: Borrow<Tokenizer>> {
    tokenizer: T,
    skip_special_tokens: bool,
    /// The window: context ids, then ids already emitted, then ids not yet emitted.
    ids: Vec<u32>,
    /// `ids[prefix_offset..read_offset]` decodes to `prefix_text`, the text already accounted for.
    prefix_offset: usize,
    read_offset: usize,
    prefix_text: String,
}

impl<T: Borrow<Tokenizer>> Detokenizer<T> {
    /// Default options: special tokens skipped, last 5 prompt ids as context.
    pub fn new(tokenizer: T, prompt_ids: &[u32]) -> Result<Self, DetokError> {
        Self::with_options(tokenizer, prompt_ids, DetokenizerOptions::default())
    }

    pub fn with_options(tokenizer: T, prompt_ids: &[u32], options: DetokenizerOptions) -> Result<Self, DetokError> {
        let start = prompt_ids.len().saturating_sub(options.prompt_context_tokens);
        let ids = prompt_ids[start..].to_vec();
        let mut detok = Self {
            tokenizer,
            skip_special_tokens: options.skip_special_tokens,
            read_offset: ids.len(),
            ids,
            prefix_offset: 0,
            prefix_text: String::new(),
        };
        detok.prefix_text = detok.decode(0, detok.read_offset)?;
        Ok(detok)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        self.tokenizer.borrow()
    }

    /// Adds one generated id; returns the text it completes (often empty while a multi-byte
    /// character is still split).
    pub fn push(&mut self, id: u32) -> Result<String, DetokError> {
        self.ids.push(id);
        let text = self.decode(self.prefix_offset, self.ids.len())?;
        if text.len() <= self.prefix_text.len() || text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let delta = text_after(&self.prefix_text, &text).to_owned();
        self.advance()?;
        Ok(delta)
    }

    /// Flushes whatever is held back; a character that never completed comes out as U+FFFD.
    /// The detokenizer stays usable.
    pub fn finish(&mut self) -> Result<String, DetokError> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let text = self.decode(self.prefix_offset, self.ids.len())?;
        let delta = text_after(&self.prefix_text, &text).to_owned();
        self.advance()?;
        Ok(delta)
    }

    /// The window now starts at the old read offset; ids before it are no longer needed.
    fn advance(&mut self) -> Result<(), DetokError> {
        self.ids.drain(..self.read_offset);
        self.prefix_offset = 0;
        self.read_offset = self.ids.len();
        self.prefix_text = self.decode(0, self.read_offset)?;
        Ok(())
    }

    fn decode(&self, start: usize, end: usize) -> Result<String, DetokError> {
        let ids = &self.ids[start..end];
        if ids.is_empty() {
            return Ok(String::new());
        }
        self.tokenizer
            .borrow()
            .decode(ids, self.skip_special_tokens)
            .map_err(|e| DetokError::Decode { ids: ids.to_vec(), message: e.to_string() })
    }
}

/// `text` minus its prefix `prefix`. Should a decoder rewrite earlier text once more ids follow
/// (then `prefix` is not a prefix of `text`), we emit from where the two first differ: text
/// already sent cannot be taken back.
fn text_after<'a>(prefix: &str, text: &'a str) -> &'a str {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest;
    }
    let common = prefix
        .char_indices()
        .zip(text.chars())
        .find(|((_, a), b)| a != b)
        .map_or(prefix.len().min(text.len()), |((i, _), _)| i);
    text.get(common..).unwrap_or("")
}

/// Outcome of [`StopChecker::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopStatus {
    /// No stop yet; this text is safe to show (it cannot be part of a stop string).
    Continue(String),
    /// Stop string number `index` was found; `text` is what precedes it and was not yet shown.
    /// Everything from the stop string on is dropped.
    Stopped { text: String, index: usize },
}

/// Finds stop strings in streamed text, even when split across chunks. Text that might be the
/// start of a stop string is held back until it is known not to be.
#[derive(Debug, Clone)]
pub struct StopChecker {
    stops: Vec<String>,
    held: String,
    stopped: Option<usize>,
}

impl StopChecker {
    /// Fails on an empty stop string (it would stop before any text).
    pub fn new<I, S>(stops: I) -> Result<Self, DetokError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let stops: Vec<String> = stops.into_iter().map(Into::into).collect();
        if let Some(index) = stops.iter().position(String::is_empty) {
            return Err(DetokError::EmptyStopString { index });
        }
        Ok(Self { stops, held: String::new(), stopped: None })
    }

    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// The index of the stop string found, if any.
    pub fn stopped(&self) -> Option<usize> {
        self.stopped
    }

    /// Feeds a chunk. After a stop, every push returns `Stopped` with empty text.
    pub fn push(&mut self, text: &str) -> StopStatus {
        if let Some(index) = self.stopped {
            return StopStatus::Stopped { text: String::new(), index };
        }
        self.held.push_str(text);
        // Earliest match wins; at equal starts, the stop listed first.
        let found =
            self.stops.iter().enumerate().filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i))).min();
        if let Some((at, index)) = found {
            self.held.truncate(at);
            self.stopped = Some(index);
            return StopStatus::Stopped { text: std::mem::take(&mut self.held), index };
        }
        let keep_from = self.partial_stop_start();
        let rest = self.held.split_off(keep_from);
        StopStatus::Continue(std::mem::replace(&mut self.held, rest))
    }

    /// Releases held text at the end of generation (no stop string can complete any more).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Byte offset of the longest suffix of `held` that is a proper prefix of some stop string.
    fn partial_stop_start(&self) -> usize {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let min_start = self.held.len().saturating_sub(longest.saturating_sub(1));
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| i >= min_start)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }
}

/// Token ids that end generation (EOS, `<|eot_id|>`, `<|im_end|>`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopIds {
    /// Sorted, deduplicated.
    ids: Vec<u32>,
}

impl StopIds {
    pub fn new(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut ids: Vec<u32> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        Self { ids }
    }

    /// Looks each token string up in the tokenizer's vocabulary.
    pub fn from_tokens<S: AsRef<str>>(tokenizer: &Tokenizer, tokens: &[S]) -> Result<Self, DetokError> {
        let ids = tokens
            .iter()
            .map(|t| {
                tokenizer
                    .token_to_id(t.as_ref())
                    .ok_or_else(|| DetokError::UnknownStopToken { token: t.as_ref().to_owned() })
            })
            .collect::<Result<Vec<u32>, DetokError>>()?;
        Ok(Self::new(ids))
    }

    pub fn contains(&self, id: u32) -> bool {
        self.ids.binary_search(&id).is_ok()
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

/// Why a [`TextStream`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop id was generated (it is not decoded into the text).
    StopToken(u32),
    /// Stop string number `index` appeared in the text (it is not in the text).
    StopString { index: usize },
}

/// One step of a [`TextStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Generation goes on; show `text` (may be empty).
    Text(String),
    /// Generation is over; show `text`, the last of it.
    Finished { text: String, reason: FinishReason },
}

/// Detokenizer + stop strings + stop ids: feed every sampled id, show every text, stop on
/// `Finished`. On a length limit, call [`TextStream::finish`] for the held-back tail.
#[derive(Debug, Clone)]
pub struct TextStream<T: Borrow<Tokenizer>> {
    detok: Detokenizer<T>,
    stops: StopChecker,
    stop_ids: StopIds,
    finished: Option<FinishReason>,
}

impl<T: Borrow<Tokenizer>> TextStream<T> {
    pub fn new(detok: Detokenizer<T>, stops: StopChecker, stop_ids: StopIds) -> Self {
        Self { detok, stops, stop_ids, finished: None }
    }

    pub fn finished(&self) -> Option<&FinishReason> {
        self.finished.as_ref()
    }

    /// Feeds one sampled id. After `Finished`, further ids give `Finished` with empty text.
    pub fn push(&mut self, id: u32) -> Result<StreamEvent, DetokError> {
        if let Some(reason) = &self.finished {
            return Ok(StreamEvent::Finished { text: String::new(), reason: reason.clone() });
        }
        if self.stop_ids.contains(id) {
            // Flush both stages: a held-back tail may still complete a stop string.
            let tail = self.detok.finish()?;
            return Ok(match self.stops.push(&tail) {
                StopStatus::Continue(mut text) => {
                    text.push_str(&self.stops.finish());
                    self.finish_with(text, FinishReason::StopToken(id))
                }
                StopStatus::Stopped { text, index } => self.finish_with(text, FinishReason::StopString { index }),
            });
        }
        let chunk = self.detok.push(id)?;
        Ok(match self.stops.push(&chunk) {
            StopStatus::Continue(text) => StreamEvent::Text(text),
            StopStatus::Stopped { text, index } => self.finish_with(text, FinishReason::StopString { index }),
        })
    }

    /// Ends without a stop (length limit, cancel): returns the text still held back, if any.
    pub fn finish(&mut self) -> Result<String, DetokError> {
        if self.finished.is_some() {
            return Ok(String::new());
        }
        let tail = self.detok.finish()?;
        Ok(match self.stops.push(&tail) {
            StopStatus::Continue(mut text) => {
                text.push_str(&self.stops.finish());
                text
            }
            StopStatus::Stopped { text, index } => {
                self.finished = Some(FinishReason::StopString { index });
                text
            }
        })
    }

    fn finish_with(&mut self, text: String, reason: FinishReason) -> StreamEvent {
        self.finished = Some(reason.clone());
        StreamEvent::Finished { text, reason }
    }
}
