//! matmul (GEMV for m = 1, tiled GEMM for m > 1) in every weight format vs an f64 CPU reference
//! computed over `dequantize(W)`, so quantization error is not counted as kernel error.
//!
//! Tolerance: the kernels form the same products of exactly the dequantized values (every q·d is
//! exact in f32; Q4Asym's GEMV sums d·Σq·x and m·Σx separately), accumulated in f32. Each output is a
//! sum of at most k products and ≤ 4 further operations (scale, m-term, bias, y), so the classic bound
//! for floating-point sums gives |err| ≤ (k + 8)·2⁻²⁴·S, with S the sum of the magnitudes of all
//! terms: Σ|x|·(|w| + 2|m|) + |bias| + |y₀| (|q·d| ≤ |w| + |m| covers Q4Asym's split; m = 0 otherwise).
//! The bound holds for any summation order (subgroup, tree, sequential) and is still ~10× tighter
//! than a single wrong term at k = 1184 (a wrong element shifts an output by ~S/k).

mod common;
use common::*;
use std::sync::OnceLock;
use webgpu_llm::ops::act_q8::{act_q8, ActQ8};
use webgpu_llm::ops::matmul::{
    chunk_byte_ranges, chunk_rows, matmul, matmul_q8, matmul_swiglu, matmul_swiglu_q8, q8_format, Epilogue, Norm,
    QuantMatrix, NORM_MAX_K,
};
use webgpu_llm::ops::rmsnorm::rms_norm;
use webgpu_llm::ops::swiglu::{swiglu, Act};
use webgpu_llm::quant::{dequantize, group_offset, quantize, PackedMatrix, WeightFormat, GROUP};
use webgpu_llm::{Context, ContextOptions, GpuError};

/// A binding limit that splits the test matrices (n = 257) into ≥ 3 chunks in every format.
const SPLIT_BYTES: u64 = 4096;

fn ctx_split() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::new_blocking(ContextOptions { max_binding_bytes: Some(SPLIT_BYTES), ..Default::default() })
            .expect("a GPU adapter")
    })
}

/// The tiled GEMM (as on discrete GPUs) with every feature the device offers: f16 tiles where it
/// has shader-f16 (lavapipe does).
fn ctx_tiled() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::new_blocking(ContextOptions { row_gemv: Some(false), ..Default::default() }).expect("a GPU adapter")
    })
}

/// Inner sizes: whole blocks for quantized formats (1 and 5 super-blocks for K-quants, an odd
/// number of groups otherwise), ragged for F16/F32.
fn ks(format: WeightFormat) -> [usize; 2] {
    if format.is_k_quant() {
        [256, 1280]
    } else if format.is_quantized() {
        [96, 1184]
    } else {
        [67, 1001]
    }
}

/// The additive per-group term (m, −dmin·m; 0 for other formats), for the error scale.
fn group_m(p: &PackedMatrix, row: usize, g: usize) -> f64 {
    group_offset(p, row, g) as f64
}

struct Case {
    format: WeightFormat,
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    accumulate: bool,
}

