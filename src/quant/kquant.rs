//! GGUF's K-quants (Q4_K, Q5_K, Q6_K): 256-element super-blocks, repacked into our layout without
//! changing a value, plus a simple quantizer (tests, synthetic models) and the scalar dequantization
//! the shaders are tested against.
//!
//! Our layout (`shaders/lib/dequant.wgsl` reads it):
//! - quants: the low 4 bits of every element in the Q4 layout (per 32-element group 16 bytes, byte b
//!   holds element b in its low nibble and element b + 16 in its high nibble), a permutation of the
//!   GGUF nibbles;
//! - side data, [`WeightFormat::side_words`] u32 words per super-block, in the "scales" buffer:
//!   - Q4K: `d | dmin << 16` (f16 bits), the 8 six-bit sub-block scales as bytes (2 words), the 8
//!     six-bit mins as bytes (2 words); value = (d·sc)·q − dmin·m;
//!   - Q5K: Q4K's 5 words, then one word per group whose bit e is element e's fifth bit;
//!     value = (d·sc)·(q + 16h) − dmin·m;
//!   - Q6K: d (f16 bits, low half), the 16 int8 scales of 16-element sub-blocks as bytes (4 words),
//!     then two words per group: bits 2e, 2e+1 of word e / 16 hold element e's top two bits;
//!     value = (d·sc)·(q + 16h − 32).
//!
//! Every product above is exact in f32 (an f16 times a 6- or 8-bit integer has ≤ 19 significant
//! bits, times a ≤ 6-bit quant ≤ 24), so values equal ggml's `dequantize_row_q*_K` bit for bit on
//! any device, fused multiply-add or not; Q4K/Q5K round once, in the subtraction, as ggml does.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{PackedMatrix, QuantError, WeightFormat, GROUP};

/// Elements per super-block (ggml's QK_K).
pub const SUPER: usize = 256;
/// Groups of [`GROUP`] per super-block.
const GROUPS: usize = SUPER / GROUP;

/// ggml-common.h `block_q4_K`: value = (d·sc)·q − dmin·m, with sub-block j's 6-bit (sc, m)
/// packed in `scales` (see [`scale_min_k4`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ4K {
    /// f16 bits.
    pub d: u16,
    /// f16 bits.
    pub dmin: u16,
    pub scales: [u8; 12],
    /// Byte 32c + l: element 64c + l in the low nibble, element 64c + 32 + l in the high one.
    pub qs: [u8; 128],
}

/// `block_q5_K`: Q4_K's fields, plus the fifth bit of element e in bit e / 32 of `qh[e % 32]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

/// `block_q6_K`: value = (d·sc)·(q − 32), q's low 4 bits in `ql`, its top 2 in `qh`, one int8
/// scale per 16 elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    /// f16 bits.
    pub d: u16,
}

// The sizes of ggml's static_asserts in ggml-common.h, so a block is its bytes in the file.
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
// Blocks are read from file bytes in native order, and GGUF is little-endian.
const _: () = assert!(cfg!(target_endian = "little"));

/// Bytes of one GGUF super-block: block_q4_K, block_q5_K, block_q6_K.
pub fn gguf_block_bytes(format: WeightFormat) -> usize {
    match format {
        WeightFormat::Q4K => std::mem::size_of::<BlockQ4K>(),
        WeightFormat::Q5K => std::mem::size_of::<BlockQ5K>(),
        WeightFormat::Q6K => std::mem::size_of::<BlockQ6K>(),
        _ => 0,
    }
}

/// One GGUF super-block of any of the three formats.
enum SuperBlock {
    Q4K(BlockQ4K),
    Q5K(BlockQ5K),
    Q6K(BlockQ6K),
}

impl SuperBlock {
    /// The block of `format` in `b` (exactly [`gguf_block_bytes`] long).
    fn read(format: WeightFormat, b: &[u8]) -> Self {
        match format {
            WeightFormat::Q4K => SuperBlock::Q4K(bytemuck::pod_read_unaligned(b)),
            WeightFormat::Q5K => SuperBlock::Q5K(bytemuck::pod_read_unaligned(b)),
            WeightFormat::Q6K => SuperBlock::Q6K(bytemuck::pod_read_unaligned(b)),
            _ => unreachable!("not a K-quant"),
        }
    }

