// Next-token choice on the GPU, one workgroup per row of logits [rows, vocab] -> ids[rows]: the
// CPU sampler's rules (src/sampling.rs) with its candidate set, so that only the id comes back.
//   1. logit_bias, then repetition / presence / frequency penalties over the history window
//      (in place, as the CPU sampler does), then the constraint's allowed-token bitmask;
//   2. argmax (greedy: temperature 0 or top_k 1), candidate count and the largest logit M;
//   3. top-k and top-p as thresholds in the ranking (logit descending, id ascending): a radix
//      search over the logit's order-preserving u32 key, 4 bits per pass, counting tokens
//      (top-k) or summing weights w = exp((l - M) / T) (top-p, over the top-k survivors), then
//      over ids when tokens tie at the threshold; min-p is w >= min_p;
//   4. the draw: u from Philox4x32-10 (key = seed, counter = (history length, row, 0, 0)), the
//      survivors' weights summed in id order (a contiguous chunk per invocation, then a scan).
// Errors come back as ids: 0xFFFFFFFF no candidate (every logit NaN or -inf), 0x80000000 | id a
// logit that is +inf after bias and penalties (non-greedy only, as on the CPU).
// Barriers sit in uniform control flow: decisions made from workgroup memory are broadcast with
// workgroupUniformLoad.

const WG: u32 = 256u;
const NONE: u32 = 0xFFFFFFFFu;
const INF_FLAG: u32 = 0x80000000u;
const KEY_NEG_INF: u32 = 0x007FFFFFu;   // key_of(-inf); NaN is 0
const KEY_MIN_FINITE: u32 = 0x00800000u; // key_of(-f32::MAX)
const KEY_POS_INF: u32 = 0xFF800000u;

const GREEDY: u32 = 1u;
const PENALTIES: u32 = 2u;
const APPEND: u32 = 4u; // write the chosen id to history[len]
const MASK: u32 = 8u;   // write the candidate set to `mask` (tests)
const ALLOWED: u32 = 16u; // settings: only tokens whose bit is set in `allowed` (constrained decoding)

// Per kernel.
struct Shape {
    rows: u32,
    vocab: u32,
    t: u32,     // tokens of the step: the history holds step.pos0 + t of them
    flags: u32, // APPEND | MASK
}

