// Gated DeltaNet (Qwen3.5's linear-attention layers; formulas in docs/qwen35.md §5). The layer's
// projections sit side by side in each row of `proj` [t, in_w]: qkv (conv_dim) | z (nv·dv) | b (nv) | a (nv).
// A position-0 step starts from zero conv and recurrent states (a new sequence); later steps carry
// them. Row r of a step is at position pos0 + r, tokens in order.
//
// `conv`: one invocation per channel of qkv: the causal depthwise conv of width K over the last K
//   inputs (K − 1 from the conv state, oldest first), then SiLU, into `c` [t, conv_dim]; the state
//   keeps the step's last K − 1 inputs.
// `recurrence`: one workgroup of WG invocations per (value head h, tile of WG value columns); each
//   invocation owns one column j of the head's state S [dk, dv] (in registers for the whole step)
//   and, per token: q, k of key head h / (nv / nk) (h % nk with `tiled`) L2-normalised (eps 1e-6 inside the sqrt, q then
//   times dk^-1/2), beta = sigmoid(b), decay = exp(-exp(A_log) softplus(a + dt_bias)),
//   u = beta (v − decay Sᵀk), S = decay S + k uᵀ, o = Sᵀq, into `o` [t, nv·dv]. Tokens run in order
//   inside the kernel: a prefill of t rows is one dispatch and equals t single-token steps.
// `gated_norm`: one workgroup per (row, value head): y = o / sqrt(mean(o²) + eps) · w · silu(z), in
//   place in `o`.

const WG: u32 = 64u;
const MAX_DK: u32 = 128u;
const MAX_K: u32 = 8u;

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
    let kh = select(h / (p.nv / p.nk), h % p.nk, p.tiled != 0u);
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
