//! Chat prompts from a model's own Jinja `chat_template` (tokenizer_config.json), rendered with
//! minijinja the way Hugging Face `apply_chat_template` renders them with Jinja2.
//!
//! What HF sets up (transformers `utils/chat_template_utils.py`, `_compile_jinja_template` and
//! `render_jinja_template`), mirrored here:
//! - `trim_blocks` and `lstrip_blocks` on, `loopcontrols` on, trailing newline of the template
//!   dropped (Jinja2's default);
//! - globals `raise_exception(msg)` and `strftime_now(fmt)`; a `tojson` filter with Python's
//!   `json.dumps(ensure_ascii=False)` layout;
//! - context: `messages`, `tools` (OpenAI tool entries, or none), `documents` (none), `add_generation_prompt`, the
//!   tokenizer's special tokens (`bos_token`, `eos_token`, …) and any extra keyword arguments
//!   (e.g. Qwen3's `enable_thinking`).
//!
//! Python string methods (`.startswith`, `.split`, `.strip`, …) come from
//! `minijinja_contrib::pycompat`; Qwen3's template needs them.
//! Not supported: HF's `{% generation %}` tag (assistant-mask tracking).

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Kwargs, Object, Serde};
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use thiserror::Error;

const TEMPLATE_NAME: &str = "chat_template";

/// Special-token keys of HF's `SPECIAL_TOKENS_ATTRIBUTES`, passed to the template when present.
const SPECIAL_TOKEN_KEYS: [&str; 8] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
    "additional_special_tokens",
];

#[derive(Debug, Clone, PartialEq, Error)]
pub enum ChatError {
    #[error("tokenizer_config has no chat_template")]
    MissingTemplate,
    #[error("chat_template is a list without a template named {wanted:?} (has {available:?})")]
    NamedTemplateNotFound { wanted: String, available: Vec<String> },
    #[error("invalid tokenizer_config: {message}")]
    InvalidConfig { message: String },
    #[error("chat template syntax error (line {line:?}): {message}")]
    Syntax { message: String, line: Option<usize> },
    #[error("chat template failed to render (line {line:?}): {message}")]
    Render { message: String, line: Option<usize> },
    /// The template itself called `raise_exception` (e.g. "Conversation roles must alternate").
    #[error("chat template raised: {message}")]
    Raised { message: String },
    #[error("messages[{index}] has role `{role}`; use one of system, user, assistant, tool")]
    BadRole { index: usize, role: String },
    #[error("no messages to render")]
    NoMessages,
    #[error("invalid date for strftime_now: {year}-{month}-{day}")]
    InvalidDate { year: i32, month: u32, day: u32 },
}

/// One chat turn. `role` is usually "system", "user", "assistant" or "tool". An assistant turn
/// may carry `tool_calls` (its content then often empty); a "tool" turn answers one by
/// `tool_call_id`. A null content reads as "".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub tool_calls: Vec<crate::tools::ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn null_as_default<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A chat request's messages: at least one, each with a role templates know (they branch on these
/// and may drop any other turn without a word).
pub fn check_messages(messages: &[Message]) -> Result<(), ChatError> {
    if messages.is_empty() {
        return Err(ChatError::NoMessages);
    }
    match messages.iter().position(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool")) {
        Some(index) => Err(ChatError::BadRole { index, role: messages[index].role.clone() }),
        None => Ok(()),
    }
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into(), tool_calls: Vec::new(), tool_call_id: None, name: None }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
    /// An assistant turn that called tools.
    pub fn tool_calls(content: impl Into<String>, calls: Vec<crate::tools::ToolCall>) -> Self {
        Self { tool_calls: calls, ..Self::new("assistant", content) }
    }
    /// A tool's result, answering the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self { tool_call_id: Some(tool_call_id.into()), ..Self::new("tool", content) }
    }
}

/// A [`Message`] as the template sees it: a map whose keys enumerate in OpenAI's order (`role`,
/// `content`, then `tool_calls`, `tool_call_id`, `name` when present, so `'tool_calls' in message`
/// holds only for turns with calls). Call arguments are parsed JSON, as HF asks templates to get them.
#[derive(Debug)]
struct MessageObject(Message);

