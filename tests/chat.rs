//! Chat templates: the llama3 and qwen3 templates from models/tokenizers (run
//! scripts/fetch-tokenizers.sh first) against strings derived by reading each template, plus
//! small templates for the HF globals (raise_exception, strftime_now, tojson) and config forms.
//!
//! Hugging Face–rendered fixtures plug in through [`check`]: drop JSON files into
//! `tests/fixtures/chat/` shaped as `{"model": "llama3" | "qwen3", "messages": [{"role", "content"}],
//! "add_generation_prompt": bool, "kwargs": {...} (optional), "expected": "..."}` and
//! `hf_fixtures_match` renders each one.

use std::sync::OnceLock;

use serde_json::{json, Map, Value as Json};
use webgpu_llm::chat::{ChatError, ChatTemplate, Message, TemplateDate};

fn config_text(model: &str) -> String {
    let path = format!("{}/models/tokenizers/{model}/tokenizer_config.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}; run scripts/fetch-tokenizers.sh"))
}

fn template(model: &str) -> &'static ChatTemplate {
    static LLAMA3: OnceLock<ChatTemplate> = OnceLock::new();
    static QWEN3: OnceLock<ChatTemplate> = OnceLock::new();
    let cell = match model {
        "llama3" => &LLAMA3,
        "qwen3" => &QWEN3,
        other => panic!("no template for {other}"),
    };
    cell.get_or_init(|| {
        ChatTemplate::from_tokenizer_config(&config_text(model)).unwrap_or_else(|e| panic!("{model}: {e}"))
    })
}

/// Renders `messages` and compares with `expected`, showing both on failure.
fn check(
    template: &ChatTemplate,
    messages: &[Message],
    add_generation_prompt: bool,
    kwargs: &Map<String, Json>,
    expected: &str,
) {
    let got = template
        .render_with(messages, None, add_generation_prompt, kwargs)
        .unwrap_or_else(|e| panic!("render {messages:?}: {e}"));
    assert_eq!(got, expected, "messages {messages:?}, add_generation_prompt {add_generation_prompt}");
}

fn no_kwargs() -> Map<String, Json> {
    Map::new()
}

fn system_user() -> Vec<Message> {
    vec![Message::system("You are a helpful assistant."), Message::user("What is 2+2?")]
}

fn user_only() -> Vec<Message> {
    vec![Message::user("  Hello there!\n")]
}

fn multi_turn() -> Vec<Message> {
    vec![Message::user("Hi"), Message::assistant("Hello! How can I help?"), Message::user("Tell me a joke.")]
}

// Llama 3 (original 8B-Instruct template): every message is
// `<|start_header_id|>ROLE<|end_header_id|>\n\n` + content|trim + `<|eot_id|>`, the first one
// prefixed with bos_token; the assistant header is appended whatever add_generation_prompt says.

const L3_HEADER_ASSISTANT: &str = "<|start_header_id|>assistant<|end_header_id|>\n\n";

#[test]
fn llama3_system_user() {
    let expected = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
                    You are a helpful assistant.<|eot_id|>\
                    <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        .to_owned()
        + L3_HEADER_ASSISTANT;
    for add in [true, false] {
        check(template("llama3"), &system_user(), add, &no_kwargs(), &expected);
    }
}

#[test]
fn llama3_user_only_trims_content() {
    let expected = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n\
                    Hello there!<|eot_id|>"
        .to_owned()
        + L3_HEADER_ASSISTANT;
    for add in [true, false] {
        check(template("llama3"), &user_only(), add, &no_kwargs(), &expected);
    }
}

#[test]
fn llama3_multi_turn() {
    let expected = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
                    <|start_header_id|>assistant<|end_header_id|>\n\n\
                    Hello! How can I help?<|eot_id|>\
                    <|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>"
        .to_owned()
        + L3_HEADER_ASSISTANT;
    for add in [true, false] {
        check(template("llama3"), &multi_turn(), add, &no_kwargs(), &expected);
    }
}

// Qwen3: ChatML `<|im_start|>ROLE\nCONTENT<|im_end|>\n`; a leading system message first; the
// generation prompt is `<|im_start|>assistant\n`. Assistant turns after the last user query get
// a `<think>` block (empty unless the content carries one).

#[test]
fn qwen3_system_user() {
    let body = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
                <|im_start|>user\nWhat is 2+2?<|im_end|>\n";
    let t = template("qwen3");
    check(t, &system_user(), false, &no_kwargs(), body);
    check(t, &system_user(), true, &no_kwargs(), &format!("{body}<|im_start|>assistant\n"));
}

#[test]
fn qwen3_user_only_keeps_content_verbatim() {
    let body = "<|im_start|>user\n  Hello there!\n<|im_end|>\n";
    let t = template("qwen3");
    check(t, &user_only(), false, &no_kwargs(), body);
    check(t, &user_only(), true, &no_kwargs(), &format!("{body}<|im_start|>assistant\n"));
}

#[test]
fn qwen3_multi_turn() {
    // The assistant turn precedes the last user query, so it gets no think block.
    let body = "<|im_start|>user\nHi<|im_end|>\n\
                <|im_start|>assistant\nHello! How can I help?<|im_end|>\n\
                <|im_start|>user\nTell me a joke.<|im_end|>\n";
    let t = template("qwen3");
    check(t, &multi_turn(), false, &no_kwargs(), body);
    check(t, &multi_turn(), true, &no_kwargs(), &format!("{body}<|im_start|>assistant\n"));
}

