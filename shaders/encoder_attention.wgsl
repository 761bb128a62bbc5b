// Bidirectional (non-causal) multi-head attention over a padded batch, no KV cache: BERT-family
// encoders. qkv holds each token's fused projection q | k | v; sequence b is rows b * seq ..
// b * seq + seq, of which the first n_b = min(lens[b], seq) are real. Row i < n_b, head h reads kv
// head h / group and attends to keys 0..n_b of its own sequence:
// out = softmax(scale * q·Kᵀ) V with an online softmax in base 2 (as attention.wgsl's `attend`).
// Padded rows (i ≥ n_b) get zeros and read nothing, so whatever the padding holds (NaN) never
// reaches an output.
//
// `encoder_attend`: one workgroup of WG invocations per (row, head), linear id
//   (b * seq + i) * n_heads + h, folded into (x, y) by Context::grid. Per tile of WG keys,
//   invocation j scores key j; then each invocation owns the dim pairs (2 tid + 2 WG c, +1) of the
//   output and accumulates Σ p_j V[j]. The arithmetic depends only on the row's own q, its
//   sequence's first n_b keys and values, and n_b: not on b, seq or the batch, so a sequence gives
//   the same bits batched or alone.

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u; // = 2 dims * WG invocations * 2 pairs (acc below)
const NEG: f32 = -3.0e38;       // "no key yet": finite, so no inf arithmetic is ever needed
const NEG_LIMIT: f32 = -1.0e38; // a running max below this is still NEG

struct Params {
    batch: u32,
    seq: u32,         // padded length L
    n_heads: u32,
    group: u32,       // n_heads / n_kv_heads
    head_dim: u32,
    q_dim: u32,       // n_heads * head_dim
    kv_dim: u32,      // n_kv_heads * head_dim
    row_elems: u32,   // q_dim + 2 * kv_dim
    scale_log2: f32,  // scale * log2(e): scores are kept in base 2 so exp2 can be used
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;        // [batch * seq, q_dim + 2 * kv_dim]
@group(0) @binding(2) var<storage, read> lens: array<u32>;       // [batch]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [batch * seq, q_dim]

var<workgroup> q_sh: array<f32, MAX_HEAD_DIM>; // this row's query, pre-multiplied by scale_log2
var<workgroup> s_sh: array<f32, WG>;           // scores of the current tile
var<workgroup> p_sh: array<f32, WG>;           // exp2(score - running max) of the current tile

@compute @workgroup_size(WG)
fn encoder_attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.batch * p.seq * p.n_heads) { return; } // whole workgroup leaves together
    let h = id % p.n_heads;
    let row = id / p.n_heads; // b * seq + i
    let b = row / p.seq;
    let i = row % p.seq;
    // One address for the whole workgroup: a uniform value, so the barriers below stay in uniform
    // control flow. Clamped so a bad length never reads another sequence.
    let n_keys = min(lens[b], p.seq);
    let o_base = row * p.q_dim + h * p.head_dim;
    if (i >= n_keys) {
        for (var d = tid; d < p.head_dim; d += WG) { out[o_base + d] = 0.0; }
        return;
    }

    let first = b * p.seq; // the sequence's row 0
    let kvh = h / p.group;
    let k_col = p.q_dim + kvh * p.head_dim;
    let v_col = k_col + p.kv_dim;
    for (var d = tid; d < p.head_dim; d += WG) {
        q_sh[d] = qkv[row * p.row_elems + h * p.head_dim + d] * p.scale_log2;
    }
    workgroupBarrier();

    var m_run = NEG;
    var l_run = 0.0;
    var acc = array<vec2<f32>, 2>(vec2<f32>(0.0), vec2<f32>(0.0));
    let d0 = 2u * tid;
    let d1 = d0 + 2u * WG;
    for (var k0 = 0u; k0 < n_keys; k0 += WG) {
        let j = k0 + tid;
        var s = NEG;
        if (j < n_keys) {
            let kb = (first + j) * p.row_elems + k_col;
            s = 0.0;
            for (var d = 0u; d < p.head_dim; d++) { s += q_sh[d] * qkv[kb + d]; }
        }
        s_sh[tid] = s;
        workgroupBarrier();
        var m_tile = NEG;
        for (var t = 0u; t < WG; t++) { m_tile = max(m_tile, s_sh[t]); }
        let m_new = max(m_run, m_tile); // a real score: the tile has at least one key
        p_sh[tid] = select(0.0, exp2(s - m_new), j < n_keys);
        let alpha = select(0.0, exp2(m_run - m_new), m_run > NEG_LIMIT);
        m_run = m_new;
        workgroupBarrier();
        // s_sh is not read again this tile and p_sh is next written after the next tile's first
        // barrier, so two barriers per tile suffice.
        var l_tile = 0.0;
        var a0 = vec2<f32>(0.0);
        var a1 = vec2<f32>(0.0);
        let n_valid = min(WG, n_keys - k0); // never a padded key: p = 0 times NaN would be NaN
        for (var t = 0u; t < n_valid; t++) {
            let pj = p_sh[t];
            let vb = (first + k0 + t) * p.row_elems + v_col;
            l_tile += pj;
            if (d0 < p.head_dim) { a0 += pj * v_pair(vb, d0); }
            if (d1 < p.head_dim) { a1 += pj * v_pair(vb, d1); }
        }
        l_run = l_run * alpha + l_tile;
        acc[0] = acc[0] * alpha + a0;
        acc[1] = acc[1] * alpha + a1;
    }

    for (var c = 0u; c < 2u; c++) {
        let d = 2u * tid + 2u * WG * c;
        if (d >= p.head_dim) { break; }
        let o = acc[c] / l_run; // l_run ≥ 1: the max key contributes exp2(0)
        out[o_base + d] = o.x;
        if (d + 1u < p.head_dim) { out[o_base + d + 1u] = o.y; }
    }
}

// V[d], V[d + 1] of the value row starting at `vb`; d is even and < head_dim (d + 1 may be past it:
// then 0, and never a read of the next head's or row's values).
fn v_pair(vb: u32, d: u32) -> vec2<f32> {
    var hi = 0.0;
    if (d + 1u < p.head_dim) { hi = qkv[vb + d + 1u]; }
    return vec2<f32>(qkv[vb + d], hi);
}
