//! CPU weight formats: packing of hand-checked groups (GGUF nibble order), round-trip error bounds
//! derived from GGUF's rounding rules, K-quant and Q5_1 repacks equal to ggml's dequantization bit
//! for bit, and errors for bad shapes.

mod common;
use common::*;
use half::f16;
use webgpu_llm::quant::kquant::{decode_gguf_block, gguf_block_bytes, repack, SUPER};
use webgpu_llm::quant::{dequantize, quantize, PackedMatrix, QuantError, WeightFormat, GROUP};

/// f16 has an 11-bit significand: a scale rounded to f16 is off by at most 2⁻¹¹ relative.
const F16_REL: f32 = 1.0 / 2048.0;

fn f16_bits(v: f32) -> u32 {
    f16::from_f32(v).to_bits() as u32
}

#[test]
fn q4_group_packs_in_gguf_nibble_order() {
    // q[b] = b and q[16 + b] = 15 − b with d = 1: element 0 (−8) is the largest magnitude, so
    // d = −8 / −8 = 1 and q = x + 8. Byte b = q[b] | q[b + 16] << 4 = b | (15 − b) << 4:
    // bytes F0 E1 D2 C3 | B4 A5 96 87 | …, read as little-endian words.
    let x: Vec<f32> = (0..16).map(|b| b as f32 - 8.0).chain((0..16).map(|b| 7.0 - b as f32)).collect();
    let p = quantize(WeightFormat::Q4, &x, 1, 32).unwrap();
    assert_eq!(p.weights, vec![0xC3D2_E1F0, 0x8796_A5B4, 0x4B5A_6978, 0x0F1E_2D3C]);
    assert_eq!(p.scales, vec![f16_bits(1.0)], "one f16 d in the low half");
    assert_eq!(dequantize(&p).unwrap(), x);
}

#[test]
fn q4asym_group_packs_d_low_m_high() {
    // The same codes with d = 2, m = 1: x = 1 + 2q, min 1, max 31.
    let q: Vec<u32> = (0..16).chain((0..16).map(|b| 15 - b)).collect();
    let x: Vec<f32> = q.iter().map(|&q| 1.0 + 2.0 * q as f32).collect();
    let p = quantize(WeightFormat::Q4Asym, &x, 1, 32).unwrap();
    assert_eq!(p.weights, vec![0xC3D2_E1F0, 0x8796_A5B4, 0x4B5A_6978, 0x0F1E_2D3C]);
    assert_eq!(p.scales, vec![f16_bits(2.0) | f16_bits(1.0) << 16]);
    assert_eq!(dequantize(&p).unwrap(), x);
}

#[test]
fn q8_group_packs_bytes_in_order() {
    // x[0] = −127 sets d = 1; x[e] = e otherwise, so q = x, two's complement bytes.
    let x: Vec<f32> = (0..32).map(|e| if e == 0 { -127.0 } else { e as f32 }).collect();
    let p = quantize(WeightFormat::Q8, &x, 1, 32).unwrap();
    assert_eq!(p.weights.len(), 8);
    assert_eq!(p.weights[0], 0x0302_0181);
    assert_eq!(p.weights[7], 0x1F1E_1D1C);
    assert_eq!(p.scales, vec![f16_bits(1.0)]);
    assert_eq!(dequantize(&p).unwrap(), x);
}

#[test]
fn scales_pack_two_per_word_across_rows() {
    // 3 rows × 1 group: flat indices 0, 1 share word 0; index 2 is alone in word 1 (high half 0).
    let mut x = vec![0.0f32; 3 * 32];
    for (r, d) in [1.0f32, 2.0, 4.0].iter().enumerate() {
        x[r * 32] = -8.0 * d;
    }
    let p = quantize(WeightFormat::Q4, &x, 3, 32).unwrap();
    assert_eq!(p.scales, vec![f16_bits(1.0) | f16_bits(2.0) << 16, f16_bits(4.0)]);
}

