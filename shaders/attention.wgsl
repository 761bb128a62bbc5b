// Causal multi-head attention over a KV cache, with GQA and flash-decoding splits.
// Query row i (absolute position pos0 + i), head h, reads kv head h / group and attends to cache
// positions lo_i..=pos0 + i: out = softmax(scale * q·Kᵀ) V, computed with an online softmax.
// lo_i = 0, or with a sliding window W (window > 0) pos0 + i + 1 - W. With softcap c > 0 each
// scaled score s becomes c * tanh(s / c) (Gemma 2). Split s of n_splits covers keys
// [lo_0 + s * chunk, lo_0 + (s + 1) * chunk), chunk = ceil((pos0 + t - lo_0) / n_splits).
// Cache words are f32 (bitcast) or, with KV_F16, two f16 (unpack2x16float); see kv_write.wgsl.
// With RING the cache is a ring: key position j is in slot j mod capacity, and the caller keeps
// every key a query reads in the ring (window + t - 1 <= capacity).
//
// `attend`: one workgroup of WG invocations per (row, head, split), linear id
//   (row * n_heads + h) * n_splits + s, folded into (x, y) by Context::grid. Per tile of WG keys,
//   invocation j scores key j; then each invocation owns the dim pairs (2 tid + 2 WG c, +1) of the
//   output and accumulates Σ p_j V[j]. One split: normalised output to `out`; several: the partial
//   (max, sum of exp, unnormalised output) to the scratch buffers for `combine`.
// `attend_row` (CPU-emulated GPUs, as matmul's gemv_row): one invocation per (row, head, split), RWG
//   of them per workgroup, no workgroup memory and no barrier (those drivers pay for every barrier in
//   each invocation); keys in tiles of WG as `attend`, in the same order, so the same bits.
// `combine`: one workgroup per (row, head), linear id row * n_heads + h; merges the splits.

const WG: u32 = 64u;
const RWG: u32 = 8u; // attend_row: one SIMD group of llvmpipe, so a few (row, head, split)s fill both cores
const MAX_HEAD_DIM: u32 = 256u; // = 2 dims * WG invocations * 2 passes (acc below)
const NEG: f32 = -3.0e38;       // "no key yet": finite, so no inf arithmetic is ever needed
const NEG_LIMIT: f32 = -1.0e38; // a running max below this is still NEG

override KV_F16: bool = false;
override RING: bool = false;

struct Params {
    t: u32,
    n_heads: u32,
    group: u32,       // n_heads / n_kv_heads
    head_dim: u32,
    capacity: u32,
    n_splits: u32,
    row_words: u32,   // cache words per (head, position): head_dim, or head_dim / 2 with KV_F16
    scale_log2: f32,  // scale * log2(e): scores are kept in base 2 so exp2 can be used
    window: u32,      // keys per query (sliding window); 0 = all earlier keys
    softcap_log2: f32, // softcap * log2(e); 0 = no capping
    _pad0: u32,
    _pad1: u32,
}

