//! The browser entry points (wasm-bindgen), wrapped by the npm package in `pkg/` (its `src/*.js`
//! drive these; the contract is `pkg/src/wasm-api.md`).
//!
//! - One GPU device per page (or worker): the first `WasmEngine.create()` makes it and later
//!   engines share it, as WebGPU apps should.
//! - Loading is push-based: JS streams `fetch` (or `File`) chunks into [`WasmEngine::write`], which
//!   hands them to the same loaders the native CLI uses (`ShardWriter` for packages, `GgufStream`
//!   for GGUF), so model bytes go from the chunk straight to `queue.writeBuffer`. The wasm heap
//!   holds one chunk, ≤ 8 MiB of GGUF repacking state, the tokenizer and the GGUF header.
//! - Every error is a JS `Error` with a `code` (see [`code_of`]) and fields a page can act on.
//! - State lives in `Rc<RefCell<…>>` so async methods can hold it across awaits; a call that would
//!   need it while `generate` runs gets `BUSY` instead of a RefCell panic.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Function, Object, Reflect, Uint32Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::chat::Message;
use crate::embed::{
    embedder_from_gguf, EmbedOptions, EmbedSettings, Embedder, Pooling, DEFAULT_MAX_ROWS, SETTINGS_FILE,
};
use crate::engine::{
    engine_from_gguf, engine_from_package, kv_cache_bytes, probe_state, state_options, Engine, EngineError, Event,
    Finish, GenerateOptions, OpenOptions,
};
use crate::gpu::{Context, ContextOptions, GpuError};
use crate::guide::{Constraint, GuideError};
use crate::loader::gguf::GgufError;
use crate::loader::gguf_stream::GgufStream;
use crate::loader::{GpuTensor, LoadError, Manifest, ShardWriter};
use crate::model::encoder::EncoderConfig;
use crate::model::{Config, ModelError};
use crate::ops::attention::KvDtype;
use crate::sampling::SamplingParams;
use crate::tools::{ToolError, ToolRequest};

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

thread_local! {
    /// The page's device, made once and kept (engines come and go; the device stays).
    static CONTEXT: Cell<Option<&'static Context>> = const { Cell::new(None) };
}

async fn context() -> Result<&'static Context, JsValue> {
    // A lost device stays with the engines that used it; new engines get a new one.
    if let Some(c) = CONTEXT.with(Cell::get).filter(|c| c.lost().is_none()) {
        return Ok(c);
    }
    let ctx = Context::new(ContextOptions::default()).await.map_err(gpu_error)?;
    let ctx: &'static Context = Box::leak(Box::new(ctx));
    CONTEXT.with(|c| c.set(Some(ctx)));
    Ok(ctx)
}

// ---- errors ----

/// A JS `Error` with `code` and extra fields.
fn js_error(code: &str, message: &str, fields: &[(&str, JsValue)]) -> JsValue {
    let e = js_sys::Error::new(message);
    let _ = Reflect::set(&e, &"code".into(), &code.into());
    for (k, v) in fields {
        let _ = Reflect::set(&e, &(*k).into(), v);
    }
    e.into()
}

/// The `code` of a GPU error.
fn code_of(e: &GpuError) -> &'static str {
    match e {
        GpuError::NoAdapter { .. } | GpuError::RequestDevice(_) => "WEBGPU_UNAVAILABLE",
        GpuError::LimitTooSmall { .. } => "LIMIT_TOO_SMALL",
        GpuError::FeatureMissing(_) => "FEATURE_MISSING",
        GpuError::OutOfMemory { .. } => "OUT_OF_MEMORY",
        GpuError::DeviceLost(_) => "DEVICE_LOST",
        _ => "INTERNAL",
    }
}

fn gpu_error(e: GpuError) -> JsValue {
    let msg = e.to_string();
    match &e {
        GpuError::LimitTooSmall { limit, needed, available, .. } => js_error(
            "LIMIT_TOO_SMALL",
            &msg,
            &[
                ("limit", (*limit).into()),
                ("needed", (*needed as f64).into()),
                ("available", (*available as f64).into()),
            ],
        ),
        GpuError::OutOfMemory { bytes, .. } => {
            js_error("OUT_OF_MEMORY", &msg, &[("neededBytes", (*bytes as f64).into())])
        }
        _ => js_error(code_of(&e), &msg, &[]),
    }
}

fn load_error(e: LoadError, manifest: Option<&Manifest>) -> JsValue {
    let msg = e.to_string();
    let shard_of = |file: &str| {
        let index = manifest.and_then(|m| m.shards.iter().position(|s| s.file == file));
        let mut f = vec![("file", JsValue::from(file))];
        if let Some(i) = index {
            f.push(("shard", (i as u32).into()));
        }
        f
    };
    match e {
        LoadError::Gpu(g) => gpu_error(g),
        LoadError::Sha256 { ref file, .. } | LoadError::ShardSize { ref file, .. } => {
            js_error("BAD_MODEL", &msg, &shard_of(file))
        }
        _ => js_error("BAD_MODEL", &msg, &[]),
    }
}

fn gguf_error(e: GgufError) -> JsValue {
    match e {
        GgufError::Gpu(g) => gpu_error(g),
        GgufError::Read { part, .. } => {
            let msg = e.to_string();
            js_error("BAD_MODEL", &msg, &[("shard", (part as u32).into())])
        }
        other => js_error("BAD_MODEL", &other.to_string(), &[]),
    }
}

fn model_error(e: ModelError) -> JsValue {
    let msg = e.to_string();
    match e {
        ModelError::Gpu(g) => gpu_error(g),
        ModelError::TokenOutOfRange { id, vocab } => {
            js_error("BAD_REQUEST", &msg, &[("tokenId", id.into()), ("vocab", vocab.into())])
        }
        ModelError::MissingTensor { name } | ModelError::TensorShape { name, .. } => {
            js_error("BAD_MODEL", &msg, &[("tensor", name.into())])
        }
        ModelError::Config(_) => js_error("BAD_MODEL", &msg, &[]),
    }
}

fn engine_error(e: EngineError) -> JsValue {
    let msg = e.to_string();
    match e {
        EngineError::Gpu(g) => gpu_error(g),
        EngineError::Load(l) => load_error(l, None),
        EngineError::Gguf(g) => gguf_error(g),
        EngineError::Model(m) => model_error(m),
        EngineError::InvalidOption { option, .. } => js_error("BAD_REQUEST", &msg, &[("option", option.into())]),
        EngineError::ContextOverflow { prompt, context } => {
            js_error("CONTEXT_OVERFLOW", &msg, &[("promptTokens", (prompt as u32).into()), ("context", context.into())])
        }
        EngineError::EmptyPrompt | EngineError::NoChatTemplate | EngineError::Sampling(_) | EngineError::Chat(_) => {
            js_error("BAD_REQUEST", &msg, &[])
        }
        EngineError::EmptyInput { index } => {
            let index = index.map_or(JsValue::UNDEFINED, |i| (i as u32).into());
            js_error("BAD_REQUEST", &msg, &[("option", "input".into()), ("index", index)])
        }
        EngineError::InputTooLong { index, tokens, max } => js_error(
            "INPUT_TOO_LONG",
            &msg,
            &[("index", (index as u32).into()), ("tokens", (tokens as u32).into()), ("max", (max as u32).into())],
        ),
        EngineError::Tokenizer(_) => js_error("BAD_MODEL", &msg, &[]),
        EngineError::Detok(_) => js_error("INTERNAL", &msg, &[]),
        // The option as generate() names it.
        EngineError::Guide(GuideError::Invalid { option, .. }) => {
            let option = if option == "json_schema" { "jsonSchema" } else { option };
            js_error("BAD_REQUEST", &msg, &[("option", option.into())])
        }
        EngineError::Tool(ToolError::Invalid { field, .. }) => {
            js_error("BAD_REQUEST", &msg, &[("option", field.as_str().into())])
        }
        EngineError::Tool(ToolError::Unsupported) => js_error("BAD_REQUEST", &msg, &[("option", "tools".into())]),
        EngineError::Guide(_) => js_error("INTERNAL", &msg, &[]),
    }
}