fn run_case(ctx: &Context, name: &str, rng: &mut Rng, c: &Case) -> usize {
    let Case { format, m, n, k, bias, accumulate } = *c;
    let what = format!("{name} {format:?} m={m} n={n} k={k} bias={bias} acc={accumulate}");
    let f16 = m > 1 && ctx.variants().gemm == "tiled-f16";
    let wf: Vec<f32> = (0..n * k).map(|_| rng.normal(0.5)).collect();
    let packed = quantize(format, &wf, n, k).unwrap();
    let w = dequantize(&packed).unwrap();
    let x = rng.vec(m * k, 1.0);
    let b = if bias { rng.vec(n, 1.0) } else { Vec::new() };
    // Without accumulate y starts as NaN, so an element the kernel skips fails the test.
    let y0 = if accumulate { rng.vec(m * n, 1.0) } else { vec![f32::NAN; m * n] };

    let mut want = vec![0.0f64; m * n];
    let mut tol = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut mag) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let (xv, wv) = (x[i * k + kk] as f64, w[j * k + kk] as f64);
                sum += xv * wv;
                mag += xv.abs() * (wv.abs() + 2.0 * group_m(&packed, j, kk / GROUP).abs());
            }
            if bias {
                sum += b[j] as f64;
                mag += (b[j] as f64).abs();
            }
            if accumulate {
                sum += y0[i * n + j] as f64;
                mag += (y0[i * n + j] as f64).abs();
            }
            want[i * n + j] = sum;
            tol[i * n + j] = (k + 8) as f64 * 2f64.powi(-24) * mag;
            if f16 {
                // x, w and their product each rounded to f16 (3 half-ulps of |x·w|), and f16's
                // subnormals below 2^-14 (an absolute 2^-25 per rounding, 3 per term)
                tol[i * n + j] += 3.0 * 2f64.powi(-11) * mag + 3.0 * k as f64 * 2f64.powi(-25);
            }
        }
    }

    let wm = QuantMatrix::upload(ctx, "w", &packed).unwrap();
    let xb = upload_f32(ctx, &x);
    let yb = upload_f32(ctx, &y0);
    let bb = bias.then(|| upload_f32(ctx, &b));
    let kernels =
        matmul(ctx, &xb, &wm, &yb, m as u32, Epilogue { bias: bb.as_ref(), accumulate, ..Default::default() }).unwrap();
    assert_eq!(kernels.len(), wm.chunks.len());
    ctx.run(&kernels.iter().collect::<Vec<_>>());
    let got = read_f32(ctx, &yb, m * n);
    assert_within(&what, &got, &want, &tol);
    wm.chunks.len()
}

/// |got − want| ≤ tol element-wise; the message names the worst element.
fn assert_within(what: &str, got: &[f32], want: &[f64], tol: &[f64]) {
    let mut worst = (0usize, f64::NEG_INFINITY);
    for (i, ((&g, &w), &t)) in got.iter().zip(want).zip(tol).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g} (want {w})");
        let ratio = (g as f64 - w).abs() / t.max(f64::MIN_POSITIVE);
        if ratio > worst.1 {
            worst = (i, ratio);
        }
    }
    let (i, ratio) = worst;
    assert!(
        ratio <= 1.0,
        "{what}: element {i} = {} but want {} (|diff| {:.3e} > tol {:.3e})",
        got[i],
        want[i],
        (got[i] as f64 - want[i]).abs(),
        tol[i]
    );
}

// (m, n, index into ks): every m with several n, both k; m = 1 is the GEMV path.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 0),
    (1, 67, 1),
    (1, 257, 0),
    (1, 1000, 1),
    (3, 67, 0),
    (3, 1000, 1),
    (7, 1, 1),
    (7, 257, 0),
    (33, 257, 1),
    (33, 1000, 0),
    (129, 67, 1),
    (129, 1000, 0),
];

#[test]
fn matmul_matches_reference() {
    let mut rng = Rng::new(seed("matmul"));
    for (name, ctx) in contexts() {
        for format in WeightFormat::ALL {
            for (i, &(m, n, ki)) in SHAPES.iter().enumerate() {
                // bias on odd cases, accumulate on every third: both epilogues (and both together)
                // reach GEMV and GEMM
                let case = Case { format, m, n, k: ks(format)[ki], bias: i % 2 == 1, accumulate: i % 3 == 2 };
                run_case(ctx, name, &mut rng, &case);
            }
        }
    }
}

#[test]
fn f16_tiled_gemm_matches_reference() {
    let ctx = ctx_tiled();
    if !ctx.caps.shader_f16 {
        eprintln!("skipped: {} has no shader-f16", ctx.describe());
        return;
    }
    assert_eq!(ctx.variants().gemm, "tiled-f16");
    let mut rng = Rng::new(seed("matmul f16 gemm"));
    for format in WeightFormat::ALL {
        for (i, &(m, n, ki)) in SHAPES.iter().enumerate().filter(|(_, s)| s.0 > 1) {
            let case = Case { format, m, n, k: ks(format)[ki], bias: i % 2 == 1, accumulate: i % 3 == 2 };
            run_case(ctx, "f16 tiles", &mut rng, &case);
        }
    }
}

