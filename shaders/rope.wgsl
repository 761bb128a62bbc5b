// Rotary position embedding (RoPE), in place on q or k: for each row r (position pos0 + r), head h
// and pair i < rotary_dim / 2, rotate the pair by angle (pos0 + r) * inv_freq[i]; dims past
// rotary_dim are left as they are (partial rotary). Pairs: rope_half = Hugging Face rotate_half
// (i, i + rotary_dim/2); rope_interleaved = GGUF/Meta (2i, 2i + 1).
// Dispatch: one invocation per rotated pair, WG per workgroup, workgroups folded into (x, y) by
// Context::grid.
// rope_kv: RoPE and the KV-cache write in one pass over fused q|k|v projection rows
//   [t, q_dim + 2 kv_dim] (decode's one kernel between the projection and attention): a q head is
//   (with QK_NORM, RMS-normed per head first: Qwen3) rotated into q_out; a k head the same, then
//   written with its v head to cache position pos0 + row (f32 words, or with KV_F16 packed f16
//   pairs, as kv_write.wgsl). One workgroup of WG per (row, head slot): slot < n_heads is a q
//   head, the rest kv heads; linear id row * (n_heads + n_kv_heads) + slot, folded by Context::grid.
// rope_rows: rope_half / rope_interleaved in place on the first n_heads heads of rows of row_stride
//   floats (an encoder's fused q|k|v rows: the q and k heads rotated, v left), row r at position
//   positions[r] (each sequence of a padded batch counts from 0). Same pair ids as rope_half.
// rope_kv_flat: the same without QK_NORM and without workgroup memory or barriers (which CPU-emulated
//   GPUs pay for in every invocation): one invocation per (row, head slot, dim pair 2w, 2w + 1), each
//   output dim computed from its own two inputs; linear id (row * slots + slot) * pairs + w.

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;

override KV_F16: bool = false;
override QK_NORM: bool = false;

// 2π split into C1 + C2 + C3 (Cody & Waite): C1 and C2 have 8 significant bits, so k * C1 and
// k * C2 are exact for |k| < 65536 and the reduction is exact to ~1e-8 up to |angle| ≈ 4e5.
const INV_TWO_PI: f32 = 0.15915494309189535f;
const C1: f32 = 6.28125f;
const C2: f32 = 0.00193023681640625f;        // 253 * 2^-17
const C3: f32 = 5.0703631802269253e-6f;      // 2π - C1 - C2, rounded to f32

struct Params {
    pairs: u32,       // t * n_heads * half (rope_half, rope_interleaved)
    n_heads: u32,
    head_dim: u32,
    half: u32,        // rotary_dim / 2
    mscale: f32,      // cos/sin multiplier (LongRoPE's attention factor, else 1)
    t: u32,           // rope_kv: rows
    n_kv_heads: u32,  // rope_kv
    capacity: u32,    // rope_kv: cache positions
    row_words: u32,   // rope_kv: cache words per (head, position): head_dim, or head_dim / 2 with KV_F16
    eps: f32,         // rope_kv with QK_NORM
    interleaved: u32, // rope_kv, rope_rows: 1 for (2i, 2i + 1) pairs, 0 for (i, i + half)
    row_stride: u32,  // rope_rows: floats per row of x
}

