// Matrix product with packed weights: y[m, n] = x[m, k] · Wᵀ (+ bias[n]) (+ y[m, n] when accumulating).
// One dispatch per row chunk of W: its local rows [0, rows) are columns [row0, row0 + rows) of y.
// W layout (FORMAT): src/quant.rs. Each output element is written by one invocation, so the
// accumulate mode may read y where it writes it.
// gemv (m = 1, F32/F16): WG invocations per GEMV_ROWS rows of W, folded into (x, y) by Context::grid; they
//   stride over the rows' 16-byte units (each weight byte read once) and reduce with wg_sum.
// gemv_q (m = 1, Q4/Q4Asym/Q8): as gemv, but invocations stride over the rows' u32 words, so
//   neighbouring invocations read neighbouring words of W and neighbouring vec4s of x (coalesced).
//   Measured on an H100: 2.5× gemv's speed, which strides by 16-byte groups and so touches a cache
//   line of x per invocation per load; staging x in workgroup memory was slower still.
// gemm (m > 1): 256 invocations per TM × TN = 32 × 64 tile of y, dispatched [rows / TN, m / TM]; each
//   k step (TK = one group) dequantizes 64 × 32 of W and 32 × 32 of x into workgroup memory (12 KiB),
//   then each invocation accumulates a 2 × 4 micro-tile (rows ty + 16i, columns tx + 16j). The tiles
//   are `tile`s (src/gpu/shaders.rs): f16 where the device has shader-f16 (Capabilities::f16_gemm),
//   so each product is an f16 multiply of two f16-rounded values, added to an f32 accumulator.
// Layout: x rows start at row x_row0 of the x buffer; y rows are y_stride wide and the product's
// column c lands at y_col0 + c (e.g. q, k, v into one row of a fused buffer).
// RMSNorm (the NORM constant, GEMVs only): the product is with rmsnorm(x) * norm_w; each workgroup
//   stages x * norm_w in workgroup memory (k ≤ NORM_MAX_K) and sums x² itself, and the 1/rms
//   scales the dot products, so the norm needs no dispatch of its own.
// SwiGLU (the SWIGLU constant, GEMVs only): output r is silu(W[r]·x) * (W[r + half]·x), the gate and up
// rows of one stacked matrix, so the MLP's gate, up and SwiGLU are one dispatch; rows = half.

override FORMAT: u32 = 0u; // WeightFormat::shader_code
override SWIGLU: bool = false; // GEMVs: silu(W[r]·x) * (W[r + half]·x), see below
override GELU: bool = false;   // with SWIGLU: tanh-GELU instead of silu (Gemma's GeGLU)
override NORM: bool = false;   // GEMVs: x is RMS-normed first (see norm_prologue)


const WG: u32 = 64u;
const GEMV_ROWS: u32 = 2u; // x is loaded once per unit/word and used for 2 rows

const NORM_MAX_K: u32 = 3072u;

const TM: u32 = 32u;
const TN: u32 = 64u;
const TK: u32 = 32u;

struct Params {
    m: u32,      // rows of x and y
    n: u32,      // columns of y (the whole matrix)
    k: u32,
    rows: u32,   // rows of W in this chunk
    row0: u32,   // first row of this chunk in W
    units: u32,  // vec4<u32> units per W row
    groups: u32, // quantization groups per W row (0 for F16/F32)
    flags: u32,  // bit 0: add bias; bit 1: accumulate into y
    y_stride: u32, // y row width (≥ n)
    y_col0: u32,   // y column of output 0
    x_row0: u32,   // first x row read
    half: u32,     // SwiGLU: up row r + half pairs with gate row r
    eps: f32,      // NORM
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // [m, k]
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;      // [rows, units]
@group(0) @binding(3) var<storage, read> scales: array<u32>;       // Q4/Q8 [rows * groups] f16 pairs; Asym [rows, groups] (d, m); K: side data
@group(0) @binding(4) var<storage, read> bias: array<f32>;         // [n]; a stand-in buffer when flags & 1 == 0
@group(0) @binding(5) var<storage, read_write> y: array<f32>;      // [m, n]
@group(0) @binding(6) var<storage, read> xq: array<vec4<f32>>;     // gemv_q's x: [k / 4] (m = 1)
@group(0) @binding(7) var<storage, read> norm_w: array<f32>;       // NORM: [k]; a stand-in otherwise
@group(0) @binding(8) var<storage, read> xq8: array<vec4<u32>>;    // *_q8 GEMVs: x's int8 blocks [k / 16] (ops::act_q8)
@group(0) @binding(9) var<storage, read> xd8: array<vec4<f32>>;    // *_q8 GEMVs: per block (d, d·Σq lo half, hi half, 0)

var<workgroup> xn_sh: array<vec4<f32>, NORM_MAX_K / 4u>; // NORM: x * norm_w of the GEMV's row

var<workgroup> xs: array<tile, TK * TM>; // [TK, TM]: k-major so the inner loop reads rows side by side
var<workgroup> ws: array<tile, TK * TN>; // [TK, TN]

// (d, m) of group g of local row r (Q4/Q8/Q4Asym/Q8Asym); m = 0 except for the Asym formats.
fn scale(r: u32, g: u32) -> vec2<f32> {
    return group_dm(r * p.groups + g);
}


// x[base + i .. base + i + 4] for F32/F16 rows; zero past k (ragged rows).
fn x4(base: u32, i: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (i + c < p.k) { v[c] = x[base + i + c]; }
    }
    return v;
}