// Per generation (written when the sampling settings change).
struct Settings {
    inv_temp: f32,
    top_p: f32,
    min_p: f32,
    rep: f32,
    presence: f32,
    frequency: f32,
    top_k: u32,
    last_n: u32, // penalty window; 0xFFFFFFFF = whole history
    n_bias: u32,
    flags: u32,  // GREEDY | PENALTIES | ALLOWED
    seed_lo: u32,
    seed_hi: u32,
    history_cap: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Step {
    pos0: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<uniform> shape: Shape;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;          // [rows, vocab]
@group(0) @binding(2) var<storage, read> bias: array<vec2<u32>>;           // (id, f32 bits), ids unique
@group(0) @binding(3) var<storage, read_write> history: array<u32>;         // [history_cap]
@group(0) @binding(4) var<storage, read_write> counts: array<atomic<u32>>;  // [rows, vocab], zero between runs
@group(0) @binding(5) var<storage, read_write> ids: array<u32>;             // [rows]
@group(0) @binding(6) var<storage, read_write> mask: array<u32>;            // [rows, vocab] (MASK)
@group(0) @binding(7) var<uniform> step: Step;
@group(0) @binding(8) var<uniform> s: Settings;
@group(0) @binding(9) var<storage, read> allowed: array<u32>;             // [ceil(vocab / 32)] bits (ALLOWED)

var<workgroup> bins_sh: array<f32, 2048>; // 8 bins x WG, one half of a digit pass at a time
var<workgroup> best_sh: array<u32, 768>;  // (key, index, count) x WG
var<workgroup> bc_u: u32;
var<workgroup> bc_v: vec4<u32>;

var<private> row_max: f32;

fn key_of(v: f32) -> u32 {
    var b = bitcast<u32>(v);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) { return 0u; }
    if (b == 0x80000000u) { b = 0u; }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn weight(l: f32) -> f32 {
    return exp((l - row_max) * s.inv_temp);
}

// `v` from invocation 0 to all, as a uniform value.
fn broadcast(v: u32, tid: u32) -> u32 {
    if (tid == 0u) { bc_u = v; }
    let r = workgroupUniformLoad(&bc_u);
    workgroupBarrier(); // nobody writes bc_u again before everyone has read it
    return r;
}

fn broadcast4(v: vec4<u32>, tid: u32) -> vec4<u32> {
    if (tid == 0u) { bc_v = v; }
    let r = workgroupUniformLoad(&bc_v);
    workgroupBarrier();
    return r;
}

// Sum over the workgroup, the same order every time.
fn wg_total(v: f32, tid: u32) -> f32 {
    bins_sh[tid] = v;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st = st >> 1u) {
        if (tid < st) { bins_sh[tid] += bins_sh[tid + st]; }
        workgroupBarrier();
    }
    let r = bins_sh[0];
    workgroupBarrier();
    return r;
}

// Does the token (key k, id i) rank at or above the threshold (K, I)?
fn at_or_above(k: u32, i: u32, th: vec2<u32>) -> bool {
    return k > th.x || (k == th.x && i <= th.y);
}

// The stricter of two thresholds.
fn stricter(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    if (a.x != b.x) { return select(b, a, a.x > b.x); }
    return vec2<u32>(a.x, min(a.y, b.y));
}

// One radix pass: over the candidates (by_id: only those with key == kfix, digits of the id;
// else digits of the key) whose digits above `shift + 4` equal `prefix`, the count (mass =
// false) or the weight sum of each 4-bit digit at `shift`.
fn digit_pass(base: u32, tid: u32, by_id: bool, kfix: u32, prefix: u32, shift: u32, mass: bool) -> array<f32, 16> {
    var acc: array<f32, 16>;
    let hi = shift + 4u;
    for (var i = tid; i < shape.vocab; i += WG) {
        let l = logits[base + i];
        let k = key_of(l);
        if (k <= KEY_NEG_INF) { continue; }
        var v = k;
        if (by_id) {
            if (k != kfix) { continue; }
            v = i;
        }
        if (hi < 32u && (v >> hi) != prefix) { continue; }
        let d = (v >> shift) & 15u;
        acc[d] += select(1.0, weight(l), mass);
    }
    var out: array<f32, 16>;
    for (var h = 0u; h < 2u; h++) {
        for (var b = 0u; b < 8u; b++) { bins_sh[b * WG + tid] = acc[h * 8u + b]; }
        workgroupBarrier();
        for (var st = WG / 2u; st > 0u; st = st >> 1u) {
            if (tid < st) {
                for (var b = 0u; b < 8u; b++) { bins_sh[b * WG + tid] += bins_sh[b * WG + tid + st]; }
            }
            workgroupBarrier();
        }
        for (var b = 0u; b < 8u; b++) { out[h * 8u + b] = bins_sh[b * WG]; }
        workgroupBarrier();
    }
    return out;
}

// Among the tokens with key `kfix`, the smallest id I such that F(ids <= I) reaches `need`
// (F: count or weight sum); NONE when rounding leaves it short (take them all).
fn id_search(base: u32, tid: u32, kfix: u32, need: f32, mass: bool) -> u32 {
    var prefix = 0u;
    var below = 0.0;
    let bits = 32u - countLeadingZeros(max(shape.vocab - 1u, 1u));
    var found = true;
    for (var level = (bits + 3u) / 4u; level > 0u; level--) {
        let shift = 4u * (level - 1u);
        let bins = digit_pass(base, tid, true, kfix, prefix, shift, mass);
        var d = 16u;
        for (var j = 0u; j < 16u; j++) {
            if (d == 16u && bins[j] > 0.0) {
                if (below + bins[j] >= need) { d = j; } else { below += bins[j]; }
            }
        }
        if (d == 16u) {
            found = false;
            d = 15u;
        }
        prefix = (prefix << 4u) | d;
    }
    return select(NONE, prefix, found);
}

// The threshold (K, I) of the shortest head of the ranking whose F (token count, mass = false;
// weight sum, mass = true) reaches `goal`.
fn search(base: u32, tid: u32, mass: bool, goal: f32) -> vec2<u32> {
    var prefix = 0u;
    var above = 0.0; // F of the tokens ranked above the current key range
    var tie = 0.0;   // F of the tokens whose key is the threshold
    for (var level = 0u; level < 8u; level++) {
        let shift = 28u - 4u * level;
        let bins = digit_pass(base, tid, false, 0u, prefix, shift, mass);
        var d = 16u;
        var acc = above;
        for (var j = 0u; j < 16u; j++) {
            let dd = 15u - j;
            if (d == 16u && bins[dd] > 0.0) {
                if (acc + bins[dd] >= goal) { d = dd; } else { acc += bins[dd]; }
            }
        }
        if (d == 16u) {
            // Rounding left the goal past everything in range: take all of it, down to the
            // lowest non-empty digit.
            acc = above;
            for (var j = 0u; j < 16u; j++) {
                let dd = 15u - j;
                if (bins[dd] > 0.0) { d = dd; acc += bins[dd]; }
            }
            if (d == 16u) { d = 0u; } else { acc -= bins[d]; }
        }
        above = acc;
        tie = bins[d];
        prefix = (prefix << 4u) | d;
    }
    // Tokens tied at the threshold key rank by id: keep the fewest lowest ids that reach the goal.
    let need = goal - above;
    var tied = tie;
    if (mass) {
        // how many tokens share the key (each weighs the same)
        var c = 0.0;
        for (var i = tid; i < shape.vocab; i += WG) {
            if (key_of(logits[base + i]) == prefix) { c += 1.0; }
        }
        tied = wg_total(c, tid);
    }
    let split = select(tie > need, tied > 1.0, mass);
    var last = NONE;
    if (broadcast(u32(split), tid) != 0u) {
        last = id_search(base, tid, prefix, need, mass);
    }
    return vec2<u32>(prefix, last);
}

// Philox4x32-10 (Salmon et al., SC'11).
fn mul_hi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xFFFFu;
    let a1 = a >> 16u;
    let b0 = b & 0xFFFFu;
    let b1 = b >> 16u;
    let lo = a0 * b0;
    let m1 = a1 * b0;
    let m2 = a0 * b1;
    let mid = (lo >> 16u) + (m1 & 0xFFFFu) + (m2 & 0xFFFFu);
    return a1 * b1 + (m1 >> 16u) + (m2 >> 16u) + (mid >> 16u);
}

