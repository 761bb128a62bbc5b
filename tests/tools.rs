//! Tool calling (`webgpu_llm::tools` + the chat template + the engine).
//!
//! - The real Qwen3 and Llama 3.2 templates render tools, assistant `tool_calls` and `tool`
//!   results exactly as transformers' `apply_chat_template` does (tests/fixtures/tools/renders.json,
//!   made by scripts/make-tool-fixtures.py).
//! - Calls parse out of both syntaxes; text that only looks like a call stays text.
//! - Random walks through the masks of "required" / named constraints over the real vocabularies
//!   always end in calls whose arguments validate against the function's parameters.
//! - The tiny random Qwen3 and Llama fixtures with the real tokenizers and templates: "required",
//!   a named function, and "auto" (a call opened by the model is constrained from its trigger on)
//!   give valid calls; a round trip (call → tool result → next turn) renders and runs.

mod common;

use std::sync::Arc;

use serde_json::{json, Value};
use webgpu_llm::chat::{ChatTemplate, Message};
use webgpu_llm::engine::{Engine, EngineError, Event, Finish, GenerateOptions};
use webgpu_llm::guide::{Guidance, Guide};
use webgpu_llm::sampling::SamplingParams;
use webgpu_llm::tools::{parse_tools, ToolCall, ToolChoice, ToolError, ToolFormat, ToolRequest};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config_text(model: &str) -> String {
    std::fs::read_to_string(root().join("models/tokenizers").join(model).join("tokenizer_config.json")).unwrap()
}

fn weather() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 24},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"], "additionalProperties": false}}})
}

