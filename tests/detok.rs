//! Streaming detokenizer and stop handling, on the real llama3 and qwen3 tokenizers (run
//! scripts/fetch-tokenizers.sh first) and on small hand-built SentencePiece-style tokenizers.

use std::str::FromStr;
use std::sync::OnceLock;

use tokenizers::Tokenizer;
use webgpu_llm::detok::{
    DetokError, Detokenizer, DetokenizerOptions, FinishReason, StopChecker, StopIds, StopStatus, StreamEvent,
    TextStream,
};

fn load(name: &str) -> Tokenizer {
    let path = format!("{}/models/tokenizers/{name}/tokenizer.json", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run scripts/fetch-tokenizers.sh"));
    Tokenizer::from_bytes(bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn llama3() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load("llama3"))
}

fn qwen3() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load("qwen3"))
}

fn encode(tok: &Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, false).unwrap_or_else(|e| panic!("encode {text:?}: {e}")).get_ids().to_vec()
}

const AWKWARD: &[&str] = &[
    "Hello, world!",
    "  two leading spaces,   three inside,\tand a tab",
    "line one\nline two\n\n\nafter three newlines\r\n",
    "Crème brûlée, naïve façade, São Paulo, Øresund, Ångström",
    "日本語のテキストと中文文本，한국어 텍스트도。",
    "Emoji: 😀🎉🦀 and a rare one 🫠 then 🪿",
    "ZWJ family 👨‍👩‍👧‍👦, skin tones 👍🏽👋🏿, flags 🇫🇷🇯🇵, keycap 1️⃣",
    "fn main() {\n    let x: Vec<u8> = vec![0xFF; 4];\n    println!(\"{x:?}\");\n}\n",
    "Math: ∑ᵢ xᵢ² ≤ ∞, arrows ⟶ ⇒, box ┌─┐ and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "ends with a lone emoji 🧑🏻‍🚀",
];

struct Streamed {
    chunks: Vec<String>,
    /// Pushes that returned nothing although text came later: a character was held back.
    held_back: usize,
}

fn stream(tok: &Tokenizer, prompt: &[u32], ids: &[u32]) -> Streamed {
    let mut detok = Detokenizer::new(tok, prompt).expect("new");
    let mut chunks = Vec::new();
    let mut held_back = 0;
    for &id in ids {
        let chunk = detok.push(id).expect("push");
        if chunk.is_empty() {
            held_back += 1;
        }
        chunks.push(chunk);
    }
    chunks.push(detok.finish().expect("finish"));
    Streamed { chunks, held_back }
}

fn check_roundtrip(tok: &Tokenizer, name: &str) {
    let mut any_held_back = false;
    for &text in AWKWARD {
        let ids = encode(tok, text);
        let expected = tok.decode(&ids, true).expect("decode");
        let s = stream(tok, &[], &ids);
        for chunk in &s.chunks {
            assert!(!chunk.contains('\u{FFFD}'), "{name}: chunk {chunk:?} of {text:?} has U+FFFD");
        }
        assert_eq!(s.chunks.concat(), expected, "{name}: {text:?}");
        assert_eq!(expected, text, "{name}: byte-level BPE round-trips NFC text");
        any_held_back |= s.held_back > 0;
    }
    assert!(any_held_back, "{name}: no string split a character across tokens");
}

#[test]
fn llama3_streams_awkward_strings() {
    check_roundtrip(llama3(), "llama3");
}

#[test]
fn qwen3_streams_awkward_strings() {
    check_roundtrip(qwen3(), "qwen3");
}

#[test]
fn qwen3_normalises_to_nfc_and_the_stream_agrees() {
    let tok = qwen3();
    let decomposed = "Cre\u{300}me bru\u{302}le\u{301}e";
    let ids = encode(tok, decomposed);
    let s = stream(tok, &[], &ids);
    assert_eq!(s.chunks.concat(), tok.decode(&ids, true).expect("decode"));
}

#[test]
fn prompt_context_does_not_leak_into_output() {
    for tok in [llama3(), qwen3()] {
        let prompt = encode(tok, "The user wrote: 日本");
        let ids = encode(tok, " 語 and 😀 then more text");
        let s = stream(tok, &prompt, &ids);
        assert_eq!(s.chunks.concat(), " 語 and 😀 then more text");
    }
}