fn epilogue(mrow: u32, r: u32, v: f32) {
    let col = p.row0 + r;
    let i = mrow * p.y_stride + p.y_col0 + col;
    var out = v;
    if ((p.flags & 1u) != 0u) { out += bias[col]; }
    if ((p.flags & 2u) != 0u) { out += y[i]; }
    y[i] = out;
}

// A pipeline constant, not a flag: a runtime branch in the inner loop costs CPU drivers (which
// run invocations as SIMD lanes) the second row's work on every GEMV.
fn swiglu_on() -> bool {
    return SWIGLU;
}

// GEMV row r of a workgroup's GEMV_ROWS: consecutive rows, or with SwiGLU the pair (w, w + half).
fn gemv_row_of(w: u32, r: u32) -> u32 {
    if (swiglu_on()) { return w + r * p.half; }
    return w * GEMV_ROWS + r;
}

// silu(g) * u, or with GELU gelu_tanh(g) * u = g * sigmoid(2z) * u, with exp of -|·| only (as
// shaders/swiglu.wgsl), so no exp overflows.
fn swiglu_of(g: f32, u: f32) -> f32 {
    var a = g;
    if (GELU) { a = 1.5957691216057308 * (g + 0.044715 * g * g * g); }
    let e = exp(-abs(a));
    return g * select(e, 1.0, a >= 0.0) / (1.0 + e) * u;
}

// The end of a workgroup GEMV: totals of its GEMV_ROWS rows, summed over the workgroup.
fn gemv_store(w: u32, acc: array<f32, GEMV_ROWS>, rs: f32, tid: u32) {
    if (swiglu_on()) {
        let g = wg_sum(acc[0], tid) * rs;
        let u = wg_sum(acc[1], tid) * rs;
        if (tid == 0u && w < p.rows) { y[p.y_col0 + p.row0 + w] = swiglu_of(g, u); }
        return;
    }
    for (var r = 0u; r < GEMV_ROWS; r++) {
        let total = wg_sum(acc[r], tid) * rs;
        if (tid == 0u && w * GEMV_ROWS + r < p.rows) { epilogue(0u, w * GEMV_ROWS + r, total); }
    }
}

// Workgroups of a GEMV: GEMV_ROWS rows each, or one output (a row pair) each with SwiGLU.
fn gemv_rows_in(w: u32) -> u32 {
    if (swiglu_on()) { return select(0u, GEMV_ROWS, w < p.rows); }
    return min(GEMV_ROWS, p.rows - min(p.rows, w * GEMV_ROWS));
}

// Unit u of local row r (F32: 4 values, F16: 8) dotted with its x values xa (, xb).
fn unit_dot(r: u32, u: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    let q = w[r * p.units + u];
    if (FORMAT == F32) { return dot(bitcast<vec4<f32>>(q), xa); }
    return dot(f16x4(q.x, q.y), xa) + dot(f16x4(q.z, q.w), xb);
}