fn philox(ctr_in: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
    var c = ctr_in;
    var k = key_in;
    for (var r = 0u; r < 10u; r++) {
        let hi0 = mul_hi(0xD2511F53u, c.x);
        let lo0 = 0xD2511F53u * c.x;
        let hi1 = mul_hi(0xCD9E8D57u, c.z);
        let lo1 = 0xCD9E8D57u * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// Is token i with logit l a survivor of the threshold and min-p?
fn survives(i: u32, l: f32, th: vec2<u32>) -> bool {
    let k = key_of(l);
    return k > KEY_NEG_INF && at_or_above(k, i, th) && (s.min_p == 0.0 || weight(l) >= s.min_p);
}

// The draw: the survivor at which the cumulative weight, in id order, passes u times the total.
fn draw(base: u32, tid: u32, th: vec2<u32>, u: f32) -> u32 {
    let chunk = (shape.vocab + WG - 1u) / WG;
    let lo = min(tid * chunk, shape.vocab);
    let hi = min(lo + chunk, shape.vocab);
    var sum = 0.0;
    for (var i = lo; i < hi; i++) {
        let l = logits[base + i];
        if (survives(i, l, th)) { sum += weight(l); }
    }
    bins_sh[tid] = sum;
    workgroupBarrier();
    if (tid == 0u) {
        // exclusive prefix over the chunks, then the chunk that holds the goal
        var total = 0.0;
        for (var c = 0u; c < WG; c++) {
            let v = bins_sh[c];
            bins_sh[WG + c] = total;
            total += v;
        }
        let goal = u * total;
        var sel = 0u;
        for (var c = 0u; c < WG; c++) {
            if (bins_sh[c] > 0.0 && bins_sh[WG + c] <= goal) { sel = c; }
        }
        best_sh[0] = sel;
        bins_sh[2u * WG] = goal;
    }
    workgroupBarrier();
    let sel = best_sh[0];
    if (tid == sel) {
        let goal = bins_sh[2u * WG];
        var cum = bins_sh[WG + tid];
        var chosen = NONE;
        for (var i = lo; i < hi; i++) {
            let l = logits[base + i];
            if (survives(i, l, th)) {
                chosen = i; // rounding past the last survivor: the last one owns the rest
                cum += weight(l);
                if (cum > goal) { break; }
            }
        }
        best_sh[1] = chosen;
    }
    workgroupBarrier();
    return best_sh[1];
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= shape.rows) { return; } // whole workgroup leaves together
    let base = row * shape.vocab;
    let len = step.pos0 + shape.t;

    // 1. bias, then penalties on each distinct token of the window, once with its count
    for (var j = tid; j < s.n_bias; j += WG) {
        let e = bias[j];
        if (e.x < shape.vocab) { logits[base + e.x] += bitcast<f32>(e.y); }
    }
    storageBarrier();
    if ((s.flags & PENALTIES) != 0u) {
        let end = min(len, s.history_cap);
        let start = end - min(end, s.last_n);
        for (var i = start + tid; i < end; i += WG) {
            let id = history[i];
            if (id < shape.vocab) { atomicAdd(&counts[base + id], 1u); }
        }
        storageBarrier();
        for (var i = start + tid; i < end; i += WG) {
            let id = history[i];
            if (id >= shape.vocab) { continue; }
            let c = atomicExchange(&counts[base + id], 0u);
            if (c > 0u) {
                var l = logits[base + id];
                if (s.rep != 1.0) { l = select(l / s.rep, l * s.rep, l < 0.0); }
                l -= f32(c) * s.frequency + s.presence;
                logits[base + id] = l;
            }
        }
        storageBarrier();
    }
    // ... then the grammar's mask: a token it does not allow is -inf, so no rule below sees it.
    if ((s.flags & ALLOWED) != 0u) {
        // -inf from a runtime value: a constant expression may not evaluate to infinity (Tint
        // rejects the shader).
        let neg_inf = bitcast<f32>(0xFF800000u | (s.flags & 0u));
        for (var i = tid; i < shape.vocab; i += WG) {
            if (((allowed[i >> 5u] >> (i & 31u)) & 1u) == 0u) { logits[base + i] = neg_inf; }
        }
        storageBarrier();
    }

    // 2. argmax (ties to the lowest id, NaN never wins), candidates, max
    var bk = 0u;
    var bi = NONE;
    var n = 0u;
    for (var i = tid; i < shape.vocab; i += WG) {
        let k = key_of(logits[base + i]);
        if (k > KEY_NEG_INF) { n += 1u; }
        if (k > bk) { bk = k; bi = i; }
    }
    best_sh[tid] = bk;
    best_sh[WG + tid] = bi;
    best_sh[2u * WG + tid] = n;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st = st >> 1u) {
        if (tid < st) {
            let ok = best_sh[tid + st];
            let oi = best_sh[WG + tid + st];
            if (ok > best_sh[tid] || (ok == best_sh[tid] && oi < best_sh[WG + tid])) {
                best_sh[tid] = ok;
                best_sh[WG + tid] = oi;
            }
            best_sh[2u * WG + tid] += best_sh[2u * WG + tid + st];
        }
        workgroupBarrier();
    }
    let best = broadcast4(vec4<u32>(best_sh[0], best_sh[WG], best_sh[2u * WG], 0u), tid);
    let max_key = best.x;
    let argmax = best.y;
    let candidates = best.z;

    var out = NONE;
    var th = vec2<u32>(KEY_MIN_FINITE, NONE);
    let sampled = (s.flags & GREEDY) == 0u && candidates > 0u && max_key != KEY_POS_INF;
    if ((s.flags & GREEDY) != 0u) {
        out = argmax;
    } else if (candidates == 0u) {
        out = NONE;
    } else if (max_key == KEY_POS_INF) {
        out = INF_FLAG | argmax;
    } else {
        row_max = logits[base + argmax];
        // 3. top-k, then top-p over its survivors (their total weight from one more pass)
        if (s.top_k > 1u && s.top_k < candidates) {
            th = search(base, tid, false, f32(s.top_k));
        }
        if (s.top_p < 1.0) {
            var z = 0.0;
            for (var i = tid; i < shape.vocab; i += WG) {
                let l = logits[base + i];
                let k = key_of(l);
                if (k > KEY_NEG_INF && at_or_above(k, i, th)) { z += weight(l); }
            }
            let total = wg_total(z, tid);
            th = stricter(th, search(base, tid, true, s.top_p * total));
        }
        // 4. the draw
        let r = philox(vec4<u32>(len, row, 0u, 0u), vec2<u32>(s.seed_lo, s.seed_hi));
        let u = f32(r.x >> 8u) * (1.0 / 16777216.0);
        out = draw(base, tid, th, u);
    }

    if ((shape.flags & MASK) != 0u) {
        for (var i = tid; i < shape.vocab; i += WG) {
            var m = u32(i == out);
            if (sampled) { m = u32(survives(i, logits[base + i], th)); }
            mask[base + i] = m;
        }
    }
    if (tid == 0u) {
        ids[row] = out;
        if ((shape.flags & APPEND) != 0u && out < shape.vocab && len < s.history_cap) {
            history[len] = out;
        }
    }
}
