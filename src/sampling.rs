//! Next-token choice on the CPU, from one row of logits `(vocab,)`.
//!
//! Order of operations, as Hugging Face transformers builds its processor list
//! (`GenerationMixin::_get_logits_processor` in `generation/utils.py`: `SequenceBias` →
//! `RepetitionPenalty` → … → `Temperature` → `TopK` → `TopP` → `MinP`):
//!
//! 1. `logit_bias` added (OpenAI `logit_bias`; llama.cpp also puts its logit-bias sampler first);
//! 2. repetition penalty on every distinct token of `history` (HF `RepetitionPenaltyLogitsProcessor`:
//!    a positive logit is divided by the penalty, a negative one multiplied);
//! 3. presence / frequency penalties (OpenAI "parameter details":
//!    `mu[j] -= c[j] * alpha_frequency + (c[j] > 0) * alpha_presence`; llama.cpp
//!    `llama_sampler_penalties_apply` does 2 and 3 in this order too);
//! 4. temperature; `temperature == 0` (or `top_k == 1`) is greedy: argmax, ties to the lowest id,
//!    the same rule as the GPU argmax in `ops::argmax`;
//! 5. top-k, 6. top-p (probabilities renormalised over the top-k survivors, as HF does),
//! 7. min-p (relative to the most likely token), 8. draw from the survivors.
//!
//! llama.cpp's default chain differs: it applies temperature *last*, so its top-p/min-p see
//! unscaled probabilities. We follow HF; with `temperature == 1` the two agree.
//!
//! Top-k, top-p and min-p all keep a prefix of the tokens ranked by logit, so the work is a
//! partial selection (`select_nth_unstable_by`) on a 150k vocabulary, never a full sort unless the
//! nucleus really is that wide.

use thiserror::Error;

/// Seed used when [`SamplingParams::seed`] is `None` and the caller gives no entropy: runs are
/// reproducible by default (there is no clock or OS randomness on wasm32 without extra crates).
/// Pass entropy through [`Sampler::with_entropy`] for varied output.
pub const DEFAULT_SEED: u64 = 0x853c_49e6_748f_ea9b;

/// Errors from parameter validation and from sampling a row of logits.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SamplingError {
    #[error("temperature must be finite and >= 0, got {0}")]
    InvalidTemperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    InvalidTopP(f32),
    #[error("min_p must be in [0, 1], got {0}")]
    InvalidMinP(f32),
    #[error("repetition_penalty must be finite and > 0, got {0}")]
    InvalidRepetitionPenalty(f32),
    #[error("presence_penalty must be finite, got {0}")]
    InvalidPresencePenalty(f32),
    #[error("frequency_penalty must be finite, got {0}")]
    InvalidFrequencyPenalty(f32),
    #[error("logit_bias for token {token} must be finite or -inf (a ban), got {bias}")]
    InvalidLogitBias { token: u32, bias: f32 },
    #[error("logit_bias has {entries} distinct tokens; at most {max} are supported")]
    TooManyLogitBias { entries: usize, max: usize },
    #[error("a history of {tokens} tokens; the GPU sampler holds {max}")]
    HistoryTooLong { tokens: usize, max: usize },
    #[error("logits are empty")]
    EmptyLogits,
    #[error("token {token} (in logit_bias or history) is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange { token: u32, vocab_size: usize },
    #[error("logit of token {token} is +inf after bias and penalties; cannot form probabilities")]
    InfiniteLogit { token: u32 },
    #[error("no token can be chosen: all {vocab_size} logits are -inf or NaN")]
    NoCandidates { vocab_size: usize },
}

/// Sampling settings. `Default` is greedy decoding with every filter and penalty off.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy. Logits are divided by it before the filters (HF `TemperatureLogitsWarper`).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off (as in HF and llama.cpp).
    pub top_k: usize,
    /// Nucleus: keep the smallest most-likely set whose probability is >= `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the top token's; 0 = off.
    pub min_p: f32,
    /// HF/CTRL repetition penalty; 1 = off.
    pub repetition_penalty: f32,
    /// OpenAI presence penalty (subtracted once from every token seen); 0 = off.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty (subtracted per occurrence); 0 = off.
    pub frequency_penalty: f32,
    /// Penalties look at only the last `n` tokens of `history` (llama.cpp `penalty_last_n`);
    /// `None` = all of it (HF penalises the whole prompt + output).
    pub penalty_last_n: Option<usize>,
    /// Added to the logit of a token before anything else; `f32::NEG_INFINITY` bans it.
    pub logit_bias: Vec<(u32, f32)>,
    /// PRNG seed; `None` = [`DEFAULT_SEED`] or the entropy given to [`Sampler::with_entropy`].
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: None,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Checks every field; NaN fails every check.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(SamplingError::InvalidTemperature(t));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::InvalidTopP(self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplingError::InvalidMinP(self.min_p));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(SamplingError::InvalidRepetitionPenalty(r));
        }
        if !self.presence_penalty.is_finite() {
            return Err(SamplingError::InvalidPresencePenalty(self.presence_penalty));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(SamplingError::InvalidFrequencyPenalty(self.frequency_penalty));
        }
        for &(token, bias) in &self.logit_bias {
            if !(bias.is_finite() || bias == f32::NEG_INFINITY) {
                return Err(SamplingError::InvalidLogitBias { token, bias });
            }
        }
        Ok(())
    }

    /// True when the choice is the argmax of the raw logits: greedy (temperature 0 or top_k 1)
    /// with no bias and no penalty, so the engine may use the GPU argmax alone.
    pub fn is_greedy(&self) -> bool {
        (self.temperature == 0.0 || self.top_k == 1) && self.logit_bias.is_empty() && !self.has_penalties()
    }

    /// Whether any of the repetition, presence or frequency penalties is on.
    pub fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }
}