#[test]
fn float_rows_are_padded() {
    // F16 k = 3: a row is one vec4<u32> = 8 halves; F32 k = 5: two vec4 = 8 floats.
    let x = [1.0f32, -2.0, 0.5, 3.0, 4.0, 5.0];
    let p = quantize(WeightFormat::F16, &x, 2, 3).unwrap();
    assert_eq!(
        p.weights,
        vec![
            f16_bits(1.0) | f16_bits(-2.0) << 16,
            f16_bits(0.5),
            0,
            0,
            f16_bits(3.0) | f16_bits(4.0) << 16,
            f16_bits(5.0),
            0,
            0
        ]
    );
    assert!(p.scales.is_empty());
    let p = quantize(WeightFormat::F32, &x[..5], 1, 5).unwrap();
    assert_eq!(p.weights.len(), 8);
    assert_eq!(p.weights[4], 4.0f32.to_bits());
    assert_eq!(&p.weights[5..], &[0, 0, 0]);
    assert_eq!(dequantize(&p).unwrap(), &x[..5]);
}

/// Per-group (d, m) as stored (f16 → f32), for the error bounds.
fn group_scales(p: &PackedMatrix, row: usize, g: usize) -> (f32, f32) {
    let i = row * (p.k / GROUP) + g;
    let entry = match p.format {
        WeightFormat::Q4Asym | WeightFormat::Q8Asym => p.scales[i],
        _ => p.scales[i / 2] >> (16 * (i % 2)) & 0xFFFF,
    };
    (f16::from_bits(entry as u16).to_f32(), f16::from_bits((entry >> 16) as u16).to_f32())
}

#[test]
fn round_trip_error_is_within_the_format_bound() {
    let mut rng = Rng::new(seed("quant round trip"));
    let n = 9usize; // odd n: the last scale word is half used
    for format in WeightFormat::ALL {
        let k = if format.is_k_quant() { 512 } else { 320 };
        // normal values with a few outliers, as in real weight rows
        let x: Vec<f32> =
            (0..n * k).map(|_| if rng.below(50) == 0 { rng.normal(1.0) * 8.0 } else { rng.normal(0.05) }).collect();
        let p = quantize(format, &x, n, k).unwrap();
        p.validate().unwrap();
        let y = dequantize(&p).unwrap();
        assert_eq!(y.len(), n * k);
        for (i, (&xv, &yv)) in x.iter().zip(&y).enumerate() {
            let (row, col) = (i / k, i % k);
            let err = (xv - yv).abs();
            // f32 rounding of the value itself (x·id and q·d + m are computed in f32)
            let ulp = 4.0 * f32::EPSILON * xv.abs().max(yv.abs());
            let bound = match format {
                WeightFormat::F32 => 0.0,
                // round to nearest f16: half an ulp, 2⁻¹¹ relative for normals, 2⁻²⁵ for subnormals
                WeightFormat::F16 => xv.abs() * F16_REL + 2f32.powi(-25),
                // |x/d| ≤ 127 rounded to nearest: d/2, plus |q| ≤ 127 times the f16 error of d
                WeightFormat::Q8 => {
                    let d = group_scales(&p, row, col / GROUP).0.abs();
                    d * (0.5 + 128.0 * F16_REL) + ulp
                }
                // x/d + 8 in [0, 16] truncated after +0.5: d/2, except that q = 16 (x = −max) is
                // clamped to 15, an error of d; plus |q − 8| ≤ 8 times the f16 error of d
                WeightFormat::Q4 => {
                    let d = group_scales(&p, row, col / GROUP).0;
                    let clamped = xv / d > 7.5;
                    d.abs() * (if clamped { 1.0 } else { 0.5 } + 9.0 * F16_REL) + ulp
                }
                // (x − min)/d in [0, 15] rounded: d/2, plus q ≤ 15 times d's f16 error and m's own
                WeightFormat::Q4Asym => {
                    let (d, m) = group_scales(&p, row, col / GROUP);
                    d.abs() * (0.5 + 16.0 * F16_REL) + m.abs() * F16_REL + ulp
                }
                // the same with q ≤ 31 (ggml's Q5_1 does not clamp: (max − min)/d + 0.5 ≤ 31.5)
                WeightFormat::Q8Asym => {
                    let (d, m) = group_scales(&p, row, col / GROUP);
                    d.abs() * (0.5 + 32.0 * F16_REL) + m.abs() * F16_REL + ulp
                }
                // our plain K-quant rounding: q to nearest (d₁/2) where d₁ = d·sc is within d/2 of
                // the sub-block's ideal step, so the top quant can clamp by q_max·d/2, and the
                // rounded min (dmin·m) can push the bottom below 0 by dmin/2
                WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K => {
                    let (step, d, dmin, qmax) = k_params(&p, row, col);
                    step.abs() / 2.0 + qmax * d.abs() / 2.0 + dmin / 2.0 + ulp
                }
            };
            assert!(err <= bound, "{format:?} [{row}, {col}]: x = {xv}, got {yv}, |err| {err:e} > {bound:e}");
        }
    }
}

