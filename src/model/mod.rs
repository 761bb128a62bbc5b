//! Models: a resolved `Config`, immutable `Weights` on the GPU, and a `State` (activations and the
//! KV cache, preallocated). `llama::forward` builds one step's kernels.

pub mod config;
pub mod llama;
pub mod weights;

pub use config::{Arch, Config, ConfigError};
pub use llama::{forward, Logits, State, StateOptions};
pub use weights::{CpuTensors, QuantPolicy, TensorSource, Weights};

use crate::gpu::{Context, Result};

/// Config + weights + state: what a caller holds to run a model.
pub struct Model {
    pub config: Config,
    pub weights: Weights,
    pub state: State,
}

impl Model {
    pub fn new(ctx: &Context, config: Config, src: &mut dyn TensorSource, opts: StateOptions) -> Result<Self> {
        let weights = Weights::load(ctx, &config, src)?;
        let state = State::new(ctx, &config, opts)?;
        Ok(Self { config, weights, state })
    }

    /// Run `tokens` at positions `pos0..`, in chunks of `max_batch`, one submission per chunk.
    /// `state.logits`/`state.next_id` then hold the last chunk's rows (`which`).
    pub fn run(&self, ctx: &Context, tokens: &[u32], pos0: u32, which: Logits) -> Result<()> {
        let mut pos = pos0;
        for part in tokens.chunks(self.state.opts.max_batch as usize) {
            let kernels = forward(ctx, &self.config, &self.weights, &self.state, part, pos, which)?;
            ctx.run(&kernels.iter().collect::<Vec<_>>());
            pos += part.len() as u32;
        }
        Ok(())
    }

    /// Run `tokens` at positions `pos0..` and return the logits rows asked for: the last token's,
    /// or every token's (`Logits::All`).
    pub async fn logits(&self, ctx: &Context, tokens: &[u32], pos0: u32, which: Logits) -> Result<Vec<f32>> {
        let vocab = self.config.vocab as usize;
        if which == Logits::Last {
            self.run(ctx, tokens, pos0, which)?;
            return ctx.read_f32(&self.state.logits, vocab).await;
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

    /// Run `tokens` at `pos0..` and return the greedy next token (argmax on the GPU; only the id is
    /// read back).
    pub async fn greedy_next(&self, ctx: &Context, tokens: &[u32], pos0: u32) -> Result<u32> {
        self.run(ctx, tokens, pos0, Logits::Last)?;
        Ok(ctx.read_u32(&self.state.next_id, 1).await?[0])
    }
}
