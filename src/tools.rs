//! Tool calling in OpenAI's shapes over a model's own chat template: the tools go to the template,
//! the model's call syntax is constrained while it writes a call and parsed into `tool_calls`.
//!
//! Two call syntaxes, told apart by the template's text:
//! - Hermes (Qwen2.5/Qwen3, SmolLM3, Hermes): `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`,
//!   one block per call;
//! - Llama 3.1+ JSON: the whole reply is `{"name": …, "parameters": {…}}`.
//!
//! `tool_choice` "required" or a named function constrains the whole reply to calls whose arguments
//! validate against the function's `parameters`; "auto" leaves the reply free until the model opens
//! a call, then constrains the call ([`Lazy`]); "none" hides the tools from the template.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use thiserror::Error;

use crate::guide::Constraint;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum ToolError {
    /// A malformed `tools` / `tool_choice` / message field (`field` says which).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The model's chat template takes no tools (or writes calls in a syntax we do not parse).
    #[error("this model's chat template does not support tools (it renders no tool definitions or its call syntax is unknown)")]
    Unsupported,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ToolError {
    ToolError::Invalid { field: field.into(), message: message.into() }
}

/// One call as OpenAI shapes it: `{id, type: "function", function: {name, arguments}}`, the
/// arguments a JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text (an object given instead is accepted and written out as text).
    #[serde(deserialize_with = "arguments_text")]
    pub arguments: String,
}

fn arguments_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Json::deserialize(d)? {
        Json::String(s) => s,
        Json::Null => "{}".into(),
        other => other.to_string(),
    })
}

impl ToolCall {
    /// The arguments as the template wants them: parsed (templates `tojson` them), or the text
    /// when it is not JSON.
    pub fn arguments_value(&self) -> Json {
        serde_json::from_str(&self.function.arguments).unwrap_or_else(|_| Json::String(self.function.arguments.clone()))
    }
}

/// A function the model may call: OpenAI's `{type: "function", function: {name, description?,
/// parameters?}}`, kept whole for the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    /// The parameters' JSON Schema (`{"type": "object", "properties": {}}` when absent).
    pub parameters: Json,
    /// The entry as given, rendered by the template.
    pub spec: Json,
}

/// `tools` in OpenAI's shape; names must be unique and `[A-Za-z0-9_-]{1,64}` as OpenAI requires.
pub fn parse_tools(tools: &Json) -> Result<Vec<Tool>, ToolError> {
    let list =
        tools.as_array().ok_or_else(|| invalid("tools", "must be an array of {type: \"function\", function}"))?;
    let mut out: Vec<Tool> = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let field = format!("tools[{i}]");
        let kind = t.get("type").and_then(Json::as_str);
        if kind != Some("function") {
            return Err(invalid(
                &field,
                format!("type must be \"function\", not {}", t.get("type").unwrap_or(&Json::Null)),
            ));
        }
        let f =
            t.get("function").and_then(Json::as_object).ok_or_else(|| invalid(&field, "has no `function` object"))?;
        let name =
            f.get("name").and_then(Json::as_str).ok_or_else(|| invalid(&field, "function.name must be a string"))?;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(&field, format!("function.name {name:?} must be 1-64 letters, digits, _ or -")));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(invalid(&field, format!("function {name:?} is defined twice")));
        }
        let parameters = match f.get("parameters") {
            None | Some(Json::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Json::Object(_)) => p.clone(),
            Some(other) => {
                return Err(invalid(&field, format!("function.parameters must be a JSON Schema object, not {other}")))
            }
        };
        out.push(Tool { name: name.into(), parameters, spec: t.clone() });
    }
    Ok(out)
}

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The tools are not shown to the model.
    None,
    /// The model writes text or calls; a call it opens is constrained.
    Auto,
    /// The reply is one or more calls.
    Required,
    /// The reply is a call of this function.
    Named(String),
}

impl ToolChoice {
    /// `"none" | "auto" | "required" | {type: "function", function: {name}}`; absent is "auto".
    pub fn parse(v: Option<&Json>, tools: &[Tool]) -> Result<Self, ToolError> {
        let choice = match v {
            None | Some(Json::Null) => ToolChoice::Auto,
            Some(Json::String(s)) => match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => {
                    return Err(invalid(
                        "tool_choice",
                        format!(
                        "{other:?}: use \"none\", \"auto\", \"required\" or {{type: \"function\", function: {{name}}}}"
                    ),
                    ))
                }
            },
            Some(o) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Json::as_str)
                    .filter(|_| o.get("type").and_then(Json::as_str) == Some("function"))
                    .ok_or_else(|| {
                        invalid("tool_choice", "must be a string or {type: \"function\", function: {name}}")
                    })?;
                ToolChoice::Named(name.into())
            }
        };
        if let ToolChoice::Named(name) = &choice {
            if !tools.iter().any(|t| &t.name == name) {
                return Err(invalid("tool_choice", format!("names function {name:?}, which is not in tools")));
            }
        }
        if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
            return Err(invalid("tool_choice", "needs tools"));
        }
        Ok(choice)
    }
}

