// Gated DeltaNet (Qwen3.5's linear-attention layers; formulas in docs/qwen35.md §5, chunked form §6).
// The layer's projections sit side by side in each row of `proj` [t, in_w]: qkv (conv_dim) | z (nv·dv)
// | b (nv) | a (nv). A position-0 step starts from zero conv and recurrent states (a new sequence);
// later steps carry them. Row r of a step is at position pos0 + r, tokens in order.
//
// `conv`: one invocation per channel of qkv: the causal depthwise conv of width K over the last K
//   inputs (K − 1 from the conv state, oldest first), then SiLU, into `c` [t, conv_dim]; the state
//   keeps the step's last K − 1 inputs.
// `recurrence` (decode and short steps): one workgroup of WG invocations per (value head h, tile of
//   WG value columns); each invocation owns one column j of the head's state S [dk, dv] (in
//   registers for the whole step) and, per token: q, k of key head h / (nv / nk) (h % nk with
//   `tiled`) L2-normalised (eps 1e-6 inside the sqrt, q then times dk^-1/2), beta = sigmoid(b),
//   decay = exp(-exp(A_log) softplus(a + dt_bias)), u = beta (v − decay Sᵀk), S = decay S + k uᵀ,
//   o = Sᵀq, into `o` [t, nv·dv]. Tokens run in order inside the kernel: two workgroup reductions
//   and their barriers per token.
// The chunked prefill (WY/UT form, chunks of CHUNK rows; the last one may be shorter) replaces
// `recurrence` with three kernels:
// `l2norm`: one workgroup per (row, key head): q, k normalised in place in `c` (q times dk^-1/2).
// `chunk`: one workgroup per (chunk, value head), all chunks in parallel: with g the log-decay,
//   G = cumsum(g) inside the chunk, D_ij = exp(G_i − G_j) (j ≤ i), A = strictly lower
//   beta_i (k_i·k_j) D_ij, T = (I + A)⁻¹ by forward substitution (one invocation per column, no
//   barriers), W = T (beta e^G ⊙ K), U = T (beta ⊙ V) and P = (Q Kᵀ) ⊙ D into `scratch`.
// `scan`: one invocation per (value head, value column) as in `recurrence`, sequential over the
//   chunks only: Vnew = U − W S, o = e^G ⊙ (Q S) + P Vnew, S = e^{G_last} S + Kᵀ (e^{G_last − G} ⊙ Vnew).
//   No workgroup memory and no barriers: every product is a dot of independent terms.
// `gated_norm`: one workgroup per (row, value head): y = o / sqrt(mean(o²) + eps) · w · silu(z), in
//   place in `o`.

const WG: u32 = 64u;
const MAX_DK: u32 = 128u;
const MAX_K: u32 = 8u;
const CHUNK: u32 = 16u;

struct Params {
    t: u32,
    in_w: u32,      // proj row width
    conv_dim: u32,  // 2 nk dk + nv dv
    k: u32,         // conv width
    nk: u32,
    nv: u32,
    dk: u32,
    dv: u32,
    eps: f32,       // gated_norm's RMSNorm epsilon
    tiled: u32,     // 1: value head h reads q/k head h % nk (GGUF order); 0: h / (nv / nk) (HF order)
    _pad0: u32,
    _pad1: u32,
}

struct Step {
    pos0: u32,
    _s0: u32,
    _s1: u32,
    _s2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> proj: array<f32>;              // [t, in_w]
@group(0) @binding(2) var<storage, read> conv_w: array<f32>;            // [conv_dim, k]
@group(0) @binding(3) var<storage, read_write> conv_state: array<f32>;  // [conv_dim, k - 1]
@group(0) @binding(4) var<storage, read_write> c: array<f32>;           // [t, conv_dim]
@group(0) @binding(5) var<storage, read> a_log: array<f32>;             // [nv]
@group(0) @binding(6) var<storage, read> dt_bias: array<f32>;           // [nv]
@group(0) @binding(7) var<storage, read_write> state: array<f32>;       // [nv, dk, dv]
@group(0) @binding(8) var<storage, read_write> o: array<f32>;           // [t, nv * dv]
@group(0) @binding(9) var<storage, read> norm_w: array<f32>;            // [dv]
@group(0) @binding(10) var<uniform> step: Step;
// Chunked prefill, per row r (of t) and value head h: W [t, nv, dk] | U [t, nv, dv] |
// P [t, nv, CHUNK] (row r's weights on the rows of its chunk, zero past r) | G [t, nv].
@group(0) @binding(11) var<storage, read_write> scratch: array<f32>;

// g * sigmoid(g) with exp of -|g| only (as swiglu.wgsl).
fn silu(g: f32) -> f32 {
    let e = exp(-abs(g));
    return g * select(e, 1.0, g >= 0.0) / (1.0 + e);
}

fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e, 1.0, x >= 0.0) / (1.0 + e);
}

