// Weight-format helpers shared by the ops that read packed weights (matmul, embedding). Appended to
// ops whose source says `override FORMAT` and declares `scales: array<u32>`; formats and layout:
// src/quant/mod.rs (WeightFormat) and src/quant/kquant.rs (the K-quants' side data).

const F32: u32 = 0u;
const F16: u32 = 1u;
const Q8: u32 = 2u;
const Q4: u32 = 3u;
const Q4ASYM: u32 = 4u;
const Q8ASYM: u32 = 5u;
const Q4K: u32 = 6u;
const Q5K: u32 = 7u;
const Q6K: u32 = 8u;

// (d, m) of flat (row, group) index i for Q4/Q8/Q4Asym/Q8Asym: m = 0 except for the Asym formats
// (one word (d, m) per group); Q4/Q8 words hold two d's, the even index in the low half.
fn group_dm(i: u32) -> vec2<f32> {
    if (FORMAT == Q4ASYM || FORMAT == Q8ASYM) { return unpack2x16float(scales[i]); }
    return vec2<f32>(unpack2x16float(scales[i >> 1u])[i & 1u], 0.0);
}

// Bytes 0..3 of v: low nibbles are elements 4j..4j+3 of a group, high nibbles elements 16+4j.. (GGUF order).
fn nib_lo(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u));
}
fn nib_hi(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u));
}
// Four signed bytes, sign-extended by shifting each to the top and back (arithmetic shift).
fn i8x4(v: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(v) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
// Four f16 from two words, the low half first.
fn f16x4(a: u32, b: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(a), unpack2x16float(b));
}
// Byte b of v, unsigned and signed.
fn u8_of(v: u32, b: u32) -> f32 {
    return f32((v >> (8u * b)) & 255u);
}
fn i8_of(v: u32, b: u32) -> f32 {
    return f32(bitcast<i32>(v << (24u - 8u * b)) >> 24u);
}
// Bits s, s+1, s+2, s+3 of v (one per element), and 2-bit fields at s, s+2, s+4, s+6.
fn bits4(v: u32, s: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v >> s) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u));
}
fn crumbs4(v: u32, s: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v >> s) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u));
}

// Values of word j (0..3) of group i (flat (row, group) index) of a four_bit() format: elements
// 4j..4j+3 ([0]) and 16+4j..16+4j+3 ([1]) of the group, exactly as src/quant dequantizes them.
fn dequant4(v: u32, i: u32, j: u32) -> array<vec4<f32>, 2> {
    var lo = nib_lo(v);
    var hi = nib_hi(v);
    if (FORMAT == Q4) {
        let d = group_dm(i).x;
        return array<vec4<f32>, 2>((lo - 8.0) * d, (hi - 8.0) * d);
    }
    if (FORMAT == Q4ASYM) {
        let dm = group_dm(i);
        return array<vec4<f32>, 2>(lo * dm.x + dm.y, hi * dm.x + dm.y);
    }
    let g = i % 8u; // group within its super-block (k is a multiple of 256)
    if (FORMAT == Q6K) {
        let base = (i / 8u) * 21u;
        let d = unpack2x16float(scales[base]).x;
        // elements 0..15 of the group are sub-block 2g, 16..31 sub-block 2g + 1
        let s_lo = d * i8_of(scales[base + 1u + g / 2u], 2u * (g % 2u));
        let s_hi = d * i8_of(scales[base + 1u + g / 2u], 2u * (g % 2u) + 1u);
        lo += 16.0 * crumbs4(scales[base + 5u + 2u * g], 8u * j);
        hi += 16.0 * crumbs4(scales[base + 6u + 2u * g], 8u * j);
        return array<vec4<f32>, 2>(s_lo * (lo - 32.0), s_hi * (hi - 32.0));
    }
    // Q4K, Q5K
    let base = (i / 8u) * select(13u, 5u, FORMAT == Q4K);
    let dm = unpack2x16float(scales[base]);
    let d1 = dm.x * u8_of(scales[base + 1u + g / 4u], g % 4u);
    let m1 = dm.y * u8_of(scales[base + 3u + g / 4u], g % 4u);
    if (FORMAT == Q5K) {
        let h = scales[base + 5u + g];
        lo += 16.0 * bits4(h, 4u * j);
        hi += 16.0 * bits4(h, 16u + 4u * j);
    }
    return array<vec4<f32>, 2>(d1 * lo - m1, d1 * hi - m1);
}

// Values of word wi (elements 4wi..4wi+3 of a row) of Q8/Q8Asym with group index i.
fn dequant8(v: u32, i: u32) -> vec4<f32> {
    let dm = group_dm(i);
    return i8x4(v) * dm.x + dm.y;
}