/// An optional JSON argument (undefined / null: none).
fn json_arg(v: JsValue, name: &str) -> Result<Option<serde_json::Value>, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    serde_wasm_bindgen::from_value(v)
        .map(Some)
        .map_err(|e| js_error("BAD_REQUEST", &format!("{name}: {e}"), &[("option", name.into())]))
}

fn parse_messages(messages: JsValue) -> Result<Vec<Message>, JsValue> {
    serde_wasm_bindgen::from_value(messages).map_err(|e| {
        bad_request(format!(
            "messages must be [{{role, content, tool_calls?, tool_call_id?}}] with string content: {e}"
        ))
    })
}

fn busy() -> JsValue {
    js_error(
        "BUSY",
        "a generation is already running on this engine (requests are not queued): wait for it to finish, or call engine.abort() and await it",
        &[],
    )
}

fn no_model() -> JsValue {
    js_error("BAD_REQUEST", "no model is loaded; load one first", &[])
}

fn embedding_model() -> JsValue {
    js_error(
        "BAD_REQUEST",
        "the loaded model makes embeddings, not text: use engine.embeddings.create (a chat or completion model generates)",
        &[],
    )
}

fn generating_model() -> JsValue {
    js_error(
        "BAD_REQUEST",
        "the loaded model generates text; embeddings.create needs an embedding model (a package converted from a \
         sentence-transformers or BERT checkpoint)",
        &[],
    )
}

fn bad_request(msg: impl std::fmt::Display) -> JsValue {
    js_error("BAD_REQUEST", &msg.to_string(), &[])
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_error("INTERNAL", &e.to_string(), &[]))
}

// ---- options and results ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LoadOptions {
    context: Option<u32>,
    kv: Option<String>,
    max_batch: Option<u32>,
    /// GGUF: the expected SHA-256 of each part (one string for a single file).
    sha256: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl LoadOptions {
    /// The engine's options (its defaults where none is given; it checks them), the GGUF hashes, and
    /// `maxBatch` as given (an embedding model takes it as its token rows per pass).
    fn parse_all(v: JsValue) -> Result<(OpenOptions, Vec<String>, Option<u32>), JsValue> {
        let o: LoadOptions = if v.is_undefined() || v.is_null() {
            Self::default()
        } else {
            serde_wasm_bindgen::from_value(v).map_err(bad_request)?
        };
        let kv_dtype = match o.kv.as_deref() {
            None | Some("f16") => KvDtype::F16,
            Some("f32") => KvDtype::F32,
            Some(other) => return Err(bad_request(format!("kv must be \"f16\" or \"f32\", not {other:?}"))),
        };
        let d = OpenOptions::default();
        let opts = OpenOptions { context: o.context, kv_dtype, max_batch: o.max_batch.unwrap_or(d.max_batch) };
        let hashes = match o.sha256 {
            None => Vec::new(),
            Some(OneOrMany::One(h)) => vec![h],
            Some(OneOrMany::Many(v)) => v,
        };
        let hashes: Vec<String> = hashes.into_iter().map(|h| h.trim().to_ascii_lowercase()).collect();
        if let Some(h) = hashes.iter().find(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(bad_request(format!("sha256 {h:?} is not 64 hex digits")));
        }
        Ok((opts, hashes, o.max_batch))
    }
}

/// A call's options object (undefined / null: the defaults). serde_wasm_bindgen reads only the
/// struct's fields, so a name it does not take is found here and is BAD_REQUEST naming it.
fn js_options<T: serde::de::DeserializeOwned + Default>(v: JsValue, call: &str) -> Result<T, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(T::default());
    }
    let known = struct_fields::<T>();
    if let Some(k) = js_sys::Object::keys(&v.clone().into())
        .iter()
        .filter_map(|k| k.as_string())
        .find(|k| !known.contains(&k.as_str()))
    {
        return Err(js_error(
            "BAD_REQUEST",
            &format!("unknown option `{k}`; {call} takes {}", known.join(", ")),
            &[("option", k.into())],
        ));
    }
    serde_wasm_bindgen::from_value(v).map_err(bad_request)
}

/// `embed()`'s options (the JS layer maps OpenAI's names onto these).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsEmbedOptions {
    dimensions: Option<u32>,
    truncate: bool,
    pooling: Option<Pooling>,
    normalize: Option<bool>,
}

impl JsEmbedOptions {
    fn parse(v: JsValue) -> Result<EmbedOptions, JsValue> {
        let o: Self = js_options(v, "embed()")?;
        Ok(EmbedOptions { dimensions: o.dimensions, truncate: o.truncate, pooling: o.pooling, normalize: o.normalize })
    }
}

