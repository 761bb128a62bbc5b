// Weight-format helpers shared by the ops that read packed weights (matmul, embedding). Appended to
// ops whose source says `override FORMAT`; formats and layout: src/quant.rs (WeightFormat).

const F32: u32 = 0u;
const F16: u32 = 1u;
const Q8: u32 = 2u;
const Q4: u32 = 3u;
const Q4ASYM: u32 = 4u;

// Index of the scales word holding (row, group) flat index i.
fn scale_word(i: u32) -> u32 {
    if (FORMAT == Q4ASYM) { return i; }
    return i >> 1u;
}

// (d, m) of flat index i from its scales word; m = 0 except for Q4Asym (word = (d, m)); Q4/Q8 words
// hold two d's, the even index in the low half.
fn scale_of(word: u32, i: u32) -> vec2<f32> {
    if (FORMAT == Q4ASYM) { return unpack2x16float(word); }
    return vec2<f32>(unpack2x16float(word)[i & 1u], 0.0);
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