/// Parameters a random model can finish: enums and bounded integers only.
fn forecast() -> Value {
    json!({"type": "function", "function": {
        "name": "forecast", "description": "The forecast for the next days.",
        "parameters": {"type": "object", "properties": {
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["days", "unit"], "additionalProperties": false}}})
}

/// Panics unless `call` names one of `tools` and its arguments validate against its parameters.
fn assert_valid_call(call: &ToolCall, tools: &[Value], what: &str) {
    assert_eq!(call.kind, "function");
    assert!(call.id.starts_with("call_"), "{what}: id {}", call.id);
    let tool = tools
        .iter()
        .find(|t| t["function"]["name"] == call.function.name)
        .unwrap_or_else(|| panic!("{what}: unknown function {}", call.function.name));
    let args: Value = serde_json::from_str(&call.function.arguments)
        .unwrap_or_else(|e| panic!("{what}: arguments {:?} do not parse: {e}", call.function.arguments));
    let validator = jsonschema::validator_for(&tool["function"]["parameters"]).unwrap();
    let errors: Vec<String> = validator.iter_errors(&args).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {args} is invalid: {errors:?}");
}

#[test]
fn templates_render_tools_calls_and_results_as_transformers_does() {
    let path = root().join("tests/fixtures/tools/renders.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 8);
    for (i, case) in cases.iter().enumerate() {
        let model = case["model"].as_str().unwrap();
        let template = ChatTemplate::from_tokenizer_config(&config_text(model)).unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let tools = case["tools"].as_array().cloned();
        let kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
        let got = template.render_with(&messages, tools.as_deref(), true, &kwargs).unwrap();
        assert_eq!(got, case["expected"].as_str().unwrap(), "case {i} ({model})");
    }
}

#[test]
fn the_call_syntax_comes_from_the_template() {
    let format =
        |m: &str| ToolFormat::of_template(ChatTemplate::from_tokenizer_config(&config_text(m)).unwrap().source());
    assert_eq!(format("qwen3"), Some(ToolFormat::Hermes));
    assert_eq!(format("llama3_2"), Some(ToolFormat::Llama3Json));
    // Llama 3's original template renders no tools.
    assert_eq!(format("llama3"), None);
    let tools = json!([weather()]);
    assert_eq!(ToolRequest::new(&tools, None, None).unwrap_err(), ToolError::Unsupported);
    // Hidden tools need no support.
    ToolRequest::new(&tools, Some(&json!("none")), None).unwrap();
}

#[test]
fn bad_tools_and_choices_are_invalid_naming_the_field() {
    let field =
        |tools: Value, choice: Option<Value>| match ToolRequest::new(&tools, choice.as_ref(), Some(ToolFormat::Hermes))
        {
            Err(ToolError::Invalid { field, message }) => format!("{field}: {message}"),
            other => panic!("{tools} / {choice:?}: {other:?}"),
        };
    assert!(field(json!({"type": "function"}), None).starts_with("tools:"));
    assert!(field(json!([{"type": "retrieval"}]), None).starts_with("tools[0]"));
    assert!(field(json!([{"type": "function", "function": {"name": "a b"}}]), None).contains("a b"));
    assert!(field(json!([weather(), weather()]), None).contains("twice"));
    assert!(
        field(json!([{"type": "function", "function": {"name": "f", "parameters": 3}}]), None).contains("parameters")
    );
    assert!(field(json!([weather()]), Some(json!("always"))).starts_with("tool_choice"));
    assert!(field(json!([weather()]), Some(json!({"type": "function", "function": {"name": "nope"}}))).contains("nope"));
    assert!(field(json!([]), Some(json!("required"))).starts_with("tool_choice"));
    let named = ToolChoice::parse(
        Some(&json!({"type": "function", "function": {"name": "get_weather"}})),
        &parse_tools(&json!([weather()])).unwrap(),
    );
    assert_eq!(named.unwrap(), ToolChoice::Named("get_weather".into()));
}

#[test]
fn calls_parse_out_of_both_syntaxes() {
    let tools = parse_tools(&json!([weather(), forecast()])).unwrap();
    let hermes = ToolFormat::Hermes.parse(
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"forecast\", \"arguments\": {\"days\": 2, \"unit\": \"celsius\"}}\n</tool_call>",
        &tools,
    );
    assert_eq!(hermes.content, "Let me check.");
    let names: Vec<&str> = hermes.calls.iter().map(|c| c.function.name.as_str()).collect();
    assert_eq!(names, ["get_weather", "forecast"]);
    assert_eq!(hermes.calls[0].function.arguments, r#"{"city":"Paris"}"#);
    assert_ne!(hermes.calls[0].id, hermes.calls[1].id);
    // A block that is not a call of a known function stays text; so does a reply without calls.
    let bad = "<tool_call>\n{\"name\": \"launch\", \"arguments\": {}}\n</tool_call>";
    assert_eq!(ToolFormat::Hermes.parse(bad, &tools).content, bad);
    assert!(ToolFormat::Hermes.parse(bad, &tools).calls.is_empty());
    assert_eq!(ToolFormat::Hermes.parse("<tool_call>\n{\"name\": ", &tools).calls.len(), 0);

    let llama =
        ToolFormat::Llama3Json.parse("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", &tools);
    assert_eq!((llama.content.as_str(), llama.calls.len()), ("", 1));
    assert_eq!(llama.calls[0].function.arguments, r#"{"city":"Oslo"}"#);
    let two = ToolFormat::Llama3Json.parse(
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}; {\"name\": \"forecast\", \"parameters\": {\"days\": 1, \"unit\": \"celsius\"}}",
        &tools,
    );
    assert_eq!(two.calls.len(), 2);
    for text in ["The weather is fine.", "{\"answer\": 42}", "{\"name\": \"get_weather\", \"parameters\": {\"city\""] {
        let p = ToolFormat::Llama3Json.parse(text, &tools);
        assert_eq!((p.content.as_str(), p.calls.len()), (text, 0));
    }
}

#[test]
fn random_walks_through_required_call_masks_give_valid_calls() {
    let mut rng = common::Rng::new(common::seed("tool_walks"));
    let tools = json!([weather(), forecast()]);
    for (name, vocab, stops, format) in [
        ("qwen3", 151936u32, vec![151645u32, 151643], ToolFormat::Hermes),
        ("llama3_2", 128256, vec![128009, 128001, 128008], ToolFormat::Llama3Json),
    ] {
        let tok = tokenizers::Tokenizer::from_file(root().join("models/tokenizers").join(name).join("tokenizer.json"))
            .unwrap();
        let guidance = Guidance::new(Arc::new(tok.clone()), vocab, &stops).unwrap();
        let mut bits = vec![0u32; Guide::words(vocab)];
        for choice in [json!("required"), json!({"type": "function", "function": {"name": "forecast"}})] {
            let request = ToolRequest::new(&tools, Some(&choice), Some(format)).unwrap();
            let (constraint, lazy) = request.constraints();
            assert!(lazy.is_none());
            for walk in 0..4 {
                let mut guide = guidance.start(constraint.as_ref().unwrap()).unwrap();
                let mut ids = Vec::new();
                while !guide.is_stopped() {
                    assert!(ids.len() < 600, "{name} {choice} walk {walk}: no end");
                    guide.mask(&mut bits).unwrap();
                    let allowed: Vec<u32> =
                        (0..vocab).filter(|&i| bits[i as usize / 32] >> (i % 32) & 1 == 1).collect();
                    let id = allowed[rng.below(allowed.len() as u64) as usize];
                    guide.consume(id).unwrap();
                    if !stops.contains(&id) {
                        ids.push(id);
                    }
                }
                let text = tok.decode(&ids, false).unwrap();
                let parsed = request.parse(&text);
                assert!(!parsed.calls.is_empty(), "{name} {choice} walk {walk}: no call in {text:?}");
                assert_eq!(parsed.content, "", "{name}: {text:?}");
                for call in &parsed.calls {
                    assert_valid_call(call, tools.as_array().unwrap(), &format!("{name} {choice} walk {walk}"));
                    if choice.is_object() {
                        assert_eq!(call.function.name, "forecast");
                    }
                }
            }
        }
    }
}

/// A tiny random fixture (`qwen3` or `llama`) with the real tokenizer `tokenizer` and its template.
fn tiny(fixture: &str, tokenizer: &str) -> Engine {
    common::tiny_engine(fixture, Some(tokenizer), 2048)
}

/// One turn with `tools` / `choice`: the summary, the parsed reply, and whether `Triggered` came.
fn turn(
    engine: &mut Engine,
    messages: &[Message],
    tools: &Value,
    choice: Value,
    sampling: SamplingParams,
    max_tokens: u32,
) -> (webgpu_llm::engine::Summary, webgpu_llm::tools::Parsed, Option<usize>) {
    turn_with(engine, messages, tools, choice, true, sampling, max_tokens)
}

fn turn_with(
    engine: &mut Engine,
    messages: &[Message],
    tools: &Value,
    choice: Value,
    parallel: bool,
    sampling: SamplingParams,
    max_tokens: u32,
) -> (webgpu_llm::engine::Summary, webgpu_llm::tools::Parsed, Option<usize>) {
    let mut request = engine.tool_request(tools, Some(&choice)).unwrap();
    request.parallel = parallel;
    let prompt = engine.encode_chat_with(messages, request.template_tools().as_deref(), &Default::default()).unwrap();
    let mut opts = GenerateOptions { max_tokens, sampling, ..Default::default() };
    request.apply(&mut opts).unwrap();
    let mut triggered_at = None;
    let mut tokens = 0;
    let summary = pollster::block_on(engine.generate(common::ctx(), &prompt, &opts, &mut |e| {
        match e {
            Event::Triggered => triggered_at = Some(tokens),
            Event::Token { .. } => tokens += 1,
            Event::Prefilled { .. } => {}
        }
        true
    }))
    .unwrap();
    let parsed = request.parse(&summary.text);
    (summary, parsed, triggered_at)
}

#[test]
fn a_random_model_calls_tools_validly_when_required_or_named() {
    let tools = json!([weather(), forecast()]);
    let list = tools.as_array().unwrap().clone();
    let user = [Message::user("What's the weather in Paris this week?")];
    for (fixture, tokenizer) in [("qwen3", "qwen3"), ("llama", "llama3_2")] {
        let mut engine = tiny(fixture, tokenizer);
        for (seed, choice) in
            [json!("required"), json!({"type": "function", "function": {"name": "forecast"}})].into_iter().enumerate()
        {
            for (temperature, parallel) in [(0.0, false), (1.0, false), (1.0, true)] {
                let sampling = SamplingParams { temperature, seed: Some(7 + seed as u64), ..Default::default() };
                // Parallel calls from a random model rarely end: 100 tokens hold a call or two.
                let max = if parallel { 100 } else { 300 };
                let (s, parsed, _) = turn_with(&mut engine, &user, &tools, choice.clone(), parallel, sampling, max);
                let what = format!("{fixture} {choice} t={temperature} parallel={parallel}");
                assert!(!parsed.calls.is_empty(), "{what}: {:?}", s.text);
                for c in &parsed.calls {
                    assert_valid_call(c, &list, &what);
                }
                // One call ends the reply; parallel calls may go on (a random model rarely stops).
                if !parallel || fixture == "llama" {
                    assert_eq!((s.finish.clone(), parsed.calls.len()), (Finish::Stop, 1), "{what}: {:?}", s.text);
                    assert_eq!(parsed.content, "", "{what}");
                }
                eprintln!("{what}: {:?} {}", s.finish, s.text);
            }
        }
        // "none" hides the tools: the prompt is the plain chat's.
        let plain = engine.encode_chat(&user).unwrap();
        let request = engine.tool_request(&tools, Some(&json!("none"))).unwrap();
        assert_eq!(
            engine.encode_chat_with(&user, request.template_tools().as_deref(), &Default::default()).unwrap(),
            plain
        );
        assert_eq!(request.constraints().0.is_none() && request.constraints().1.is_none(), true);
    }
}

#[test]
fn auto_constrains_a_call_once_the_model_opens_one() {
    let tools = json!([forecast()]);
    let list = tools.as_array().unwrap().clone();
    let user = [Message::user("Forecast, please.")];
    // Qwen3: push the model into `<tool_call>` (a bias the grammar then overrides: inside the call
    // only enums and digits are allowed, so the biased token cannot appear there).
    let mut engine = tiny("qwen3", "qwen3");
    let open = engine.tokenizer.token_to_id("<tool_call>").unwrap();
    let sampling =
        SamplingParams { temperature: 1.0, seed: Some(3), logit_bias: vec![(open, 30.0)], ..Default::default() };
    let (s, parsed, triggered) = turn(&mut engine, &user, &tools, json!("auto"), sampling, 120);
    assert_eq!(triggered, Some(0), "{:?}", s.text);
    assert!(!parsed.calls.is_empty(), "{:?} ({:?})", s.text, s.finish);
    for c in &parsed.calls {
        assert_valid_call(c, &list, "qwen3 auto");
    }
    if s.finish == Finish::Stop {
        assert_eq!(parsed.content, "");
    }
    let g = s.guide.unwrap();
    assert!(g.masks > 0 && (g.masks as usize) < s.generated.len() + 1);
    // Without the push, the random model writes text: no trigger, no calls, no masks computed.
    let sampling = SamplingParams { temperature: 1.0, seed: Some(4), ..Default::default() };
    let (s, parsed, triggered) = turn(&mut engine, &user, &tools, json!("auto"), sampling, 24);
    if triggered.is_none() {
        assert!(parsed.calls.is_empty());
        assert_eq!(parsed.content, s.text);
        assert_eq!(s.guide.unwrap().masks, 0);
    }

    // Llama 3.2: a reply that starts with `{` is a call from its first token (replayed).
    let mut engine = tiny("llama", "llama3_2");
    let brace = engine.tokenizer.token_to_id("{\"").unwrap();
    let sampling =
        SamplingParams { temperature: 1.0, seed: Some(5), logit_bias: vec![(brace, 30.0)], ..Default::default() };
    let (s, parsed, triggered) = turn(&mut engine, &user, &tools, json!("auto"), sampling, 300);
    assert_eq!(triggered, Some(0), "{:?}", s.text);
    assert_eq!(s.finish, Finish::Stop, "{:?}", s.text);
    assert_eq!(parsed.calls.len(), 1, "{:?}", s.text);
    assert_valid_call(&parsed.calls[0], &list, "llama auto");
}

#[test]
fn a_round_trip_renders_the_call_and_the_result_for_the_next_turn() {
    let tools = json!([weather(), forecast()]);
    for (fixture, tokenizer) in [("qwen3", "qwen3"), ("llama", "llama3_2")] {
        let mut engine = tiny(fixture, tokenizer);
        let mut messages = vec![Message::user("What's the weather in Paris?")];
        let sampling = SamplingParams { temperature: 1.0, seed: Some(11), ..Default::default() };
        let (_, parsed, _) = turn(
            &mut engine,
            &messages,
            &tools,
            json!({"type": "function", "function": {"name": "get_weather"}}),
            sampling.clone(),
            200,
        );
        let call = parsed.calls[0].clone();
        messages.push(Message::tool_calls(parsed.content.clone(), vec![call.clone()]));
        messages.push(Message::tool(call.id.clone(), "{\"temperature\": 18}"));
        let request = engine.tool_request(&tools, Some(&json!("auto"))).unwrap();
        let text =
            engine.render_chat_with(&messages, request.template_tools().as_deref(), &Default::default()).unwrap();
        // The call as the model wrote it (the template's own layout) and the result are in the prompt.
        let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
        let written = match tokenizer {
            "qwen3" => format!(
                "<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {}}}\n</tool_call>",
                python_json(&args)
            ),
            _ => format!("{{\"name\": \"get_weather\", \"parameters\": {}}}<|eot_id|>", python_json(&args)),
        };
        assert!(text.contains(&written), "{tokenizer}: {written:?} not in {text}");
        assert!(text.contains("18}"), "{text}");
        // The next turn runs on that prompt (the KV cache keeps the common prefix).
        let (s, _, _) = turn(&mut engine, &messages, &tools, json!("auto"), sampling, 8);
        assert!(s.reused_tokens > 0 && !s.generated.is_empty());
    }
}

/// Python's `json.dumps` layout (", " and ": "), as templates' `tojson` writes it.
fn python_json(v: &Value) -> String {
    match v {
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(a) => format!("[{}]", a.iter().map(python_json).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

#[test]
fn tools_on_a_template_without_them_are_an_error() {
    let engine = tiny("llama", "llama3");
    match engine.tool_request(&json!([weather()]), None) {
        Err(EngineError::Tool(ToolError::Unsupported)) => {}
        other => panic!("{other:?}"),
    }
}
