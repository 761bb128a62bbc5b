//! Text in, tokens out: tokenizer + chat template + model + sampler + streaming detokenizer.
//! Target-independent (no clock, no filesystem): the CLI and the browser wrap it.

use std::collections::HashMap;
use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::chat::{ChatError, ChatTemplate, Message};
use crate::detok::{DetokError, Detokenizer, FinishReason, StopChecker, StopIds, StreamEvent, TextStream};
use crate::gpu::{Context, GpuError};
use crate::guide::{Constraint, Guidance, Guide, GuideError};
use crate::loader::{take_matrix, take_vector, GpuTensor, LoadError};
use crate::model::{check_ids, Model, ModelError, Readback, TensorSource, PIPELINE};
use crate::ops::attention::KvDtype;
use crate::ops::matmul::QuantMatrix;
use crate::sampling::{SamplingError, SamplingParams, DEFAULT_SEED};
use crate::tools::{Lazy, ToolError, ToolFormat, ToolRequest, Trigger};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Detok(#[from] DetokError),
    #[error(transparent)]
    Gguf(#[from] crate::loader::gguf::GgufError),
    #[error(transparent)]
    Guide(#[from] GuideError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// Never `ModelError::Gpu`: those arrive as `EngineError::Gpu` (one place to match GPU faults).
    #[error(transparent)]
    Model(ModelError),
    #[error("option `{option}`: {message}")]
    InvalidOption { option: &'static str, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the prompt is {prompt} tokens but the context holds {context}; shorten it or raise the context")]
    ContextOverflow { prompt: usize, context: u32 },
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Embeddings: no inputs (`index` None) or an empty one.
    #[error("{}", match index { Some(i) => format!("input {i} is empty"), None => "no inputs to embed".to_string() })]
    EmptyInput { index: Option<usize> },
    #[error("input {index} is {tokens} tokens; the model takes at most {max} (truncate: \"end\" cuts it there)")]
    InputTooLong { index: usize, tokens: usize, max: usize },
    #[error("the model has no chat template (tokenizer_config.json has no `chat_template`)")]
    NoChatTemplate,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<ModelError> for EngineError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Gpu(g) => EngineError::Gpu(g),
            other => EngineError::Model(other),
        }
    }
}

/// Loaded package tensors serve as the model's tensor source.
impl TensorSource for HashMap<String, GpuTensor> {
    fn matrix(&mut self, _ctx: &Context, name: &str) -> Result<QuantMatrix, ModelError> {
        take_matrix(self, name).map_err(to_model)
    }
    fn vector(&mut self, _ctx: &Context, name: &str, len: u32) -> Result<wgpu::Buffer, ModelError> {
        let b = take_vector(self, name).map_err(to_model)?;
        if b.size() < len as u64 * 4 {
            return Err(ModelError::TensorShape {
                name: name.into(),
                found: format!("{} bytes", b.size()),
                expected: format!("{len} f32 values"),
            });
        }
        Ok(b)
    }
}

fn to_model(e: LoadError) -> ModelError {
    match e {
        LoadError::Gpu(g) => ModelError::Gpu(g),
        LoadError::MissingTensor { name } => ModelError::MissingTensor { name },
        LoadError::WrongKind { name, expected, found } => {
            ModelError::TensorShape { name, found: format!("a {found}"), expected: format!("a {expected}") }
        }
        // take_* raise only the variants above
        other => ModelError::Gpu(GpuError::Validation(other.to_string())),
    }
}

/// How to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: u32,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// The output must match this (JSON Schema, regex, grammar): each token is chosen among those
    /// the grammar allows, and generation ends where the grammar does.
    pub constraint: Option<Constraint>,
    /// A constraint that starts once its trigger appears in the output (a tool call the model
    /// opens under `tool_choice: "auto"`); ignored with `constraint`.
    pub lazy: Option<Lazy>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_tokens: 256, sampling: SamplingParams::default(), stop: Vec::new(), constraint: None, lazy: None }
    }
}

