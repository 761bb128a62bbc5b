//! Constrained decoding (`webgpu_llm::guide` + the engine): every output parses and validates.
//!
//! - The grammar engine alone, over the real Qwen3 (151k) and Llama 3 (128k) vocabularies: random
//!   walks through its masks (each step a uniformly random allowed token, the worst case for
//!   "does the mask really hold") end in values valid under every schema of
//!   tests/fixtures/structured/schemas.json.
//! - The engine on the tiny random Qwen3 fixture with the real tokenizer: a random model emits
//!   garbage unless constrained, so valid JSON there proves the GPU mask path (sampled and greedy).
//! - The engine on the real default model (SmolLM2-135M Q4_1): the same schemas, regexes, grammars.
//! - Bad constraints are typed errors before anything is generated, max_tokens gives `Length`,
//!   abort mid-value works, and the engine generates exactly as before afterwards.

mod common;

use std::sync::Arc;

use serde_json::Value;
use webgpu_llm::chat::Message;
use webgpu_llm::engine::{open_gguf, Engine, EngineError, Event, Finish, GenerateOptions, OpenOptions, Summary};
use webgpu_llm::guide::{Constraint, Guidance, Guide, GuideError};
use webgpu_llm::sampling::SamplingParams;

struct Case {
    name: String,
    prompt: String,
    constraint: Constraint,
    /// How to check the output text.
    check: Check,
}

enum Check {
    Schema(Value),
    Regex(regex::Regex),
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/structured/schemas.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    let mut out = Vec::new();
    for v in all["schemas"].as_array().unwrap() {
        let schema = v["schema"].clone();
        out.push(Case {
            name: s(v, "name"),
            prompt: s(v, "prompt"),
            constraint: Constraint::JsonSchema(schema.clone()),
            check: Check::Schema(schema),
        });
    }
    for v in all["regexes"].as_array().unwrap() {
        let rx = s(v, "pattern");
        out.push(Case {
            name: format!("regex {}", s(v, "name")),
            prompt: s(v, "prompt"),
            check: Check::Regex(regex::Regex::new(&format!("^(?:{rx})$")).unwrap()),
            constraint: Constraint::Regex(rx),
        });
    }
    for v in all["grammars"].as_array().unwrap() {
        out.push(Case {
            name: format!("grammar {}", s(v, "name")),
            prompt: s(v, "prompt"),
            constraint: Constraint::Grammar(s(v, "grammar")),
            check: Check::Regex(regex::Regex::new(&s(v, "check")).unwrap()),
        });
    }
    assert!(out.iter().filter(|c| matches!(c.check, Check::Schema(_))).count() >= 20);
    out
}