// The model's per-step values (src/ops/mod.rs StepParams), written once per step.
struct Step {
    pos0: u32,        // position of query row 0
    _s0: u32,
    _s1: u32,
    _s2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;               // [t, n_heads * head_dim]
@group(0) @binding(2) var<storage, read> cache_k: array<u32>;         // [n_kv_heads, capacity, row_words]
@group(0) @binding(3) var<storage, read> cache_v: array<u32>;         // [n_kv_heads, capacity, row_words]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // [t, n_heads * head_dim]
@group(0) @binding(5) var<storage, read_write> part_o: array<f32>;    // [t, n_heads, n_splits, head_dim]
@group(0) @binding(6) var<storage, read_write> part_ml: array<f32>;   // [t, n_heads, n_splits, 2]: max, sum
@group(0) @binding(7) var<uniform> step: Step;                         // attend only

var<workgroup> q_sh: array<f32, MAX_HEAD_DIM>; // this row's query, pre-multiplied by scale_log2
var<workgroup> s_sh: array<f32, WG>;           // scores of the current tile
var<workgroup> p_sh: array<f32, WG>;           // exp2(score - running max) of the current tile

// Soft-capping in base 2: c * tanh(s / c) with s and c both scaled by log2(e), tanh written with
// exp of -2|x| only (no overflow for any score).
fn cap(s: f32) -> f32 {
    if (p.softcap_log2 <= 0.0) { return s; }
    let x = s / p.softcap_log2;
    let e = exp(-2.0 * abs(x));
    return sign(x) * p.softcap_log2 * (1.0 - e) / (1.0 + e);
}

// First key a query at position `qpos` sees: 0, or the start of its sliding window.
fn first_key(qpos: u32) -> u32 {
    if (p.window == 0u || qpos < p.window) { return 0u; }
    return qpos + 1u - p.window;
}

// First cache word of key position `pos` of kv head `kvh`.
fn key_base(kvh: u32, pos: u32) -> u32 {
    let slot = select(pos, pos % p.capacity, RING);
    return (kvh * p.capacity + slot) * p.row_words;
}

// Score of the query against cached key `pos` of kv head `kvh` (base-2 logits).
fn score(kvh: u32, pos: u32) -> f32 {
    let base = key_base(kvh, pos);
    var s = 0.0;
    if (KV_F16) {
        for (var w = 0u; w < p.row_words; w++) {
            let k2 = unpack2x16float(cache_k[base + w]);
            s += q_sh[2u * w] * k2.x + q_sh[2u * w + 1u] * k2.y;
        }
    } else {
        for (var d = 0u; d < p.head_dim; d++) {
            s += q_sh[d] * bitcast<f32>(cache_k[base + d]);
        }
    }
    return s;
}

// V[pos, d], V[pos, d + 1] of kv head `kvh`; d is even and < head_dim (d + 1 may be past it for f32).
fn v_pair(kvh: u32, pos: u32, d: u32) -> vec2<f32> {
    let base = key_base(kvh, pos);
    if (KV_F16) {
        return unpack2x16float(cache_v[base + d / 2u]);
    }
    var hi = 0.0;
    if (d + 1u < p.head_dim) { hi = bitcast<f32>(cache_v[base + d + 1u]); }
    return vec2<f32>(bitcast<f32>(cache_v[base + d]), hi);
}

// The (row, head, split) of linear id (row * n_heads + h) * n_splits + split: its kv head and
// key range (causal limit pos0 + row, clamped to a linear cache for safety; from its window's start).
// Splits divide row 0's range onward; a split before this row's window start is empty.
struct Slot {
    row: u32,
    h: u32,
    kvh: u32,
    k_begin: u32,
    k_end: u32,
}

fn slot_of(id: u32) -> Slot {
    let split = id % p.n_splits;
    let rh = id / p.n_splits; // row * n_heads + h
    let h = rh % p.n_heads;
    let row = rh / p.n_heads;
    let n_keys = select(min(step.pos0 + row + 1u, p.capacity), step.pos0 + row + 1u, RING);
    let lo0 = first_key(step.pos0);
    let chunk = (step.pos0 + p.t - lo0 + p.n_splits - 1u) / p.n_splits;
    let k_end = min(lo0 + (split + 1u) * chunk, n_keys);
    let k_begin = min(max(lo0 + split * chunk, first_key(step.pos0 + row)), k_end);
    return Slot(row, h, h / p.group, k_begin, k_end);
}

@compute @workgroup_size(WG)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.t * p.n_heads * p.n_splits) { return; } // whole workgroup leaves together
    let sl = slot_of(id);
    let h = sl.h;
    let row = sl.row;
    let kvh = sl.kvh;
    let dim = p.n_heads * p.head_dim;
    let k_begin = sl.k_begin;
    let k_end = sl.k_end;

    for (var d = tid; d < p.head_dim; d += WG) {
        q_sh[d] = q[row * dim + h * p.head_dim + d] * p.scale_log2;
    }
    workgroupBarrier();

    var m_run = NEG;
    var l_run = 0.0;
    var acc = array<vec2<f32>, 2>(vec2<f32>(0.0), vec2<f32>(0.0));
    for (var k0 = k_begin; k0 < k_end; k0 += WG) {
        let j = k0 + tid;
        var s = NEG;
        if (j < k_end) { s = cap(score(kvh, j)); }
        s_sh[tid] = s;
        workgroupBarrier();
        var m_tile = NEG;
        for (var i = 0u; i < WG; i++) { m_tile = max(m_tile, s_sh[i]); }
        let m_new = max(m_run, m_tile); // a real score: the tile has at least one key
        p_sh[tid] = select(0.0, exp2(s - m_new), j < k_end);
        let alpha = select(0.0, exp2(m_run - m_new), m_run > NEG_LIMIT);
        m_run = m_new;
        workgroupBarrier();
        // s_sh is not read again this tile and p_sh is next written after the next tile's first
        // barrier, so two barriers per tile suffice.
        var l_tile = 0.0;
        var a0 = vec2<f32>(0.0);
        var a1 = vec2<f32>(0.0);
        let n_valid = min(WG, k_end - k0);
        let d0 = 2u * tid;
        let d1 = d0 + 2u * WG;
        for (var i = 0u; i < n_valid; i++) {
            let pj = p_sh[i];
            l_tile += pj;
            if (d0 < p.head_dim) { a0 += pj * v_pair(kvh, k0 + i, d0); }
            if (d1 < p.head_dim) { a1 += pj * v_pair(kvh, k0 + i, d1); }
        }
        l_run = l_run * alpha + l_tile;
        acc[0] = acc[0] * alpha + a0;
        acc[1] = acc[1] * alpha + a1;
    }

    for (var c = 0u; c < 2u; c++) {
        let d = 2u * tid + 2u * WG * c;
        if (d >= p.head_dim) { break; }
        let last = d + 1u < p.head_dim;
        if (p.n_splits == 1u) {
            let o = acc[c] / l_run; // l_run ≥ 1: the max key contributes exp2(0)
            let base = row * dim + h * p.head_dim + d;
            out[base] = o.x;
            if (last) { out[base + 1u] = o.y; }
        } else {
            let base = id * p.head_dim + d;
            part_o[base] = acc[c].x;
            if (last) { part_o[base + 1u] = acc[c].y; }
        }
    }
    if (p.n_splits > 1u && tid == 0u) {
        part_ml[2u * id] = m_run; // NEG with l = 0 for an empty split
        part_ml[2u * id + 1u] = l_run;
    }
}