// gemv for F32/F16 (ragged k allowed); quantized formats take gemv_q.
@compute @workgroup_size(WG)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let w0 = wid.x + wid.y * nwg.x;
    let nr = gemv_rows_in(w0);
    if (nr == 0u) { return; } // whole workgroup leaves together
    let rs = norm_prologue(tid);
    let xb0 = p.x_row0 * p.k;
    var acc = array<f32, GEMV_ROWS>();
    for (var u = tid; u < p.units; u += WG) {
        var xa: vec4<f32>;
        var xb = vec4<f32>(0.0);
        if (FORMAT == F32) {
            xa = gemv_x4(xb0, 4u * u);
        } else {
            xa = gemv_x4(xb0, 8u * u);
            xb = gemv_x4(xb0, 8u * u + 4u);
        }
        for (var r = 0u; r < nr; r++) {
            acc[r] += unit_dot(gemv_row_of(w0, r), u, xa, xb);
        }
    }
    gemv_store(w0, acc, rs, tid);
}

// Word wi of row `row` (Q4/Q4Asym/Q8) dotted with its x values x_lo (, x_hi); xsum = their sum.
// Q8: word wi holds elements 4wi..4wi+3 of the row. Q4: word j of group g holds elements
// 32g+4j..+3 (low nibbles) and 32g+16+4j..+3 (high nibbles).
// K-quants dequantize the word first (their scales differ within a word for Q6K).
fn word_dot(row: u32, wi: u32, x_lo: vec4<f32>, x_hi: vec4<f32>, xsum: f32) -> f32 {
    let v = w[row * p.units + wi / 4u][wi % 4u];
    if (FORMAT == Q8 || FORMAT == Q8ASYM) {
        let dm = scale(row, wi / 8u);
        return dm.x * dot(i8x4(v), x_lo) + dm.y * xsum;
    }
    if (FORMAT == Q4 || FORMAT == Q4ASYM) {
        let dm = scale(row, wi / 4u);
        let qx = dot(nib_lo(v), x_lo) + dot(nib_hi(v), x_hi);
        if (FORMAT == Q4) {
            return dm.x * (qx - 8.0 * xsum);
        }
        return dm.x * qx + dm.y * xsum;
    }
    let vals = dequant4(v, row * p.groups + wi / 4u, wi % 4u);
    return dot(vals[0], x_lo) + dot(vals[1], x_hi);
}

// x values of word wi: (x_lo, x_hi) — see word_dot; x row at vec4 index base (gemm_row_q).
fn word_x_at(base: u32, wi: u32) -> array<vec4<f32>, 2> {
    if (FORMAT == Q8 || FORMAT == Q8ASYM) {
        return array<vec4<f32>, 2>(xq[base + wi], vec4<f32>(0.0));
    }
    let g = wi / 4u;
    return array<vec4<f32>, 2>(xq[base + 8u * g + wi % 4u], xq[base + 8u * g + 4u + wi % 4u]);
}

// NORM: stage x[x_row0] * norm_w in xn_sh and return the row's 1 / rms (to every invocation);
// 1 without NORM. Call first, from uniform control flow.
fn norm_prologue(tid: u32) -> f32 {
    if (!NORM) { return 1.0; }
    let base = p.x_row0 * p.k;
    var ss = 0.0;
    for (var i = tid; i < (p.k + 3u) / 4u; i += WG) {
        var v = vec4<f32>(0.0);
        var g = vec4<f32>(0.0);
        for (var c = 0u; c < 4u; c++) {
            let e = 4u * i + c;
            if (e < p.k) {
                v[c] = x[base + e];
                g[c] = norm_w[e];
            }
        }
        ss += dot(v, v);
        xn_sh[i] = v * g;
    }
    return inverseSqrt(wg_sum(ss, tid) / f32(p.k) + p.eps);
}

// The x values of word wi for a quantized GEMV: the staged normed row, or x from memory.
fn gemv_x(base: u32, wi: u32) -> array<vec4<f32>, 2> {
    if (!NORM) { return word_x_at(base, wi); }
    if (FORMAT == Q8 || FORMAT == Q8ASYM) {
        return array<vec4<f32>, 2>(xn_sh[wi], vec4<f32>(0.0));
    }
    let g = wi / 4u;
    return array<vec4<f32>, 2>(xn_sh[8u * g + wi % 4u], xn_sh[8u * g + 4u + wi % 4u]);
}