    /// The 256 quants (0..=15, 0..=31 or 0..=63), in element order.
    fn quants(&self) -> [u8; SUPER] {
        let mut q = [0u8; SUPER];
        match self {
            SuperBlock::Q4K(BlockQ4K { qs, .. }) => q4k_quants(qs, None, &mut q),
            SuperBlock::Q5K(BlockQ5K { qs, qh, .. }) => q4k_quants(qs, Some(qh), &mut q),
            SuperBlock::Q6K(BlockQ6K { ql, qh, .. }) => {
                for (e, v) in q.iter_mut().enumerate() {
                    let (h, a, l) = (e / 128, (e / 32) % 4, e % 32);
                    let byte = ql[64 * h + l + 32 * (a % 2)];
                    let lo = if a < 2 { byte & 0xF } else { byte >> 4 };
                    *v = lo | ((qh[32 * h + l] >> (2 * a)) & 3) << 4;
                }
            }
        }
        q
    }
}

/// Q4_K's (and with `qh`, Q5_K's) quants in element order.
fn q4k_quants(qs: &[u8; 128], qh: Option<&[u8; 32]>, q: &mut [u8; SUPER]) {
    for (e, v) in q.iter_mut().enumerate() {
        let (c, half, l) = (e / 64, (e / 32) % 2, e % 32);
        let byte = qs[32 * c + l];
        *v = if half == 0 { byte & 0xF } else { byte >> 4 };
        if let Some(qh) = qh {
            *v |= ((qh[l] >> (e / 32)) & 1) << 4;
        }
    }
}

fn f32_of(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

fn word(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// ggml's `get_scale_min_k4`: sub-block j's 6-bit (scale, min) from the 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// ggml's `dequantize_row_q{4,5,6}_K` of one GGUF super-block (the reference our repack must equal).
pub fn decode_gguf_block(format: WeightFormat, b: &[u8]) -> [f32; SUPER] {
    let block = SuperBlock::read(format, b);
    let q = block.quants();
    let mut out = [0.0f32; SUPER];
    match block {
        SuperBlock::Q4K(BlockQ4K { d, dmin, scales, .. }) | SuperBlock::Q5K(BlockQ5K { d, dmin, scales, .. }) => {
            let (d, dmin) = (f32_of(d), f32_of(dmin));
            for (e, o) in out.iter_mut().enumerate() {
                let (sc, m) = scale_min_k4(e / 32, &scales);
                *o = (d * sc as f32) * q[e] as f32 - dmin * m as f32;
            }
        }
        SuperBlock::Q6K(BlockQ6K { d, scales, .. }) => {
            let d = f32_of(d);
            for (e, o) in out.iter_mut().enumerate() {
                let sc = scales[e / 16];
                *o = (d * sc as f32) * (q[e] as i32 - 32) as f32;
            }
        }
    }
    out
}

/// Repack row-major GGUF super-blocks of an `n` × `k` matrix into our layout.
pub fn repack(format: WeightFormat, n: usize, k: usize, raw: &[u8]) -> Result<PackedMatrix, QuantError> {
    format.check_shape(n, k)?;
    let bb = gguf_block_bytes(format);
    let blocks = n * (k / SUPER);
    if bb == 0 || raw.len() != blocks * bb {
        return Err(QuantError::Length { n, k, expected: blocks * SUPER, got: raw.len() / bb.max(1) * SUPER });
    }
    let mut weights = Vec::with_capacity(n * format.units_per_row(k) * 4);
    let mut scales = Vec::with_capacity(blocks * format.side_words());
    for b in raw.chunks_exact(bb) {
        let block = SuperBlock::read(format, b);
        let q = block.quants();
        for g in q.chunks_exact(GROUP) {
            for w in 0..4 {
                let byte = |i: usize| (g[4 * w + i] & 0xF) | (g[16 + 4 * w + i] & 0xF) << 4;
                weights.push(u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]));
            }
        }
        match block {
            SuperBlock::Q4K(BlockQ4K { d, dmin, scales: packed, .. })
            | SuperBlock::Q5K(BlockQ5K { d, dmin, scales: packed, .. }) => {
                scales.push(d as u32 | (dmin as u32) << 16);
                let sm: Vec<(u8, u8)> = (0..GROUPS).map(|j| scale_min_k4(j, &packed)).collect();
                let sc: Vec<u8> = sm.iter().map(|p| p.0).collect();
                let mn: Vec<u8> = sm.iter().map(|p| p.1).collect();
                scales.extend([word(&sc[0..4]), word(&sc[4..8]), word(&mn[0..4]), word(&mn[4..8])]);
                if format == WeightFormat::Q5K {
                    for g in q.chunks_exact(GROUP) {
                        scales.push(g.iter().enumerate().fold(0u32, |acc, (e, &v)| acc | ((v as u32 >> 4) & 1) << e));
                    }
                }
            }
            SuperBlock::Q6K(BlockQ6K { d, scales: sc, .. }) => {
                scales.push(d as u32);
                scales.extend(bytemuck::cast_slice::<i8, u8>(&sc).chunks_exact(4).map(word));
                for g in q.chunks_exact(GROUP) {
                    for half in g.chunks_exact(16) {
                        scales
                            .push(half.iter().enumerate().fold(0u32, |acc, (e, &v)| acc | (v as u32 >> 4) << (2 * e)));
                    }
                }
            }
        }
    }
    Ok(PackedMatrix { format, n, k, weights, scales })
}