/// (d·sc of the element's sub-block, d, dmin, largest |q|) of a K-quant element, from the side data.
fn k_params(p: &PackedMatrix, row: usize, col: usize) -> (f32, f32, f32, f32) {
    let sw = p.format.side_words();
    let sb = (row * (p.k / SUPER) + col / SUPER) * sw;
    let side = &p.scales[sb..sb + sw];
    let half = |w: u32, hi: bool| f16::from_bits((w >> if hi { 16 } else { 0 }) as u16).to_f32();
    let byte = |w: u32, b: usize| (w >> (8 * b)) as u8;
    if p.format == WeightFormat::Q6K {
        let sub = (col % SUPER) / 16;
        let sc = byte(side[1 + sub / 4], sub % 4) as i8 as f32;
        (half(side[0], false) * sc, half(side[0], false), 0.0, 32.0)
    } else {
        let g = (col % SUPER) / GROUP;
        let sc = byte(side[1 + g / 4], g % 4) as f32;
        let qmax = if p.format == WeightFormat::Q4K { 15.0 } else { 31.0 };
        (half(side[0], false) * sc, half(side[0], false), half(side[0], true), qmax)
    }
}

/// Random GGUF blocks: random quant bits, scales from `scale` (finite f16s of either sign).
fn random_blocks(rng: &mut Rng, count: usize, bytes: usize, f16_at: &[usize]) -> Vec<u8> {
    let mut raw: Vec<u8> = (0..count * bytes).map(|_| rng.below(256) as u8).collect();
    for b in raw.chunks_exact_mut(bytes) {
        for &at in f16_at {
            let v = f16::from_f32(rng.normal(0.01)).to_bits().to_le_bytes();
            b[at..at + 2].copy_from_slice(&v);
        }
    }
    raw
}

#[test]
fn k_quant_repack_equals_ggml_dequantization() {
    let mut rng = Rng::new(seed("kquant repack"));
    let (n, k) = (3usize, 768usize); // 3 super-blocks per row
    for (format, f16_at) in
        [(WeightFormat::Q4K, &[0, 2][..]), (WeightFormat::Q5K, &[0, 2]), (WeightFormat::Q6K, &[208])]
    {
        let bb = gguf_block_bytes(format);
        let raw = random_blocks(&mut rng, n * k / SUPER, bb, f16_at);
        let want: Vec<f32> = raw.chunks_exact(bb).flat_map(|b| decode_gguf_block(format, b)).collect();
        let p = repack(format, n, k, &raw).unwrap();
        p.validate().unwrap();
        let got = dequantize(&p).unwrap();
        let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{format:?}: repacked values differ from ggml's");
        // The quantizer goes through the same GGUF blocks.
        let x: Vec<f32> = (0..n * k).map(|_| rng.normal(0.1)).collect();
        assert_eq!(quantize(format, &x, n, k).unwrap().format, format);
        assert!(repack(format, n, k, &raw[1..]).is_err(), "short input");
    }
}

#[test]
fn q5_1_blocks_hold_five_bit_quants() {
    // q = 31 for element 0 (nibble 15 + fifth bit), q = 16 for element 17 (fifth bit only).
    let mut x = [0.0f32; 32];
    x[0] = 31.0;
    x[17] = 16.0;
    let p = quantize(WeightFormat::Q8Asym, &x, 1, 32).unwrap();
    assert_eq!(p.scales, [f16_bits(1.0)]); // d = 31/31, m = 0
    assert_eq!(p.weights[0] & 0xFF, 31);
    assert_eq!((p.weights[4] >> 8) & 0xFF, 16);
    assert_eq!(dequantize(&p).unwrap(), x);
}