// x[i .. i + 4] (i a multiple of 4) of an F32/F16 GEMV's row at base: staged or from memory.
fn gemv_x4(base: u32, i: u32) -> vec4<f32> {
    if (NORM) { return xn_sh[i / 4u]; }
    return x4(base, i);
}

// The vec4 index where the GEMV's x row starts (x_row0 rows in).
fn gemv_x_base() -> u32 {
    return p.x_row0 * (p.k / 4u);
}

@compute @workgroup_size(WG)
fn gemv_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let w0 = wid.x + wid.y * nwg.x;
    let nr = gemv_rows_in(w0);
    if (nr == 0u) { return; } // whole workgroup leaves together
    let rs = norm_prologue(tid);
    let words = 4u * p.units; // u32 words per W row
    let xb0 = gemv_x_base();
    var acc = array<f32, GEMV_ROWS>();
    // Two words per step, so each invocation has twice the loads in flight.
    for (var wi = tid; wi < words; wi += 2u * WG) {
        let xa = gemv_x(xb0, wi);
        let sa = dot(xa[0] + xa[1], vec4<f32>(1.0));
        let wb = wi + WG;
        let has_b = wb < words;
        var xb = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
        if (has_b) { xb = gemv_x(xb0, wb); }
        let sb = dot(xb[0] + xb[1], vec4<f32>(1.0));
        for (var r = 0u; r < nr; r++) {
            let row = gemv_row_of(w0, r);
            var d = word_dot(row, wi, xa[0], xa[1], sa);
            if (has_b) { d += word_dot(row, wb, xb[0], xb[1], sb); }
            acc[r] += d;
        }
    }
    gemv_store(w0, acc, rs, tid);
}

// gemv_row_q / gemv_row (m = 1 on CPU-emulated GPUs: SwiftShader, lavapipe): one invocation per
// row of W, WG rows per workgroup, no workgroup memory and no barrier. Those drivers run a
// workgroup's invocations as coroutines or loops and pay for every barrier in each of them, so the
// cooperative gemv/gemv_q reduction is many times slower there; real GPUs want the reduction.
@compute @workgroup_size(WG)
fn gemv_row_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
    let rs = norm_prologue(tid); // before any invocation leaves
    let row = (wid.x + wid.y * nwg.x) * WG + tid;
    if (row >= p.rows) { return; }
    let words = 4u * p.units;
    let sw = swiglu_on();
    let xb0 = gemv_x_base();
    var acc = 0.0;
    var up = 0.0;
    if (FORMAT == Q4 || FORMAT == Q4ASYM || FORMAT == Q8 || FORMAT == Q8ASYM) {
        // A whole group (32 weights: one vec4<u32> of nibbles or two of bytes) per step: its
        // scale, x and Σx once.
        for (var g = 0u; g < p.groups; g++) {
            let xs = gemv_x_group(xb0, g);
            var xsum = 0.0;
            if (FORMAT != Q8) {
                let t = (xs[0] + xs[1]) + (xs[2] + xs[3]) + ((xs[4] + xs[5]) + (xs[6] + xs[7]));
                xsum = dot(t, vec4<f32>(1.0));
            }
            acc += group_dot(row, g, xs, xsum);
            if (sw) { up += group_dot(row + p.half, g, xs, xsum); }
        }
        row_store(row, acc * rs, up * rs);
        return;
    }
    for (var wi = 0u; wi < words; wi++) {
        let xa = gemv_x(xb0, wi);
        let xs = dot(xa[0] + xa[1], vec4<f32>(1.0));
        acc += word_dot(row, wi, xa[0], xa[1], xs);
        if (sw) { up += word_dot(row + p.half, wi, xa[0], xa[1], xs); }
    }
    row_store(row, acc * rs, up * rs);
}

// The 32 x values of group g of a Q4/Q8 (and Asym) GEMV: elements 32g + 4j.. of the row in [j].
fn gemv_x_group(base: u32, g: u32) -> array<vec4<f32>, 8> {
    if (NORM) {
        let i = 8u * g;
        return array<vec4<f32>, 8>(xn_sh[i], xn_sh[i + 1u], xn_sh[i + 2u], xn_sh[i + 3u],
                                   xn_sh[i + 4u], xn_sh[i + 5u], xn_sh[i + 6u], xn_sh[i + 7u]);
    }
    let i = base + 8u * g;
    return array<vec4<f32>, 8>(xq[i], xq[i + 1u], xq[i + 2u], xq[i + 3u],
                               xq[i + 4u], xq[i + 5u], xq[i + 6u], xq[i + 7u]);
}

