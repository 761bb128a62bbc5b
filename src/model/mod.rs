//! Models: a resolved `Config`, immutable `Weights` on the GPU, and a `State` (activations and the
//! KV cache, preallocated). `llama::forward` builds one step's kernels.

pub mod config;
pub mod encoder;
pub mod error;
pub mod llama;
pub mod weights;

pub use config::{Arch, Config, ConfigError};
pub use error::{check_ids, ModelError};
pub use llama::{forward, kv_shapes, layer_kv_shape, Choose, Input, Logits, State, StateOptions, PIPELINE};
pub use weights::{CpuTensors, QuantPolicy, TensorSource, Weights};

use crate::gpu::{ensure, Context, CopyAfter};
use crate::sampling::{SamplingError, SamplingParams};
use error::Result;

/// What a submitted step sends back to the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readback {
    /// The id the GPU chose (argmax or the sampler, see [`Model::set_sampling`]): 4 bytes, through
    /// a ring so steps can overlap.
    Id,
    /// The last logits row (tests; the choice is made all the same).
    Logits,
}

/// Config + weights + state: what a caller holds to run a model.
pub struct Model {
    pub config: Config,
    pub weights: Weights,
    pub state: State,
    /// Seconds on some monotonic clock (the CLI's `Instant`, the browser's `performance.now`);
    /// the default reads 0. Times `submit_decode`'s encoding into `decode_stats`.
    pub clock: fn() -> f64,
    pub decode_stats: DecodeStats,
    /// How prompts and decode steps choose their token (`set_sampling`).
    choose: Choose,
    /// A split step whose forward pass is submitted and whose choice is not (`submit_forward`),
    /// whether its plan was built already, and the CPU seconds its first half took to encode.
    split: Option<(PlanKey, bool, f64)>,
}

type PlanKey = (u32, Choose);

/// Decode steps submitted, and the CPU time spent encoding (not submitting) those that found
/// their plan built (steady state; a step that builds a plan costs what a per-call step does).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecodeStats {
    pub steps: u64,
    pub steady_steps: u64,
    pub steady_encode_seconds: f64,
}

impl Model {
    pub fn new(ctx: &Context, config: Config, src: &mut dyn TensorSource, opts: StateOptions) -> Result<Self> {
        let weights = Weights::load(ctx, &config, src)?;
        let state = State::new(ctx, &config, opts)?;
        Ok(Self {
            config,
            weights,
            state,
            clock: || 0.0,
            decode_stats: DecodeStats::default(),
            choose: Choose::Argmax,
            split: None,
        })
    }

    /// How the next prompts and decode steps choose: the GPU argmax when `params` is greedy, else
    /// the GPU sampler with `params` (seeded by `params.seed`, else `entropy`) and `history` (the
    /// context so far, for the penalties; decode steps append their choices). `constrained`:
    /// always the sampler, among the tokens of [`set_allowed`](Self::set_allowed) only.
    pub fn set_sampling(
        &mut self,
        ctx: &Context,
        params: &SamplingParams,
        entropy: u64,
        history: &[u32],
        constrained: bool,
    ) -> Result<(), SamplingError> {
        if params.is_greedy() && !constrained {
            params.validate()?;
            self.choose = Choose::Argmax;
            return Ok(());
        }
        self.state.sampler.configure(ctx, params, entropy, constrained)?;
        if params.has_penalties() {
            self.state.sampler.set_history(ctx, history)?;
        }
        self.choose = Choose::Sample;
        Ok(())
    }

    /// Run `tokens` at positions `pos0..`, in chunks of `max_batch`, one submission per chunk.
    /// `state.logits`/`state.next_id` then hold the last chunk's rows (`which`) and their argmax.
    pub fn run(&self, ctx: &Context, tokens: &[u32], pos0: u32, which: Logits) -> Result<()> {
        self.run_then_copy(ctx, tokens, pos0, which, Choose::Argmax, &[]).map(|_| ())
    }