#[test]
fn split_matrix_matches_reference() {
    let mut rng = Rng::new(seed("matmul split"));
    let ctx = ctx_split();
    for format in WeightFormat::ALL {
        for (m, bias, accumulate) in [(1, true, false), (33, false, true), (3, true, true)] {
            let case = Case { format, m, n: 257, k: ks(format)[0], bias, accumulate };
            let chunks = run_case(ctx, "split", &mut rng, &case);
            assert!(chunks >= 3, "{format:?}: {chunks} chunks");
        }
    }
}

#[test]
fn gemv_folds_the_grid_past_the_dimension_limit() {
    let mut rng = Rng::new(seed("matmul fold"));
    // The reduction GEMV (2 rows per workgroup) folds at ~131k rows; the row GEMV would need 4M.
    let ctx = if ctx().caps.row_gemv { ctx_portable() } else { ctx() };
    assert!(!ctx.caps.row_gemv);
    // 4 rows per GEMV workgroup: this many rows need more workgroups than one grid dimension holds.
    let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
    let n = (max + 1000) * 4 + 3;
    assert!(ctx.grid(n.div_ceil(4) as u32)[1] > 1, "the grid must fold");
    run_case(ctx, "fold", &mut rng, &Case { format: WeightFormat::Q4, m: 1, n, k: 32, bias: true, accumulate: false });
}

#[test]
fn chunking_covers_rows_within_the_limit() {
    for format in WeightFormat::ALL {
        for &(n, k) in &[(257usize, 96usize), (1000, 32), (7, 1184), (128_256, 3072)] {
            let k = if format.is_k_quant() {
                k.next_multiple_of(256)
            } else if format.is_quantized() {
                k
            } else {
                k + 3
            };
            for limit in [SPLIT_BYTES * 4, 1 << 20, 128 << 20] {
                let chunks = match chunk_rows(format, n, k, limit) {
                    Ok(c) => c,
                    Err(GpuError::LimitTooSmall { .. }) => continue, // a row pair above the limit
                    Err(e) => panic!("{e}"),
                };
                let (mut next_row, mut next_w, mut next_s) = (0u32, 0u64, 0u64);
                for (i, &(row0, rows)) in chunks.iter().enumerate() {
                    assert_eq!(row0, next_row, "{format:?} contiguous rows");
                    let (w, s) = chunk_byte_ranges(format, k, row0, rows);
                    assert_eq!((w.start, s.start), (next_w, next_s), "{format:?} contiguous bytes");
                    assert!(w.end - w.start <= limit && s.end - s.start <= limit, "{format:?} within limit");
                    assert!(s.start % 4 == 0, "{format:?} scales start on a word");
                    let paired = matches!(format, WeightFormat::Q4 | WeightFormat::Q8); // two f16 per word
                    if i + 1 < chunks.len() && paired {
                        assert_eq!(rows as usize * format.groups_per_row(k) % 2, 0, "{format:?} even scale entries");
                    }
                    (next_row, next_w, next_s) = (row0 + rows, w.end, s.end);
                }
                assert_eq!(next_row as usize, n);
                assert_eq!(next_w, n as u64 * format.weight_row_bytes(k));
                assert_eq!(next_s, format.scale_bytes(n, k));
            }
        }
    }
    let err = chunk_rows(WeightFormat::Q4, 10, 96, 64).unwrap_err();
    assert!(matches!(err, GpuError::LimitTooSmall { .. }), "{err}");
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = ctx();
    let (m, n, k) = (3usize, 5usize, 64usize);
    let packed = quantize(WeightFormat::Q4, &vec![0.25; n * k], n, k).unwrap();
    let w = QuantMatrix::upload(ctx, "w", &packed).unwrap();
    let x = ctx.storage("x", (m * k * 4) as u64).unwrap();
    let y = ctx.storage("y", (m * n * 4) as u64).unwrap();
    let short_x = ctx.storage("x", (m * (k - 32) * 4) as u64).unwrap(); // sized for a smaller k
    let short_y = ctx.storage("y", (m * n * 4 - 4) as u64).unwrap();
    let short_b = ctx.storage("b", (n * 4 - 4) as u64).unwrap();
    let plain = Epilogue::default();
    let msg = |r: webgpu_llm::gpu::Result<Vec<webgpu_llm::Kernel>>| r.err().expect("an error").to_string();
    assert!(msg(matmul(ctx, &short_x, &w, &y, m as u32, plain)).contains("`x`"));
    let short_x1 = ctx.storage("x", ((k - 32) * 4) as u64).unwrap();
    assert!(msg(matmul(ctx, &short_x1, &w, &y, 1, plain)).contains("`x`"), "GEMV checks x too");
    assert!(msg(matmul(ctx, &x, &w, &short_y, m as u32, plain)).contains("`y`"));
    let bias = Epilogue { bias: Some(&short_b), ..Default::default() };
    assert!(msg(matmul(ctx, &x, &w, &y, m as u32, bias)).contains("`bias`"));
    assert!(msg(matmul(ctx, &x, &w, &y, 0, plain)).contains("m = 0"));
    let xy = ctx.storage("xy", (m * k * 4) as u64).unwrap();
    assert!(msg(matmul(ctx, &xy, &w, &xy, m as u32, plain)).contains("different buffers"));
    // a packed matrix whose k does not match its buffers
    let mut wrong = packed.clone();
    wrong.k = 96;
    assert!(QuantMatrix::upload(ctx, "w", &wrong).is_err());
    let mut ragged = packed;
    ragged.k = 67;
    let err = QuantMatrix::upload(ctx, "w", &ragged).err().expect("k = 67 is not whole groups").to_string();
    assert!(err.contains("k = 67"), "{err}");
}