// Group g of row `row` (Q4/Q4Asym/Q8/Q8Asym) dotted with its x values (xsum = their sum, unused
// for Q8): each word unpacked whole (Q4: low nibbles, then high), the scale applied once.
// Q4: d·(q·x − 8·Σx); Asym: d·(q·x) + m·Σx; Q8: d·(q·x).
fn group_dot(row: u32, g: u32, xs: array<vec4<f32>, 8>, xsum: f32) -> f32 {
    var qx: f32;
    if (FORMAT == Q8 || FORMAT == Q8ASYM) {
        let a = w[row * p.units + 2u * g];
        let b = w[row * p.units + 2u * g + 1u];
        qx = (dot(vec4<f32>(unpack4xI8(a.x)), xs[0]) + dot(vec4<f32>(unpack4xI8(a.y)), xs[1]))
           + (dot(vec4<f32>(unpack4xI8(a.z)), xs[2]) + dot(vec4<f32>(unpack4xI8(a.w)), xs[3]))
           + ((dot(vec4<f32>(unpack4xI8(b.x)), xs[4]) + dot(vec4<f32>(unpack4xI8(b.y)), xs[5]))
           + (dot(vec4<f32>(unpack4xI8(b.z)), xs[6]) + dot(vec4<f32>(unpack4xI8(b.w)), xs[7])));
    } else {
        let v = w[row * p.units + g];
        let m = vec4<u32>(0x0F0F0F0Fu);
        let lo = v & m;
        let hi = (v >> vec4<u32>(4u)) & m;
        qx = (dot(vec4<f32>(unpack4xU8(lo.x)), xs[0]) + dot(vec4<f32>(unpack4xU8(hi.x)), xs[4]))
           + (dot(vec4<f32>(unpack4xU8(lo.y)), xs[1]) + dot(vec4<f32>(unpack4xU8(hi.y)), xs[5]))
           + (dot(vec4<f32>(unpack4xU8(lo.z)), xs[2]) + dot(vec4<f32>(unpack4xU8(hi.z)), xs[6]))
           + (dot(vec4<f32>(unpack4xU8(lo.w)), xs[3]) + dot(vec4<f32>(unpack4xU8(hi.w)), xs[7]));
    }
    let dm = scale(row, g);
    if (FORMAT == Q4) { return dm.x * (qx - 8.0 * xsum); }
    if (FORMAT == Q8) { return dm.x * qx; }
    return dm.x * qx + dm.y * xsum;
}

// gemv_row_q8 / gemv_q8: gemv_row_q / gemv_q on int8 activations (ops::act_q8: block b of x is
// d_b · q[32b..32b+32]). A whole weight group per step: its 32 products are 8 dot4I8Packed on
// integers (the 4-bit formats' nibbles and Q6_K's 6-bit quants fit a signed byte), and the scales
// and offsets are applied once per group: Q4: d·(d_b·Σqw − 8·d_b·Σq); Asym and K-quants:
// d·d_b·Σqw + m·d_b·Σq (m < 0 for K-quants); Q6_K per half-group. Formats: q8_format().
// NORM does not apply (act_q8 norms x), nor x_row0 (act_q8 picks the row).

// The integer dot of a 4-bit group's nibble words (elements 4j.. low, 16 + 4j.. high) with x's
// int8 words: a = elements 0..15, b = 16..31, each word j holding elements 4j..4j+3.
fn dot_q4(lo: vec4<u32>, hi: vec4<u32>, a: vec4<u32>, b: vec4<u32>) -> vec2<i32> {
    let l = (dot4I8Packed(lo.x, a.x) + dot4I8Packed(lo.y, a.y)) + (dot4I8Packed(lo.z, a.z) + dot4I8Packed(lo.w, a.w));
    let h = (dot4I8Packed(hi.x, b.x) + dot4I8Packed(hi.y, b.y)) + (dot4I8Packed(hi.z, b.z) + dot4I8Packed(hi.w, b.w));
    return vec2<i32>(l, h);
}