/// What `generate` reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// The prompt is in the KV cache (`reused` of its tokens were already there).
    Prefilled { prompt_tokens: usize, reused: usize },
    /// A generated token and the text it completes (may be empty while a character is split).
    Token { id: u32, text: &'a str },
    /// The lazy constraint's trigger appeared: the output is constrained from the next token's
    /// event on, and that token's text belongs to the constrained part (a tool call's opening).
    Triggered,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence / end-of-turn token.
    Stop,
    /// A stop string appeared (it is not in the text).
    StopString,
    /// `max_tokens` or the end of the context.
    Length,
    /// The callback asked to stop.
    Aborted,
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub generated: Vec<u32>,
    pub text: String,
    pub finish: Finish,
    /// GPU work of the decode steps after the second generated token (the plans exist by
    /// then); `None` when fewer than three tokens were generated.
    pub steady: Option<SteadyStats>,
    /// The constraint's CPU cost, when there was one.
    pub guide: Option<GuideStats>,
}

/// What constrained decoding cost on the CPU (seconds by `Model::clock`: 0 without one).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct GuideStats {
    /// Building the token trie for this tokenizer, when this call built it (once per engine).
    pub build_seconds: Option<f64>,
    /// Compiling the schema / regex / grammar.
    pub compile_seconds: f64,
    /// Masks computed (one per generated token) and their total and largest time.
    pub masks: u64,
    pub mask_seconds: f64,
    pub mask_max_seconds: f64,
}

/// What the GPU did in a generation's steady state: counters and decode steps over the window
/// from the second generated token to the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct SteadyStats {
    pub counters: crate::gpu::Counters,
    /// Decode steps submitted in the window (pipelined steps run ahead of the tokens read).
    pub steps: u64,
    /// Tokens read back in the window.
    pub tokens: u64,
    /// CPU seconds spent encoding the window's steps (0 without a clock, see `Model::clock`).
    pub encode_seconds: f64,
}

/// [`SteadyStats`] per decoded token: GPU-side counts per step, readback per token read.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct PerToken {
    pub dispatches: f64,
    pub submits: f64,
    pub buffers_created: f64,
    pub bind_groups_created: f64,
    pub pipelines_created: f64,
    pub readback_bytes: f64,
    pub written_bytes: f64,
    pub encode_us: f64,
}

impl SteadyStats {
    pub fn per_token(&self) -> PerToken {
        let c = &self.counters;
        let step = |v: u64| v as f64 / self.steps.max(1) as f64;
        PerToken {
            dispatches: step(c.dispatches),
            submits: step(c.submits),
            buffers_created: step(c.buffers_created),
            bind_groups_created: step(c.bind_groups_created),
            pipelines_created: step(c.pipelines_created),
            readback_bytes: c.bytes_read_back as f64 / self.tokens.max(1) as f64,
            written_bytes: step(c.bytes_written),
            encode_us: 1e6 * self.encode_seconds / self.steps.max(1) as f64,
        }
    }
}

/// Special tokens that end a turn in the chat formats we know; those in the vocabulary as special
/// (added) tokens stop generation, with the tokenizer_config's `eos_token`.
const END_OF_TURN: &[&str] = &[
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end|>",
    "</s>",
    "<|eom_id|>",
    "<end_of_turn>", // Gemma
];

pub struct Engine {
    pub model: Model,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    pub stop_ids: Vec<u32>,
    /// Tokens whose K/V are in the cache at positions 0.. (reused by the next prompt's common prefix).
    cached: Vec<u32>,
    /// Gated DeltaNet models: the length of the prompt whose end state is saved (the first
    /// `saved_prompt` tokens of `cached`).
    saved_prompt: Option<usize>,
    /// The grammar engine over this tokenizer, built on the first constrained request.
    guidance: Option<Arc<Guidance>>,
}

