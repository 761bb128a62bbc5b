//! Next-token choice on the GPU (`shaders/sample.wgsl`): the CPU sampler's rules
//! (`crate::sampling`: logit_bias, penalties, temperature, top-k, top-p, min-p) over one row of
//! logits per workgroup, the chosen id written where the next step's embedding reads it, so only
//! the id comes back. Randomness is Philox4x32-10 keyed by the seed and counted by the history
//! length, so a seed gives the same tokens however steps are pipelined; across devices the same
//! unless `exp` rounds differently right at a draw's boundary.

use super::{check_len, Pos};
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};
use crate::sampling::{SamplingError, SamplingParams};

/// Most distinct `logit_bias` entries (OpenAI allows 300).
pub const MAX_LOGIT_BIAS: usize = 1024;

/// What the kernel writes for a row with no candidate (every logit NaN or -inf).
pub const NO_CANDIDATE: u32 = u32::MAX;
/// Set in the id when a logit is +inf after bias and penalties; the rest is the token.
pub const INFINITE_FLAG: u32 = 0x8000_0000;

const GREEDY: u32 = 1;
const PENALTIES: u32 = 2;
const APPEND: u32 = 4;
const MASK: u32 = 8;
const ALLOWED: u32 = 16;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Shape {
    rows: u32,
    vocab: u32,
    t: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Settings {
    inv_temp: f32,
    top_p: f32,
    min_p: f32,
    rep: f32,
    presence: f32,
    frequency: f32,
    top_k: u32,
    last_n: u32,
    n_bias: u32,
    flags: u32,
    seed_lo: u32,
    seed_hi: u32,
    history_cap: u32,
    _pad: [u32; 3],
}

/// The sampler's GPU side, allocated once: settings (written per generation), the logit_bias
/// list, the token history the penalties read (and the kernel appends to), and the per-token
/// counters the penalties use (zero between runs).
pub struct SampleState {
    settings: wgpu::Buffer,
    bias: wgpu::Buffer,
    history: wgpu::Buffer,
    counts: wgpu::Buffer,
    no_mask: wgpu::Buffer,
    /// The constraint's allowed tokens, one bit each (read when configured `constrained`).
    allowed: wgpu::Buffer,
    rows: u32,
    vocab: u32,
    history_cap: u32,
}

impl SampleState {
    /// Its GPU buffers (for `Context::release_all`).
    pub fn buffers(&self) -> [&wgpu::Buffer; 6] {
        [&self.settings, &self.bias, &self.history, &self.counts, &self.no_mask, &self.allowed]
    }

    /// For up to `rows` rows of `vocab` logits and a history of `history_cap` tokens.
    pub fn new(ctx: &Context, rows: u32, vocab: u32, history_cap: u32) -> Result<Self> {
        ensure(rows > 0 && vocab > 0 && history_cap > 0, "sample", || {
            format!("empty sampler state rows={rows} vocab={vocab} history={history_cap}")
        })?;
        Ok(Self {
            settings: ctx.uniform("sample.settings", &Settings::default()),
            bias: ctx.storage("sample.bias", MAX_LOGIT_BIAS as u64 * 8)?,
            history: ctx.storage("sample.history", history_cap as u64 * 4)?,
            counts: ctx.storage("sample.counts", rows as u64 * vocab as u64 * 4)?,
            no_mask: ctx.storage("sample.no_mask", 4)?,
            allowed: ctx.storage("sample.allowed", vocab.div_ceil(32) as u64 * 4)?,
            rows,
            vocab,
            history_cap,
        })
    }

    /// Write `params` for the next runs; `entropy` seeds them when `params.seed` is `None` (as
    /// `Sampler::with_entropy`). `constrained`: only tokens allowed by the bitmask of
    /// [`set_allowed`](Self::set_allowed) are chosen. Checks what the CPU sampler checks, up front.
    pub fn configure(
        &self,
        ctx: &Context,
        params: &SamplingParams,
        entropy: u64,
        constrained: bool,
    ) -> Result<(), SamplingError> {
        params.validate()?;
        let mut bias: Vec<(u32, f32)> = Vec::with_capacity(params.logit_bias.len());
        for &(token, b) in &params.logit_bias {
            if token >= self.vocab {
                return Err(SamplingError::TokenOutOfRange { token, vocab_size: self.vocab as usize });
            }
            match bias.iter_mut().find(|(t, _)| *t == token) {
                Some(entry) => entry.1 += b,
                None => bias.push((token, b)),
            }
        }
        if bias.len() > MAX_LOGIT_BIAS {
            return Err(SamplingError::TooManyLogitBias { entries: bias.len(), max: MAX_LOGIT_BIAS });
        }
        let seed = params.seed.unwrap_or(entropy);
        let mut flags = 0;
        if params.temperature == 0.0 || params.top_k == 1 {
            flags |= GREEDY;
        }
        if params.has_penalties() {
            flags |= PENALTIES;
        }
        if constrained {
            flags |= ALLOWED;
        }
        let settings = Settings {
            inv_temp: if params.temperature > 0.0 { 1.0 / params.temperature } else { 0.0 },
            top_p: params.top_p,
            min_p: params.min_p,
            rep: params.repetition_penalty,
            presence: params.presence_penalty,
            frequency: params.frequency_penalty,
            top_k: params.top_k.min(u32::MAX as usize) as u32,
            last_n: params.penalty_last_n.map_or(u32::MAX, |n| n.min(u32::MAX as usize) as u32),
            n_bias: bias.len() as u32,
            flags,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            history_cap: self.history_cap,
            _pad: [0; 3],
        };
        ctx.write(&self.settings, 0, bytemuck::bytes_of(&settings));
        if !bias.is_empty() {
            let packed: Vec<[u32; 2]> = bias.iter().map(|&(t, b)| [t, b.to_bits()]).collect();
            ctx.write(&self.bias, 0, bytemuck::cast_slice(&packed));
        }
        Ok(())
    }

    /// The tokens the next choice may make: bit `id % 32` of word `id / 32` (`ceil(vocab / 32)`
    /// words, `vocab / 8` bytes written per step).
    pub fn set_allowed(&self, ctx: &Context, bits: &[u32]) -> Result<()> {
        let words = self.vocab.div_ceil(32) as usize;
        ensure(bits.len() == words, "sample", || {
            format!("{} mask words for a vocabulary of {}", bits.len(), self.vocab)
        })?;
        ctx.write(&self.allowed, 0, bytemuck::cast_slice(bits));
        Ok(())
    }

    /// The token history (u32 per position).
    pub fn history(&self) -> &wgpu::Buffer {
        &self.history
    }

    /// Put `tokens` at history positions 0.. (the context so far; the penalties' window ends at
    /// the step's last position).
    pub fn set_history(&self, ctx: &Context, tokens: &[u32]) -> Result<(), SamplingError> {
        if tokens.len() > self.history_cap as usize {
            return Err(SamplingError::HistoryTooLong { tokens: tokens.len(), max: self.history_cap as usize });
        }
        if let Some(&token) = tokens.iter().find(|&&id| id >= self.vocab) {
            return Err(SamplingError::TokenOutOfRange { token, vocab_size: self.vocab as usize });
        }
        if !tokens.is_empty() {
            ctx.write(&self.history, 0, bytemuck::cast_slice(tokens));
        }
        Ok(())
    }
}

/// Where the kernel's results go besides `ids`.
#[derive(Clone, Copy, Default)]
pub struct SampleOut<'a> {
    /// Write each chosen id to the history at the row's length (decode: the penalties then see it).
    pub append: bool,
    /// (rows, vocab) u32: 1 for each token the draw chose among (tests).
    pub mask: Option<&'a wgpu::Buffer>,
}