    /// `run`, with `last` copies recorded after the last chunk in its own submission.
    fn run_then_copy(
        &self,
        ctx: &Context,
        tokens: &[u32],
        pos0: u32,
        which: Logits,
        choose: Choose,
        last: &[CopyAfter],
    ) -> Result<Option<wgpu::SubmissionIndex>> {
        // forward checks each chunk; this checks the whole run before any chunk is submitted.
        ensure(pos0 as u64 + tokens.len() as u64 <= self.state.opts.context as u64, "forward", || {
            format!(
                "positions {pos0}..{} exceed the context of {} tokens",
                pos0 as usize + tokens.len(),
                self.state.opts.context
            )
        })?;
        let mut pos = pos0;
        let chunks = tokens.chunks(self.state.opts.max_batch as usize);
        let n = chunks.len();
        let mut index = None;
        for (i, part) in chunks.enumerate() {
            self.state.write_ids(ctx, part, self.config.vocab)?;
            self.state.set_pos(ctx, pos);
            self.state.wrote(pos, part.len() as u32);
            let input = Input::Ids(part.len() as u32);
            // Only the last chunk's choice is wanted; the sampler would also append an id to its
            // history over the next chunk's first token.
            let (choose, copies) = if i + 1 == n { (choose, last) } else { (Choose::Argmax, &[][..]) };
            let kernels = forward(ctx, &self.config, &self.weights, &self.state, input, pos, which, choose)?;
            index = Some(ctx.run_then_copy(&kernels.iter().collect::<Vec<_>>(), copies));
            pos += part.len() as u32;
        }
        Ok(index)
    }