/// How a model writes calls (from its chat template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>` blocks.
    Hermes,
    /// A reply that is `{"name": …, "parameters": {…}}`.
    Llama3Json,
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// A constraint that starts once the output reaches its trigger.
#[derive(Debug, Clone)]
pub struct Lazy {
    pub trigger: Trigger,
    pub constraint: Constraint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The output's text ends with this at a token boundary; the constraint covers what follows.
    After(String),
    /// The output's first character is this; the constraint covers the whole output (the tokens
    /// so far are replayed into it).
    Start(char),
}

/// What a reply holds: its text outside calls, and the calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub content: String,
    pub calls: Vec<ToolCall>,
}

impl ToolFormat {
    /// The syntax the template teaches: Hermes blocks when it writes `<tool_call>`, Llama 3's JSON
    /// when it asks for `"parameters"` (Llama 3.1+); `None` when it renders no tools.
    pub fn of_template(source: &str) -> Option<Self> {
        if !source.contains("tools") {
            return None;
        }
        if source.contains(OPEN) {
            Some(ToolFormat::Hermes)
        } else if source.contains("\"parameters\"") && source.contains("<|start_header_id|>") {
            Some(ToolFormat::Llama3Json)
        } else {
            None
        }
    }

    /// The JSON Schema of one call of any of `tools` (its name first, as templates write it).
    fn call_schema(self, tools: &[&Tool]) -> Json {
        let args_key = match self {
            ToolFormat::Hermes => "arguments",
            ToolFormat::Llama3Json => "parameters",
        };
        let one = |t: &Tool| {
            json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, args_key: t.parameters},
                "required": ["name", args_key],
                "additionalProperties": false,
            })
        };
        let mut schema = if tools.len() == 1 {
            one(tools[0])
        } else {
            json!({"anyOf": tools.iter().map(|t| one(t)).collect::<Vec<_>>()})
        };
        // As templates' `tojson` writes it (Python's separators), no free whitespace.
        schema["x-guidance"] = json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "});
        schema
    }

    fn allowed<'a>(tools: &'a [Tool], choice: &ToolChoice) -> Vec<&'a Tool> {
        match choice {
            ToolChoice::Named(n) => tools.iter().filter(|t| &t.name == n).collect(),
            _ => tools.iter().collect(),
        }
    }

    /// The constraint for "required" / a named function: the reply is calls only (one unless
    /// `parallel`; Llama 3's template takes one call per turn).
    pub fn required(self, tools: &[Tool], choice: &ToolChoice, parallel: bool) -> Constraint {
        let schema = self.call_schema(&Self::allowed(tools, choice));
        let call = format!("%json {schema}");
        let more = if parallel { " (\"\\n\" call)*" } else { "" };
        Constraint::Grammar(match self {
            ToolFormat::Hermes => format!(
                "start: call{more}\ncall: {} body {}\nbody: {call}\n",
                lit(&format!("{OPEN}\n")),
                lit(&format!("\n{CLOSE}"))
            ),
            ToolFormat::Llama3Json => format!("start: {call}\n"),
        })
    }

    /// The lazy constraint for "auto": free text until the model opens a call.
    pub fn auto(self, tools: &[Tool], parallel: bool) -> Lazy {
        let schema = self.call_schema(&Self::allowed(tools, &ToolChoice::Auto));
        let call = format!("%json {schema}");
        match self {
            // After `<tool_call>`: the call's body, then more calls or the end.
            ToolFormat::Hermes => Lazy {
                trigger: Trigger::After(OPEN.into()),
                constraint: Constraint::Grammar(format!(
                    "start: body{}\nbody: \"\\n\" {call} {}\n",
                    if parallel { format!(" ({} body)*", lit(&format!("\n{OPEN}"))) } else { String::new() },
                    lit(&format!("\n{CLOSE}"))
                )),
            },
            ToolFormat::Llama3Json => {
                Lazy { trigger: Trigger::Start('{'), constraint: Constraint::Grammar(format!("start: {call}\n")) }
            }
        }
    }

    /// Split a reply into text and calls. Text that only looks like a call (bad JSON, an unknown
    /// shape) stays text.
    pub fn parse(self, text: &str, tools: &[Tool]) -> Parsed {
        match self {
            ToolFormat::Hermes => {
                let mut content = String::new();
                let mut calls = Vec::new();
                let mut rest = text;
                while let Some(start) = rest.find(OPEN) {
                    let after = &rest[start + OPEN.len()..];
                    let Some(end) = after.find(CLOSE) else { break };
                    match call_of(after[..end].trim(), "arguments", tools, calls.len()) {
                        Some(c) => {
                            content.push_str(&rest[..start]);
                            calls.push(c);
                        }
                        None => content.push_str(&rest[..start + OPEN.len() + end + CLOSE.len()]),
                    }
                    rest = &after[end + CLOSE.len()..];
                }
                content.push_str(rest);
                // Before calls, the text's trailing blank (the line break before `<tool_call>`) goes.
                Parsed { content: if calls.is_empty() { content } else { content.trim_end().to_string() }, calls }
            }
            ToolFormat::Llama3Json => {
                let body = text.trim().trim_start_matches("<|python_tag|>");
                if !body.starts_with('{') {
                    return Parsed { content: text.into(), calls: Vec::new() };
                }
                // Llama 3.2 may write several calls separated by `;`.
                let mut calls = Vec::new();
                for part in json_values(body) {
                    match part.and_then(|v| call_of_value(v, "parameters", tools, calls.len())) {
                        Some(c) => calls.push(c),
                        None => return Parsed { content: text.into(), calls: Vec::new() },
                    }
                }
                Parsed { content: String::new(), calls }
            }
        }
    }
}