#[test]
fn q4_clamps_only_the_opposite_extreme() {
    // max = 1 (largest magnitude, positive) gives d = −1/8; x = −1 would be q = 16, clamped to 15.
    let mut x = vec![0.0f32; 32];
    x[0] = 1.0;
    x[1] = -1.0;
    let y = dequantize(&quantize(WeightFormat::Q4, &x, 1, 32).unwrap()).unwrap();
    assert_eq!(y[0], 1.0);
    assert_eq!(y[1], -0.875);
}

#[test]
fn zero_groups_stay_zero() {
    for format in WeightFormat::ALL {
        let k = format.block_elems().max(GROUP);
        let p = quantize(format, &vec![0.0; 2 * k], 2, k).unwrap();
        assert!(dequantize(&p).unwrap().iter().all(|&v| v == 0.0), "{format:?}");
    }
}

#[test]
fn bad_shapes_are_errors() {
    for format in WeightFormat::ALL.into_iter().filter(|f| f.is_quantized()) {
        // whole groups but not whole K-quant super-blocks
        let k = if format.is_k_quant() { 288 } else { 48 };
        let err = quantize(format, &vec![0.0; 2 * k], 2, k).unwrap_err();
        assert!(matches!(err, QuantError::KNotMultipleOfBlock { .. }), "{err}");
        assert!(err.to_string().contains(&format!("k = {k}")), "{err}");
    }
    for format in WeightFormat::ALL {
        let k = format.block_elems().max(GROUP);
        let err = quantize(format, &vec![0.0; 2 * k - 1], 2, k).unwrap_err();
        assert!(matches!(err, QuantError::Length { got, .. } if got == 2 * k - 1), "{format:?}: {err}");
        assert!(matches!(quantize(format, &[], 0, k), Err(QuantError::Empty { .. })));
    }
    // F16/F32 take any k
    assert!(quantize(WeightFormat::F16, &[0.0; 2 * 67], 2, 67).is_ok());
    // a packed matrix whose buffers do not match its shape
    let mut p = quantize(WeightFormat::Q4, &[0.5; 64], 1, 64).unwrap();
    p.scales.push(0);
    assert!(matches!(p.validate(), Err(QuantError::PackedLength { what: "scale", .. })));
    assert!(dequantize(&p).is_err());
    p.scales.pop();
    p.k = 96;
    assert!(matches!(dequantize(&p), Err(QuantError::PackedLength { what: "weight", .. })));
}

#[test]
fn byte_sizes() {
    let k = 96;
    assert_eq!(WeightFormat::Q4.weight_row_bytes(k), 3 * 16);
    assert_eq!(WeightFormat::Q4Asym.weight_row_bytes(k), 3 * 16);
    assert_eq!(WeightFormat::Q8.weight_row_bytes(k), 3 * 32);
    assert_eq!(WeightFormat::F16.weight_row_bytes(67), 9 * 16);
    assert_eq!(WeightFormat::F32.weight_row_bytes(67), 17 * 16);
    assert_eq!(WeightFormat::Q4.scale_bytes(3, k), 5 * 4, "9 f16 → 5 words");
    assert_eq!(WeightFormat::Q4Asym.scale_bytes(3, k), 9 * 4);
    assert_eq!(WeightFormat::F16.scale_bytes(3, 64), 0);
    assert_eq!(WeightFormat::Q8Asym.weight_row_bytes(k), 3 * 32);
    assert_eq!(WeightFormat::Q8Asym.scale_bytes(3, k), 9 * 4);
    // K-quants: 4 bits per element plus side words per super-block (Q4_K's 144 bytes → 128 + 20)
    for (format, words) in [(WeightFormat::Q4K, 5), (WeightFormat::Q5K, 13), (WeightFormat::Q6K, 21)] {
        assert_eq!(format.weight_row_bytes(512), 256);
        assert_eq!(format.scale_bytes(3, 512), 3 * 2 * words * 4);
    }
}