impl MessageObject {
    fn keys(&self) -> Vec<&'static str> {
        let m = &self.0;
        let mut keys = vec!["role", "content"];
        if !m.tool_calls.is_empty() {
            keys.push("tool_calls");
        }
        if m.tool_call_id.is_some() {
            keys.push("tool_call_id");
        }
        if m.name.is_some() {
            keys.push("name");
        }
        keys
    }
}

impl Object for MessageObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let m = &self.0;
        match key.as_str()? {
            "role" => Some(Value::from(m.role.as_str())),
            "content" => Some(Value::from(m.content.as_str())),
            "tool_calls" if !m.tool_calls.is_empty() => {
                let calls: Vec<Json> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let mut function = Map::new();
                        function.insert("name".into(), Json::String(c.function.name.clone()));
                        function.insert("arguments".into(), c.arguments_value());
                        let mut call = Map::new();
                        call.insert("id".into(), Json::String(c.id.clone()));
                        call.insert("type".into(), Json::String(c.kind.clone()));
                        call.insert("function".into(), Json::Object(function));
                        Json::Object(call)
                    })
                    .collect();
                Some(Value::from(Serde(calls)))
            }
            "tool_call_id" => m.tool_call_id.as_deref().map(Value::from),
            "name" => m.name.as_deref().map(Value::from),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.keys().into_iter().map(Value::from).collect())
    }
}

/// The date `strftime_now` formats. wasm32 has no clock, so the date is fixed; the default,
/// 26 July 2024, is the fallback `date_string` written into Llama 3.1's own template. The time of
/// day is always 00:00:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateDate {
    year: i32,
    month: u32,
    day: u32,
}

impl Default for TemplateDate {
    fn default() -> Self {
        Self { year: 2024, month: 7, day: 26 }
    }
}

impl TemplateDate {
    pub fn new(year: i32, month: u32, day: u32) -> Result<Self, ChatError> {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => 0,
        };
        if day == 0 || day > days {
            return Err(ChatError::InvalidDate { year, month, day });
        }
        Ok(Self { year, month, day })
    }

    /// 0 = Sunday (Sakamoto's method).
    fn weekday(&self) -> usize {
        const T: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
        let y = if self.month < 3 { self.year - 1 } else { self.year };
        let d = y + y.div_euclid(4) - y.div_euclid(100)
            + y.div_euclid(400)
            + T[(self.month - 1) as usize]
            + self.day as i32;
        d.rem_euclid(7) as usize
    }

    fn day_of_year(&self) -> u32 {
        let leap = (self.year % 4 == 0 && self.year % 100 != 0) || self.year % 400 == 0;
        let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        before[(self.month - 1) as usize] + self.day + u32::from(leap && self.month > 2)
    }

    /// Python `strftime` for the directives chat templates use, at 00:00:00.
    /// Also the glibc `%-d` / `%-m` forms (no padding) that some templates use.
    fn strftime(&self, format: &str) -> Result<String, String> {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
        let month = MONTHS[(self.month - 1) as usize];
        let weekday = DAYS[self.weekday()];
        let mut out = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let mut spec = chars.next();
            let unpadded = spec == Some('-');
            if unpadded {
                spec = chars.next();
            }
            let piece = match spec {
                Some('Y') => self.year.to_string(),
                Some('y') => format!("{:02}", self.year.rem_euclid(100)),
                Some('m') if unpadded => self.month.to_string(),
                Some('m') => format!("{:02}", self.month),
                Some('d') if unpadded => self.day.to_string(),
                Some('d') => format!("{:02}", self.day),
                Some('e') => format!("{:>2}", self.day),
                Some('j') => format!("{:03}", self.day_of_year()),
                Some('B') => month.to_owned(),
                Some('b') | Some('h') => month[..3].to_owned(),
                Some('A') => weekday.to_owned(),
                Some('a') => weekday[..3].to_owned(),
                Some('w') => self.weekday().to_string(),
                Some('H') | Some('M') | Some('S') => "00".to_owned(),
                Some('I') => "12".to_owned(),
                Some('p') => "AM".to_owned(),
                Some('%') => "%".to_owned(),
                other => {
                    return Err(format!(
                        "strftime_now: unsupported directive %{}",
                        other.map(String::from).unwrap_or_default()
                    ))
                }
            };
            out.push_str(&piece);
        }
        Ok(out)
    }
}