// The low 4 bits of each component, bit i in byte i: t · 0x204081 = t | t << 7 | t << 14 | t << 21
// (the copies do not overlap, so the product has no carries) puts bit i at 8i.
fn spread_bits(v: vec4<u32>) -> vec4<u32> {
    return ((v & vec4<u32>(15u)) * vec4<u32>(0x00204081u)) & vec4<u32>(0x01010101u);
}
// The four 2-bit fields of each component's low byte, one per byte.
fn spread_crumbs(c: vec4<u32>) -> vec4<u32> {
    let b = c & vec4<u32>(255u);
    return (b | (b << vec4<u32>(6u)) | (b << vec4<u32>(12u)) | (b << vec4<u32>(18u))) & vec4<u32>(0x03030303u);
}

// Group g of row `row` dotted with x's block g (int8 words a, b; xs its scale and half sums).
fn group_dot_q8(row: u32, g: u32, a: vec4<u32>, b: vec4<u32>, xs: vec4<f32>) -> f32 {
    if (FORMAT == Q8 || FORMAT == Q8ASYM) {
        let u = w[row * p.units + 2u * g];
        let v = w[row * p.units + 2u * g + 1u];
        let qi = ((dot4I8Packed(u.x, a.x) + dot4I8Packed(u.y, a.y)) + (dot4I8Packed(u.z, a.z) + dot4I8Packed(u.w, a.w)))
               + ((dot4I8Packed(v.x, b.x) + dot4I8Packed(v.y, b.y)) + (dot4I8Packed(v.z, b.z) + dot4I8Packed(v.w, b.w)));
        let dm = scale(row, g);
        if (FORMAT == Q8) { return dm.x * xs.x * f32(qi); }
        return dm.x * xs.x * f32(qi) + dm.y * (xs.y + xs.z);
    }
    let v = w[row * p.units + g];
    let m = vec4<u32>(0x0F0F0F0Fu);
    var lo = v & m;
    var hi = (v >> vec4<u32>(4u)) & m;
    if (FORMAT == Q4 || FORMAT == Q4ASYM) {
        let qi = dot_q4(lo, hi, a, b);
        let dm = scale(row, g);
        if (FORMAT == Q4) { return dm.x * (xs.x * f32(qi.x + qi.y) - 8.0 * (xs.y + xs.z)); }
        return dm.x * xs.x * f32(qi.x + qi.y) + dm.y * (xs.y + xs.z);
    }
    let i = row * p.groups + g;
    let j = i % 8u; // group within its super-block
    if (FORMAT == Q6K) {
        let base = (i / 8u) * 21u;
        let d = unpack2x16float(scales[base]).x;
        let sc = scales[base + 1u + j / 2u];
        // elements 0..15 of the group are sub-block 2j (scale byte 2(j % 2)), 16..31 sub-block 2j + 1
        let s_lo = d * i8_of(sc, 2u * (j % 2u));
        let s_hi = d * i8_of(sc, 2u * (j % 2u) + 1u);
        let sh = vec4<u32>(0u, 8u, 16u, 24u);
        lo |= spread_crumbs(vec4<u32>(scales[base + 5u + 2u * j]) >> sh) << vec4<u32>(4u);
        hi |= spread_crumbs(vec4<u32>(scales[base + 6u + 2u * j]) >> sh) << vec4<u32>(4u);
        let qi = dot_q4(lo, hi, a, b); // quants 0..63 stored; the −32 goes with Σq
        return s_lo * (xs.x * f32(qi.x) - 32.0 * xs.y) + s_hi * (xs.x * f32(qi.y) - 32.0 * xs.z);
    }
    // Q4K, Q5K: value = d·sc·q − dmin·m per group
    let base = (i / 8u) * select(13u, 5u, FORMAT == Q4K);
    let dm = unpack2x16float(scales[base]);
    let d1 = dm.x * u8_of(scales[base + 1u + j / 4u], j % 4u);
    let m1 = dm.y * u8_of(scales[base + 3u + j / 4u], j % 4u);
    if (FORMAT == Q5K) {
        let h = vec4<u32>(scales[base + 5u + j]);
        lo |= spread_bits(h >> vec4<u32>(0u, 4u, 8u, 12u)) << vec4<u32>(4u);
        hi |= spread_bits(h >> vec4<u32>(16u, 20u, 24u, 28u)) << vec4<u32>(4u);
    }
    let qi = dot_q4(lo, hi, a, b);
    return d1 * xs.x * f32(qi.x + qi.y) - m1 * (xs.y + xs.z);
}