#[test]
fn special_tokens_skipped_by_default_and_kept_on_request() {
    let tok = llama3();
    let eot = tok.token_to_id("<|eot_id|>").expect("<|eot_id|> in llama3");
    let mut ids = encode(tok, "Hi there");
    ids.push(eot);
    ids.extend(encode(tok, " bye"));

    let s = stream(tok, &[], &ids);
    assert_eq!(s.chunks.concat(), "Hi there bye");

    let opts = DetokenizerOptions { skip_special_tokens: false, ..Default::default() };
    let mut detok = Detokenizer::with_options(tok, &[], opts).expect("new");
    let mut text = String::new();
    for &id in &ids {
        text.push_str(&detok.push(id).expect("push"));
    }
    text.push_str(&detok.finish().expect("finish"));
    assert_eq!(text, "Hi there<|eot_id|> bye");
}

#[test]
fn finish_flushes_an_incomplete_character_as_replacement() {
    let tok = llama3();
    // A rare emoji is several byte-level tokens; drop the last one.
    let ids = encode(tok, "ok 🫠");
    let cut = &ids[..ids.len() - 1];
    let mut detok = Detokenizer::new(tok, &[]).expect("new");
    let mut text = String::new();
    for &id in cut {
        let chunk = detok.push(id).expect("push");
        assert!(!chunk.contains('\u{FFFD}'));
        text.push_str(&chunk);
    }
    assert_eq!(text, "ok");
    let tail = detok.finish().expect("finish");
    assert!(tail.starts_with(' ') && tail.ends_with('\u{FFFD}'), "tail {tail:?}");
    assert_eq!(detok.finish().expect("finish twice"), "");
}

/// SentencePiece-style decoder (Llama 2 / Mistral): `▁` → space, byte fallback, strip the
/// leading space of the whole text. Per-token decoding would lose spaces and split `€`.
fn sentencepiece_like() -> Tokenizer {
    let json = r#"{
      "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
      "normalizer": null, "pre_tokenizer": null, "post_processor": null,
      "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}
      ]},
      "model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {
        "<unk>": 0, "▁Hello": 1, "▁world": 2, "!": 3, "▁costs": 4, "▁5": 5,
        "<0xE2>": 6, "<0x82>": 7, "<0xAC>": 8
      }}
    }"#;
    Tokenizer::from_str(json).expect("hand-built tokenizer")
}

#[test]
fn sentencepiece_spaces_and_byte_fallback() {
    let tok = sentencepiece_like();
    // "Hello world! costs 5€"
    let ids = [1, 2, 3, 4, 5, 6, 7, 8];
    let s = stream(&tok, &[], &ids);
    assert_eq!(s.chunks, vec!["Hello", " world", "!", " costs", " 5", "", "", "€", ""]);
    assert_eq!(s.chunks.concat(), tok.decode(&ids, true).expect("decode"));
    // With the prompt as context the first generated word keeps its space, which decoding it
    // alone (the Strip step) would drop.
    let s = stream(&tok, &[1], &[2, 3]);
    assert_eq!(s.chunks.concat(), " world!");
}

#[test]
fn stop_checker_holds_back_possible_starts() {
    let mut stops = StopChecker::new(["</answer>", "STOP"]).expect("stops");
    assert_eq!(stops.push("The value is 4"), StopStatus::Continue("The value is 4".into()));
    assert_eq!(stops.push("2 </ans"), StopStatus::Continue("2 ".into()));
    assert_eq!(stops.push("wer> trailing"), StopStatus::Stopped { text: String::new(), index: 0 });
    assert_eq!(stops.stopped(), Some(0));
    assert_eq!(stops.push("more"), StopStatus::Stopped { text: String::new(), index: 0 });
}

#[test]
fn stop_checker_releases_false_alarms() {
    let mut stops = StopChecker::new(["STOP"]).expect("stops");
    let mut shown = String::new();
    for chunk in ["a ST", "OR", "Y of S", "T", "O", "ck"] {
        match stops.push(chunk) {
            StopStatus::Continue(t) => shown.push_str(&t),
            StopStatus::Stopped { .. } => panic!("no stop string in the text"),
        }
    }
    shown.push_str(&stops.finish());
    assert_eq!(shown, "a STORY of STOck");
}