// The model's per-step values (src/ops/mod.rs StepParams), written once per step.
struct Step {
    pos0: u32,      // position of row 0 (the KV-cache length before this call)
    _s0: u32,
    _s1: u32,
    _s2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;   // [half]
@group(0) @binding(2) var<storage, read_write> x: array<f32>;    // [t, n_heads * head_dim]
@group(0) @binding(3) var<uniform> step: Step;
@group(0) @binding(4) var<storage, read> qkv: array<f32>;             // rope_kv: [t, q_dim + 2 kv_dim]
@group(0) @binding(5) var<storage, read_write> q_out: array<f32>;     // rope_kv: [t, q_dim]
@group(0) @binding(6) var<storage, read_write> cache_k: array<u32>;   // rope_kv: [n_kv_heads, capacity, row_words]
@group(0) @binding(7) var<storage, read_write> cache_v: array<u32>;   // rope_kv: [n_kv_heads, capacity, row_words]
@group(0) @binding(8) var<storage, read> q_norm: array<f32>;          // rope_kv with QK_NORM: [head_dim]
@group(0) @binding(9) var<storage, read> k_norm: array<f32>;          // rope_kv with QK_NORM: [head_dim]
@group(0) @binding(10) var<storage, read> positions: array<u32>;      // rope_rows: [t]

var<workgroup> head_sh: array<f32, MAX_HEAD_DIM>; // rope_kv: the head being rotated

// (cos, sin) of r in [-π, π], to about 1 ulp on every device: WGSL only promises 2^-11 absolute
// for the builtins there, and SwiftShader (Chrome without a GPU) is off by 2e-4. Quadrant
// reduction by π/2 = PIO2_HI + PIO2_LO, then Cephes' sinf/cosf minimax polynomials on [-π/4, π/4].
fn cos_sin_reduced(r: f32) -> vec2<f32> {
    let q = round(r * 0.63661977236758134f);
    let y = (r - q * 1.5707963705062866f) - q * -4.3711390001862412e-8f;
    let z = y * y;
    let s = y + y * z * (-1.6666654611e-1f + z * (8.3321608736e-3f + z * -1.9515295891e-4f));
    let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2f + z * (-1.388731625493765e-3f + z * 2.443315711809948e-5f));
    switch (i32(q) & 3) { // q is -2..2; & 3 maps -1 to 3 and -2 to 2
        case 0: { return vec2<f32>(c, s); }
        case 1: { return vec2<f32>(-s, c); }
        case 2: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

// (cos, sin) * mscale of angle f32(pos) * inv_freq[i]: the f32 product, as Hugging Face computes
// it, then reduced to [-π, π] (angles reach 1e5 and more).
fn cos_sin(pos: u32, i: u32) -> vec2<f32> {
    let a = f32(pos) * inv_freq[i];
    let k = round(a * INV_TWO_PI);
    let r = ((a - k * C1) - k * C2) - k * C3;
    return cos_sin_reduced(r) * p.mscale;
}

// The pair this invocation owns: (row, offset of its head in x, i), or none past the end.
fn pair_of(wid: vec3<u32>, nwg: vec3<u32>, tid: u32) -> vec3<u32> {
    let j = (wid.x + wid.y * nwg.x) * WG + tid;
    let i = j % p.half;
    let rh = j / p.half; // row * n_heads + head
    return vec3<u32>(rh / p.n_heads, rh * p.head_dim, i);
}

@compute @workgroup_size(WG)
fn rope_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    if ((wid.x + wid.y * nwg.x) * WG + tid >= p.pairs) { return; }
    let q = pair_of(wid, nwg, tid);
    let cs = cos_sin(step.pos0 + q.x, q.z);
    let a = q.y + q.z;
    let b = a + p.half;
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[b] = x1 * cs.x + x0 * cs.y;
}

@compute @workgroup_size(WG)
fn rope_interleaved(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) tid: u32) {
    if ((wid.x + wid.y * nwg.x) * WG + tid >= p.pairs) { return; }
    let q = pair_of(wid, nwg, tid);
    let cs = cos_sin(step.pos0 + q.x, q.z);
    let a = q.y + 2u * q.z;
    let x0 = x[a];
    let x1 = x[a + 1u];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[a + 1u] = x1 * cs.x + x0 * cs.y;
}

@compute @workgroup_size(WG)
fn rope_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    let j = (wid.x + wid.y * nwg.x) * WG + tid;
    if (j >= p.pairs) { return; }
    let i = j % p.half;
    let rh = j / p.half; // row * n_heads + head
    let row = rh / p.n_heads;
    let head0 = row * p.row_stride + (rh % p.n_heads) * p.head_dim;
    var a = head0 + i;
    var b = a + p.half;
    if (p.interleaved != 0u) {
        a = head0 + 2u * i;
        b = a + 1u;
    }
    let cs = cos_sin(positions[row], i);
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[b] = x1 * cs.x + x0 * cs.y;
}