// torch's softplus (threshold 20): x above it, else log(1 + exp(x)).
fn softplus(x: f32) -> f32 {
    if (x > 20.0) { return x; }
    return log(1.0 + exp(x));
}

@compute @workgroup_size(WG)
fn conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let ch = (wid.x + wid.y * nwg.x) * WG + tid;
    if (ch >= p.conv_dim) { return; }
    let keep = p.k - 1u;
    // The K − 1 inputs before row 0: the state, or zeros at the start of a sequence.
    var prev = array<f32, MAX_K>();
    if (step.pos0 != 0u) {
        for (var i = 0u; i < keep; i++) { prev[i] = conv_state[ch * keep + i]; }
    }
    for (var r = 0u; r < p.t; r++) {
        var acc = 0.0;
        for (var j = 0u; j < p.k; j++) {
            // input at row r − keep + j: from the state while that is negative
            let s = i32(r) - i32(keep) + i32(j);
            var x = 0.0;
            if (s >= 0) { x = proj[u32(s) * p.in_w + ch]; } else { x = prev[u32(i32(keep) + s)]; }
            acc += conv_w[ch * p.k + j] * x;
        }
        c[r * p.conv_dim + ch] = silu(acc);
    }
    for (var i = 0u; i < keep; i++) {
        let s = i32(p.t) - i32(keep) + i32(i);
        var x = 0.0;
        if (s >= 0) { x = proj[u32(s) * p.in_w + ch]; } else { x = prev[u32(i32(keep) + s)]; }
        conv_state[ch * keep + i] = x;
    }
}

var<workgroup> qs: array<f32, MAX_DK>;
var<workgroup> ks: array<f32, MAX_DK>;

@compute @workgroup_size(WG)
fn recurrence(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
    let tiles = (p.dv + WG - 1u) / WG;
    let lin = wid.x + wid.y * nwg.x;
    if (lin >= p.nv * tiles) { return; } // whole workgroup leaves together
    let h = lin / tiles;
    let j = (lin % tiles) * WG + tid;
    let live = j < p.dv;
    let kh = key_head(h);
    let key_dim = p.nk * p.dk;
    let sbase = h * p.dk * p.dv + j;

    var col = array<f32, MAX_DK>();
    if (step.pos0 != 0u && live) {
        for (var i = 0u; i < p.dk; i++) { col[i] = state[sbase + i * p.dv]; }
    }
    let neg_a = -exp(a_log[h]);
    let q_scale = inverseSqrt(f32(p.dk));
    for (var r = 0u; r < p.t; r++) {
        let row = r * p.conv_dim;
        var sq = 0.0;
        var sk = 0.0;
        for (var i = tid; i < p.dk; i += WG) {
            let qv = c[row + kh * p.dk + i];
            let kv = c[row + key_dim + kh * p.dk + i];
            qs[i] = qv;
            ks[i] = kv;
            sq += qv * qv;
            sk += kv * kv;
        }
        let rq = inverseSqrt(wg_sum(sq, tid) + 1e-6) * q_scale;
        let rk = inverseSqrt(wg_sum(sk, tid) + 1e-6); // wg_sum's barriers also publish qs, ks
        let pr = r * p.in_w + p.conv_dim + p.nv * p.dv;
        let beta = sigmoid(proj[pr + h]);
        let decay = exp(neg_a * softplus(proj[pr + p.nv + h] + dt_bias[h]));
        if (live) {
            var m = 0.0;
            for (var i = 0u; i < p.dk; i++) { m += col[i] * ks[i]; }
            let v = c[row + 2u * key_dim + h * p.dv + j];
            let u = beta * (v - decay * rk * m);
            var out = 0.0;
            for (var i = 0u; i < p.dk; i++) {
                col[i] = decay * col[i] + ks[i] * rk * u;
                out += col[i] * qs[i];
            }
            o[r * p.nv * p.dv + h * p.dv + j] = out * rq;
        }
        workgroupBarrier(); // qs, ks are rewritten by the next token
    }
    if (live) {
        for (var i = 0u; i < p.dk; i++) { state[sbase + i * p.dv] = col[i]; }
    }
}