@compute @workgroup_size(WG)
fn gemv_row_q8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + tid;
    if (row >= p.rows) { return; }
    let sw = swiglu_on();
    var acc = 0.0;
    var up = 0.0;
    for (var g = 0u; g < p.groups; g++) {
        let a = xq8[2u * g];
        let b = xq8[2u * g + 1u];
        let xs = xd8[g];
        acc += group_dot_q8(row, g, a, b, xs);
        if (sw) { up += group_dot_q8(row + p.half, g, a, b, xs); }
    }
    row_store(row, acc, up);
}

@compute @workgroup_size(WG)
fn gemv_q8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let w0 = wid.x + wid.y * nwg.x;
    let nr = gemv_rows_in(w0);
    if (nr == 0u) { return; } // whole workgroup leaves together
    var acc = array<f32, GEMV_ROWS>();
    // Neighbouring invocations read neighbouring groups of W and blocks of x (coalesced).
    for (var g = tid; g < p.groups; g += WG) {
        let a = xq8[2u * g];
        let b = xq8[2u * g + 1u];
        let xs = xd8[g];
        for (var r = 0u; r < nr; r++) {
            acc[r] += group_dot_q8(gemv_row_of(w0, r), g, a, b, xs);
        }
    }
    gemv_store(w0, acc, 1.0, tid);
}

// One invocation's output row: the epilogue, or with SwiGLU silu(gate) * up.
fn row_store(row: u32, acc: f32, up: f32) {
    if (swiglu_on()) {
        y[p.y_col0 + p.row0 + row] = swiglu_of(acc, up);
    } else {
        epilogue(0u, row, acc);
    }
}

@compute @workgroup_size(WG)
fn gemv_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    let rs = norm_prologue(tid); // before any invocation leaves
    let row = (wid.x + wid.y * nwg.x) * WG + tid;
    if (row >= p.rows) { return; }
    let sw = swiglu_on();
    let xb0 = p.x_row0 * p.k;
    var acc = 0.0;
    var up = 0.0;
    for (var u = 0u; u < p.units; u++) {
        var xa: vec4<f32>;
        var xb = vec4<f32>(0.0);
        if (FORMAT == F32) {
            xa = gemv_x4(xb0, 4u * u);
        } else {
            xa = gemv_x4(xb0, 8u * u);
            xb = gemv_x4(xb0, 8u * u + 4u);
        }
        acc += unit_dot(row, u, xa, xb);
        if (sw) { up += unit_dot(row + p.half, u, xa, xb); }
    }
    row_store(row, acc * rs, up * rs);
}

// gemm_row_q / gemm_row (m > 1 on CPU-emulated GPUs, as gemv_row): one invocation per row of W
// and block of MB rows of x, dispatched [rows / WG, m / MB]; W is read once per block, x from
// memory, and nothing waits on a barrier (the tiled gemm waits on two per k step).
const MB: u32 = 8u;

@compute @workgroup_size(WG)
fn gemm_row_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wid.x * WG + tid;
    let m0 = wid.y * MB;
    if (row >= p.rows) { return; }
    let words = 4u * p.units;
    let kq = p.k / 4u;
    let mb = min(MB, p.m - m0);
    var acc = array<f32, MB>();
    for (var wi = 0u; wi < words; wi++) {
        // Dequantize the word once for the whole block of x rows.
        let v = w[row * p.units + wi / 4u][wi % 4u];
        var vals = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
        if (FORMAT == Q8 || FORMAT == Q8ASYM) {
            vals[0] = dequant8(v, row * p.groups + wi / 8u);
        } else {
            vals = dequant4(v, row * p.groups + wi / 4u, wi % 4u);
        }
        for (var j = 0u; j < mb; j++) {
            let xa = word_x_at((p.x_row0 + m0 + j) * kq, wi);
            acc[j] += dot(vals[0], xa[0]) + dot(vals[1], xa[1]);
        }
    }
    for (var j = 0u; j < mb; j++) { epilogue(m0 + j, row, acc[j]); }
}