impl Engine {
    /// `tokenizer_json`/`tokenizer_config_json`: the model's files' contents.
    pub fn new(model: Model, tokenizer_json: &[u8], tokenizer_config_json: Option<&str>) -> Result<Self> {
        let tokenizer = Tokenizer::from_bytes(tokenizer_json).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let template = match tokenizer_config_json {
            Some(cfg) => match ChatTemplate::from_tokenizer_config(cfg) {
                Ok(t) => Some(t),
                Err(ChatError::MissingTemplate) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let mut stop_ids: Vec<u32> = Vec::new();
        let added = tokenizer.get_added_tokens_decoder();
        for (id, tok) in &added {
            if tok.special && END_OF_TURN.contains(&tok.content.as_str()) {
                stop_ids.push(*id);
            }
        }
        if let Some(eos) = tokenizer_config_json
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
            .and_then(|v| v.get("eos_token").cloned())
        {
            let content = eos.as_str().map(String::from).or_else(|| eos.get("content")?.as_str().map(String::from));
            if let Some(id) = content.and_then(|c| tokenizer.token_to_id(&c)) {
                stop_ids.push(id);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self {
            model,
            tokenizer: Arc::new(tokenizer),
            template,
            stop_ids,
            cached: Vec::new(),
            saved_prompt: None,
            guidance: None,
        })
    }

    /// Token ids of plain text; `add_special_tokens` lets the tokenizer's post-processor add BOS etc.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, add_special_tokens).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The model's chat template applied to `messages`, with the assistant prompt appended.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        self.render_chat_with(messages, None, &serde_json::Map::new())
    }

    /// [`Engine::render_chat`] with OpenAI tool entries for the template (see [`Engine::tool_request`])
    /// and extra template variables (`chat_template_kwargs`, as HF's `apply_chat_template(**kwargs)`:
    /// `{"enable_thinking": false}` for Qwen3 / Qwen3.5).
    pub fn render_chat_with(
        &self,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let t = self.template.as_ref().ok_or(EngineError::NoChatTemplate)?;
        crate::chat::check_messages(messages)?;
        check_template_kwargs(kwargs)?;
        Ok(t.render_with(messages, tools, true, kwargs)?)
    }

    /// Token ids of a chat: the rendered template already holds the special tokens (BOS too), so
    /// it is tokenized without adding more, as `apply_chat_template(tokenize=True)` does.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode_chat_with(messages, None, &serde_json::Map::new())
    }

    pub fn encode_chat_with(
        &self,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<u32>> {
        let text = self.render_chat_with(messages, tools, kwargs)?;
        self.encode(&text, false)
    }

    /// How this model writes tool calls, from its chat template (`None`: it takes no tools).
    pub fn tool_format(&self) -> Option<ToolFormat> {
        ToolFormat::of_template(self.template.as_ref()?.source())
    }

    /// OpenAI's `tools` / `tool_choice` checked for this model: what the template renders, the
    /// constraints to generate with ([`ToolRequest::apply`]) and the parser of the reply.
    pub fn tool_request(&self, tools: &serde_json::Value, choice: Option<&serde_json::Value>) -> Result<ToolRequest> {
        Ok(ToolRequest::new(tools, choice, self.tool_format())?)
    }

    /// Free the model's GPU memory now (weights, KV cache, activations) and drop the engine. A
    /// dropped engine's buffers are freed too, but in the browser only when the JS garbage
    /// collector runs, so unloading calls this.
    pub fn release(self, ctx: &Context) {
        let (w, s) = (self.model.weights.buffers(), self.model.state.buffers());
        ctx.release_all(w.into_iter().chain(s));
    }

    /// The grammar engine for this tokenizer (built the first time: the token trie and the
    /// lexer's slices), and the seconds building it took now (`None`: built before).
    pub fn guidance(&mut self) -> Result<(Arc<Guidance>, Option<f64>)> {
        if let Some(g) = &self.guidance {
            return Ok((g.clone(), None));
        }
        let t0 = (self.model.clock)();
        let g = Arc::new(Guidance::new(self.tokenizer.clone(), self.model.config.vocab, &self.stop_ids)?);
        let built = (self.model.clock)() - t0;
        self.guidance = Some(g.clone());
        Ok((g, Some(built)))
    }

    /// Compile `constraint` for this tokenizer: the errors generation would give, without
    /// generating (a bad schema is reported before anything else happens).
    pub fn check_constraint(&mut self, constraint: &Constraint) -> Result<()> {
        self.guidance()?.0.start(constraint)?;
        Ok(())
    }

    /// Forget the KV cache (the next prompt is prefilled from position 0).
    pub fn reset(&mut self) {
        self.cached.clear();
        self.saved_prompt = None;
    }

    /// Generate after `prompt` (token ids). `on_event` sees the prefill and every token; returning
    /// false stops generation (`Finish::Aborted`).
    pub async fn generate(
        &mut self,
        ctx: &Context,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_event: &mut dyn FnMut(Event) -> bool,
    ) -> Result<Summary> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        check_ids(prompt, self.model.config.vocab)?;
        // As OpenAI's API: a request for no tokens is an error, not an empty completion.
        if opts.max_tokens == 0 {
            return Err(EngineError::InvalidOption { option: "max_tokens", message: "must be at least 1".into() });
        }
        let context = self.model.state.opts.context;
        if prompt.len() >= context as usize {
            return Err(EngineError::ContextOverflow { prompt: prompt.len(), context });
        }
        // The constraint compiles (or fails as a bad request) before the GPU does anything.
        let mut guided = match (&opts.constraint, &opts.lazy) {
            (None, None) => None,
            (constraint, lazy) => {
                let (guidance, build_seconds) = self.guidance()?;
                let t0 = (self.model.clock)();
                let (active, pending) = match (constraint, lazy) {
                    (Some(c), _) => (Some(guidance.start(c)?), None),
                    (None, Some(l)) => (None, Some((l.trigger.clone(), guidance.start(&l.constraint)?))),
                    (None, None) => (None, None),
                };
                let stats =
                    GuideStats { build_seconds, compile_seconds: (self.model.clock)() - t0, ..Default::default() };
                let bits = vec![0u32; Guide::words(self.model.config.vocab)];
                Some(Guided { guidance, active, pending, stats, bits, out: Vec::new(), all_allowed: false })
            }
        };
        // Ids an earlier call left in flight (it failed mid-way) must not be read as this call's.
        self.model.drain_ids(ctx).await?;
        // Every token is chosen on the GPU (argmax or the sampler) and only its id comes back.
        self.model.set_sampling(ctx, &opts.sampling, DEFAULT_SEED, prompt, guided.is_some())?;
        if let Some(g) = &mut guided {
            self.next_mask(ctx, g)?;
        }
        // Reuse the cached prefix, but always run at least the last prompt token for its logits.
        let mut common = self.cached.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        // Gated DeltaNet layers (Qwen3.5): their state has absorbed every token it saw (pipelined
        // steps past a stop too) and cannot be rewound, so only the state saved at the end of the
        // last prompt can be resumed, when this prompt extends that one (a chat's next turn);
        // otherwise the prompt is prefilled from position 0, which resets the state.
        if !self.model.config.linear.is_empty() {
            common = match self.saved_prompt.take() {
                Some(n) if n <= common => {
                    self.model.restore_recurrent(ctx);
                    n
                }
                _ => 0,
            };
        }
        // Ring KV caches (Gemma's sliding layers) keep the last window + max_batch − 1 positions:
        // a prefix is reusable only while nothing written since overwrote the keys it needs.
        if !self.model.state.can_resume_at(common as u32) {
            common = 0;
        }
        self.cached.truncate(common);
        self.model.submit_prompt(ctx, &prompt[common..], common as u32, Readback::Id)?;
        self.saved_prompt = Some(prompt.len());
        // Decode step j runs at position p0 + j on token j and chooses token j + 1; it is needed
        // while token j + 1 is within max_tokens and its position within the context.
        let p0 = prompt.len() as u32;
        let wanted = |j: u32| j + 1 < opts.max_tokens && p0 + j < context;
        // Constrained steps are split: step j's forward pass runs on the GPU (on the token chosen
        // there) while the CPU reads token j and computes the mask step j's choice needs.
        if guided.is_some() && wanted(0) {
            self.model.submit_forward(ctx, p0)?;
        }
        let mut next = self.take(ctx).await?;
        self.cached.extend_from_slice(&prompt[common..]);
        let mut summary = Summary {
            prompt_tokens: prompt.len(),
            reused_tokens: common,
            generated: Vec::new(),
            text: String::new(),
            finish: Finish::Length,
            steady: None,
            guide: None,
        };
        if !on_event(Event::Prefilled { prompt_tokens: prompt.len(), reused: common }) {
            summary.finish = Finish::Aborted;
            return Ok(summary);
        }
        let detok = Detokenizer::new(self.tokenizer.clone(), prompt)?;
        let mut stream =
            TextStream::new(detok, StopChecker::new(opts.stop.iter())?, StopIds::new(self.stop_ids.iter().copied()));
        // Unconstrained steps are pipelined: step j + 1 reads the id step j chose on the GPU, so up to PIPELINE
        // steps are submitted before the oldest id is read; steps past a stop are surplus (their
        // KV positions are not counted as cached).
        let mut submitted = 0u32;
        let mut steady_from = None;
        let result = loop {
            summary.generated.push(next);
            if summary.generated.len() == 2 {
                steady_from = Some((ctx.counters(), self.model.decode_stats));
            }
            // A lazy constraint whose trigger this token completes starts now (having taken the
            // tokens it covers: this one is not consumed again below).
            let triggered = match guided.as_mut().map(|g| g.check_trigger(&summary.generated)) {
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(t)) => t,
                None => false,
            };
            if triggered && !on_event(Event::Triggered) {
                summary.finish = Finish::Aborted;
                break Ok(());
            }
            match stream.push(next)? {
                StreamEvent::Text(text) => {
                    summary.text.push_str(&text);
                    if !on_event(Event::Token { id: next, text: &text }) {
                        summary.finish = Finish::Aborted;
                        break Ok(());
                    }
                }
                StreamEvent::Finished { text, reason } => {
                    summary.text.push_str(&text);
                    on_event(Event::Token { id: next, text: &text });
                    summary.finish = match reason {
                        FinishReason::StopToken(_) => Finish::Stop,
                        FinishReason::StopString { .. } => Finish::StopString,
                    };
                    break Ok(());
                }
            }
            let done = summary.generated.len() as u32 - 1; // decode steps whose token is taken
            let mut complete = false;
            if let Some(guide) = guided.as_mut().and_then(|g| g.active.as_mut()) {
                if !triggered {
                    if let Err(e) = guide.consume(next) {
                        break Err(e.into());
                    }
                }
                // The grammar admits nothing more: the value is complete, generation ends.
                complete = guide.is_stopped();
            }
            if complete || !wanted(done) {
                let tail = stream.finish()?;
                if !tail.is_empty() {
                    summary.text.push_str(&tail);
                    on_event(Event::Token { id: next, text: &tail });
                }
                if complete {
                    summary.finish = Finish::Stop;
                }
                break Ok(());
            }
            if let Some(g) = &mut guided {
                // Step `done`'s forward pass is on the GPU: its mask, its choice, the next step.
                let step = self.next_mask(ctx, g).and_then(|()| {
                    self.model.submit_choice(ctx, Readback::Id)?;
                    if wanted(done + 1) {
                        self.model.submit_forward(ctx, p0 + done + 1)?;
                    }
                    Ok(())
                });
                if let Err(e) = step {
                    break Err(e);
                }
                let fed = next;
                match self.take(ctx).await {
                    Ok(id) => next = id,
                    Err(e) => break Err(e),
                }
                self.cached.push(fed);
                continue;
            }
            let mut failed = None;
            while submitted < done + PIPELINE as u32 && wanted(submitted) {
                if let Err(e) = self.model.submit_decode(ctx, p0 + submitted, None, Readback::Id) {
                    failed = Some(e);
                    break;
                }
                submitted += 1;
            }
            if let Some(e) = failed {
                break Err(e.into());
            }
            let fed = next;
            match self.take(ctx).await {
                Ok(id) => next = id,
                Err(e) => break Err(e),
            }
            self.cached.push(fed);
        };
        // Surplus pipelined steps: wait for their ids and drop them.
        let drained = self.model.drain_ids(ctx).await;
        result?;
        drained?;
        if let (Some((c0, d0)), true) = (steady_from, summary.generated.len() > 2) {
            let d1 = self.model.decode_stats;
            summary.steady = Some(SteadyStats {
                counters: ctx.counters().since(&c0),
                steps: d1.steps - d0.steps,
                tokens: summary.generated.len() as u64 - 2,
                encode_seconds: d1.steady_encode_seconds - d0.steady_encode_seconds,
            });
        }
        summary.guide = guided.map(|g| g.stats);
        Ok(summary)
    }