@compute @workgroup_size(WG)
fn gated_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
    let rh = wid.x + wid.y * nwg.x; // row * nv + h
    if (rh >= p.t * p.nv) { return; }
    let r = rh / p.nv;
    let h = rh % p.nv;
    let base = rh * p.dv;
    var ss = 0.0;
    for (var i = tid; i < p.dv; i += WG) { ss += o[base + i] * o[base + i]; }
    let inv = inverseSqrt(wg_sum(ss, tid) / f32(p.dv) + p.eps);
    let zb = r * p.in_w + p.conv_dim + h * p.dv;
    for (var i = tid; i < p.dv; i += WG) {
        o[base + i] = o[base + i] * inv * norm_w[i] * silu(proj[zb + i]);
    }
}

// Index of q (k: + nk dk) of key head kh in row r of `c`, and the key head of value head h.
fn q_at(r: u32, kh: u32) -> u32 {
    return r * p.conv_dim + kh * p.dk;
}
fn key_head(h: u32) -> u32 {
    return select(h / (p.nv / p.nk), h % p.nk, p.tiled != 0u);
}

@compute @workgroup_size(WG)
fn l2norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let rk = wid.x + wid.y * nwg.x; // row * nk + key head
    if (rk >= p.t * p.nk) { return; }
    let bq = q_at(rk / p.nk, rk % p.nk);
    let bk = bq + p.nk * p.dk;
    var sq = 0.0;
    var sk = 0.0;
    for (var i = tid; i < p.dk; i += WG) {
        sq += c[bq + i] * c[bq + i];
        sk += c[bk + i] * c[bk + i];
    }
    let rq = inverseSqrt(wg_sum(sq, tid) + 1e-6) * inverseSqrt(f32(p.dk));
    let rkn = inverseSqrt(wg_sum(sk, tid) + 1e-6);
    for (var i = tid; i < p.dk; i += WG) {
        c[bq + i] *= rq;
        c[bk + i] *= rkn;
    }
}

var<workgroup> am: array<f32, CHUNK * CHUNK>; // A [i, j]
var<workgroup> tm: array<f32, CHUNK * CHUNK>; // T = (I + A)⁻¹ [i, m]
var<workgroup> gs: array<f32, CHUNK>;         // g, then G
var<workgroup> bs: array<f32, CHUNK>;         // beta
var<workgroup> bg: array<f32, CHUNK>;         // beta e^G

@compute @workgroup_size(WG)
fn chunk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) tid: u32) {
    let lin = wid.x + wid.y * nwg.x; // chunk * nv + value head
    let chunks = (p.t + CHUNK - 1u) / CHUNK;
    if (lin >= chunks * p.nv) { return; }
    let h = lin % p.nv;
    let r0 = (lin / p.nv) * CHUNK;
    let n = min(CHUNK, p.t - r0);
    let kh = key_head(h);
    let koff = p.nk * p.dk;
    let voff = 2u * p.nk * p.dk + h * p.dv;
    let hw = p.t * p.nv;
    let w_at = 0u;
    let u_at = hw * p.dk;
    let p_at = hw * (p.dk + p.dv);
    let g_at = hw * (p.dk + p.dv + CHUNK);
    if (tid < n) {
        let pr = (r0 + tid) * p.in_w + p.conv_dim + p.nv * p.dv;
        gs[tid] = -exp(a_log[h]) * softplus(proj[pr + p.nv + h] + dt_bias[h]);
        bs[tid] = sigmoid(proj[pr + h]);
    }
    workgroupBarrier();
    if (tid == 0u) {
        for (var i = 1u; i < n; i++) { gs[i] += gs[i - 1u]; }
    }
    workgroupBarrier();
    if (tid < n) {
        bg[tid] = bs[tid] * exp(gs[tid]);
        scratch[g_at + (r0 + tid) * p.nv + h] = gs[tid];
    }
    // A and P, one (i, j) pair at a time: dots of normalised rows read from `c`.
    for (var e = tid; e < CHUNK * CHUNK; e += WG) {
        let i = e / CHUNK;
        let j = e % CHUNK;
        var a = 0.0;
        var pij = 0.0;
        if (i < n && j <= i) {
            let qi = q_at(r0 + i, kh);
            let kj = q_at(r0 + j, kh) + koff;
            var kk = 0.0;
            var qk = 0.0;
            for (var d = 0u; d < p.dk; d++) {
                kk += c[qi + koff + d] * c[kj + d];
                qk += c[qi + d] * c[kj + d];
            }
            let dij = exp(gs[i] - gs[j]);
            a = select(0.0, bs[i] * kk * dij, j < i);
            pij = qk * dij;
        }
        am[e] = a;
        if (i < n) { scratch[p_at + ((r0 + i) * p.nv + h) * CHUNK + j] = pij; }
    }
    workgroupBarrier();
    // T column m solves (I + A) x = e_m: x_i = δ_im − Σ_{m ≤ j < i} A_ij x_j (rows above m are 0).
    if (tid < n) {
        let m = tid;
        tm[m * CHUNK + m] = 1.0;
        for (var i = m + 1u; i < n; i++) {
            var acc = 0.0;
            for (var j = m; j < i; j++) { acc += am[i * CHUNK + j] * tm[j * CHUNK + m]; }
            tm[i * CHUNK + m] = -acc;
        }
    }
    workgroupBarrier();
    // W = T (beta e^G ⊙ K) and U = T (beta ⊙ V), T lower triangular.
    for (var e = tid; e < n * p.dk; e += WG) {
        let i = e / p.dk;
        let d = e % p.dk;
        var acc = 0.0;
        for (var m = 0u; m <= i; m++) { acc += tm[i * CHUNK + m] * bg[m] * c[q_at(r0 + m, kh) + koff + d]; }
        scratch[w_at + ((r0 + i) * p.nv + h) * p.dk + d] = acc;
    }
    for (var e = tid; e < n * p.dv; e += WG) {
        let i = e / p.dv;
        let j = e % p.dv;
        var acc = 0.0;
        for (var m = 0u; m <= i; m++) { acc += tm[i * CHUNK + m] * bs[m] * c[(r0 + m) * p.conv_dim + voff + j]; }
        scratch[u_at + ((r0 + i) * p.nv + h) * p.dv + j] = acc;
    }
}

