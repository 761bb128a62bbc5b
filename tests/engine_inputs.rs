//! The API input matrix natively: every bad request is a typed error, and the engine then still
//! generates exactly what it generated before (nothing half-done leaks into the next call).
//! The JS side of the same matrix is in tests/browser/run.mjs.

mod common;

use std::path::PathBuf;

use webgpu_llm::chat::{ChatError, Message};
use webgpu_llm::engine::{open_gguf, Engine, EngineError, Finish, GenerateOptions, OpenOptions, Summary};
use webgpu_llm::model::ModelError;
use webgpu_llm::ops::attention::KvDtype;
use webgpu_llm::sampling::{SamplingError, SamplingParams};

const CONTEXT: u32 = 48;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kquant/tiny-q4_k_m.gguf")
}

fn open(opts: OpenOptions) -> Result<Engine, EngineError> {
    std::fs::create_dir_all("/tmp/webgpu-llm-xdg").ok();
    open_gguf(common::ctx(), &fixture(), opts)
}

fn generate(engine: &mut Engine, prompt: &[u32], opts: &GenerateOptions) -> Result<Summary, EngineError> {
    pollster::block_on(engine.generate(common::ctx(), prompt, opts, &mut |_| true))
}

/// Greedy, with every end-of-sequence id banned so lengths are ours to choose.
fn greedy(stop_ids: &[u32], max_tokens: u32) -> GenerateOptions {
    let logit_bias = stop_ids.iter().map(|&id| (id, f32::NEG_INFINITY)).collect();
    GenerateOptions { max_tokens, sampling: SamplingParams { logit_bias, ..Default::default() }, ..Default::default() }
}

#[test]
fn bad_requests_are_typed_and_leave_the_engine_usable() {
    let mut engine = open(OpenOptions { context: Some(CONTEXT), kv_dtype: KvDtype::F16, max_batch: 16 }).unwrap();
    let vocab = engine.model.config.vocab;
    let eos = engine.stop_ids.clone();
    let prompt: Vec<u32> = vec![1, 5, 9, 2, 7];
    let baseline = generate(&mut engine, &prompt, &greedy(&eos, 6)).unwrap();
    assert_eq!((baseline.generated.len(), baseline.finish), (6, Finish::Length));
    // Another prompt in between, so a bad call cannot pass by reusing the cache untouched.
    let other: Vec<u32> = vec![3, 4];

    let sampled = |f: fn(&mut SamplingParams)| {
        let mut o = greedy(&eos, 4);
        o.sampling.temperature = 0.7;
        f(&mut o.sampling);
        o
    };
    type Check = Box<dyn Fn(&EngineError) -> bool>;
    let cases: Vec<(&str, Vec<u32>, GenerateOptions, Check)> = vec![
        ("empty prompt", vec![], greedy(&eos, 4), Box::new(|e| matches!(e, EngineError::EmptyPrompt))),
        (
            "id = vocab",
            vec![1, vocab],
            greedy(&eos, 4),
            Box::new(
                move |e| matches!(e, EngineError::Model(ModelError::TokenOutOfRange { id, vocab: v }) if *id == vocab && *v == vocab),
            ),
        ),
        (
            "id u32::MAX",
            vec![u32::MAX, 1],
            greedy(&eos, 4),
            Box::new(|e| matches!(e, EngineError::Model(ModelError::TokenOutOfRange { id: u32::MAX, .. }))),
        ),
        (
            "max_tokens 0",
            prompt.clone(),
            greedy(&eos, 0),
            Box::new(|e| matches!(e, EngineError::InvalidOption { option: "max_tokens", .. })),
        ),
        (
            "prompt fills the context",
            vec![1; CONTEXT as usize],
            greedy(&eos, 4),
            Box::new(
                |e| matches!(e, EngineError::ContextOverflow { prompt, context: CONTEXT } if *prompt == CONTEXT as usize),
            ),
        ),
        (
            "NaN temperature",
            prompt.clone(),
            sampled(|s| s.temperature = f32::NAN),
            Box::new(|e| matches!(e, EngineError::Sampling(SamplingError::InvalidTemperature(t)) if t.is_nan())),
        ),
        (
            "negative temperature",
            prompt.clone(),
            sampled(|s| s.temperature = -0.5),
            Box::new(|e| matches!(e, EngineError::Sampling(SamplingError::InvalidTemperature(_)))),
        ),
        (
            "top_p 0",
            prompt.clone(),
            sampled(|s| s.top_p = 0.0),
            Box::new(|e| matches!(e, EngineError::Sampling(SamplingError::InvalidTopP(_)))),
        ),
        (
            "top_p 1.5",
            prompt.clone(),
            sampled(|s| s.top_p = 1.5),
            Box::new(|e| matches!(e, EngineError::Sampling(SamplingError::InvalidTopP(_)))),
        ),
    ];
    for (name, bad_prompt, opts, check) in &cases {
        generate(&mut engine, &other, &greedy(&eos, 3)).unwrap();
        let err = generate(&mut engine, bad_prompt, opts).expect_err(name);
        assert!(check(&err), "{name}: wrong error {err:?} ({err})");
        let again = generate(&mut engine, &prompt, &greedy(&eos, 6)).unwrap_or_else(|e| panic!("after {name}: {e}"));
        assert_eq!(again.generated, baseline.generated, "after {name}");
        assert_eq!(again.text, baseline.text, "after {name}");
    }
}