    /// The guide's mask for the next choice, timed and written for the GPU sampler; before a
    /// lazy constraint starts, every token (written once).
    fn next_mask(&self, ctx: &Context, g: &mut Guided) -> Result<()> {
        let Some(guide) = &mut g.active else {
            if !g.all_allowed {
                let vocab = self.model.config.vocab;
                g.bits.fill(u32::MAX);
                if vocab % 32 != 0 {
                    *g.bits.last_mut().expect("vocab > 0") = (1u32 << (vocab % 32)) - 1;
                }
                self.model.set_allowed(ctx, &g.bits)?;
                g.all_allowed = true;
            }
            return Ok(());
        };
        let t0 = (self.model.clock)();
        guide.mask(&mut g.bits)?;
        let dt = (self.model.clock)() - t0;
        let stats = &mut g.stats;
        stats.masks += 1;
        stats.mask_seconds += dt;
        stats.mask_max_seconds = stats.mask_max_seconds.max(dt);
        Ok(self.model.set_allowed(ctx, &g.bits)?)
    }

    /// The next token of the oldest step in flight, or the sampler's error for it.
    async fn take(&mut self, ctx: &Context) -> Result<u32> {
        let id = self.model.read_id(ctx).await?;
        Ok(crate::ops::sample::chosen(id, self.model.config.vocab)?)
    }
}