/// One kernel choosing `ids[r]` from `logits[r, ..vocab]` for each of `rows` rows, modifying the
/// rows in place by bias and penalties. Row r's history holds `pos.first() + t` tokens (the step's
/// `t` tokens at positions from `pos`), which also counts its random draw. `rows > 1` is for
/// tests: every row reads the same history.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    ctx: &Context,
    logits: &wgpu::Buffer,
    ids: &wgpu::Buffer,
    rows: u32,
    t: u32,
    pos: Pos,
    st: &SampleState,
    out: SampleOut,
) -> Result<Kernel> {
    ensure(rows > 0 && rows <= st.rows, "sample", || format!("{rows} rows; the sampler state holds 1..={}", st.rows))?;
    let vocab = st.vocab;
    let elems = rows as u64 * vocab as u64;
    ensure(elems <= u32::MAX as u64, "sample", || format!("rows·vocab = {elems} exceeds u32 indexing"))?;
    check_len("sample", "logits", logits, elems)?;
    check_len("sample", "ids", ids, rows as u64)?;
    let mut flags = 0;
    if out.append {
        flags |= APPEND;
    }
    if let Some(m) = out.mask {
        check_len("sample", "mask", m, elems)?;
        flags |= MASK;
    }
    let shape = ctx.uniform("sample.shape", &Shape { rows, vocab, t, flags });
    let step = pos.buffer(ctx);
    let mask = out.mask.unwrap_or(&st.no_mask);
    let key = PipelineKey::new(Shader::Sample, "sample");
    let bind = [
        (1, logits),
        (2, &st.bias),
        (3, &st.history),
        (4, &st.counts),
        (5, ids),
        (6, mask),
        (7, &step),
        (8, &st.settings),
        (9, &st.allowed),
    ];
    Kernel::new(ctx, &key, &bind, Some(shape), ctx.grid(rows))
}

/// The token in an id the kernel wrote, or the error it stands for.
pub fn chosen(id: u32, vocab: u32) -> Result<u32, SamplingError> {
    if id == NO_CANDIDATE {
        return Err(SamplingError::NoCandidates { vocab_size: vocab as usize });
    }
    if id & INFINITE_FLAG != 0 {
        return Err(SamplingError::InfiniteLogit { token: id & !INFINITE_FLAG });
    }
    Ok(id)
}

/// Philox4x32-10 (Salmon, Moraes, Dror & Shaw, SC'11), as the kernel computes it.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(0x9E37_79B9), k[1].wrapping_add(0xBB67_AE85)];
    }
    c
}

/// The uniform number in [0, 1) the kernel draws row `row` with, after a history of `len` tokens.
pub fn draw_uniform(seed: u64, len: u32, row: u32) -> f32 {
    let r = philox4x32_10([len, row, 0, 0], [seed as u32, (seed >> 32) as u32]);
    (r[0] >> 8) as f32 * (1.0 / 16_777_216.0)
}
