// Activations to int8 blocks for the integer-dot GEMVs (matmul.wgsl, gemv*_q8): each block of 32
// elements of a row of x becomes 32 int8 q = round(x / d) with d = max|x| / 127 (ggml's Q8_0
// rounding), so a weight group's dot product is d · Σ q·w over integers (dot4I8Packed).
// NORM: x is RMS-normed and scaled by norm_w first, so the norm before a projection is this
// kernel (it replaces the rmsnorm dispatch).
// Dispatch: one workgroup of WG invocations per row (rows x_row0.. of x); invocations stride over
// the row's blocks. k is a multiple of 32.
// Output per row r, block b: q[r * k/16 + 2b], q[… + 2b + 1] hold the 32 int8, element 4j + i in
// byte i of word j (words 0..3 in the first vec4); s[r * k/32 + b] = (d, d·Σq over elements 0..15,
// d·Σq over 16..31, 0): the sums serve formats that subtract an offset per half-block (Q4's 8,
// Q6_K's 32 with a scale per 16 elements).

override NORM: bool = false;

const WG: u32 = 64u;

struct Params {
    k: u32,      // elements per row
    rows: u32,   // rows quantized
    x_row0: u32, // first row of x read
    eps: f32,    // NORM
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;       // [x_row0 + rows, k]
@group(0) @binding(2) var<storage, read> norm_w: array<vec4<f32>>;  // NORM: [k]; a stand-in otherwise
@group(0) @binding(3) var<storage, read_write> q: array<vec4<u32>>; // [rows, k / 16]
@group(0) @binding(4) var<storage, read_write> s: array<vec4<f32>>; // [rows, k / 32]

@compute @workgroup_size(WG)
fn act_q8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wid.x;
    let kv = p.k / 4u;
    let xb = (p.x_row0 + row) * kv;
    var rs = 1.0;
    if (NORM) {
        var ss = 0.0;
        for (var i = tid; i < kv; i += WG) {
            let v = x[xb + i];
            ss += dot(v, v);
        }
        rs = inverseSqrt(wg_sum(ss, tid) / f32(p.k) + p.eps);
    }
    let nb = p.k / 32u;
    for (var b = tid; b < nb; b += WG) {
        var v: array<vec4<f32>, 8>;
        var amax = vec4<f32>(0.0);
        for (var j = 0u; j < 8u; j++) {
            var e = x[xb + 8u * b + j];
            if (NORM) { e = e * rs * norm_w[8u * b + j]; }
            v[j] = e;
            amax = max(amax, abs(e));
        }
        let m = max(max(amax.x, amax.y), max(amax.z, amax.w));
        let d = m / 127.0;
        let inv = select(0.0, 127.0 / m, m > 0.0);
        var words: array<u32, 8>;
        var sums = vec2<i32>(0);
        for (var j = 0u; j < 8u; j++) {
            let qi = vec4<i32>(round(v[j] * inv));
            words[j] = pack4xI8(qi);
            sums[j / 4u] += qi.x + qi.y + qi.z + qi.w;
        }
        let o = row * (p.k / 16u) + 2u * b;
        q[o] = vec4<u32>(words[0], words[1], words[2], words[3]);
        q[o + 1u] = vec4<u32>(words[4], words[5], words[6], words[7]);
        s[row * nb + b] = vec4<f32>(d, d * f32(sums.x), d * f32(sums.y), 0.0);
    }
}