/// Group `g` (0..8) of a super-block in our layout: its 4 quant words and the super-block's side
/// words, dequantized as the shaders do.
pub fn decode_group(format: WeightFormat, quant: &[u32], side: &[u32], g: usize) -> [f32; GROUP] {
    let byte = |w: u32, i: usize| (w >> (8 * i)) as u8;
    let mut q = [0u32; GROUP];
    for (b, w) in quant.iter().enumerate().flat_map(|(j, w)| (0..4).map(move |i| (4 * j + i, byte(*w, i)))) {
        q[b] = (w & 0xF) as u32;
        q[b + 16] = (w >> 4) as u32;
    }
    let mut out = [0.0f32; GROUP];
    match format {
        WeightFormat::Q4K | WeightFormat::Q5K => {
            let (d, dmin) = (f32_of(side[0] as u16), f32_of((side[0] >> 16) as u16));
            let sc = byte(side[1 + g / 4], g % 4) as f32;
            let m = byte(side[3 + g / 4], g % 4) as f32;
            let high = if format == WeightFormat::Q5K { side[5 + g] } else { 0 };
            for (e, o) in out.iter_mut().enumerate() {
                *o = (d * sc) * (q[e] + 16 * ((high >> e) & 1)) as f32 - dmin * m;
            }
        }
        _ => {
            let d = f32_of(side[0] as u16);
            for (e, o) in out.iter_mut().enumerate() {
                let sub = 2 * g + e / 16;
                let sc = byte(side[1 + sub / 4], sub % 4) as i8 as f32;
                let high = (side[5 + 2 * g + e / 16] >> (2 * (e % 16))) & 3;
                *o = (d * sc) * ((q[e] + 16 * high) as i32 - 32) as f32;
            }
        }
    }
    out
}