@compute @workgroup_size(RWG)
fn attend_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
    let id = (wid.x + wid.y * nwg.x) * RWG + tid;
    if (id >= p.t * p.n_heads * p.n_splits) { return; }
    let sl = slot_of(id);
    let h = sl.h;
    let row = sl.row;
    let kvh = sl.kvh;
    let dim = p.n_heads * p.head_dim;
    let k_begin = sl.k_begin;
    let k_end = sl.k_end;

    // The same arithmetic in the same order as `attend` (tiles of WG keys, tile sums added to the
    // rescaled running ones), so both give the same bits on a device.
    let qb = row * dim + h * p.head_dim;
    let pairs = (p.head_dim + 1u) / 2u;
    var acc = array<vec2<f32>, MAX_HEAD_DIM / 2u>(); // dims 2c, 2c + 1
    var m_run = NEG;
    var l_run = 0.0;
    for (var k0 = k_begin; k0 < k_end; k0 += WG) {
        let n = min(WG, k_end - k0);
        var pt = array<f32, WG>(); // scores, then exp2(score - max)
        var m_tile = NEG;
        for (var i = 0u; i < n; i++) {
            let base = key_base(kvh, k0 + i);
            var sc = 0.0;
            if (KV_F16) {
                for (var w = 0u; w < p.row_words; w++) {
                    let k2 = unpack2x16float(cache_k[base + w]);
                    sc += (q[qb + 2u * w] * p.scale_log2) * k2.x + (q[qb + 2u * w + 1u] * p.scale_log2) * k2.y;
                }
            } else {
                for (var d = 0u; d < p.head_dim; d++) {
                    sc += (q[qb + d] * p.scale_log2) * bitcast<f32>(cache_k[base + d]);
                }
            }
            pt[i] = cap(sc);
            m_tile = max(m_tile, pt[i]);
        }
        let m_new = max(m_run, m_tile); // a real score: the tile has at least one key
        let alpha = select(0.0, exp2(m_run - m_new), m_run > NEG_LIMIT);
        m_run = m_new;
        var l_tile = 0.0;
        for (var i = 0u; i < n; i++) {
            pt[i] = exp2(pt[i] - m_new);
            l_tile += pt[i];
        }
        l_run = l_run * alpha + l_tile;
        for (var c = 0u; c < pairs; c++) {
            var a = vec2<f32>(0.0);
            for (var i = 0u; i < n; i++) { a += pt[i] * v_pair(kvh, k0 + i, 2u * c); }
            acc[c] = acc[c] * alpha + a;
        }
    }

    if (p.n_splits == 1u) {
        let base = row * dim + h * p.head_dim;
        for (var d = 0u; d < p.head_dim; d++) { out[base + d] = acc[d / 2u][d % 2u] / l_run; } // l_run ≥ 1
    } else {
        for (var d = 0u; d < p.head_dim; d++) { part_o[id * p.head_dim + d] = acc[d / 2u][d % 2u]; }
        part_ml[2u * id] = m_run; // NEG with l = 0 for an empty split
        part_ml[2u * id + 1u] = l_run;
    }
}

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let rh = wid.x + wid.y * nwg.x;
    if (rh >= p.t * p.n_heads) { return; }
    let h = rh % p.n_heads;
    let row = rh / p.n_heads;
    let first = rh * p.n_splits;

    var m = NEG;
    for (var s = 0u; s < p.n_splits; s++) { m = max(m, part_ml[2u * (first + s)]); }
    // Some split holds the row's own key, so m is a real score and l ≥ 1.
    var l = 0.0;
    for (var s = 0u; s < p.n_splits; s++) {
        let ms = part_ml[2u * (first + s)];
        l += select(0.0, exp2(ms - m), ms > NEG_LIMIT) * part_ml[2u * (first + s) + 1u];
    }
    for (var d = tid; d < p.head_dim; d += WG) {
        var o = 0.0;
        for (var s = 0u; s < p.n_splits; s++) {
            let ms = part_ml[2u * (first + s)];
            o += select(0.0, exp2(ms - m), ms > NEG_LIMIT) * part_o[(first + s) * p.head_dim + d];
        }
        out[row * p.n_heads * p.head_dim + h * p.head_dim + d] = o / l;
    }
}