/// A compiled chat template plus the special tokens it is rendered with.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Special tokens by HF attribute name (`bos_token`, …); JSON strings or lists of strings.
    special_tokens: Map<String, Json>,
    source: String,
}

impl ChatTemplate {
    /// Compiles `template_src` (fails on a syntax error). `None` tokens are left undefined in the
    /// template, as HF leaves out special tokens the tokenizer does not have.
    pub fn new(
        template_src: impl Into<String>,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, ChatError> {
        let mut special_tokens = Map::new();
        if let Some(bos) = bos_token {
            special_tokens.insert("bos_token".into(), Json::String(bos.into()));
        }
        if let Some(eos) = eos_token {
            special_tokens.insert("eos_token".into(), Json::String(eos.into()));
        }
        Self::compile(template_src.into(), special_tokens, TemplateDate::default())
    }

    /// From the text of a tokenizer_config.json: its `chat_template` (a string, or a list of
    /// `{name, template}` from which "default" is taken) and its special tokens.
    pub fn from_tokenizer_config(config_json: &str) -> Result<Self, ChatError> {
        let config: Json =
            serde_json::from_str(config_json).map_err(|e| ChatError::InvalidConfig { message: e.to_string() })?;
        Self::from_tokenizer_config_value(&config, "default")
    }

    /// Like [`ChatTemplate::from_tokenizer_config`] on parsed JSON; `name` picks a template when
    /// `chat_template` is a list (HF uses "default" unless told otherwise, e.g. "tool_use").
    pub fn from_tokenizer_config_value(config: &Json, name: &str) -> Result<Self, ChatError> {
        let obj = config.as_object().ok_or_else(|| ChatError::InvalidConfig { message: "not a JSON object".into() })?;
        let source = select_template(obj.get("chat_template"), name)?;
        let mut special_tokens = Map::new();
        for key in SPECIAL_TOKEN_KEYS {
            if let Some(value) = obj.get(key).and_then(token_content) {
                special_tokens.insert(key.into(), value);
            }
        }
        Self::compile(source, special_tokens, TemplateDate::default())
    }

    /// Sets or replaces a special token variable (e.g. `pad_token`).
    pub fn with_special_token(mut self, name: &str, value: &str) -> Self {
        self.special_tokens.insert(name.into(), Json::String(value.into()));
        self
    }

    /// The date `strftime_now` reports (see [`TemplateDate`]); pass today's date where a clock
    /// exists.
    pub fn with_date(self, date: TemplateDate) -> Result<Self, ChatError> {
        let source =
            self.env.get_template(TEMPLATE_NAME).map(|t| t.source().to_owned()).map_err(|e| render_error(&e))?;
        Self::compile(source, self.special_tokens, date)
    }

    /// The special token variables passed to the template.
    pub fn special_tokens(&self) -> &Map<String, Json> {
        &self.special_tokens
    }

    /// Renders the prompt for `messages`; with `add_generation_prompt` the template appends the
    /// assistant header (if it honours the flag: Llama 3's original template always does).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatError> {
        self.render_with(messages, None, add_generation_prompt, &Map::new())
    }