/// A Lark string literal (JSON's escapes are Lark's).
fn lit(s: &str) -> String {
    Json::String(s.into()).to_string()
}

/// The JSON values in `s`, separated by whitespace or `;`; `None` for a part that is not JSON.
fn json_values(s: &str) -> Vec<Option<Json>> {
    let mut out = Vec::new();
    let mut rest = s.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    while !rest.is_empty() {
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<Json>();
        match it.next() {
            Some(Ok(v)) => {
                out.push(Some(v));
                rest = rest[it.byte_offset()..].trim_start_matches(|c: char| c.is_whitespace() || c == ';');
            }
            _ => {
                out.push(None);
                break;
            }
        }
    }
    out
}

fn call_of(body: &str, args_key: &str, tools: &[Tool], index: usize) -> Option<ToolCall> {
    call_of_value(serde_json::from_str(body).ok()?, args_key, tools, index)
}

/// `{"name": N, args_key | "arguments" | "parameters": {...}}` naming one of `tools` → a call.
fn call_of_value(v: Json, args_key: &str, tools: &[Tool], index: usize) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?;
    if !tools.iter().any(|t| t.name == name) {
        return None;
    }
    let args = v.get(args_key).or_else(|| v.get("arguments")).or_else(|| v.get("parameters"))?;
    let arguments = match args {
        Json::Object(_) => args.to_string(),
        // Some models write the arguments as a JSON string, as OpenAI does.
        Json::String(s) if serde_json::from_str::<Json>(s).is_ok_and(|a| a.is_object()) => s.clone(),
        _ => return None,
    };
    Some(ToolCall {
        id: call_id(name, &arguments, index),
        kind: function_type(),
        function: FunctionCall { name: name.into(), arguments },
    })
}

/// `call_` + 24 hex digits: unique per process and call (a counter), differing between calls
/// with the same arguments.
fn call_id(name: &str, arguments: &str, index: usize) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(arguments.bytes()).chain((index as u64 ^ n).to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("call_{h:016x}{:08x}", n as u32)
}

/// A request's tool setup for one generation: what the template gets, what constrains the reply.
#[derive(Debug, Clone)]
pub struct ToolRequest {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    pub format: ToolFormat,
    /// More than one call per reply (OpenAI's `parallel_tool_calls`, default true).
    pub parallel: bool,
}

impl ToolRequest {
    /// `tools` / `tool_choice` as OpenAI sends them, for a template with `format` (`None`: the
    /// template takes no tools, an error unless the choice hides them).
    pub fn new(tools: &Json, choice: Option<&Json>, format: Option<ToolFormat>) -> Result<Self, ToolError> {
        let tools = parse_tools(tools)?;
        let choice = ToolChoice::parse(choice, &tools)?;
        let format = match format {
            Some(f) => f,
            None if choice == ToolChoice::None || tools.is_empty() => ToolFormat::Hermes,
            None => return Err(ToolError::Unsupported),
        };
        Ok(Self { tools, choice, format, parallel: true })
    }

    /// The tools the template renders (none when hidden or empty).
    pub fn template_tools(&self) -> Option<Vec<Json>> {
        (self.choice != ToolChoice::None && !self.tools.is_empty())
            .then(|| self.tools.iter().map(|t| t.spec.clone()).collect())
    }

    /// The constraint from the first token (required / named) or once a call opens (auto).
    pub fn constraints(&self) -> (Option<Constraint>, Option<Lazy>) {
        match &self.choice {
            _ if self.tools.is_empty() => (None, None),
            ToolChoice::None => (None, None),
            ToolChoice::Auto => (None, Some(self.format.auto(&self.tools, self.parallel))),
            c => (Some(self.format.required(&self.tools, c, self.parallel)), None),
        }
    }

    /// Set `opts`' constraints for this request (a constraint already there is a conflict).
    pub fn apply(&self, opts: &mut crate::engine::GenerateOptions) -> Result<(), ToolError> {
        let (constraint, lazy) = self.constraints();
        if opts.constraint.is_some() && (constraint.is_some() || lazy.is_some()) {
            return Err(invalid("tools", "cannot be combined with response_format / a JSON schema, regex or grammar"));
        }
        if constraint.is_some() {
            opts.constraint = constraint;
        }
        opts.lazy = lazy;
        Ok(())
    }

    /// The reply split into text and calls (none when the tools were hidden).
    pub fn parse(&self, text: &str) -> Parsed {
        if self.template_tools().is_none() {
            return Parsed { content: text.into(), calls: Vec::new() };
        }
        self.format.parse(text, &self.tools)
    }
}