/// A constrained generation's grammar state.
struct Guided {
    guidance: Arc<Guidance>,
    /// The constraint in force.
    active: Option<Guide>,
    /// A lazy constraint waiting for its trigger.
    pending: Option<(Trigger, Guide)>,
    stats: GuideStats,
    /// The mask for the next choice.
    bits: Vec<u32>,
    /// The output's bytes so far (while a trigger is awaited).
    out: Vec<u8>,
    /// The all-tokens mask is on the GPU (no constraint in force yet).
    all_allowed: bool,
}

impl Guided {
    /// Whether the last of `generated` completes the pending trigger, which then starts its
    /// constraint: after the trigger's text, or over the whole output (replayed; a reply the
    /// grammar rejects stays unconstrained).
    fn check_trigger(&mut self, generated: &[u32]) -> Result<bool, GuideError> {
        let Some((trigger, _)) = &self.pending else { return Ok(false) };
        let last = *generated.last().expect("a token was generated");
        self.out.extend_from_slice(self.guidance.token_bytes(last));
        let fire = match trigger {
            Trigger::After(t) => self.out.ends_with(t.as_bytes()),
            Trigger::Start(c) => {
                if self.out.is_empty() {
                    return Ok(false);
                }
                // Decided by the first visible character, either way.
                let fire = self.out.starts_with(c.encode_utf8(&mut [0; 4]).as_bytes());
                if !fire {
                    self.pending = None;
                }
                fire
            }
        };
        if !fire {
            return Ok(false);
        }
        let (trigger, mut guide) = self.pending.take().expect("pending");
        if let Trigger::Start(_) = trigger {
            if !guide.replay(generated)? {
                return Ok(false);
            }
        }
        self.active = Some(guide);
        self.out = Vec::new();
        Ok(true)
    }
}