#[test]
fn ragged_rows_do_not_read_their_neighbours() {
    // F16/F32 rows with k = 67 end inside a GEMM k-step and a vec4. Poison what lies past them:
    // W row 2 starts with NaN, x row 1 with +Inf, and x's buffer holds NaN past its m·k values.
    // Every output not in row 1 or column 2 must still be exact (0·NaN would leak otherwise).
    let mut rng = Rng::new(seed("matmul ragged"));
    let ctx = ctx();
    let (n, k) = (5usize, 67usize);
    for format in [WeightFormat::F32, WeightFormat::F16] {
        for m in [1usize, 3] {
            let mut wf: Vec<f32> = (0..n * k).map(|_| rng.normal(0.5)).collect();
            wf[2 * k] = f32::NAN;
            let packed = quantize(format, &wf, n, k).unwrap();
            let w = dequantize(&packed).unwrap();
            let mut x = rng.vec(m * k, 1.0);
            if m > 1 {
                x[k] = f32::INFINITY;
            }
            let mut xpad = x.clone();
            xpad.extend([f32::NAN; 40]);
            let wm = QuantMatrix::upload(ctx, "w", &packed).unwrap();
            let xb = upload_f32(ctx, &xpad);
            let yb = ctx.storage("y", (m * n * 4) as u64).unwrap();
            let kernels = matmul(ctx, &xb, &wm, &yb, m as u32, Epilogue::default()).unwrap();
            ctx.run(&kernels.iter().collect::<Vec<_>>());
            let all = read_f32(ctx, &yb, m * n);
            let (mut got, mut want, mut tol) = (Vec::new(), Vec::new(), Vec::new());
            for i in (0..m).filter(|&i| i != 1) {
                for j in (0..n).filter(|&j| j != 2) {
                    let terms = (0..k).map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64);
                    got.push(all[i * n + j]);
                    want.push(terms.clone().sum::<f64>());
                    tol.push((k + 8) as f64 * 2f64.powi(-24) * terms.map(f64::abs).sum::<f64>());
                }
            }
            assert_within(&format!("poisoned neighbours {format:?} m={m}"), &got, &want, &tol);
        }
    }
}