#[test]
fn stop_checker_earliest_match_wins_and_multibyte_is_safe() {
    let mut stops = StopChecker::new(["世界", "b"]).expect("stops");
    assert_eq!(stops.push("ab"), StopStatus::Stopped { text: "a".into(), index: 1 });
    let mut stops = StopChecker::new(["界!", "x"]).expect("stops");
    assert_eq!(stops.push("你好世界"), StopStatus::Continue("你好世".into()));
    assert_eq!(stops.push("?"), StopStatus::Continue("界?".into()));
}

#[test]
fn stop_checker_rejects_empty_stop() {
    assert_eq!(StopChecker::new(["ok", ""]).map(|_| ()), Err(DetokError::EmptyStopString { index: 1 }));
}

/// Feeds `ids` to a stream; returns the shown text and how it ended.
fn run_stream(
    tok: &Tokenizer,
    ids: &[u32],
    stops: &[&str],
    stop_ids: StopIds,
) -> (String, Option<FinishReason>, Vec<String>) {
    let detok = Detokenizer::new(tok, &[]).expect("new");
    let checker = StopChecker::new(stops.iter().copied()).expect("stops");
    let mut ts = TextStream::new(detok, checker, stop_ids);
    let mut shown = Vec::new();
    for &id in ids {
        match ts.push(id).expect("push") {
            StreamEvent::Text(t) => shown.push(t),
            StreamEvent::Finished { text, reason } => {
                shown.push(text);
                return (shown.concat(), Some(reason), shown);
            }
        }
    }
    shown.push(ts.finish().expect("finish"));
    (shown.concat(), None, shown)
}

#[test]
fn stop_string_split_across_tokens_is_caught_and_never_leaked() {
    for tok in [llama3(), qwen3()] {
        let text = "The answer is 42.\n\nUser: thanks 😀";
        let ids = encode(tok, text);
        let stop = "\n\nUser:";
        // The stop string must really span several tokens for this test to mean anything.
        let stop_tokens = encode(tok, stop).len();
        assert!(stop_tokens >= 2, "stop is {stop_tokens} token(s)");
        let (shown, reason, chunks) = run_stream(tok, &ids, &["nope", stop], StopIds::default());
        assert_eq!(shown, "The answer is 42.");
        assert_eq!(reason, Some(FinishReason::StopString { index: 1 }));
        assert!(chunks.iter().all(|c| !c.contains('\n')), "{chunks:?}");
    }
}

#[test]
fn stop_string_inside_a_multibyte_run() {
    let tok = llama3();
    let text = "Look: 👨‍👩‍👧‍👦 family";
    let ids = encode(tok, text);
    let (shown, reason, _) = run_stream(tok, &ids, &["👧"], StopIds::default());
    assert_eq!(shown, "Look: 👨‍👩‍");
    assert_eq!(reason, Some(FinishReason::StopString { index: 0 }));
}

#[test]
fn no_stop_means_everything_is_shown() {
    let tok = qwen3();
    let text = "a <|partial <|im_e and more";
    let ids = encode(tok, text);
    let (shown, reason, _) = run_stream(tok, &ids, &["<|im_end|>"], StopIds::default());
    assert_eq!(shown, text);
    assert_eq!(reason, None);
}

#[test]
fn stop_ids_end_the_stream_and_flush_held_text() {
    let tok = qwen3();
    let stop_ids = StopIds::from_tokens(tok, &["<|im_end|>", "<|endoftext|>"]).expect("ids");
    let im_end = tok.token_to_id("<|im_end|>").expect("<|im_end|>");
    assert!(stop_ids.contains(im_end));
    // "end <" could start the stop string "<END>": held back, then flushed at the stop id.
    let mut ids = encode(tok, "Done, the end <");
    ids.push(im_end);
    ids.extend(encode(tok, "never shown"));
    let (shown, reason, _) = run_stream(tok, &ids, &["<END>"], stop_ids);
    assert_eq!(shown, "Done, the end <");
    assert_eq!(reason, Some(FinishReason::StopToken(im_end)));
}

#[test]
fn unknown_stop_token_is_an_error() {
    assert_eq!(
        StopIds::from_tokens(llama3(), &["<|no_such_token|>"]),
        Err(DetokError::UnknownStopToken { token: "<|no_such_token|>".into() })
    );
}