/// Options for opening a model package.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// KV cache length; `None`: the model's maximum, capped at 4096 and at what one binding holds.
    pub context: Option<u32>,
    pub kv_dtype: KvDtype,
    /// Most tokens per forward step (longer prompts are prefilled in chunks).
    pub max_batch: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { context: None, kv_dtype: KvDtype::F16, max_batch: 128 }
    }
}

/// The KV cache length: asked for, or the model's maximum capped at 4096. One layer's K (or V)
/// cache is one binding, so positions × kv_dim × element size must fit the binding limit.
pub fn resolve_context(ctx: &Context, config: &crate::model::Config, opts: &OpenOptions) -> Result<u32> {
    let bytes_per_pos = config.kv_dim() as u64 * if opts.kv_dtype == KvDtype::F16 { 2 } else { 4 };
    let device_max = (ctx.max_binding_bytes() / bytes_per_pos).min(u32::MAX as u64) as u32;
    if opts.max_batch == 0 {
        return Err(EngineError::InvalidOption { option: "max_batch", message: "must be at least 1".into() });
    }
    match opts.context {
        Some(c) if c > device_max => Err(EngineError::Gpu(GpuError::LimitTooSmall {
            limit: "maxStorageBufferBindingSize",
            needed: c as u64 * bytes_per_pos,
            available: ctx.max_binding_bytes(),
            what: format!("a KV cache of {c} positions per layer"),
        })),
        Some(0) => Err(EngineError::InvalidOption { option: "context", message: "must be at least 1".into() }),
        Some(c) => Ok(c),
        None => Ok(config.max_position.min(4096).min(device_max)),
    }
}