/// Decode's fused MLP GEMV: gate and up stacked into one matrix on the GPU (every value kept),
/// one dispatch writing silu(gate·x) · (up·x), against the unfused gate GEMV, up GEMV and SwiGLU
/// kernel: the same dot products in the same order and the same silu, so equal to 1 ulp-ish
/// (exp may differ between pipelines). Also the layout fields: x from row 2 of three, y into
/// columns 3.. of wider rows, the columns around left alone.
#[test]
fn stacked_swiglu_gemv_matches_unfused() {
    let mut rng = Rng::new(seed("matmul swiglu"));
    for (name, ctx) in contexts() {
        for format in WeightFormat::ALL {
            let (ffn, k) = (64usize, ks(format)[0]);
            let gate =
                QuantMatrix::upload(ctx, "g", &quantize(format, &rng.vec(ffn * k, 0.5), ffn, k).unwrap()).unwrap();
            let up = QuantMatrix::upload(ctx, "u", &quantize(format, &rng.vec(ffn * k, 0.5), ffn, k).unwrap()).unwrap();
            let stacked = QuantMatrix::stack(ctx, "gu", &[&gate, &up]).unwrap().expect("stackable");
            assert_eq!((stacked.n, stacked.k, stacked.chunks.len()), (2 * ffn as u32, k as u32, 1));
            let xb = upload_f32(ctx, &rng.vec(3 * k, 1.0));
            for act in [Act::Silu, Act::GeluTanh] {
                let last = Epilogue { x_row0: 2, ..Default::default() };
                let (gb, ub, hb) = (
                    upload_f32(ctx, &vec![0.0; ffn]),
                    upload_f32(ctx, &vec![0.0; ffn]),
                    upload_f32(ctx, &vec![0.0; ffn]),
                );
                let mut unfused = matmul(ctx, &xb, &gate, &gb, 1, last).unwrap();
                unfused.extend(matmul(ctx, &xb, &up, &ub, 1, last).unwrap());
                unfused.push(swiglu(ctx, &gb, &ub, &hb, 1, ffn as u32, act).unwrap());
                ctx.run(&unfused.iter().collect::<Vec<_>>());
                let want: Vec<f64> = read_f32(ctx, &hb, ffn).iter().map(|&v| v as f64).collect();

                let width = ffn + 5;
                let yb = upload_f32(ctx, &vec![7.0; width]);
                let at = Epilogue { x_row0: 2, y_stride: width as u32, y_col0: 3, act, ..Default::default() };
                let fused = matmul_swiglu(ctx, &xb, &stacked, &yb, at).unwrap();
                assert_eq!(fused.len(), 1);
                ctx.run(&fused.iter().collect::<Vec<_>>());
                let got = read_f32(ctx, &yb, width);
                let what = format!("{name} {format:?} stacked {act:?} GEMV");
                assert_close(&what, &got[3..3 + ffn], &want, 1e-6, 1e-5);
                let outside = got[..3].iter().chain(&got[3 + ffn..]).all(|&v| v == 7.0);
                assert!(outside, "{what}: columns outside written");
            }
        }
    }
    // Not stackable: mixed formats, or a part split into chunks.
    let ctx = ctx();
    let m = |f: WeightFormat, n: usize| {
        QuantMatrix::upload(ctx, "m", &quantize(f, &vec![0.5; n * 96], n, 96).unwrap()).unwrap()
    };
    assert!(QuantMatrix::stack(ctx, "x", &[&m(WeightFormat::Q4, 64), &m(WeightFormat::Q8, 64)]).unwrap().is_none());
    let split = ctx_split();
    let big =
        QuantMatrix::upload(split, "b", &quantize(WeightFormat::F32, &vec![0.5; 257 * 96], 257, 96).unwrap()).unwrap();
    assert!(big.chunks.len() > 1);
    assert!(QuantMatrix::stack(split, "x", &[&big, &big]).unwrap().is_none());
    assert!(matmul_swiglu(
        split,
        &upload_f32(split, &[0.0; 96]),
        &big,
        &upload_f32(split, &[0.0; 257]),
        Epilogue::default()
    )
    .is_err());
}