@compute @workgroup_size(WG)
fn scan(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let tiles = (p.dv + WG - 1u) / WG;
    let lin = wid.x + wid.y * nwg.x;
    let h = lin / tiles;
    let j = (lin % tiles) * WG + tid;
    if (lin >= p.nv * tiles || j >= p.dv) { return; } // no barriers below
    let kh = key_head(h);
    let koff = p.nk * p.dk;
    let hw = p.t * p.nv;
    let w_at = 0u;
    let u_at = hw * p.dk;
    let p_at = hw * (p.dk + p.dv);
    let g_at = hw * (p.dk + p.dv + CHUNK);
    let sbase = h * p.dk * p.dv + j;

    var col = array<f32, MAX_DK>();
    if (step.pos0 != 0u) {
        for (var d = 0u; d < p.dk; d++) { col[d] = state[sbase + d * p.dv]; }
    }
    var vn = array<f32, CHUNK>();
    for (var r0 = 0u; r0 < p.t; r0 += CHUNK) {
        let n = min(CHUNK, p.t - r0);
        // Vnew = U − W S: the delta rule's u for each row of the chunk
        for (var i = 0u; i < n; i++) {
            let rh = (r0 + i) * p.nv + h;
            var acc = scratch[u_at + rh * p.dv + j];
            for (var d = 0u; d < p.dk; d++) { acc -= scratch[w_at + rh * p.dk + d] * col[d]; }
            vn[i] = acc;
        }
        // o_i = e^{G_i} q_i·S + Σ_{m ≤ i} P_im Vnew_m
        for (var i = 0u; i < n; i++) {
            let rh = (r0 + i) * p.nv + h;
            let qi = q_at(r0 + i, kh);
            var qs = 0.0;
            for (var d = 0u; d < p.dk; d++) { qs += c[qi + d] * col[d]; }
            var acc = exp(scratch[g_at + rh]) * qs;
            for (var m = 0u; m <= i; m++) { acc += scratch[p_at + rh * CHUNK + m] * vn[m]; }
            o[(r0 + i) * p.nv * p.dv + h * p.dv + j] = acc;
        }
        // S = e^{G_last} S + Σ_i k_i e^{G_last − G_i} Vnew_i
        let g_last = scratch[g_at + (r0 + n - 1u) * p.nv + h];
        for (var i = 0u; i < n; i++) { vn[i] *= exp(g_last - scratch[g_at + (r0 + i) * p.nv + h]); }
        let decay = exp(g_last);
        for (var d = 0u; d < p.dk; d++) {
            var acc = decay * col[d];
            for (var i = 0u; i < n; i++) { acc += c[q_at(r0 + i, kh) + koff + d] * vn[i]; }
            col[d] = acc;
        }
    }
    for (var d = 0u; d < p.dk; d++) { state[sbase + d * p.dv] = col[d]; }
}