@compute @workgroup_size(WG)
fn rope_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let slots = p.n_heads + p.n_kv_heads;
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.t * slots) { return; } // whole workgroup leaves together
    let row = id / slots;
    let slot = id % slots;
    let hd = p.head_dim;
    let q_dim = p.n_heads * hd;
    let kv_dim = p.n_kv_heads * hd;
    let stride = q_dim + 2u * kv_dim;
    let is_q = slot < p.n_heads;
    let kvh = slot - p.n_heads; // meaningful only for a kv head
    let src = row * stride + select(q_dim + kvh * hd, slot * hd, is_q);
    for (var d = tid; d < hd; d += WG) { head_sh[d] = qkv[src + d]; }
    if (QK_NORM) {
        var ss = 0.0;
        for (var d = tid; d < hd; d += WG) { ss += head_sh[d] * head_sh[d]; } // own elements only
        let r = inverseSqrt(wg_sum(ss, tid) / f32(hd) + p.eps);
        for (var d = tid; d < hd; d += WG) {
            head_sh[d] = head_sh[d] * r * select(k_norm[d], q_norm[d], is_q);
        }
    }
    workgroupBarrier();
    let pos = step.pos0 + row;
    for (var i = tid; i < p.half; i += WG) {
        var a = i;
        var b = i + p.half;
        if (p.interleaved != 0u) {
            a = 2u * i;
            b = a + 1u;
        }
        let cs = cos_sin(pos, i);
        let x0 = head_sh[a];
        let x1 = head_sh[b];
        head_sh[a] = x0 * cs.x - x1 * cs.y;
        head_sh[b] = x1 * cs.x + x0 * cs.y;
    }
    workgroupBarrier();
    if (is_q) {
        for (var d = tid; d < hd; d += WG) { q_out[row * q_dim + slot * hd + d] = head_sh[d]; }
        return;
    }
    let dst = (kvh * p.capacity + pos % p.capacity) * p.row_words; // a ring wraps (kv_write.rs)
    let vsrc = row * stride + q_dim + kv_dim + kvh * hd;
    for (var w = tid; w < p.row_words; w += WG) {
        if (KV_F16) {
            cache_k[dst + w] = pack2x16float(vec2<f32>(head_sh[2u * w], head_sh[2u * w + 1u]));
            cache_v[dst + w] = pack2x16float(vec2<f32>(qkv[vsrc + 2u * w], qkv[vsrc + 2u * w + 1u]));
        } else {
            cache_k[dst + w] = bitcast<u32>(head_sh[w]);
            cache_v[dst + w] = bitcast<u32>(qkv[vsrc + w]);
        }
    }
}

// Dim d of head `src` (offset in qkv) rotated at position pos: it and its RoPE partner are read, so
// every output dim is independent of the others. Dims at and past rotary_dim pass through.
fn rotated_dim(src: u32, d: u32, pos: u32) -> f32 {
    let x = qkv[src + d];
    if (d >= 2u * p.half) { return x; }
    var i = d;
    var partner = 0.0;
    var first = true; // d is the pair's first element (x0 in rope_half/rope_interleaved)
    if (p.interleaved != 0u) {
        i = d / 2u;
        first = d % 2u == 0u;
        partner = qkv[src + select(d - 1u, d + 1u, first)];
    } else if (d < p.half) {
        partner = qkv[src + d + p.half];
    } else {
        i = d - p.half;
        first = false;
        partner = qkv[src + d - p.half];
    }
    let cs = cos_sin(pos, i);
    return select(x * cs.x + partner * cs.y, x * cs.x - partner * cs.y, first);
}

@compute @workgroup_size(WG)
fn rope_kv_flat(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
    let slots = p.n_heads + p.n_kv_heads;
    let pairs = (p.head_dim + 1u) / 2u;
    let g = (wid.x + wid.y * nwg.x) * WG + tid;
    if (g >= p.t * slots * pairs) { return; }
    let w = g % pairs;
    let slot = (g / pairs) % slots;
    let row = g / (pairs * slots);
    let hd = p.head_dim;
    let q_dim = p.n_heads * hd;
    let kv_dim = p.n_kv_heads * hd;
    let stride = q_dim + 2u * kv_dim;
    let pos = step.pos0 + row;
    let d = 2u * w;
    let has_hi = d + 1u < hd;
    if (slot < p.n_heads) {
        let src = row * stride + slot * hd;
        let dst = row * q_dim + slot * hd;
        q_out[dst + d] = rotated_dim(src, d, pos);
        if (has_hi) { q_out[dst + d + 1u] = rotated_dim(src, d + 1u, pos); }
        return;
    }
    let kvh = slot - p.n_heads;
    let src = row * stride + q_dim + kvh * hd;
    let vsrc = src + kv_dim;
    let k0 = rotated_dim(src, d, pos);
    let k1 = select(0.0, rotated_dim(src, d + 1u, pos), has_hi);
    let base = (kvh * p.capacity + pos % p.capacity) * p.row_words;
    if (KV_F16) { // head_dim is even with an f16 cache
        cache_k[base + w] = pack2x16float(vec2<f32>(k0, k1));
        cache_v[base + w] = pack2x16float(vec2<f32>(qkv[vsrc + d], qkv[vsrc + d + 1u]));
    } else {
        cache_k[base + d] = bitcast<u32>(k0);
        cache_v[base + d] = bitcast<u32>(qkv[vsrc + d]);
        if (has_hi) {
            cache_k[base + d + 1u] = bitcast<u32>(k1);
            cache_v[base + d + 1u] = bitcast<u32>(qkv[vsrc + d + 1u]);
        }
    }
}