/// Decode's folded RMSNorm: a GEMV that norms its x row itself (x · norm weight staged in
/// workgroup memory, 1/rms applied to the dot products) against the RMSNorm kernel followed by
/// the plain GEMV, in every format, plain and with the SwiGLU epilogue, on the last of two rows.
/// The two differ only in rounding order (1/rms once per output instead of per element): a few
/// f32 ulps of each output's magnitude, far below one wrong term (~1/k of it).
#[test]
fn folded_rmsnorm_gemv_matches_norm_then_gemv() {
    let mut rng = Rng::new(seed("matmul norm"));
    let eps = 1e-5f32;
    for (name, ctx) in contexts() {
        for format in WeightFormat::ALL {
            let (n, k) = (70usize, ks(format)[0]);
            let w = QuantMatrix::upload(ctx, "w", &quantize(format, &rng.vec(n * k, 0.5), n, k).unwrap()).unwrap();
            let x = rng.vec(2 * k, 2.0);
            let g: Vec<f32> = rng.vec(k, 0.3).iter().map(|v| 1.0 + v).collect();
            let (xb, gb, normed) = (upload_f32(ctx, &x), upload_f32(ctx, &g), upload_f32(ctx, &vec![0.0; 2 * k]));
            let norm = Some(Norm { weight: &gb, eps });
            for swiglu in [false, true] {
                let outs = if swiglu { n / 2 } else { n };
                let (want_b, got_b) = (upload_f32(ctx, &vec![0.0; outs]), upload_f32(ctx, &vec![0.0; outs]));
                let last = Epilogue { x_row0: 1, ..Default::default() };
                let mut unfused = vec![rms_norm(ctx, &xb, &gb, &normed, 2, k as u32, eps).unwrap()];
                let fused = if swiglu {
                    unfused.extend(matmul_swiglu(ctx, &normed, &w, &want_b, last).unwrap());
                    matmul_swiglu(ctx, &xb, &w, &got_b, Epilogue { norm, ..last }).unwrap()
                } else {
                    unfused.extend(matmul(ctx, &normed, &w, &want_b, 1, last).unwrap());
                    matmul(ctx, &xb, &w, &got_b, 1, Epilogue { norm, ..last }).unwrap()
                };
                ctx.run(&unfused.iter().collect::<Vec<_>>());
                ctx.run(&fused.iter().collect::<Vec<_>>());
                let want: Vec<f64> = read_f32(ctx, &want_b, outs).iter().map(|&v| v as f64).collect();
                let what = format!("{name} {format:?} k={k} folded norm swiglu={swiglu}");
                assert_close(&what, &read_f32(ctx, &got_b, outs), &want, 1e-5, 1e-5);
            }
        }
    }
    // A folded norm is for one row of at most NORM_MAX_K.
    let ctx = ctx();
    let k = NORM_MAX_K as usize + 32;
    let w = QuantMatrix::upload(ctx, "w", &quantize(WeightFormat::Q8, &vec![0.5; 4 * k], 4, k).unwrap()).unwrap();
    let (xb, y) = (upload_f32(ctx, &vec![1.0; 2 * k]), upload_f32(ctx, &[0.0; 8]));
    let norm = Some(Norm { weight: &xb, eps });
    assert!(matmul(ctx, &xb, &w, &y, 1, Epilogue { norm, ..Default::default() }).is_err(), "k above NORM_MAX_K");
}