/// xoshiro256** (Blackman & Vigna, 2018), state filled by splitmix64 as its authors advise.
#[derive(Debug, Clone)]
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self { s: [next(), next(), next(), next()] }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Argmax over a row, ties to the lowest id, NaN never wins (as `ops::argmax` on the GPU).
/// `None` when the row is empty or all NaN.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if l <= b => {}
            _ => best = Some((i, l)),
        }
    }
    best.map(|(i, _)| i as u32)
}

/// Ranking used by every filter: higher logit first, then lower id (a total order, so the kept
/// set and the draw order never depend on the selection algorithm).
fn rank(logits: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b))
}

/// Chooses tokens according to [`SamplingParams`], with its own seeded PRNG.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256,
    /// Candidate ids `(<= vocab,)`, reused between calls.
    candidates: Vec<u32>,
    /// Sorted copy of the penalty window of `history`, reused between calls.
    seen: Vec<u32>,
}

/// What the filters left: candidates (in `Sampler::candidates`) plus the numbers to weigh them.
struct Filtered {
    /// Largest logit after bias and penalties.
    max_logit: f32,
    inv_temperature: f64,
    /// Whether `candidates` is in rank order (else in id order).
    ranked: bool,
}

impl Sampler {
    /// Validates `params`; seeds with `params.seed` or else [`DEFAULT_SEED`].
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        Self::with_entropy(params, DEFAULT_SEED)
    }

    /// Like [`Sampler::new`] but seeds with `entropy` when `params.seed` is `None`, e.g. bits from
    /// `crypto.getRandomValues` in the browser or the system clock natively.
    pub fn with_entropy(params: SamplingParams, entropy: u64) -> Result<Self, SamplingError> {
        params.validate()?;
        let seed = params.seed.unwrap_or(entropy);
        Ok(Self { params, rng: Xoshiro256::new(seed), candidates: Vec::new(), seen: Vec::new() })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// True when [`Sampler::sample`] returns the argmax of the raw logits: greedy (temperature 0 or
    /// top_k 1) with no bias and no penalty. The engine may then use the GPU argmax and skip reading
    /// the logits back.
    pub fn is_greedy(&self) -> bool {
        self.params.is_greedy()
    }

    /// Picks the next token. `history` is the context so far (prompt + generated) for the
    /// penalties. `logits` is modified in place by the bias and the penalties (not by temperature).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32, SamplingError> {
        self.apply_bias_and_penalties(logits, history)?;
        if self.greedy_choice() {
            return argmax(logits).ok_or(SamplingError::NoCandidates { vocab_size: logits.len() });
        }
        let f = self.filter(logits)?;
        let weight = |id: u32| (((logits[id as usize] - f.max_logit) as f64) * f.inv_temperature).exp();
        let mass: f64 = self.candidates.iter().map(|&id| weight(id)).sum();
        let target = self.rng.next_f64() * mass;
        let mut cumulative = 0.0;
        for &id in &self.candidates {
            cumulative += weight(id);
            if cumulative > target {
                return Ok(id);
            }
        }
        // Rounding left `target` at the very top of the mass: the last candidate owns it.
        self.candidates.last().copied().ok_or(SamplingError::NoCandidates { vocab_size: logits.len() })
    }

    /// The distribution [`Sampler::sample`] would draw from: surviving tokens, most likely first,
    /// with probabilities renormalised over them. Greedy settings give one token with 1.0. Modifies
    /// `logits` as `sample` does; does not advance the PRNG.
    pub fn distribution(&mut self, logits: &mut [f32], history: &[u32]) -> Result<Vec<(u32, f64)>, SamplingError> {
        self.apply_bias_and_penalties(logits, history)?;
        if self.greedy_choice() {
            let id = argmax(logits).ok_or(SamplingError::NoCandidates { vocab_size: logits.len() })?;
            return Ok(vec![(id, 1.0)]);
        }
        let f = self.filter(logits)?;
        if !f.ranked {
            self.candidates.sort_unstable_by(|&a, &b| rank(logits, a, b));
        }
        let weights: Vec<(u32, f64)> = self
            .candidates
            .iter()
            .map(|&id| {
                let w = (((logits[id as usize] - f.max_logit) as f64) * f.inv_temperature).exp();
                (id, w)
            })
            .collect();
        let mass: f64 = weights.iter().map(|&(_, w)| w).sum();
        Ok(weights.into_iter().map(|(id, w)| (id, w / mass)).collect())
    }

    fn greedy_choice(&self) -> bool {
        self.params.temperature == 0.0 || self.params.top_k == 1
    }

    /// Steps 1–3 of the module doc, in place.
    fn apply_bias_and_penalties(&mut self, logits: &mut [f32], history: &[u32]) -> Result<(), SamplingError> {
        let vocab_size = logits.len();
        if vocab_size == 0 {
            return Err(SamplingError::EmptyLogits);
        }
        for &(token, bias) in &self.params.logit_bias {
            let l = logits.get_mut(token as usize).ok_or(SamplingError::TokenOutOfRange { token, vocab_size })?;
            *l += bias;
        }
        if !self.params.has_penalties() {
            return Ok(());
        }
        let window = match self.params.penalty_last_n {
            Some(n) => &history[history.len().saturating_sub(n)..],
            None => history,
        };
        // Sorting groups equal ids: each distinct token is penalised once, with its count.
        self.seen.clear();
        self.seen.extend_from_slice(window);
        self.seen.sort_unstable();
        let (rep, pres, freq) =
            (self.params.repetition_penalty, self.params.presence_penalty, self.params.frequency_penalty);
        for run in self.seen.chunk_by(|a, b| a == b) {
            let token = run[0];
            let l = logits.get_mut(token as usize).ok_or(SamplingError::TokenOutOfRange { token, vocab_size })?;
            if rep != 1.0 {
                *l = if *l < 0.0 { *l * rep } else { *l / rep };
            }
            *l -= run.len() as f32 * freq + pres;
        }
        Ok(())
    }

    /// Steps 4–7: leaves the survivors in `self.candidates`.
    fn filter(&mut self, logits: &[f32]) -> Result<Filtered, SamplingError> {
        let vocab_size = logits.len();
        let p = &self.params;
        let cands = &mut self.candidates;
        cands.clear();
        // NaN and -inf tokens can never be drawn (NaN as in the GPU argmax).
        let mut max_logit = f32::NEG_INFINITY;
        for (i, &l) in logits.iter().enumerate() {
            if l == f32::INFINITY {
                return Err(SamplingError::InfiniteLogit { token: i as u32 });
            }
            if l > f32::NEG_INFINITY {
                cands.push(i as u32);
                max_logit = max_logit.max(l);
            }
        }
        if cands.is_empty() {
            return Err(SamplingError::NoCandidates { vocab_size });
        }
        let inv_temperature = 1.0 / p.temperature as f64;
        let weight = |id: u32| (((logits[id as usize] - max_logit) as f64) * inv_temperature).exp();
        let mut ranked = false;

        if p.top_k > 0 && p.top_k < cands.len() {
            cands.select_nth_unstable_by(p.top_k - 1, |&a, &b| rank(logits, a, b));
            cands.truncate(p.top_k);
            cands.sort_unstable_by(|&a, &b| rank(logits, a, b));
            ranked = true;
        }
        // Top-p normalises over the top-k survivors (HF order), before min-p removes any.
        let top_p_mass = if p.top_p < 1.0 {
            p.top_p as f64 * cands.iter().map(|&id| weight(id)).sum::<f64>()
        } else {
            f64::INFINITY
        };
        // Min-p (HF `MinPLogitsWarper`): p_i >= min_p * p_max  <=>  weight_i >= min_p, since the
        // top token has weight 1. `retain` keeps the current order.
        if p.min_p > 0.0 {
            let min_p = p.min_p as f64;
            cands.retain(|&id| weight(id) >= min_p);
        }
        if top_p_mass.is_finite() {
            // Nucleus: rank a growing head of the candidates until its mass reaches top_p.
            let len = cands.len();
            let mut head = len.min(64);
            loop {
                if !ranked {
                    if head < len {
                        cands.select_nth_unstable_by(head - 1, |&a, &b| rank(logits, a, b));
                    }
                    cands[..head].sort_unstable_by(|&a, &b| rank(logits, a, b));
                }
                let mut cumulative = 0.0;
                let cut = cands[..head].iter().position(|&id| {
                    cumulative += weight(id);
                    cumulative >= top_p_mass
                });
                if let Some(last) = cut {
                    cands.truncate(last + 1);
                    break;
                }
                if head == len {
                    // The whole (min-p filtered) set is inside the nucleus.
                    break;
                }
                head = (head * 4).min(len);
            }
            // Either exit leaves every kept candidate sorted.
            ranked = true;
        }
        Ok(Filtered { max_logit, inv_temperature, ranked })
    }
}