    fn readback_copy(&self, read: Readback) -> Result<CopyAfter<'_>> {
        Ok(match read {
            Readback::Id => self.state.ids_back.copy_from(&self.state.next_id, 0)?,
            Readback::Logits => self.state.logits_back.copy_from(&self.state.logits, 0)?,
        })
    }

    fn submitted(&mut self, ctx: &Context, read: Readback, index: wgpu::SubmissionIndex) {
        match read {
            Readback::Id => self.state.ids_back.submitted(ctx, index),
            Readback::Logits => self.state.logits_back.submitted(ctx, index),
        }
    }

    /// Prefill `tokens` at positions `pos0..` and send back what follows the last one (`read`);
    /// take it with [`read_id`](Self::read_id) or [`read_logits`](Self::read_logits).
    pub fn submit_prompt(&mut self, ctx: &Context, tokens: &[u32], pos0: u32, read: Readback) -> Result<()> {
        ensure(!tokens.is_empty(), "forward", || "no tokens to run".into())?;
        // Gated DeltaNet layers: their state at the prompt's end is saved with the same submission
        // (`restore_recurrent` brings it back for a prompt that extends this one).
        let mut copies = vec![self.readback_copy(read)?];
        copies.extend(self.state.recurrent_copies(true));
        let index = self.run_then_copy(ctx, tokens, pos0, Logits::Last, self.choose, &copies)?;
        if let Some(index) = index {
            self.submitted(ctx, read, index);
        }
        Ok(())
    }

    /// Put back the Gated DeltaNet state saved at the end of the last prompt (queued before
    /// whatever is submitted next). Nothing to do for models without such layers.
    pub fn restore_recurrent(&self, ctx: &Context) {
        let copies = self.state.recurrent_copies(false);
        if !copies.is_empty() {
            ctx.run_then_copy(&[], &copies);
        }
    }

    /// Bytes a decoded token reads from weights (`Weights::bytes_per_token`) plus, for Gated
    /// DeltaNet layers, its recurrent state read and written back: the traffic the roofline counts.
    pub fn bytes_per_token(&self) -> u64 {
        let linear = self.config.linear.iter().filter(|&&l| l).count() as u64;
        let state = self.config.delta.map_or(0, |d| crate::ops::delta_net::DeltaState::traffic_per_token(&d));
        self.weights.bytes_per_token() + linear * state
    }

    /// Submit one decode step at position `pos`: its token is `token`, or with `None` the id the
    /// previous step chose on the GPU (it never comes to the CPU first). In steady state this
    /// writes 16 bytes (20 with a token), records the prebuilt plan and submits once: no buffer,
    /// bind group or pipeline is created. Then [`read_id`](Self::read_id) (several steps may be
    /// in flight, up to [`PIPELINE`]) or [`read_logits`](Self::read_logits) (one).
    pub fn submit_decode(&mut self, ctx: &Context, pos: u32, token: Option<u32>, read: Readback) -> Result<()> {
        let start = (self.clock)();
        let (key, steady) = self.plan(ctx, pos, token)?;
        let refs: Vec<&crate::gpu::Kernel> = self.state.plans[&key].iter().collect();
        let commands = ctx.encode(&refs, &[self.readback_copy(read)?]);
        let encoded = (self.clock)();
        let index = ctx.submit_encoded(commands);
        self.submitted(ctx, read, index);
        self.count_step(steady, encoded - start);
        Ok(())
    }

    /// Set up a decode step at `pos` (its token written when given) and return its plan's key,
    /// building the plan the first time, and whether the plan was built already (steady state).
    fn plan(&mut self, ctx: &Context, pos: u32, token: Option<u32>) -> Result<(PlanKey, bool)> {
        let (cfg, s) = (&self.config, &self.state);
        ensure(pos < s.opts.context, "decode", || format!("position {pos} is past the context of {}", s.opts.context))?;
        if let Some(id) = token {
            check_ids(&[id], cfg.vocab)?;
            ctx.write(&s.next_id, 0, bytemuck::bytes_of(&id));
        }
        s.set_pos(ctx, pos);
        s.wrote(pos, 1);
        let key = (s.plan_key(cfg, pos), self.choose);
        let steady = s.plans.contains_key(&key);
        if !steady {
            let plan = forward(ctx, cfg, &self.weights, s, Input::Chosen, pos, Logits::Last, self.choose)?;
            self.state.plans.insert(key, plan);
        }
        Ok((key, steady))
    }

    fn count_step(&mut self, steady: bool, encode_seconds: f64) {
        self.decode_stats.steps += 1;
        if steady {
            self.decode_stats.steady_steps += 1;
            self.decode_stats.steady_encode_seconds += encode_seconds;
        }
    }

    /// The tokens the next choice may make (a bitmask, `ops::sample::SampleState::set_allowed`),
    /// for a model whose sampling was set `constrained`. Written in queue order: it applies to
    /// the choices submitted after it.
    pub fn set_allowed(&self, ctx: &Context, bits: &[u32]) -> Result<()> {
        Ok(self.state.sampler.set_allowed(ctx, bits)?)
    }

    /// A decode step in two submissions, so the CPU can work while the GPU runs the forward pass
    /// (constrained decoding computes the next mask there): this one submits the step's
    /// kernels up to the logits; [`submit_choice`](Self::submit_choice) then submits the
    /// sampler and the readback. Needs the sampler (`set_sampling` constrained or not greedy).
    pub fn submit_forward(&mut self, ctx: &Context, pos: u32) -> Result<()> {
        ensure(self.choose == Choose::Sample, "decode", || "a split step needs the GPU sampler".into())?;
        let start = (self.clock)();
        let (key, steady) = self.plan(ctx, pos, None)?;
        let plan = &self.state.plans[&key];
        let refs: Vec<&crate::gpu::Kernel> = plan[..plan.len() - 1].iter().collect();
        let commands = ctx.encode(&refs, &[]);
        let encoded = (self.clock)();
        ctx.submit_encoded(commands);
        // A step left unchosen (the generation ended after its forward pass) is simply replaced.
        self.split = Some((key, steady, encoded - start));
        Ok(())
    }

    /// The second half of a split step: the sampler (reading the mask written since) and the
    /// readback of its id.
    pub fn submit_choice(&mut self, ctx: &Context, read: Readback) -> Result<()> {
        let Some((key, steady, seconds)) = self.split.take() else {
            return Err(crate::gpu::GpuError::Validation("no forward pass waits for its choice".into()).into());
        };
        let start = (self.clock)();
        let plan = &self.state.plans[&key];
        let last = &plan[plan.len() - 1];
        let commands = ctx.encode(&[last], &[self.readback_copy(read)?]);
        let encoded = (self.clock)();
        let index = ctx.submit_encoded(commands);
        self.submitted(ctx, read, index);
        self.count_step(steady, seconds + encoded - start);
        Ok(())
    }

    /// The oldest chosen id in flight, as the GPU wrote it: `ops::sample::chosen` tells a token
    /// from the sampler's error codes.
    pub async fn read_id(&mut self, ctx: &Context) -> Result<u32> {
        let b = self.state.ids_back.read(ctx).await?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The logits row of the last step submitted with `Readback::Logits`.
    pub async fn read_logits(&mut self, ctx: &Context) -> Result<Vec<f32>> {
        let b = self.state.logits_back.read(ctx).await?;
        Ok(bytemuck::pod_collect_to_vec(&b))
    }

    /// Ids still in flight (pipelined steps past a stop), waited for and dropped.
    pub async fn drain_ids(&mut self, ctx: &Context) -> Result<()> {
        Ok(self.state.ids_back.drain(ctx).await?)
    }

    /// Run `tokens` at positions `pos0..` and return the logits rows asked for: the last token's,
    /// or every token's (`Logits::All`).
    pub async fn logits(&self, ctx: &Context, tokens: &[u32], pos0: u32, which: Logits) -> Result<Vec<f32>> {
        let vocab = self.config.vocab as usize;
        if which == Logits::Last {
            self.run(ctx, tokens, pos0, which)?;
            return Ok(ctx.read_f32(&self.state.logits, vocab).await?);
        }
        let mut out = Vec::with_capacity(tokens.len() * vocab);
        let mut pos = pos0;
        for part in tokens.chunks(self.state.opts.max_batch as usize) {
            self.run(ctx, part, pos, which)?;
            out.extend(ctx.read_f32(&self.state.logits, part.len() * vocab).await?);
            pos += part.len() as u32;
        }
        Ok(out)
    }
}