/// x as the integer-dot GEMVs see it: act_q8's blocks read back and dequantized (d·q in f64).
fn act_q8_values(ctx: &Context, xq: &ActQ8) -> Vec<f64> {
    let k = xq.k as usize;
    let words = read_u32(ctx, &xq.q, k / 4);
    let s = read_f32(ctx, &xq.s, k / 32 * 4);
    (0..k).map(|e| ((words[e / 4] >> (8 * (e % 4))) as u8 as i8) as f64 * s[e / 32 * 4] as f64).collect()
}

/// The integer-dot GEMVs (`matmul_q8`, `matmul_swiglu_q8`) in every format that has them, on both
/// GEMV strategies and split into chunks, vs an f64 reference over dequantize(W) and x as act_q8
/// rounded it, so neither quantization is counted as kernel error.
/// Tolerance: the integer dot of a group is exact, so only the f32 scale products and the sums
/// over groups round; the bound of `run_case` holds with the magnitudes of the unsigned quants
/// the kernel multiplies (|q·d| ≤ |w| + |offset|, the offset 8d for Q4 or 32·scale for Q6_K,
/// each at most about the group's largest |w|, hence + 2·max|w| per element). The result must
/// also be within the rounding of x of the exact W·x: Σ|w|·d_block/2.
#[test]
fn q8_gemv_matches_reference() {
    let mut rng = Rng::new(seed("matmul q8"));
    let mut cases = 0;
    for (name, ctx) in contexts().into_iter().chain([("split", ctx_split())]) {
        for format in WeightFormat::ALL.into_iter().filter(|&f| q8_format(f)) {
            for (i, &(n, ki)) in [(1usize, 0usize), (67, 1), (257, 0), (1000, 1)].iter().enumerate() {
                if name == "split" && n < 257 {
                    continue;
                }
                let (bias, accumulate) = (i % 2 == 1, i % 3 == 2);
                let k = ks(format)[ki];
                let what = format!("{name} {format:?} q8 GEMV n={n} k={k} bias={bias} acc={accumulate}");
                let wf: Vec<f32> = (0..n * k).map(|_| rng.normal(0.5)).collect();
                let packed = quantize(format, &wf, n, k).unwrap();
                let w = dequantize(&packed).unwrap();
                let x = rng.vec(k, 1.0);
                let b = rng.vec(n, 1.0);
                let y0 = if accumulate { rng.vec(n, 1.0) } else { vec![f32::NAN; n] };
                let wm = QuantMatrix::upload(ctx, "w", &packed).unwrap();
                let xb = upload_f32(ctx, &x);
                let xq = ActQ8::new(ctx, "xq", 1, k as u32).unwrap();
                let (yb, bb) = (upload_f32(ctx, &y0), upload_f32(ctx, &b));
                let mut kernels = vec![act_q8(ctx, &xb, &xq, 1, 0, None).unwrap()];
                let at = Epilogue { bias: bias.then_some(&bb), accumulate, ..Default::default() };
                kernels.extend(matmul_q8(ctx, &xq, &wm, &yb, at).unwrap());
                assert_eq!(kernels.len(), 1 + wm.chunks.len());
                ctx.run(&kernels.iter().collect::<Vec<_>>());
                let xh = act_q8_values(ctx, &xq);
                let got = read_f32(ctx, &yb, n);
                let (mut want, mut tol, mut exact, mut round) =
                    (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                for j in 0..n {
                    let row = &w[j * k..(j + 1) * k];
                    let (mut sum, mut mag, mut ex, mut rd) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
                    for g in 0..k / GROUP {
                        let off = 2.0 * row[g * GROUP..(g + 1) * GROUP].iter().fold(0f64, |a, v| a.max(v.abs() as f64));
                        let m = 2.0 * group_m(&packed, j, g).abs();
                        let d = xh[g * GROUP..(g + 1) * GROUP].iter().fold(0f64, |a, v| a.max(v.abs())) / 127.0;
                        for e in g * GROUP..(g + 1) * GROUP {
                            let wv = row[e] as f64;
                            sum += wv * xh[e];
                            mag += xh[e].abs() * (wv.abs() + m + off);
                            ex += wv * x[e] as f64;
                            rd += wv.abs() * d / 2.0;
                        }
                    }
                    let extra = if bias { b[j] as f64 } else { 0.0 } + if accumulate { y0[j] as f64 } else { 0.0 };
                    want[j] = sum + extra;
                    exact[j] = ex + extra;
                    tol[j] = (k + 8) as f64 * 2f64.powi(-24) * (mag + extra.abs());
                    round[j] = rd * (1.0 + 1e-3) + tol[j];
                }
                assert_within(&what, &got, &want, &tol);
                assert_within(&format!("{what} vs unrounded x"), &got, &exact, &round);

                // SwiGLU over a stacked gate|up: silu(g)·u of the same products
                if n % 2 == 0 && wm.chunks.len() == 1 {
                    let half = n / 2;
                    let hb = upload_f32(ctx, &vec![f32::NAN; half]);
                    let k2 = matmul_swiglu_q8(ctx, &xq, &wm, &hb, Epilogue::default()).unwrap();
                    ctx.run(&k2.iter().collect::<Vec<_>>());
                    // the products' errors (tol) carried through silu(g)·u, plus f32 rounding of it
                    let (mut want_h, mut tol_h) = (vec![0.0; half], vec![0.0; half]);
                    for r in 0..half {
                        let g = want[r] - if bias { b[r] as f64 } else { 0.0 };
                        let u = want[r + half] - if bias { b[r + half] as f64 } else { 0.0 };
                        let sg = 1.0 / (1.0 + (-g).exp());
                        want_h[r] = g * sg * u;
                        let dg = sg * (1.0 + g * (1.0 - sg));
                        tol_h[r] = (dg * u).abs() * tol[r] + (g * sg).abs() * tol[r + half] + 1e-6 * want_h[r].abs();
                    }
                    assert!(!accumulate);
                    assert_within(&format!("{what} swiglu"), &read_f32(ctx, &hb, half), &want_h, &tol_h);
                }
                cases += 1;
            }
        }
    }
    assert!(cases >= 3 * 7 * 3, "{cases} cases ran");
}

/// The integer-dot GEMV refuses what it cannot do, naming it.
#[test]
fn q8_gemv_rejects_bad_input() {
    let ctx = ctx();
    let k = 64;
    let xq = ActQ8::new(ctx, "xq", 1, k).unwrap();
    let y = upload_f32(ctx, &[0.0; 4]);
    let f16 = QuantMatrix::upload(ctx, "w", &quantize(WeightFormat::F16, &vec![0.5; 4 * 64], 4, 64).unwrap()).unwrap();
    let err = matmul_q8(ctx, &xq, &f16, &y, Epilogue::default()).err().expect("F16 has no int8 GEMV");
    assert!(err.to_string().contains("F16"), "{err}");
    let q4 = QuantMatrix::upload(ctx, "w", &quantize(WeightFormat::Q4, &vec![0.5; 4 * 96], 4, 96).unwrap()).unwrap();
    let err = matmul_q8(ctx, &xq, &q4, &y, Epilogue::default()).err().expect("k differs");
    assert!(err.to_string().contains("k = 64"), "{err}");
    let q4 = QuantMatrix::upload(ctx, "w", &quantize(WeightFormat::Q4, &vec![0.5; 4 * 64], 4, 64).unwrap()).unwrap();
    let nb = upload_f32(ctx, &[1.0; 64]);
    let at = Epilogue { norm: Some(Norm { weight: &nb, eps: 1e-5 }), ..Default::default() };
    assert!(matmul_q8(ctx, &xq, &q4, &y, at).is_err(), "the norm belongs to act_q8");
    assert!(matmul_q8(ctx, &xq, &q4, &y, Epilogue::default()).is_ok());
}