/// A GGUF super-block for 256 values, by plain rounding (not ggml's iterative scale search: good
/// enough for tests and synthetic models; real K-quant files come from llama.cpp).
pub fn quantize_gguf_block(format: WeightFormat, x: &[f32]) -> Vec<u8> {
    match format {
        WeightFormat::Q4K | WeightFormat::Q5K => {
            let qmax = if format == WeightFormat::Q4K { 15.0 } else { 31.0 };
            let subs: Vec<(f32, f32)> = x
                .chunks_exact(GROUP)
                .map(|s| {
                    let lo = s.iter().fold(0.0f32, |a, &v| a.min(v));
                    let hi = s.iter().fold(0.0f32, |a, &v| a.max(v));
                    ((hi - lo) / qmax, -lo)
                })
                .collect();
            let d = f16::from_f32(subs.iter().fold(0.0f32, |a, s| a.max(s.0)) / 63.0);
            let dmin = f16::from_f32(subs.iter().fold(0.0f32, |a, s| a.max(s.1)) / 63.0);
            let six = |v: f32, unit: f16| {
                if unit.to_f32() > 0.0 {
                    (v / unit.to_f32()).round().clamp(0.0, 63.0) as u8
                } else {
                    0
                }
            };
            let sm: Vec<(u8, u8)> = subs.iter().map(|&(s, m)| (six(s, d), six(m, dmin))).collect();
            // ggml's 12-byte packing (the inverse of get_scale_min_k4).
            let mut sc = [0u8; 12];
            for (j, &(s, m)) in sm.iter().enumerate() {
                if j < 4 {
                    sc[j] = s;
                    sc[j + 4] = m;
                } else {
                    sc[j + 4] = (s & 0xF) | (m & 0xF) << 4;
                    sc[j - 4] |= (s >> 4) << 6;
                    sc[j] |= (m >> 4) << 6;
                }
            }
            let (mut qs, mut qh) = ([0u8; 128], [0u8; 32]);
            for (e, &v) in x.iter().enumerate() {
                let (s, m) = sm[e / 32];
                let (d1, m1) = (d.to_f32() * s as f32, dmin.to_f32() * m as f32);
                let q = if d1 > 0.0 { ((v + m1) / d1).round().clamp(0.0, qmax) as u8 } else { 0 };
                let (c, half, l) = (e / 64, (e / 32) % 2, e % 32);
                qs[32 * c + l] |= (q & 0xF) << (4 * half);
                qh[l] |= (q >> 4) << (e / 32);
            }
            let (d, dmin) = (d.to_bits(), dmin.to_bits());
            if format == WeightFormat::Q4K {
                bytemuck::bytes_of(&BlockQ4K { d, dmin, scales: sc, qs }).to_vec()
            } else {
                bytemuck::bytes_of(&BlockQ5K { d, dmin, scales: sc, qh, qs }).to_vec()
            }
        }
        _ => {
            let subs: Vec<f32> = x
                .chunks_exact(16)
                .map(|s| s.iter().fold(0.0f32, |a, &v| if v.abs() > a.abs() { v } else { a }) / 31.0)
                .collect();
            let d = f16::from_f32(subs.iter().fold(0.0f32, |a, s| a.max(s.abs())) / 127.0);
            let mut b = BlockQ6K::zeroed();
            for (o, &s) in b.scales.iter_mut().zip(&subs) {
                *o = if d.to_f32() > 0.0 { (s / d.to_f32()).round().clamp(-127.0, 127.0) as i8 } else { 0 };
            }
            for (e, &v) in x.iter().enumerate() {
                let s = d.to_f32() * b.scales[e / 16] as f32;
                let q = if s != 0.0 { ((v / s).round().clamp(-32.0, 31.0) as i32 + 32) as u8 } else { 32 };
                let (h, a, l) = (e / 128, (e / 32) % 4, e % 32);
                b.ql[64 * h + l + 32 * (a % 2)] |= (q & 0xF) << (4 * (a / 2));
                b.qh[32 * h + l] |= (q >> 4) << (2 * a);
            }
            b.d = d.to_bits();
            bytemuck::bytes_of(&b).to_vec()
        }
    }
}

/// Store `data` (`n` × `k`, row-major, k a multiple of 256) as GGUF super-blocks, then repack.
pub fn quantize(format: WeightFormat, data: &[f32], n: usize, k: usize) -> Result<PackedMatrix, QuantError> {
    let raw: Vec<u8> = data.chunks_exact(SUPER).flat_map(|s| quantize_gguf_block(format, s)).collect();
    repack(format, n, k, &raw)
}