/// The field names a derived `Deserialize` struct takes (after `rename_all`), read by asking it to
/// deserialize from a deserializer that only records them.
fn struct_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor};
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Error::custom("fields recorded"))
        }
        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(Error::custom("not a struct"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// A GGUF part's SHA-256, computed over the bytes as they are written (`restartShard` starts it over).
struct PartHash {
    expected: String,
    hasher: crate::loader::Sha256Hex,
}

/// generate()'s options: the one list of their names (an unknown name is BAD_REQUEST, naming these).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsGenerateOptions {
    /// A JS number: past u32 (or Infinity) it means "until the context is full".
    max_tokens: Option<f64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    seed: Option<f64>,
    /// OpenAI's shape: token id (a decimal string) → bias.
    logit_bias: Option<std::collections::BTreeMap<String, f32>>,
    stop: Option<Vec<String>>,
    /// Constrained output (at most one): a JSON Schema, a regex, or a
    /// grammar in llguidance's Lark syntax.
    json_schema: Option<serde_json::Value>,
    regex: Option<String>,
    grammar: Option<String>,
    /// OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`: the same given to encodeChat.
    tools: Option<serde_json::Value>,
    tool_choice: Option<serde_json::Value>,
    parallel_tool_calls: Option<bool>,
}

/// `tools`, `toolChoice`, `parallelToolCalls` as given.
type JsTools = (Option<serde_json::Value>, Option<serde_json::Value>, Option<bool>);

/// `chat_template_kwargs` from JS: an object (absent: none), else BAD_REQUEST naming it.
fn template_kwargs(kwargs: JsValue) -> Result<serde_json::Map<String, serde_json::Value>, JsValue> {
    match json_arg(kwargs, "chat_template_kwargs")? {
        None => Ok(serde_json::Map::new()),
        Some(serde_json::Value::Object(m)) => Ok(m),
        Some(other) => Err(js_error(
            "BAD_REQUEST",
            &format!("chat_template_kwargs must be an object of template variables, not {other}"),
            &[("option", "chat_template_kwargs".into())],
        )),
    }
}

/// encodeChat's / generate's tool fields → the engine's request (`None` without tools).
fn tool_request(
    engine: &Engine,
    tools: Option<&serde_json::Value>,
    choice: Option<&serde_json::Value>,
    parallel: Option<bool>,
) -> Result<Option<ToolRequest>, JsValue> {
    let Some(tools) = tools.filter(|t| !t.is_null()) else {
        if choice.is_some_and(|c| !c.is_null() && c != "none" && c != "auto") {
            return Err(js_error("BAD_REQUEST", "tool_choice needs tools", &[("option", "tool_choice".into())]));
        }
        return Ok(None);
    };
    let mut request = engine.tool_request(tools, choice).map_err(engine_error)?;
    request.parallel = parallel.unwrap_or(true);
    Ok(Some(request))
}

impl JsGenerateOptions {
    /// The options, and the tool request among them (checked against the engine's template).
    #[allow(clippy::type_complexity)]
    fn parse(v: JsValue) -> Result<(GenerateOptions, JsTools), JsValue> {
        let o: Self = js_options(v, "generate()")?;
        let d = SamplingParams::default();
        let mut logit_bias = Vec::new();
        for (id, &bias) in o.logit_bias.iter().flatten() {
            let token =
                id.parse::<u32>().map_err(|_| bad_request(format!("logitBias key {id:?} is not a token id")))?;
            logit_bias.push((token, bias));
        }
        let sampling = SamplingParams {
            temperature: o.temperature.unwrap_or(0.0),
            top_k: o.top_k.map_or(d.top_k, |k| k as usize),
            top_p: o.top_p.unwrap_or(d.top_p),
            min_p: o.min_p.unwrap_or(d.min_p),
            repetition_penalty: o.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: o.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: o.frequency_penalty.unwrap_or(d.frequency_penalty),
            seed: o.seed.map(|s| s as u64),
            logit_bias,
            ..d
        };
        let defaults = GenerateOptions::default();
        let tools = (o.tools, o.tool_choice, o.parallel_tool_calls);
        let opts = GenerateOptions {
            max_tokens: match o.max_tokens {
                None => defaults.max_tokens,
                Some(n) if n >= 0.0 && (n.fract() == 0.0 || n == f64::INFINITY) => n.min(u32::MAX as f64) as u32,
                Some(n) => return Err(bad_request(format!("maxTokens must be a whole number, not {n}"))),
            },
            sampling,
            stop: o.stop.unwrap_or_default(),
            constraint: match (o.json_schema, o.regex, o.grammar) {
                (None, None, None) => None,
                (Some(schema), None, None) => Some(Constraint::JsonSchema(schema)),
                (None, Some(rx), None) => Some(Constraint::Regex(rx)),
                (None, None, Some(g)) => Some(Constraint::Grammar(g)),
                _ => return Err(bad_request("give at most one of jsonSchema, regex and grammar")),
            },
            lazy: None,
        };
        Ok((opts, tools))
    }
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct ModelInfo {
    /// "generate" (chat and completion models) or "embed" (embedding models).
    task: &'static str,
    architecture: String,
    layers: u32,
    hidden: u32,
    heads: u32,
    kv_heads: u32,
    vocab: u32,
    context: u32,
    has_chat_template: bool,
    eos_token_ids: Vec<u32>,
    weight_bytes: f64,
    /// Bytes a decoded token reads: weights, and a Gated DeltaNet's state (`Model::bytes_per_token`).
    weight_bytes_per_token: f64,
    kv_cache_bytes: f64,
    /// The kernel variants chosen for this adapter (`Context::variants`).
    kernels: crate::gpu::KernelVariants,
}

/// What an embedding model is (`modelInfo` for it).
#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct EmbedderInfo {
    task: &'static str,
    architecture: String,
    layers: u32,
    hidden: u32,
    heads: u32,
    kv_heads: u32,
    vocab: u32,
    /// The most tokens an input may have (`max_seq_length`, within the model's positions).
    context: u32,
    /// None: an embedding model does not generate (the fields make `modelInfo` one shape for both).
    eos_token_ids: Vec<u32>,
    kv_cache_bytes: f64,
    /// An input's tokens read every weight once per pass.
    weight_bytes_per_token: f64,
    /// Values per embedding (the model's width; `dimensions` keeps fewer).
    dims: u32,
    pooling: Pooling,
    normalize: bool,
    /// Token rows one GPU pass takes (inputs × their padded length).
    batch_tokens: u32,
    has_chat_template: bool,
    weight_bytes: f64,
    /// GPU bytes of the batch buffers (activations of `batchTokens` rows).
    state_bytes: f64,
    kernels: crate::gpu::KernelVariants,
}

#[derive(Serialize, Clone)]
#[serde(untagged)]
enum Info {
    Generate(ModelInfo),
    Embed(EmbedderInfo),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShardPlan {
    file: String,
    bytes: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoadPlan {
    kind: &'static str,
    shards: Vec<ShardPlan>,
    total_bytes: f64,
    /// GPU bytes of the weights (allocated by now), and of the KV cache `finishLoad` will add.
    gpu_bytes: f64,
    kv_cache_bytes: f64,
    tokenizer_files: Vec<String>,
}

// ---- the engine ----

enum Loading {
    Idle,
    /// `embed`: an embedding package, with its token rows per pass.
    Package {
        writer: ShardWriter<'static>,
        opts: OpenOptions,
        embed: Option<u32>,
    },
    /// `embed`: set once the first header shows an embedding model (its token rows per pass);
    /// `max_batch` as the caller gave it.
    Gguf {
        stream: GgufStream<'static>,
        opts: OpenOptions,
        hashes: Vec<PartHash>,
        max_batch: Option<u32>,
        embed: Option<u32>,
    },
}

struct Inner {
    loading: Loading,
    /// At most one of `engine` (a generating model) and `embedder` is loaded.
    engine: Option<Engine>,
    embedder: Option<LoadedEmbedder>,
    info: Option<Info>,
}

/// An embedding model and every GPU buffer it holds (its weights too), freed together on unload.
struct LoadedEmbedder {
    embedder: Embedder,
    buffers: Vec<wgpu::Buffer>,
}

impl Inner {
    /// Drop whatever model is loaded, freeing its GPU buffers now (not when the GC runs).
    fn drop_model(&mut self, ctx: &Context) {
        if let Some(e) = self.engine.take() {
            e.release(ctx);
        }
        if let Some(e) = self.embedder.take() {
            ctx.release_all(e.buffers.iter().chain(e.embedder.buffers()));
        }
        self.info = None;
    }
}

/// Whether a package is an embedding model: `convert` wrote sentence-transformers' settings for it,
/// or its architecture is an encoder (which cannot generate).
fn is_embedding_package(manifest: &Manifest) -> bool {
    manifest.tokenizer.files.iter().any(|f| f == SETTINGS_FILE)
        || EncoderConfig::from_hf(&manifest.architecture).is_ok()
}

/// Allocate an embedding model's batch buffers for `rows` token rows inside out-of-memory scopes
/// and free them (`embed::probe_state`): a model whose activations do not fit fails before its
/// download. A config the embedder does not take is left to `finishLoad` to report.
async fn probe_embedder(ctx: &Context, architecture: &serde_json::Value, rows: u32) -> Result<(), JsValue> {
    let Ok(bytes) = crate::embed::embedder_state_bytes(architecture, rows) else { return Ok(()) };
    let what = format!("the embedding batch buffers ({rows} token rows)");
    checked(ctx, &what, bytes, || crate::embed::probe_state(ctx, architecture, rows).map_err(engine_error)).await
}

/// Every buffer of loaded tensors (an embedder's weights, to free on unload).
fn tensor_buffers(tensors: &HashMap<String, GpuTensor>) -> Vec<wgpu::Buffer> {
    let mut out = Vec::new();
    for t in tensors.values() {
        match t {
            GpuTensor::Vector(b) => out.push(b.clone()),
            GpuTensor::Matrix(m) => {
                for c in &m.chunks {
                    out.push(c.weights.clone());
                    out.extend(c.scales.clone());
                }
            }
        }
    }
    out
}

#[wasm_bindgen]
pub struct WasmEngine {
    ctx: &'static Context,
    inner: Rc<RefCell<Inner>>,
    /// The generation state, owned here for every JS layer (page, worker): set by `generate`
    /// synchronously, so a second call is BUSY even before the first one's future has run, and
    /// an `abort()` right after `generate()` returns belongs to that generation.
    run: Rc<Run>,
}

#[derive(Default)]
struct Run {
    generating: Cell<bool>,
    abort: Cell<bool>,
}

/// Clears `generating` however the generation ends (value, error, or a dropped future).
struct Running(Rc<Run>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.generating.set(false);
    }
}

/// KV cache bytes for `config` with `opts`: the context the engine will resolve (its checks
/// too, so a bad option or a device too small fails before any download).
fn kv_bytes(ctx: &Context, config: &Config, opts: &OpenOptions) -> Result<u64, JsValue> {
    let so = state_options(ctx, config, opts).map_err(engine_error)?;
    Ok(kv_cache_bytes(config, &so))
}

/// The model's config from the first GGUF header alone, to size its state before the data arrives.
/// Tensors the config reads (RoPE factors) read as zeros: the state's sizes do not depend on them.
/// `None` when the header alone cannot give it (a split model's tensor in a later part); the real
/// config, built at `finishLoad`, reports such errors.
fn early_config(stream: &GgufStream) -> Result<Option<Early>, JsValue> {
    use crate::loader::gguf::{hf_config, GgufFile, GgufSource};
    struct Zeros;
    impl GgufSource for Zeros {
        fn read_exact_at(&mut self, _: usize, _: u64, buf: &mut [u8]) -> Result<(), GgufError> {
            buf.fill(0);
            Ok(())
        }
    }
    let Some(h) = stream.header() else { return Ok(None) };
    let file = GgufFile {
        metadata: h.metadata.clone(),
        tensors: h.tensors.clone(),
        part_bytes: stream.part_sizes().to_vec(),
        version: h.version,
    };
    match hf_config(&file, &mut Zeros) {
        // An architecture we do not run fails now, not after the download.
        Err(e @ GgufError::UnsupportedArch { .. }) => Err(gguf_error(e)),
        Err(_) => Ok(None),
        Ok(v) if is_embedding_gguf(&file.metadata) => Ok(Some(Early::Embed(Some(v)))),
        Ok(v) => Ok(Config::from_hf(&v).ok().map(Early::Generate)),
    }
}

/// What the first GGUF header says the model is, to probe its GPU memory before the weights stream.
enum Early {
    Generate(Config),
    /// An embedding model, with its config.json (for the batch buffers to probe).
    Embed(Option<serde_json::Value>),
}

/// Whether a GGUF is an embedding model: llama.cpp's `bert` or `nomic-bert`, or any architecture with
/// `<arch>.pooling_type` (its converter writes one only for embedding models).
fn is_embedding_gguf(md: &crate::loader::gguf::Metadata) -> bool {
    let arch = md.str("general.architecture").unwrap_or("");
    matches!(arch, "bert" | "nomic-bert") || md.contains(&format!("{arch}.pooling_type"))
}

fn tensor_bytes(tensors: &HashMap<String, GpuTensor>) -> u64 {
    tensors
        .values()
        .map(|t| match t {
            GpuTensor::Vector(b) => b.size(),
            GpuTensor::Matrix(m) => {
                m.chunks.iter().map(|c| c.weights.size() + c.scales.as_ref().map_or(0, |s| s.size())).sum()
            }
        })
        .sum()
}

fn model_info(ctx: &Context, engine: &Engine, weight_bytes: u64) -> ModelInfo {
    let c = &engine.model.config;
    let st = &engine.model.state.opts;
    ModelInfo {
        task: "generate",
        architecture: format!("{:?}", c.arch).to_lowercase(),
        layers: c.n_layers,
        hidden: c.hidden,
        heads: c.n_heads,
        kv_heads: c.n_kv_heads,
        vocab: c.vocab,
        context: st.context,
        has_chat_template: engine.template.is_some(),
        eos_token_ids: engine.stop_ids.clone(),
        weight_bytes: weight_bytes as f64,
        weight_bytes_per_token: engine.model.bytes_per_token() as f64,
        kv_cache_bytes: kv_cache_bytes(c, st) as f64,
        kernels: ctx.variants(),
    }
}

/// Run `f` (allocations) inside out-of-memory and validation error scopes and wait for them, so
/// a refused allocation is an `OUT_OF_MEMORY` error now rather than a lost device later.
async fn checked<T>(
    ctx: &Context,
    what: &str,
    bytes: u64,
    f: impl FnOnce() -> Result<T, JsValue>,
) -> Result<T, JsValue> {
    let mut out = None;
    let scoped = ctx
        .try_alloc(what, bytes, || {
            out = Some(f());
            Ok(())
        })
        .await;
    match (scoped, out) {
        (Err(GpuError::OutOfMemory { .. }), _) => Err(js_error(
            "OUT_OF_MEMORY",
            &format!(
                "out of GPU memory: {what} needs {:.1} MiB and the device refused it (WebGPU does not say how much \
                 is free; close other GPU-heavy tabs, or pick a smaller model or context)",
                bytes as f64 / 1048576.0
            ),
            &[("neededBytes", (bytes as f64).into())],
        )),
        (Err(e), _) => Err(gpu_error(e)),
        (Ok(()), Some(r)) => r,
        (Ok(()), None) => Err(js_error("INTERNAL", "allocation closure did not run", &[])),
    }
}

#[wasm_bindgen]
impl WasmEngine {
    /// Make (or reuse) the page's GPU device. Rejects with `WEBGPU_UNAVAILABLE` when the browser
    /// has no WebGPU or no adapter.
    pub async fn create() -> Result<WasmEngine, JsValue> {
        let ctx = context().await?;
        let inner = Inner { loading: Loading::Idle, engine: None, embedder: None, info: None };
        Ok(WasmEngine { ctx, inner: Rc::new(RefCell::new(inner)), run: Rc::default() })
    }

    /// The device: `{adapter, backend, maxBindingBytes, shaderF16, subgroups, timestampQuery, description}`.
    #[wasm_bindgen(js_name = gpuInfo)]
    pub fn gpu_info(&self) -> Result<JsValue, JsValue> {
        to_js(&gpu_info_of(self.ctx))
    }

    fn inner(&self) -> Result<std::cell::RefMut<'_, Inner>, JsValue> {
        self.inner.try_borrow_mut().map_err(|_| busy())
    }

    /// Start loading a package from its manifest.json text: every GPU buffer is allocated now, so a
    /// model that does not fit fails before any download. Resolves with the shards to stream.
    #[wasm_bindgen(js_name = beginPackage)]
    pub async fn begin_package(&self, manifest_json: String, options: JsValue) -> Result<JsValue, JsValue> {
        // A package's hashes are in its manifest.
        let (opts, _, max_batch) = LoadOptions::parse_all(options)?;
        let manifest = Manifest::from_json(manifest_json.as_bytes()).map_err(|e| load_error(e.into(), None))?;
        let bad_model = |e: crate::model::ConfigError| js_error("BAD_MODEL", &e.to_string(), &[]);
        // An embedding model's batch is its token rows per pass (`maxBatch` when given).
        let embed = is_embedding_package(&manifest).then(|| max_batch.unwrap_or(DEFAULT_MAX_ROWS));
        let config = match embed {
            None => Some(Config::from_hf(&manifest.architecture).map_err(bad_model)?),
            Some(_) => None,
        };
        self.inner()?.loading = Loading::Idle;
        self.inner()?.drop_model(self.ctx);
        let ctx = self.ctx;
        let kv = match &config {
            Some(config) => kv_bytes(ctx, config, &opts)?,
            None => 0,
        };
        let weights = manifest.total_bytes();
        let what = format!("the model's weights ({} tensors)", manifest.tensors.len());
        let m = manifest.clone();
        let writer =
            checked(ctx, &what, weights, move || ShardWriter::new(ctx, m).map_err(|e| load_error(e, None))).await?;
        if let Some(config) = &config {
            let probe = || probe_state(ctx, config, &opts).map(drop).map_err(engine_error);
            checked(ctx, "the KV cache and activations", kv, probe).await?;
        } else if let Some(rows) = embed {
            probe_embedder(ctx, &manifest.architecture, rows).await?;
        }
        let plan = LoadPlan {
            kind: "package",
            shards: manifest
                .shards
                .iter()
                .map(|s| ShardPlan { file: s.file.clone(), bytes: s.bytes as f64, sha256: Some(s.sha256.clone()) })
                .collect(),
            total_bytes: manifest.total_bytes() as f64,
            gpu_bytes: weights as f64,
            kv_cache_bytes: kv as f64,
            tokenizer_files: manifest.tokenizer.files.clone(),
        };
        self.inner()?.loading = Loading::Package { writer, opts, embed };
        to_js(&plan)
    }

    /// Start loading a GGUF of these part sizes (one file, or a split model's parts in order).
    #[wasm_bindgen(js_name = beginGguf)]
    pub fn begin_gguf(&self, part_sizes: Vec<f64>, options: JsValue) -> Result<JsValue, JsValue> {
        let (opts, hashes, max_batch) = LoadOptions::parse_all(options)?;
        if part_sizes.iter().any(|&s| !(s >= 0.0 && s.fract() == 0.0)) {
            return Err(bad_request("part sizes must be whole byte counts"));
        }
        if !hashes.is_empty() && hashes.len() != part_sizes.len() {
            return Err(bad_request(format!(
                "sha256: {} hashes given for {} GGUF parts",
                hashes.len(),
                part_sizes.len()
            )));
        }
        let hashes: Vec<PartHash> =
            hashes.into_iter().map(|expected| PartHash { expected, hasher: Default::default() }).collect();
        let sizes: Vec<u64> = part_sizes.iter().map(|&s| s as u64).collect();
        let stream = GgufStream::new(self.ctx, sizes.clone()).map_err(gguf_error)?;
        let total = stream.total_bytes();
        let mut inner = self.inner()?;
        inner.drop_model(self.ctx);
        inner.loading = Loading::Gguf { stream, opts, hashes, max_batch, embed: None };
        let n = sizes.len();
        let plan = LoadPlan {
            kind: "gguf",
            shards: sizes
                .iter()
                .enumerate()
                .map(|(i, &b)| ShardPlan { file: format!("part {} of {n}", i + 1), bytes: b as f64, sha256: None })
                .collect(),
            total_bytes: total as f64,
            gpu_bytes: 0.0,
            kv_cache_bytes: 0.0,
            tokenizer_files: Vec::new(),
        };
        to_js(&plan)
    }

    /// The next bytes of shard (package) or part (GGUF) `index`. Resolves once they are queued for
    /// the GPU; a GGUF part's header allocates its tensors here, checked for out-of-memory.
    pub async fn write(&self, index: u32, bytes: Vec<u8>) -> Result<(), JsValue> {
        let header_pending = {
            let mut inner = self.inner()?;
            match &mut inner.loading {
                Loading::Idle => return Err(bad_request("write() before beginPackage()/beginGguf()")),
                Loading::Package { writer, .. } => {
                    let r = writer.write(index as usize, &bytes);
                    let m = writer.manifest().clone();
                    return r.map_err(|e| load_error(e, Some(&m)));
                }
                Loading::Gguf { stream, hashes, .. } => {
                    if let Some(h) = hashes.get_mut(index as usize) {
                        h.hasher.update(&bytes);
                    }
                    stream.header_pending(index as usize)
                }
            }
        };
        if !header_pending {
            let mut inner = self.inner()?;
            if let Loading::Gguf { stream, .. } = &mut inner.loading {
                stream.write(index as usize, &bytes).map_err(gguf_error)?;
            }
            return Ok(());
        }
        // This chunk may complete a header and allocate that part's tensors.
        let inner = self.inner.clone();
        let (what, bytes_now) = ("the model's weights", self.part_bytes(index)?);
        let parsed = checked(self.ctx, what, bytes_now, move || {
            let mut inner = inner.try_borrow_mut().map_err(|_| busy())?;
            match &mut inner.loading {
                Loading::Gguf { stream, opts, max_batch, embed, .. } => {
                    stream.write(index as usize, &bytes).map_err(gguf_error)?;
                    if index != 0 || stream.header_pending(0) {
                        return Ok(None);
                    }
                    let early = early_config(stream)?;
                    if let Some(Early::Embed(_)) = &early {
                        *embed = Some(max_batch.unwrap_or(DEFAULT_MAX_ROWS));
                    }
                    Ok(early.map(|c| (c, *opts, *embed)))
                }
                _ => Err(bad_request("the load was cancelled")),
            }
        })
        .await?;
        // The first header gives the config: the state is tried now, before the weights stream.
        let ctx = self.ctx;
        match parsed {
            Some((Early::Generate(config), opts, _)) => {
                let kv = kv_bytes(ctx, &config, &opts)?;
                checked(ctx, "the KV cache and activations", kv, || {
                    probe_state(ctx, &config, &opts).map(drop).map_err(engine_error)
                })
                .await?;
            }
            Some((Early::Embed(Some(arch)), _, Some(rows))) => probe_embedder(ctx, &arch, rows).await?,
            _ => {}
        }
        Ok(())
    }

    /// Bytes of GGUF part `index` (what its header allocates, at most; for error messages).
    fn part_bytes(&self, index: u32) -> Result<u64, JsValue> {
        Ok(match &self.inner()?.loading {
            Loading::Gguf { stream, .. } => stream.part_size(index as usize),
            _ => 0,
        })
    }

    /// Shard/part `index` has had all its bytes: checks its size and (package) its SHA-256.
    #[wasm_bindgen(js_name = finishShard)]
    pub fn finish_shard(&self, index: u32) -> Result<(), JsValue> {
        let mut inner = self.inner()?;
        match &mut inner.loading {
            Loading::Idle => Err(bad_request("finishShard() with no load in progress")),
            Loading::Package { writer, .. } => {
                let r = writer.finish_shard(index as usize);
                let m = writer.manifest().clone();
                r.map_err(|e| load_error(e, Some(&m)))
            }
            Loading::Gguf { stream, hashes, .. } => {
                // The hash first: a part that fails it is still the one being read, so it can restart.
                let Some(h) = hashes.get_mut(index as usize) else {
                    return stream.finish_part(index as usize).map_err(gguf_error);
                };
                let got = std::mem::take(&mut h.hasher).finish();
                if got == h.expected {
                    return stream.finish_part(index as usize).map_err(gguf_error);
                }
                let n = hashes.len();
                let msg = format!(
                    "part {} of {n}: sha256 {got}, but {} was expected",
                    index + 1,
                    hashes[index as usize].expected
                );
                Err(js_error("BAD_MODEL", &msg, &[("shard", index.into())]))
            }
        }
    }

    /// Forget what arrived of shard/part `index`, to stream it again from byte 0.
    #[wasm_bindgen(js_name = restartShard)]
    pub fn restart_shard(&self, index: u32) -> Result<(), JsValue> {
        let mut inner = self.inner()?;
        match &mut inner.loading {
            Loading::Idle => Err(bad_request("restartShard() with no load in progress")),
            Loading::Package { writer, .. } => writer.restart_shard(index as usize).map_err(|e| load_error(e, None)),
            Loading::Gguf { stream, hashes, .. } => {
                if let Some(h) = hashes.get_mut(index as usize) {
                    h.hasher = Default::default();
                }
                stream.restart_part(index as usize).map_err(gguf_error)
            }
        }
    }

    /// Bytes received so far, all shards together.
    #[wasm_bindgen(js_name = loadedBytes)]
    pub fn loaded_bytes(&self) -> f64 {
        match self.inner.try_borrow().as_deref() {
            Ok(Inner { loading: Loading::Package { writer, .. }, .. }) => writer.loaded_bytes() as f64,
            Ok(Inner { loading: Loading::Gguf { stream, .. }, .. }) => stream.loaded_bytes() as f64,
            _ => 0.0,
        }
    }

    /// Every shard finished: build the model (KV cache, tokenizer, chat template). Packages pass
    /// tokenizer.json's and tokenizer_config.json's text, and an embedding package its
    /// embedding.json (when its manifest lists one); GGUF carries its own.
    #[wasm_bindgen(js_name = finishLoad)]
    pub async fn finish_load(
        &self,
        tokenizer_json: Option<String>,
        tokenizer_config_json: Option<String>,
        embedding_json: Option<String>,
    ) -> Result<JsValue, JsValue> {
        let loading = std::mem::replace(&mut self.inner()?.loading, Loading::Idle);
        let ctx = self.ctx;
        let engine = match loading {
            Loading::Idle => return Err(bad_request("finishLoad() with no load in progress")),
            Loading::Package { writer, embed: Some(rows), .. } => {
                let manifest = writer.manifest().clone();
                let mut tensors = writer.finish().map_err(|e| load_error(e, Some(&manifest)))?;
                let (weight_bytes, buffers) = (tensor_bytes(&tensors), tensor_buffers(&tensors));
                let tok = tokenizer_json
                    .ok_or_else(|| js_error("BAD_MODEL", "the package's tokenizer.json is needed", &[]))?;
                let settings = match embedding_json {
                    Some(text) => serde_json::from_str::<EmbedSettings>(&text).map_err(|e| {
                        js_error("BAD_MODEL", &format!("{SETTINGS_FILE}: {e}"), &[("file", SETTINGS_FILE.into())])
                    })?,
                    None => EmbedSettings::DEFAULT,
                };
                let arch = &manifest.architecture;
                let what = format!("the embedding batch buffers ({rows} token rows)");
                let embedder = checked(ctx, &what, 0, || {
                    Embedder::new(ctx, arch, &mut tensors, tok.as_bytes(), settings, rows).map_err(engine_error)
                })
                .await
                .inspect_err(|_| ctx.release_all(&buffers))?;
                let name = arch["model_type"].as_str().unwrap_or("").to_string();
                return self.install_embedder(embedder, buffers, weight_bytes, rows, name);
            }
            Loading::Gguf { stream, embed: Some(rows), .. } => {
                let (file, mut tensors, mut kept) = stream.finish().map_err(gguf_error)?;
                let (weight_bytes, buffers) = (tensor_bytes(&tensors), tensor_buffers(&tensors));
                let what = format!("the embedding batch buffers ({rows} token rows)");
                let embedder = checked(ctx, &what, 0, || {
                    embedder_from_gguf(ctx, &file, &mut tensors, &mut kept, rows).map_err(engine_error)
                })
                .await
                .inspect_err(|_| ctx.release_all(&buffers))?;
                let name = file.architecture().unwrap_or("").to_string();
                return self.install_embedder(embedder, buffers, weight_bytes, rows, name);
            }
            Loading::Package { writer, opts, embed: None } => {
                let manifest = writer.manifest().clone();
                let mut tensors = writer.finish().map_err(|e| load_error(e, Some(&manifest)))?;
                let weight_bytes = tensor_bytes(&tensors);
                let tok = tokenizer_json
                    .ok_or_else(|| js_error("BAD_MODEL", "the package's tokenizer.json is needed", &[]))?;
                let engine = checked(ctx, "the KV cache and activations", 0, || {
                    engine_from_package(
                        ctx,
                        &manifest,
                        &mut tensors,
                        tok.as_bytes(),
                        tokenizer_config_json.as_deref(),
                        opts,
                    )
                    .map_err(engine_error)
                })
                .await?;
                (engine, weight_bytes)
            }
            Loading::Gguf { stream, opts, embed: None, .. } => {
                let (file, mut tensors, mut kept) = stream.finish().map_err(gguf_error)?;
                let weight_bytes = tensor_bytes(&tensors);
                let engine = checked(ctx, "the KV cache and activations", 0, || {
                    engine_from_gguf(ctx, &file, &mut tensors, &mut kept, opts).map_err(engine_error)
                })
                .await?;
                (engine, weight_bytes)
            }
        };
        let (mut engine, weight_bytes) = engine;
        engine.model.clock = now_seconds;
        let info = model_info(self.ctx, &engine, weight_bytes);
        let mut inner = self.inner()?;
        inner.engine = Some(engine);
        inner.info = Some(Info::Generate(info.clone()));
        to_js(&info)
    }

    /// Keep a loaded embedding model as this engine's model; resolves with its `modelInfo`.
    fn install_embedder(
        &self,
        embedder: Embedder,
        buffers: Vec<wgpu::Buffer>,
        weight_bytes: u64,
        rows: u32,
        architecture: String,
    ) -> Result<JsValue, JsValue> {
        let state_bytes: u64 = embedder.buffers().iter().map(|b| b.size()).sum();
        let info = EmbedderInfo {
            task: "embed",
            architecture,
            layers: embedder.shape.layers,
            hidden: embedder.shape.hidden,
            heads: embedder.shape.heads,
            kv_heads: embedder.shape.kv_heads,
            vocab: embedder.shape.vocab,
            context: embedder.max_tokens(),
            eos_token_ids: Vec::new(),
            kv_cache_bytes: 0.0,
            weight_bytes_per_token: weight_bytes as f64,
            dims: embedder.shape.hidden,
            pooling: embedder.settings.pooling,
            normalize: embedder.settings.normalize,
            batch_tokens: rows,
            has_chat_template: false,
            weight_bytes: weight_bytes as f64,
            state_bytes: state_bytes as f64,
            kernels: self.ctx.variants(),
        };
        let mut inner = self.inner()?;
        inner.embedder = Some(LoadedEmbedder { embedder, buffers });
        inner.info = Some(Info::Embed(info.clone()));
        to_js(&info)
    }

    /// Drop a half-loaded model.
    #[wasm_bindgen(js_name = cancelLoad)]
    pub fn cancel_load(&self) -> Result<(), JsValue> {
        self.inner()?.loading = Loading::Idle;
        Ok(())
    }

    /// Drop the model (its GPU buffers go with it); the device stays for the next one.
    pub fn unload(&self) -> Result<(), JsValue> {
        let mut inner = self.inner()?;
        inner.loading = Loading::Idle;
        inner.drop_model(self.ctx);
        Ok(())
    }

    /// What is loaded, or `undefined`.
    #[wasm_bindgen(js_name = modelInfo)]
    pub fn model_info(&self) -> Result<JsValue, JsValue> {
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        match &inner.info {
            Some(i) => to_js(i),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    fn with_engine<T>(&self, f: impl FnOnce(&Engine) -> Result<T, JsValue>) -> Result<T, JsValue> {
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        if inner.embedder.is_some() {
            return Err(embedding_model());
        }
        f(inner.engine.as_ref().ok_or_else(no_model)?)
    }

    /// Token ids of `text`; `add_special_tokens` lets the tokenizer add BOS etc.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Uint32Array, JsValue> {
        self.with_engine(|e| {
            let ids = e.encode(text, add_special_tokens).map_err(engine_error)?;
            Ok(Uint32Array::from(&ids[..]))
        })
    }

    /// Text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: Vec<u32>) -> Result<String, JsValue> {
        self.with_engine(|e| e.tokenizer.decode(&ids, true).map_err(|err| js_error("INTERNAL", &err.to_string(), &[])))
    }

    /// The model's chat template over `[{role, content, tool_calls?, tool_call_id?}]`, with the
    /// assistant prompt appended; `tools` / `tool_choice` (OpenAI's, optional) as generate takes them,
    /// `kwargs` extra template variables (`chat_template_kwargs`, e.g. `{enable_thinking: false}`).
    #[wasm_bindgen(js_name = applyChatTemplate)]
    pub fn apply_chat_template(
        &self,
        messages: JsValue,
        tools: JsValue,
        tool_choice: JsValue,
        kwargs: JsValue,
    ) -> Result<String, JsValue> {
        let messages = parse_messages(messages)?;
        let (tools, choice) = (json_arg(tools, "tools")?, json_arg(tool_choice, "tool_choice")?);
        let kwargs = template_kwargs(kwargs)?;
        self.with_engine(|e| {
            let request = tool_request(e, tools.as_ref(), choice.as_ref(), None)?;
            let shown = request.as_ref().and_then(|r| r.template_tools());
            e.render_chat_with(&messages, shown.as_deref(), &kwargs).map_err(engine_error)
        })
    }

    /// Token ids of a chat (`Engine::encode_chat`: the template, tokenized without added specials).
    #[wasm_bindgen(js_name = encodeChat)]
    pub fn encode_chat(
        &self,
        messages: JsValue,
        tools: JsValue,
        tool_choice: JsValue,
        kwargs: JsValue,
    ) -> Result<Uint32Array, JsValue> {
        let messages = parse_messages(messages)?;
        let (tools, choice) = (json_arg(tools, "tools")?, json_arg(tool_choice, "tool_choice")?);
        let kwargs = template_kwargs(kwargs)?;
        self.with_engine(|e| {
            let request = tool_request(e, tools.as_ref(), choice.as_ref(), None)?;
            let shown = request.as_ref().and_then(|r| r.template_tools());
            let ids = e.encode_chat_with(&messages, shown.as_deref(), &kwargs).map_err(engine_error)?;
            Ok(Uint32Array::from(&ids[..]))
        })
    }

    /// Generate after `prompt` (token ids); `on_event` gets `{type: "prefilled", promptTokens,
    /// reusedTokens}` then `{type: "token", id, text}` per token, and stops generation by
    /// returning `false`. Resolves with the summary; rejects with `BUSY` while another runs.
    // The state stays borrowed across the awaits on purpose: every other entry point uses
    // try_borrow and answers BUSY while this runs, so the borrow can never panic.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn generate(&self, prompt: Vec<u32>, options: JsValue, on_event: Function) -> js_sys::Promise {
        if self.run.generating.get() {
            return js_sys::Promise::reject(&busy());
        }
        self.run.generating.set(true);
        self.run.abort.set(false);
        let running = Running(self.run.clone());
        let (inner, ctx) = (self.inner.clone(), self.ctx);
        future_to_promise(async move {
            let abort = &running.0.abort;
            let (mut opts, (tools, choice, parallel)) = JsGenerateOptions::parse(options)?;
            let mut guard = inner.try_borrow_mut().map_err(|_| busy())?;
            if guard.embedder.is_some() {
                return Err(embedding_model());
            }
            let engine = guard.engine.as_mut().ok_or_else(no_model)?;
            let request = tool_request(engine, tools.as_ref(), choice.as_ref(), parallel)?;
            if let Some(r) = &request {
                r.apply(&mut opts).map_err(|e| engine_error(e.into()))?;
            }
            let mut thrown: Option<JsValue> = None;
            let mut cb = |ev: Event| -> bool {
                if abort.get() {
                    return false;
                }
                let o = Object::new();
                match ev {
                    Event::Prefilled { prompt_tokens, reused } => {
                        set(&o, "type", "prefilled".into());
                        set(&o, "promptTokens", (prompt_tokens as u32).into());
                        set(&o, "reusedTokens", (reused as u32).into());
                    }
                    Event::Token { id, text } => {
                        set(&o, "type", "token".into());
                        set(&o, "id", id.into());
                        set(&o, "text", text.into());
                    }
                    // A tool call opens: text from the next token on is the call's.
                    Event::Triggered => set(&o, "type", "triggered".into()),
                }
                match on_event.call1(&JsValue::NULL, &o) {
                    Ok(v) => v != JsValue::FALSE && !abort.get(),
                    Err(e) => {
                        thrown = Some(e);
                        false
                    }
                }
            };
            let summary = engine.generate(ctx, &prompt, &opts, &mut cb).await.map_err(engine_error)?;
            if let Some(e) = thrown {
                return Err(e);
            }
            let o = Object::new();
            set(&o, "promptTokens", (summary.prompt_tokens as u32).into());
            set(&o, "reusedTokens", (summary.reused_tokens as u32).into());
            set(&o, "completionTokens", (summary.generated.len() as u32).into());
            set(&o, "ids", Uint32Array::from(&summary.generated[..]).into());
            set(&o, "text", summary.text.as_str().into());
            // With tools: the text outside calls and the calls, in OpenAI's shape.
            let parsed = request.as_ref().map(|r| r.parse(&summary.text));
            let called = parsed.as_ref().is_some_and(|p| !p.calls.is_empty());
            if let Some(p) = &parsed {
                set(&o, "content", p.content.as_str().into());
                set(&o, "toolCalls", to_js(&p.calls)?);
            }
            let reason = match summary.finish {
                Finish::Stop if called => "tool_calls",
                Finish::Stop | Finish::StopString => "stop",
                Finish::Length => "length",
                Finish::Aborted => "abort",
            };
            set(&o, "finishReason", reason.into());
            // GPU work per decoded token in steady state (see engine::SteadyStats).
            if let Some(steady) = summary.steady {
                let per = steady.per_token();
                let stats = Object::new();
                for (k, v) in [
                    ("dispatches", per.dispatches),
                    ("submits", per.submits),
                    ("buffersCreated", per.buffers_created),
                    ("bindGroupsCreated", per.bind_groups_created),
                    ("pipelinesCreated", per.pipelines_created),
                    ("readbackBytes", per.readback_bytes),
                    ("writtenBytes", per.written_bytes),
                    ("encodeUs", per.encode_us),
                ] {
                    set(&stats, k, v.into());
                }
                set(&stats, "peakGpuBytes", (ctx.counters().peak_buffer_bytes as f64).into());
                set(&o, "stats", stats.into());
            }
            // What the constraint cost on the CPU (the trie build only on the engine's first one).
            if let Some(g) = summary.guide {
                let guide = Object::new();
                if let Some(b) = g.build_seconds {
                    set(&guide, "buildMs", (b * 1e3).into());
                }
                set(&guide, "compileMs", (g.compile_seconds * 1e3).into());
                set(&guide, "masks", (g.masks as f64).into());
                set(&guide, "maskMeanUs", (1e6 * g.mask_seconds / g.masks.max(1) as f64).into());
                set(&guide, "maskMaxUs", (g.mask_max_seconds * 1e6).into());
                set(&o, "guide", guide.into());
            }
            Ok(o.into())
        })
    }

    /// Embed `inputs` (an array of strings) with the loaded embedding model: resolves with `{dims,
    /// pooling, normalize, embeddings: Float32Array (inputs × dims, in input order), tokens:
    /// Uint32Array (each input's token count), promptTokens, passes}`. `options`: `{dimensions,
    /// truncate, pooling, normalize}`. One call at a time (BUSY otherwise): the JS layer queues them.
    // The state stays borrowed across the await on purpose, as in `generate`: another call is BUSY.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn embed(&self, inputs: JsValue, options: JsValue) -> Result<JsValue, JsValue> {
        let opts = JsEmbedOptions::parse(options)?;
        let inputs: Vec<String> = serde_wasm_bindgen::from_value(inputs)
            .map_err(|e| js_error("BAD_REQUEST", &format!("input: {e}"), &[("option", "input".into())]))?;
        if self.run.generating.get() {
            return Err(busy());
        }
        let guard = self.inner.try_borrow_mut().map_err(|_| busy())?;
        let Some(loaded) = &guard.embedder else {
            return Err(if guard.engine.is_some() { generating_model() } else { no_model() });
        };
        let r = loaded.embedder.embed(self.ctx, &inputs, &opts).await.map_err(engine_error)?;
        let flat: Vec<f32> = r.embeddings.concat();
        let counts: Vec<u32> = r.ids.iter().map(|v| v.len() as u32).collect();
        let o = Object::new();
        set(&o, "dims", r.dims.into());
        set(&o, "pooling", to_js(&r.pooling)?);
        set(&o, "normalize", r.normalize.into());
        set(&o, "embeddings", js_sys::Float32Array::from(&flat[..]).into());
        set(&o, "tokens", Uint32Array::from(&counts[..]).into());
        set(&o, "promptTokens", (r.tokens as f64).into());
        set(&o, "passes", (r.passes as u32).into());
        Ok(o.into())
    }

    /// Stop the running `generate` after its current step (it resolves with finishReason "abort");
    /// nothing when none runs (the next `generate` is not affected).
    pub fn abort(&self) {
        if self.run.generating.get() {
            self.run.abort.set(true);
        }
    }

    /// True from `generate()` until its promise settles (another `generate` is then BUSY).
    #[wasm_bindgen(getter)]
    pub fn busy(&self) -> bool {
        self.run.generating.get()
    }

    /// Forget the KV cache: the next prompt is prefilled from the start.
    #[wasm_bindgen(js_name = resetChat)]
    pub fn reset_chat(&self) -> Result<(), JsValue> {
        let mut inner = self.inner()?;
        if let Some(e) = inner.engine.as_mut() {
            e.reset();
        }
        Ok(())
    }
}