#[test]
fn qwen3_final_assistant_turn_gets_a_think_block() {
    let messages = vec![Message::user("Hi"), Message::assistant("<think>\nThe user greets me.\n</think>\n\nHello!")];
    let expected = "<|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\n<think>\nThe user greets me.\n</think>\n\n\
                    Hello!<|im_end|>\n";
    check(template("qwen3"), &messages, false, &no_kwargs(), expected);
    let plain = vec![Message::user("Hi"), Message::assistant("Hello!")];
    let expected = "<|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n";
    check(template("qwen3"), &plain, false, &no_kwargs(), expected);
}

#[test]
fn qwen3_enable_thinking_false() {
    let mut kwargs = Map::new();
    kwargs.insert("enable_thinking".into(), Json::Bool(false));
    let expected = "<|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\n<think>\n\n</think>\n\n";
    check(template("qwen3"), &[Message::user("Hi")], true, &kwargs, expected);
}

#[test]
fn special_tokens_from_config() {
    let l3 = template("llama3").special_tokens();
    assert_eq!(l3.get("bos_token"), Some(&json!("<|begin_of_text|>")));
    assert_eq!(l3.get("eos_token"), Some(&json!("<|end_of_text|>")));
    // Qwen3's bos_token is null: left undefined, as HF leaves it out.
    let q3 = template("qwen3").special_tokens();
    assert_eq!(q3.get("bos_token"), None);
    assert_eq!(q3.get("eos_token"), Some(&json!("<|im_end|>")));
    assert_eq!(q3.get("pad_token"), Some(&json!("<|endoftext|>")));
}

#[test]
fn hf_fixtures_match() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("no {} yet: nothing to compare", dir.display());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let f: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let model = f["model"].as_str().expect("model");
        let messages: Vec<Message> = f["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| Message::new(m["role"].as_str().expect("role"), m["content"].as_str().expect("content")))
            .collect();
        let add = f["add_generation_prompt"].as_bool().expect("add_generation_prompt");
        let kwargs = f.get("kwargs").and_then(Json::as_object).cloned().unwrap_or_default();
        let expected = f["expected"].as_str().expect("expected");
        check(template(model), &messages, add, &kwargs, expected);
    }
}

#[test]
fn raise_exception_is_a_typed_error() {
    let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}\
               {% endif %}ok";
    let t = ChatTemplate::new(src, None, None).expect("compiles");
    assert_eq!(t.render(&[Message::user("x")], false), Ok("ok".into()));
    assert_eq!(
        t.render(&[Message::assistant("x")], false),
        Err(ChatError::Raised { message: "first must be user".into() })
    );
}

#[test]
fn syntax_error_is_reported_at_construction() {
    let err = ChatTemplate::new("{% for m in messages %}{{ m.content }}", None, None).map(|_| ()).unwrap_err();
    assert!(matches!(err, ChatError::Syntax { .. }), "{err:?}");
}

#[test]
fn strftime_now_uses_the_fixed_date() {
    let src = "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%A %-d %B %y, %j %H:%M') }}";
    let t = ChatTemplate::new(src, None, None).expect("compiles");
    assert_eq!(t.render(&[], false), Ok("26 Jul 2024|Friday 26 July 24, 208 00:00".into()));
    let date = TemplateDate::new(2000, 3, 1).expect("date");
    let t = t.with_date(date).expect("recompiles");
    assert_eq!(t.render(&[], false), Ok("01 Mar 2000|Wednesday 1 March 00, 061 00:00".into()));
    assert_eq!(TemplateDate::new(2023, 2, 29), Err(ChatError::InvalidDate { year: 2023, month: 2, day: 29 }));
}

#[test]
fn tojson_matches_python_json_dumps() {
    let src = "{{ messages | tojson }}\n{{ {'a': [1, 2]} | tojson(indent=2) }}";
    let t = ChatTemplate::new(src, None, None).expect("compiles");
    let out = t.render(&[Message::user("<b> & 'q' é")], false).expect("renders");
    assert_eq!(out, "[{\"role\": \"user\", \"content\": \"<b> & 'q' é\"}]\n{\n  \"a\": [\n    1,\n    2\n  ]\n}");
}

#[test]
fn template_list_picks_default_or_named() {
    let config = json!({
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "chat_template": [
            {"name": "tool_use", "template": "tools:{{ bos_token }}"},
            {"name": "default", "template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{{ eos_token }}"}
        ]
    });
    let t = ChatTemplate::from_tokenizer_config_value(&config, "default").expect("default");
    assert_eq!(t.render(&[Message::user("hi")], true), Ok("<s>[user]hi</s>".into()));
    let t = ChatTemplate::from_tokenizer_config_value(&config, "tool_use").expect("tool_use");
    assert_eq!(t.render(&[], true), Ok("tools:<s>".into()));
    let err = ChatTemplate::from_tokenizer_config_value(&config, "rag").map(|_| ()).unwrap_err();
    assert_eq!(
        err,
        ChatError::NamedTemplateNotFound { wanted: "rag".into(), available: vec!["tool_use".into(), "default".into()] }
    );
    let none = json!({"eos_token": "</s>"});
    assert_eq!(
        ChatTemplate::from_tokenizer_config_value(&none, "default").map(|_| ()),
        Err(ChatError::MissingTemplate)
    );
}

#[test]
fn trim_and_lstrip_blocks_like_hf() {
    // HF compiles with trim_blocks and lstrip_blocks: block tags leave no newline or indent.
    let src =
        "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content }}\n    {% endif %}\n{% endfor %}\n";
    let t = ChatTemplate::new(src, None, None).expect("compiles");
    assert_eq!(t.render(&[Message::user("a"), Message::user("b")], false), Ok("U:a\nU:b\n".into()));
}