/// Cases whose values have a bounded length (no free-length `number`).
fn bounded(c: &Case) -> bool {
    !matches!(&c.check, Check::Schema(s) if s.to_string().contains(r#""type":"number""#))
}

/// Panics unless `text` is a value `case` accepts.
fn assert_valid(case: &Case, text: &str, what: &str) {
    match &case.check {
        Check::Schema(schema) => {
            let value: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{what} {}: output does not parse ({e}): {text:?}", case.name));
            let validator = jsonschema::options().should_validate_formats(true).build(schema).unwrap();
            let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{what} {}: {text:?} is invalid: {errors:?}", case.name);
        }
        Check::Regex(rx) => assert!(rx.is_match(text), "{what} {}: {text:?} does not match {rx}", case.name),
    }
}

fn tokenizer_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tokenizers").join(name)
}

/// The token ids' text, as the engine's detokenizer would give it (special tokens skipped).
fn decode(tok: &tokenizers::Tokenizer, ids: &[u32]) -> String {
    tok.decode(ids, true).unwrap()
}

#[test]
fn random_walks_through_the_masks_give_valid_values() {
    let mut rng = common::Rng::new(common::seed("structured_walks"));
    for (name, vocab, stops) in
        [("qwen3", 151936u32, vec![151645u32, 151643]), ("llama3", 128256, vec![128009, 128001])]
    {
        let tok = tokenizers::Tokenizer::from_file(tokenizer_dir(name).join("tokenizer.json")).unwrap();
        let t0 = std::time::Instant::now();
        let guidance = Guidance::new(Arc::new(tok.clone()), vocab, &stops).unwrap();
        eprintln!("{name}: token trie and slices built in {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
        let mut bits = vec![0u32; Guide::words(vocab)];
        let (mut masks, mut mask_time) = (0u32, std::time::Duration::ZERO);
        // Uniform walks never end a free-length number (1,000 digit tokens against a few that
        // close it); numbers are covered by the model runs below.
        for case in cases().into_iter().filter(bounded) {
            for walk in 0..3 {
                let mut guide = guidance.start(&case.constraint).unwrap();
                let mut ids = Vec::new();
                while !guide.is_stopped() {
                    assert!(ids.len() < 400, "{name} {} walk {walk}: no end after 400 tokens", case.name);
                    let t = std::time::Instant::now();
                    guide.mask(&mut bits).unwrap();
                    mask_time += t.elapsed();
                    masks += 1;
                    let allowed: Vec<u32> =
                        (0..vocab).filter(|&i| bits[i as usize / 32] >> (i % 32) & 1 == 1).collect();
                    assert!(!allowed.is_empty(), "{name} {}: empty mask", case.name);
                    // Stop tokens are in the mask only where the value may end.
                    let id = allowed[rng.below(allowed.len() as u64) as usize];
                    guide.consume(id).unwrap();
                    if !stops.contains(&id) {
                        ids.push(id);
                    }
                }
                assert_valid(&case, &decode(&tok, &ids), &format!("{name} walk {walk}"));
            }
        }
        eprintln!("{name}: {masks} masks, {:.1} µs each on average", mask_time.as_secs_f64() * 1e6 / masks as f64);
    }
}

#[test]
fn bad_constraints_are_invalid_with_the_reason() {
    let tok = tokenizers::Tokenizer::from_file(tokenizer_dir("qwen3").join("tokenizer.json")).unwrap();
    let guidance = Guidance::new(Arc::new(tok), 151936, &[151645]).unwrap();
    let bad = |c: Constraint| match guidance.start(&c) {
        Err(GuideError::Invalid { option, message }) => (option, message),
        Err(e) => panic!("{c:?}: {e}"),
        Ok(_) => panic!("{c:?} was accepted"),
    };
    let schema = |v: Value| Constraint::JsonSchema(v);
    // unsupported keywords are named
    let (option, message) = bad(schema(serde_json::json!({"type": "array", "uniqueItems": true})));
    assert_eq!(option, "json_schema");
    assert!(message.contains("uniqueItems"), "{message}");
    let (_, message) = bad(schema(serde_json::json!({"type": "object", "if": {"required": ["a"]}, "then": {}})));
    assert!(message.contains("if"), "{message}");
    let (_, message) = bad(schema(serde_json::json!({"type": "strng"})));
    assert!(message.contains("strng"), "{message}");
    let (_, message) = bad(schema(serde_json::json!({"type": "string", "format": "colour"})));
    assert!(message.contains("colour"), "{message}");
    let (_, message) = bad(schema(serde_json::json!({"$ref": "#/$defs/missing"})));
    assert!(message.contains("missing"), "{message}");
    assert_eq!(bad(schema(serde_json::json!(["not", "a", "schema"]))).0, "json_schema");
    // unsatisfiable
    bad(schema(serde_json::json!({"type": "integer", "minimum": 5, "maximum": 2})));
    assert_eq!(bad(Constraint::Regex("[a-".into())).0, "regex");
    let (option, message) = bad(Constraint::Grammar("start: nothing_defined".into()));
    assert_eq!(option, "grammar");
    assert!(message.contains("nothing_defined"), "{message}");
    // a schema that is `true` accepts any JSON value
    guidance.start(&schema(Value::Bool(true))).unwrap();
}

/// The tiny random Qwen3 fixture (2 layers, the real 151,936-token vocabulary) with the real
/// Qwen3 tokenizer and chat template.
fn tiny_qwen3(context: u32) -> Engine {
    common::tiny_engine("qwen3", None, context)
}

fn generate(engine: &mut Engine, prompt: &[u32], opts: &GenerateOptions) -> Result<Summary, EngineError> {
    pollster::block_on(engine.generate(common::ctx(), prompt, opts, &mut |_| true))
}

fn chat_ids(engine: &Engine, prompt: &str) -> Vec<u32> {
    engine.encode_chat(&[Message::user(prompt)]).unwrap()
}

/// Every case on `engine` (those `keep` keeps), sampled (`temperature`) or greedy; each must
/// end by itself (`Stop`) with a valid value.
fn run_all(engine: &mut Engine, what: &str, temperature: f32, max_tokens: u32, keep: &dyn Fn(usize, &Case) -> bool) {
    let (mut masks, mut mask_s, mut max_s) = (0u64, 0.0, 0.0f64);
    for (i, case) in cases().into_iter().enumerate().filter(|(i, c)| keep(*i, c)) {
        let prompt = chat_ids(engine, &case.prompt);
        let sampling = SamplingParams { temperature, seed: Some(1000 + i as u64), ..Default::default() };
        let opts =
            GenerateOptions { max_tokens, sampling, constraint: Some(case.constraint.clone()), ..Default::default() };
        let s = generate(engine, &prompt, &opts).unwrap_or_else(|e| panic!("{what} {}: {e}", case.name));
        assert_eq!(s.finish, Finish::Stop, "{what} {}: {:?} after {} tokens", case.name, s.text, s.generated.len());
        assert_valid(&case, &s.text, what);
        let g = s.guide.unwrap();
        assert_eq!(g.masks as usize, s.generated.len(), "{what} {}: one mask per token", case.name);
        masks += g.masks;
        mask_s += g.mask_seconds;
        max_s = max_s.max(g.mask_max_seconds);
        eprintln!("{what} {}: {}", case.name, s.text);
    }
    eprintln!("{what}: {masks} masks, {:.1} µs average, {:.2} ms largest", 1e6 * mask_s / masks as f64, 1e3 * max_s);
}

#[test]
fn a_random_model_gives_valid_values_when_constrained() {
    let mut engine = tiny_qwen3(1024);
    // Unconstrained, the random model does not write JSON.
    let prompt = chat_ids(&engine, "Give a fictional person's name and age as JSON.");
    let free = generate(&mut engine, &prompt, &GenerateOptions { max_tokens: 24, ..Default::default() }).unwrap();
    assert!(serde_json::from_str::<Value>(&free.text).is_err(), "{:?}", free.text);
    run_all(&mut engine, "tiny qwen3 sampled", 1.0, 400, &|_, _| true);
    // Greedy, a random model repeats itself: in a free-length number's fraction it never stops
    // (the grammar bounds digits only as the schema does), so those cases run sampled only; every
    // other bounded case (the default model runs them all greedy below).
    run_all(&mut engine, "tiny qwen3 greedy", 0.0, 400, &|i, c| i % 2 == 0 && bounded(c));
}

#[test]
fn the_default_model_gives_valid_values() {
    std::fs::create_dir_all("/tmp/webgpu-llm-xdg").ok();
    let mut engine =
        open_gguf(common::ctx(), &common::smollm2_path(), OpenOptions { context: Some(1024), ..Default::default() })
            .unwrap();
    engine.model.clock = common::now;
    run_all(&mut engine, "smollm2 greedy", 0.0, 300, &|_, _| true);
}

#[test]
fn length_abort_and_errors_leave_the_engine_as_it_was() {
    let mut engine = tiny_qwen3(512);
    let prompt = chat_ids(&engine, "Describe a book with its author as JSON.");
    let schema = cases().into_iter().find(|c| c.name == "nested").unwrap().constraint;
    let opts = |max_tokens| GenerateOptions {
        max_tokens,
        sampling: SamplingParams { temperature: 0.8, seed: Some(5), ..Default::default() },
        constraint: Some(schema.clone()),
        ..Default::default()
    };
    let baseline = generate(&mut engine, &prompt, &opts(400)).unwrap();
    assert_eq!(baseline.finish, Finish::Stop);
    assert!(baseline.generated.len() > 6, "{:?}", baseline.text);

    // max_tokens cuts the value: `Length`, and the text is the valid value's prefix.
    let cut = generate(&mut engine, &prompt, &opts(5)).unwrap();
    assert_eq!(cut.finish, Finish::Length);
    assert_eq!(cut.generated[..], baseline.generated[..5]);

    // Abort mid-value.
    let mut seen = 0;
    let aborted = pollster::block_on(engine.generate(common::ctx(), &prompt, &opts(400), &mut |ev| {
        if let Event::Token { .. } = ev {
            seen += 1;
        }
        seen < 3
    }))
    .unwrap();
    assert_eq!(aborted.finish, Finish::Aborted);
    assert_eq!(aborted.generated[..], baseline.generated[..3]);

    // Bad constraints: typed, before anything runs.
    for (c, option) in [
        (Constraint::JsonSchema(serde_json::json!({"type": "array", "contains": {}})), "json_schema"),
        (Constraint::Regex("(".into()), "regex"),
        (Constraint::Grammar("start: (".into()), "grammar"),
    ] {
        let o = GenerateOptions { constraint: Some(c), ..opts(20) };
        match generate(&mut engine, &prompt, &o) {
            Err(EngineError::Guide(GuideError::Invalid { option: o, .. })) => assert_eq!(o, option),
            other => panic!("{option}: {other:?}"),
        }
    }

    // Unconstrained generation in between, then the same constrained value again.
    generate(&mut engine, &prompt, &GenerateOptions { max_tokens: 8, ..Default::default() }).unwrap();
    let again = generate(&mut engine, &prompt, &opts(400)).unwrap();
    assert_eq!(again.generated, baseline.generated);
    assert_eq!(again.text, baseline.text);
}