/// `performance.now()` in seconds (window or worker), 0 where there is none: the engine's clock.
fn now_seconds() -> f64 {
    let global = js_sys::global();
    let now = Reflect::get(&global, &"performance".into()).ok().and_then(|perf| {
        let f: Function = Reflect::get(&perf, &"now".into()).ok()?.dyn_into().ok()?;
        f.call0(&perf).ok()?.as_f64()
    });
    now.unwrap_or(0.0) / 1000.0
}

fn set(o: &Object, k: &str, v: JsValue) {
    let _ = Reflect::set(o, &k.into(), &v);
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GpuInfo {
    adapter: String,
    backend: String,
    max_binding_bytes: f64,
    shader_f16: bool,
    subgroups: bool,
    timestamp_query: bool,
    description: String,
}

fn gpu_info_of(ctx: &Context) -> GpuInfo {
    GpuInfo {
        adapter: ctx.info.name.clone(),
        backend: format!("{:?}", ctx.info.backend),
        max_binding_bytes: ctx.max_binding_bytes() as f64,
        shader_f16: ctx.caps.shader_f16,
        subgroups: ctx.caps.subgroups,
        timestamp_query: ctx.caps.timestamp_query,
        description: ctx.describe(),
    }
}

/// What the GPU offers (creating the page's device if needed).
#[wasm_bindgen(js_name = gpuInfo)]
pub async fn gpu_info() -> Result<JsValue, JsValue> {
    to_js(&gpu_info_of(context().await?))
}

/// The GPU context's counters (`Counters`: buffers and bytes created, live, peak; dispatches...),
/// or `undefined` before the first engine; for leak checks over long sessions.
#[wasm_bindgen(js_name = gpuCounters)]
pub fn gpu_counters() -> Result<JsValue, JsValue> {
    match CONTEXT.with(Cell::get) {
        Some(ctx) => to_js(&ctx.counters()),
        None => Ok(JsValue::UNDEFINED),
    }
}

/// Bytes of this module's linear memory (it only grows: this is the peak so far).
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    (core::arch::wasm32::memory_size(0) * 65536) as f64
}