/// The state (KV cache, activations) an engine with `opts` gets: its context resolved as above.
pub fn state_options(
    ctx: &Context,
    config: &crate::model::Config,
    opts: &OpenOptions,
) -> Result<crate::model::StateOptions> {
    let context = resolve_context(ctx, config, opts)?;
    Ok(crate::model::StateOptions { context, max_batch: opts.max_batch, kv_dtype: opts.kv_dtype, all_logits: false })
}

/// Allocate the state an engine with `opts` would (KV cache, activations) and free it again, so a
/// device that cannot hold it says so (an out-of-memory error in the caller's error scope) before
/// the weights download rather than after. Returns the KV cache's bytes.
pub fn probe_state(ctx: &Context, config: &crate::model::Config, opts: &OpenOptions) -> Result<u64> {
    let so = state_options(ctx, config, opts)?;
    let state = crate::model::State::new(ctx, config, so)?;
    ctx.release_all(state.buffers());
    Ok(kv_cache_bytes(config, &so))
}

/// Bytes of the sequence memory of a state with `opts`: K and V of every attention layer (a ring
/// of the window's size for Gemma's sliding layers, `model::kv_shapes`), and (Qwen3.5) each Gated
/// DeltaNet layer's recurrent state with its saved copy, whatever the length.
pub fn kv_cache_bytes(config: &crate::model::Config, opts: &crate::model::StateOptions) -> u64 {
    let (full, local) = crate::model::kv_shapes(config, opts);
    let recurrent = config.delta.map_or(0, |d| crate::ops::delta_net::DeltaState::bytes(&d));
    (0..config.n_layers as usize)
        .map(|l| match config.linear.get(l).copied().unwrap_or(false) {
            true => recurrent,
            false => 2 * crate::model::layer_kv_shape(config, l, full, local).bytes(),
        })
        .sum()
}

/// Template variables a request may set (`chat_template_kwargs`): anything but what the engine
/// itself passes (the conversation, the tools, the generation prompt).
fn check_template_kwargs(kwargs: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    const RESERVED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];
    match kwargs.keys().find(|k| RESERVED.contains(&k.as_str())) {
        Some(k) => Err(EngineError::InvalidOption {
            option: "chat_template_kwargs",
            message: format!("`{k}` is set by the request itself, not by a template variable"),
        }),
        None => Ok(()),
    }
}

fn config_error(e: crate::model::ConfigError) -> EngineError {
    ModelError::Config(e).into()
}

/// An engine over a loaded package's tensors (`crate::loader::ShardWriter::finish`) and its
/// tokenizer files' contents.
pub fn engine_from_package(
    ctx: &Context,
    manifest: &crate::loader::Manifest,
    tensors: &mut HashMap<String, GpuTensor>,
    tokenizer_json: &[u8],
    tokenizer_config_json: Option<&str>,
    opts: OpenOptions,
) -> Result<Engine> {
    use crate::model::Config;
    let config = Config::from_hf(&manifest.architecture).map_err(config_error)?;
    let state = state_options(ctx, &config, &opts)?;
    let model = Model::new(ctx, config, tensors, state)?;
    Engine::new(model, tokenizer_json, tokenizer_config_json)
}