#[test]
fn huge_max_tokens_stops_at_the_context_and_long_stops_are_harmless() {
    let mut engine = open(OpenOptions { context: Some(CONTEXT), kv_dtype: KvDtype::F16, max_batch: 16 }).unwrap();
    let prompt: Vec<u32> = vec![1, 5, 9, 2, 7];
    let eos = engine.stop_ids.clone();
    let s = generate(&mut engine, &prompt, &greedy(&eos, u32::MAX)).unwrap();
    assert_eq!(s.finish, Finish::Length);
    // every position is used: the prompt, then each generated token but the last (never fed back)
    assert_eq!(prompt.len() + s.generated.len() - 1, CONTEXT as usize, "{} generated", s.generated.len());

    // A stop string longer than anything generated never matches and holds no text back.
    let short = generate(&mut engine, &prompt, &greedy(&eos, 5)).unwrap();
    let mut opts = greedy(&eos, 5);
    opts.stop = vec![format!("{}{}", short.text, "and then some more text than was ever generated")];
    let s = generate(&mut engine, &prompt, &opts).unwrap();
    assert_eq!((s.finish, s.generated, s.text), (Finish::Length, short.generated, short.text));
}

#[test]
fn bad_open_options_and_chats_are_typed() {
    for (opts, option) in [
        (OpenOptions { context: Some(0), kv_dtype: KvDtype::F16, max_batch: 16 }, "context"),
        (OpenOptions { context: Some(CONTEXT), kv_dtype: KvDtype::F16, max_batch: 0 }, "max_batch"),
    ] {
        match open(opts) {
            Err(EngineError::InvalidOption { option: o, .. }) => assert_eq!(o, option),
            other => panic!("{option}: {:?}", other.err()),
        }
    }
    let engine = open(OpenOptions { context: Some(CONTEXT), kv_dtype: KvDtype::F16, max_batch: 16 }).unwrap();
    engine.render_chat(&[Message::user("hi")]).expect("the fixture has a chat template");
    let bad_role = [Message::user("hi"), Message::new("robot", "beep")];
    match engine.encode_chat(&bad_role) {
        Err(EngineError::Chat(ChatError::BadRole { index: 1, role })) => assert_eq!(role, "robot"),
        other => panic!("bad role: {other:?}"),
    }
    assert!(matches!(engine.encode_chat(&[]), Err(EngineError::Chat(ChatError::NoMessages))));
    assert!(engine.encode_chat(&[Message::system("be brief"), Message::user("hi")]).is_ok());
}