@compute @workgroup_size(WG)
fn gemm_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wid.x * WG + tid;
    let m0 = wid.y * MB;
    if (row >= p.rows) { return; }
    let mb = min(MB, p.m - m0);
    var acc = array<f32, MB>();
    for (var u = 0u; u < p.units; u++) {
        for (var j = 0u; j < mb; j++) {
            let base = (p.x_row0 + m0 + j) * p.k;
            if (FORMAT == F32) {
                acc[j] += unit_dot(row, u, x4(base, 4u * u), vec4<f32>(0.0));
            } else {
                acc[j] += unit_dot(row, u, x4(base, 8u * u), x4(base, 8u * u + 4u));
            }
        }
    }
    for (var j = 0u; j < mb; j++) { epilogue(m0 + j, row, acc[j]); }
}

// Dequantize W[n0 + tid/4, step s] into ws: invocation part = tid % 4 writes 8 of the row's 32 values.
fn load_w_tile(n0: u32, s: u32, tid: u32) {
    let row = tid / 4u;
    let part = tid % 4u;
    let r = n0 + row;
    var lo = vec4<f32>(0.0); // values at k offsets klo .. klo + 3 within the step
    var hi = vec4<f32>(0.0); // values at khi .. khi + 3
    var klo = 8u * part;
    var khi = 8u * part + 4u;
    if (r < p.rows) {
        let base = r * p.units;
        if (FORMAT == F32) {
            let u = s * 8u + 2u * part; // ragged k: units past the row are another row's, so skip them
            if (u < p.units) { lo = bitcast<vec4<f32>>(w[base + u]); }
            if (u + 1u < p.units) { hi = bitcast<vec4<f32>>(w[base + u + 1u]); }
        } else if (FORMAT == F16) {
            let u = s * 4u + part;
            if (u < p.units) {
                let q = w[base + u];
                lo = f16x4(q.x, q.y);
                hi = f16x4(q.z, q.w);
            }
        } else if (FORMAT == Q8 || FORMAT == Q8ASYM) {
            let q = w[base + 2u * s + part / 2u];
            let h = (part % 2u) * 2u;
            lo = dequant8(q[h], r * p.groups + s);
            hi = dequant8(q[h + 1u], r * p.groups + s);
        } else {
            let vals = dequant4(w[base + s][part], r * p.groups + s, part);
            lo = vals[0];
            hi = vals[1];
            klo = 4u * part;
            khi = 16u + 4u * part;
        }
    }
    for (var c = 0u; c < 4u; c++) {
        ws[(klo + c) * TN + row] = tile(lo[c]);
        ws[(khi + c) * TN + row] = tile(hi[c]);
    }
}

// x[m0 + tid/8, step s] into xs: 4 consecutive k per invocation, zero past m and k.
fn load_x_tile(m0: u32, s: u32, tid: u32) {
    let row = tid / 8u;
    let kq = (tid % 8u) * 4u;
    let mr = m0 + row;
    for (var c = 0u; c < 4u; c++) {
        let kk = s * TK + kq + c;
        var v = 0.0;
        if (mr < p.m && kk < p.k) { v = x[(p.x_row0 + mr) * p.k + kk]; }
        xs[(kq + c) * TM + row] = tile(v);
    }
}

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let n0 = wid.x * TN;
    let m0 = wid.y * TM;
    let tx = tid % 16u;
    let ty = tid / 16u;
    var acc: array<vec4<f32>, 2>; // acc[i][j]: y row m0 + ty + 16i, W row n0 + tx + 16j
    let steps = (p.k + TK - 1u) / TK;
    for (var s = 0u; s < steps; s++) {
        load_w_tile(n0, s, tid);
        load_x_tile(m0, s, tid);
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let b = vec4<tile>(ws[kk * TN + tx], ws[kk * TN + tx + 16u], ws[kk * TN + tx + 32u], ws[kk * TN + tx + 48u]);
            acc[0] += vec4<f32>(xs[kk * TM + ty] * b);
            acc[1] += vec4<f32>(xs[kk * TM + ty + 16u] * b);
        }
        workgroupBarrier(); // the tiles are overwritten by the next step
    }
    for (var i = 0u; i < 2u; i++) {
        let mrow = m0 + ty + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let r = n0 + tx + 16u * j;
            if (mrow < p.m && r < p.rows) { epilogue(mrow, r, acc[i][j]); }
        }
    }
}