/// An engine over a GGUF's tensors (from `crate::loader::gguf_stream::GgufStream::finish`):
/// config, tokenizer and chat template come from the file's metadata;
/// `src` serves the small rope-factor tensors the config may need.
pub fn engine_from_gguf(
    ctx: &Context,
    file: &crate::loader::gguf::GgufFile,
    tensors: &mut HashMap<String, GpuTensor>,
    src: &mut dyn crate::loader::gguf::GgufSource,
    opts: OpenOptions,
) -> Result<Engine> {
    use crate::loader::{gguf, gguf_tokenizer::GgufTokenizer};
    use crate::model::Config;
    let config = Config::from_hf(&gguf::hf_config(file, src).map_err(gguf_error)?).map_err(config_error)?;
    let state = state_options(ctx, &config, &opts)?;
    let model = Model::new(ctx, config, tensors, state)?;
    let tok = GgufTokenizer::from_metadata(&file.metadata).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let json = tok.tokenizer_json().map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    Engine::new(model, &json, Some(&tok.tokenizer_config_json()))
}

pub(crate) fn gguf_error(e: crate::loader::gguf::GgufError) -> EngineError {
    match e {
        crate::loader::gguf::GgufError::Gpu(g) => EngineError::Gpu(g),
        other => EngineError::Gguf(other),
    }
}

/// Open a converted package directory (manifest, shards, tokenizer files) onto the GPU.
#[cfg(not(target_arch = "wasm32"))]
pub fn open_package(ctx: &Context, dir: &std::path::Path, opts: OpenOptions) -> Result<Engine> {
    let package = crate::loader::Package::open(dir)?;
    let mut tensors = package.load(ctx)?;
    let read = |f: &str| {
        let path = package.path(f);
        std::fs::read(&path)
            .map_err(|e| EngineError::Load(LoadError::Io { path: path.display().to_string(), source: e }))
    };
    let tokenizer = read("tokenizer.json")?;
    let tok_config = read("tokenizer_config.json").ok().and_then(|b| String::from_utf8(b).ok());
    engine_from_package(ctx, &package.manifest, &mut tensors, &tokenizer, tok_config.as_deref(), opts)
}

/// Open a GGUF file (or, given any part, a split model) onto the GPU. The files are read front to
/// back through the same [`GgufStream`](crate::loader::gguf_stream::GgufStream) the browser feeds
/// from `fetch`, in 1 MiB reads.
#[cfg(not(target_arch = "wasm32"))]
pub fn open_gguf(ctx: &Context, path: &std::path::Path, opts: OpenOptions) -> Result<Engine> {
    let (file, mut tensors, mut captured) = stream_gguf(ctx, path)?;
    engine_from_gguf(ctx, &file, &mut tensors, &mut captured, opts)
}

/// A GGUF file (or a split model, given any part) streamed onto the GPU: its header, its tensors
/// under checkpoint names, and the small tensors kept for the config.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::type_complexity)]
pub fn stream_gguf(
    ctx: &Context,
    path: &std::path::Path,
) -> Result<(crate::loader::gguf::GgufFile, HashMap<String, GpuTensor>, crate::loader::gguf_stream::CapturedSource)> {
    use std::io::Read;

    use crate::loader::{gguf, gguf_stream::GgufStream};
    let (_, src) = gguf::open(path).map_err(gguf_error)?;
    let io = |p: &std::path::Path| {
        let path = p.display().to_string();
        move |e| EngineError::Load(LoadError::Io { path, source: e })
    };
    let paths = src.paths().to_vec();
    let mut sizes = Vec::with_capacity(paths.len());
    for p in &paths {
        sizes.push(std::fs::metadata(p).map_err(io(p))?.len());
    }
    let mut stream = GgufStream::new(ctx, sizes).map_err(gguf_error)?;
    let mut buf = vec![0u8; 1 << 20];
    for (i, p) in paths.iter().enumerate() {
        let mut f = std::fs::File::open(p).map_err(io(p))?;
        loop {
            let n = f.read(&mut buf).map_err(io(p))?;
            if n == 0 {
                break;
            }
            stream.write(i, &buf[..n]).map_err(gguf_error)?;
        }
        stream.finish_part(i).map_err(gguf_error)?;
    }
    stream.finish().map_err(gguf_error)
}