    /// The template's source (what it can do: tools, thinking).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// [`ChatTemplate::render`] with extra template variables, as HF's `apply_chat_template(...,
    /// **kwargs)` (e.g. `{"enable_thinking": false}` for Qwen3). They override the defaults.
    pub fn render_with(
        &self,
        messages: &[Message],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
        extra: &Map<String, Json>,
    ) -> Result<String, ChatError> {
        // Messages are objects with Python's key order (role, content) so `tojson` prints them as
        // HF does; the other variables go through serde.
        let messages: Vec<Value> = messages.iter().map(|m| Value::from_object(MessageObject(m.clone()))).collect();
        let mut ctx: BTreeMap<String, Value> =
            self.special_tokens.iter().map(|(k, v)| (k.clone(), Value::from(Serde(v)))).collect();
        ctx.insert("messages".into(), Value::from(messages));
        // OpenAI's tool entries, as HF passes `tools` (None without any).
        ctx.insert("tools".into(), tools.map_or(Value::from(()), |t| Value::from(Serde(t))));
        ctx.insert("documents".into(), Value::from(()));
        ctx.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        for (k, v) in extra {
            ctx.insert(k.clone(), Value::from(Serde(v)));
        }
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| render_error(&e))?;
        template.render(Value::from(ctx)).map_err(|e| render_error(&e))
    }

    fn compile(source: String, special_tokens: Map<String, Json>, date: TemplateDate) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        let syntax =
            SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(|e| syntax_error(&e))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        let date = Arc::new(date);
        env.add_function("strftime_now", move |format: &str| {
            date.strftime(format).map_err(|msg| minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone()).map_err(|e| syntax_error(&e))?;
        Ok(Self { env, special_tokens, source })
    }
}

/// `chat_template` as a string, or HF's list form `[{"name": ..., "template": ...}, ...]`.
fn select_template(value: Option<&Json>, name: &str) -> Result<String, ChatError> {
    match value {
        None | Some(Json::Null) => Err(ChatError::MissingTemplate),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(Json::Array(items)) => {
            let named = |item: &Json| -> Option<(String, String)> {
                let name = item.get("name")?.as_str()?.to_owned();
                let template = item.get("template")?.as_str()?.to_owned();
                Some((name, template))
            };
            let templates: Vec<(String, String)> = items.iter().filter_map(named).collect();
            if let Some((_, t)) = templates.iter().find(|(n, _)| n == name) {
                return Ok(t.clone());
            }
            Err(ChatError::NamedTemplateNotFound {
                wanted: name.to_owned(),
                available: templates.into_iter().map(|(n, _)| n).collect(),
            })
        }
        Some(other) => {
            Err(ChatError::InvalidConfig { message: format!("chat_template is neither a string nor a list: {other}") })
        }
    }
}

/// A special token as a plain string: configs write either `"<s>"` or an AddedToken object
/// `{"content": "<s>", ...}`; lists (additional_special_tokens) keep their strings.
fn token_content(value: &Json) -> Option<Json> {
    match value {
        Json::String(s) => Some(Json::String(s.clone())),
        Json::Object(o) => o.get("content").and_then(|c| c.as_str()).map(Json::from),
        Json::Array(items) => Some(Json::Array(items.iter().filter_map(token_content).collect())),
        _ => None,
    }
}

/// Marks an error as coming from the template's own `raise_exception`.
#[derive(Debug, Clone, Error)]
#[error("{0}")]
struct RaisedByTemplate(String);

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(RaisedByTemplate(message)))
}

/// HF's `tojson`: Python `json.dumps(x, ensure_ascii=False, indent=indent)`, so `", "` / `": "`
/// separators without indent, and no HTML escaping (minijinja's own `tojson` escapes `<>&'`).
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    // Accepted for compatibility; HF's filter takes them too. Key order is the value's own.
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let result = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, PythonFormatter)),
    };
    result
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: cannot serialize").with_source(e))?;
    let text = String::from_utf8(out)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: not UTF-8").with_source(e))?;
    Ok(Value::from_safe_string(text))
}

/// serde_json formatter with Python's default `json.dumps` separators: `", "` and `": "`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

fn syntax_error(e: &minijinja::Error) -> ChatError {
    ChatError::Syntax { message: e.to_string(), line: e.line() }
}

fn render_error(e: &minijinja::Error) -> ChatError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(raised) = s.downcast_ref::<RaisedByTemplate>() {
            return ChatError::Raised { message: raised.0.clone() };
        }
        source = s.source();
    }
    ChatError::Render { message: e.to_string(), line: e.line() }
}
