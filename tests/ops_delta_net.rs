//! Gated DeltaNet (conv + SiLU, gated delta rule, gated RMSNorm) vs an f64 CPU reference
//! (tests/common/reference.rs::delta_net, written from docs/qwen35.md §5, which
//! tests/reference/qwen35_ref.py checks against transformers to 1e-13), on both forms of the
//! recurrence: token by token (`recurrence`, steps under CHUNK_MIN_ROWS rows) and chunked
//! (`l2norm`, `chunk`, `scan`: the WY/UT form of docs/qwen35.md §6).
//!
//! Tolerance: the state is a sum of up to T rank-1 terms of normalised k (|k| = 1) times u
//! (|u| ≲ |v|), so its entries stay O(1) and each f32 update adds ~2⁻²⁴ relative; over 100 tokens
//! and dk ≤ 128 terms per dot the outputs (O(1) after the gated norm) carry ~1e-5. The chunked
//! form adds T = (I + A)⁻¹ (|A_ij| ≤ β_i |k_i||k_j| ≤ 1, C = 16 rows) and sums of up to C terms
//! in W, U and the intra-chunk output. Their rounding stays at the same level. Measured worst
//! distance from the f64 answer over these shapes and lengths, on lavapipe, over a few seeds:
//! 5e-6 for the chunked form and 9e-6 for the token form (at |want| ≈ 3.6). 2e-4 absolute +
//! 2e-4 relative leaves margin, while a transposed state, a missing decay, a wrong head group, an
//! off-by-one conv tap or a wrong chunk boundary moves outputs by 0.1 and more.
//!
//! Also: a chunked prefill equals single-token steps within STEPS_TOL (no longer bit-equal: the
//! two forms sum in different orders; measured worst 7e-6), a whole prefill in the token-by-token
//! form gives the same bits as single-token steps, and a prefill split across calls (state and
//! conv state carried, pos0 > 0, calls of either form) equals one call.

mod common;
use common::reference::delta_net as reference;
use common::*;
use webgpu_llm::ops::delta_net::{
    delta_net, delta_net_form, DeltaNetShape, DeltaState, DeltaWeights, Form, CHUNK, CHUNK_MIN_ROWS,
};
use webgpu_llm::ops::Pos;
use webgpu_llm::Context;

const ATOL: f64 = 2e-4;
const RTOL: f64 = 2e-4;
/// Chunked prefill vs token-by-token steps, both f32, absolute on outputs of O(1): each form is
/// ≲ 1e-5 from the f64 answer (see the header), so ≲ 2e-5 apart (measured 7e-6); 5e-5 leaves margin.
const STEPS_TOL: f64 = 5e-5;

struct Case {
    shape: DeltaNetShape,
    proj: Vec<f32>,
    conv_w: Vec<f32>,
    a_log: Vec<f32>,
    dt_bias: Vec<f32>,
    norm: Vec<f32>,
    t: usize,
}

fn case(rng: &mut Rng, shape: DeltaNetShape, t: usize) -> Case {
    let in_w = shape.in_width() as usize;
    Case {
        shape,
        proj: (0..t * in_w).map(|_| rng.normal(1.0)).collect(),
        conv_w: rng.vec((shape.conv_dim() * shape.conv_k) as usize, 0.8),
        a_log: (0..shape.nv).map(|_| rng.uniform() * 2.0 - 2.5).collect(),
        dt_bias: rng.vec(shape.nv as usize, 1.0),
        norm: (0..shape.dv).map(|_| 1.0 + 0.1 * rng.uniform()).collect(),
        t,
    }
}

/// Run `c` on the GPU in calls of the given row counts; the mixer output rows.
fn run(ctx: &Context, c: &Case, calls: &[usize]) -> Vec<f32> {
    run_as(ctx, c, calls, None)
}

/// `run`, every call in `form` where given (else the form `delta_net` picks by row count).
fn run_as(ctx: &Context, c: &Case, calls: &[usize], form: Option<Form>) -> Vec<f32> {
    let s = &c.shape;
    let (in_w, vd) = (s.in_width() as usize, s.value_dim() as usize);
    let state = DeltaState::new(ctx, "dn", s).unwrap();
    // garbage in the state: a position-0 step must not read it
    ctx.write(&state.s, 0, bytemuck::cast_slice(&vec![f32::NAN; (state.s.size() / 4) as usize]));
    ctx.write(&state.conv, 0, bytemuck::cast_slice(&vec![f32::NAN; (state.conv.size() / 4) as usize]));
    let (conv, a_log, dt, norm) =
        (upload_f32(ctx, &c.conv_w), upload_f32(ctx, &c.a_log), upload_f32(ctx, &c.dt_bias), upload_f32(ctx, &c.norm));
    let w = DeltaWeights { conv: &conv, a_log: &a_log, dt_bias: &dt, norm: &norm, eps: 1e-6 };
    let mut got = Vec::new();
    let mut pos = 0;
    for &n in calls {
        let proj = upload_f32(ctx, &c.proj[pos * in_w..(pos + n) * in_w]);
        let cbuf = ctx.storage("c", (n * s.conv_dim() as usize * 4) as u64).unwrap();
        let out = upload_f32(ctx, &vec![f32::NAN; n * vd]);
        let scratch = upload_f32(ctx, &vec![f32::NAN; (s.scratch_bytes(n as u32) / 4) as usize]);
        let (t, at) = (n as u32, Pos::At(pos as u32));
        let k = match form {
            Some(f) => delta_net_form(ctx, s, &proj, &w, &state, &cbuf, &out, &scratch, t, at, f),
            None => delta_net(ctx, s, &proj, &w, &state, &cbuf, &out, &scratch, t, at),
        }
        .unwrap();
        ctx.run(&k.iter().collect::<Vec<_>>());
        got.extend(read_f32(ctx, &out, n * vd));
        pos += n;
    }
    got
}

const SHAPES: [DeltaNetShape; 5] = [
    // the qwen35 fixture's layer: 2 key heads of 32, 4 value heads of 64
    DeltaNetShape { nk: 2, nv: 4, dk: 32, dv: 64, conv_k: 4, tiled: false },
    // the same in llama.cpp's GGUF order (value head h reads key head h mod nk)
    DeltaNetShape { nk: 2, nv: 4, dk: 32, dv: 64, conv_k: 4, tiled: true },
    // Qwen3.5's real head dims (fewer heads): dk = dv = 128, two value heads per key head, dv over 2 tiles
    DeltaNetShape { nk: 1, nv: 2, dk: 128, dv: 128, conv_k: 4, tiled: false },
    // odd sizes: dv not a multiple of the workgroup, conv width 2, one value head per key head
    DeltaNetShape { nk: 3, nv: 3, dk: 40, dv: 70, conv_k: 2, tiled: false },
    // three value heads per key head in GGUF order, dk not a multiple of the workgroup, dv over 2 tiles
    DeltaNetShape { nk: 2, nv: 6, dk: 48, dv: 96, conv_k: 4, tiled: true },
];

fn want(c: &Case) -> Vec<f64> {
    let s = c.shape;
    reference(
        &c.proj,
        c.t,
        (s.nk as usize, s.nv as usize, s.dk as usize, s.dv as usize, s.conv_k as usize, s.tiled),
        &c.conv_w,
        &c.a_log,
        &c.dt_bias,
        &c.norm,
        1e-6,
    )
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max)
}

#[test]
fn delta_net_matches_reference() {
    let mut rng = Rng::new(seed("delta_net"));
    for (name, ctx) in contexts() {
        for shape in SHAPES {
            let c = case(&mut rng, shape, 70);
            let want = want(&c);
            // one chunked call (4 × 16 + 6 rows); uneven calls with the state carried, both forms
            // (1 and 2 rows token by token, 30 and 37 chunked at pos0 > 0); token by token (steps
            // of one row, and one call in the token-by-token form: the same bits)
            let whole = run(ctx, &c, &[c.t]);
            assert_close(&format!("{name} {shape:?} one call"), &whole, &want, ATOL, RTOL);
            let calls = run(ctx, &c, &[1, 30, 2, 37]);
            assert_close(&format!("{name} {shape:?} calls"), &calls, &want, ATOL, RTOL);
            let steps = run(ctx, &c, &vec![1; c.t]);
            assert_close(&format!("{name} {shape:?} steps"), &steps, &want, ATOL, RTOL);
            let d = max_diff(&steps, &whole);
            assert!(d <= STEPS_TOL, "{name} {shape:?}: single-token steps differ from one prefill by {d:.2e}");
            // the token-by-token form over a whole prefill runs the steps' arithmetic in their order
            let tokens = run_as(ctx, &c, &[c.t], Some(Form::Tokens));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&steps) == bits(&tokens), "{name} {shape:?}: single-token steps differ from `recurrence`");
        }
    }
}

/// Chunked prefills of every kind of length: under the threshold (token by token), from the
/// threshold to under one chunk, exactly one chunk, one row more, several chunks with a short
/// tail; and a long prefill split in two chunked calls equals one call.
#[test]
fn delta_net_chunked_lengths() {
    let c = CHUNK as usize;
    let lens = [CHUNK_MIN_ROWS as usize - 1, CHUNK_MIN_ROWS as usize, c - 3, c, c + 1, 3 * c + 5];
    let mut rng = Rng::new(seed("delta_net_chunked"));
    for (name, ctx) in contexts() {
        for shape in SHAPES {
            for t in lens {
                let case = case(&mut rng, shape, t);
                let got = run(ctx, &case, &[t]);
                assert_close(&format!("{name} {shape:?} t {t}"), &got, &want(&case), ATOL, RTOL);
            }
            let t = 3 * c + 5;
            let case = case(&mut rng, shape, t);
            let (one, split) = (run(ctx, &case, &[t]), run(ctx, &case, &[2 * c - 7, c + 12]));
            let d = max_diff(&one, &split);
            assert!(d <= STEPS_TOL, "{name} {shape:?}: a prefill split in two calls differs by {d:.2e}");
        }
    }
}

#[test]
fn delta_net_rejects_bad_shapes() {
    let ctx = ctx();
    let shape = DeltaNetShape { nk: 2, nv: 4, dk: 32, dv: 64, conv_k: 4, tiled: false };
    let state = DeltaState::new(ctx, "dn", &shape).unwrap();
    let b = |n: u32| ctx.storage("b", n as u64 * 4).unwrap();
    let (conv, v4, n64) = (b(shape.conv_dim() * 4), b(4), b(64));
    let w = DeltaWeights { conv: &conv, a_log: &v4, dt_bias: &v4, norm: &n64, eps: 1e-6 };
    let (proj, c, out) = (b(2 * shape.in_width()), b(2 * shape.conv_dim()), b(2 * shape.value_dim()));
    let none = b(1);
    delta_net(ctx, &shape, &proj, &w, &state, &c, &out, &none, 2, 0).expect("fits, no scratch needed");
    let err = delta_net(ctx, &shape, &proj, &w, &state, &c, &out, &none, 3, 0).err().expect("3 rows in buffers of 2");
    assert!(err.to_string().contains("proj"), "{err}");
    let big = DeltaNetShape { dk: 256, ..shape };
    assert!(delta_net(ctx, &big, &proj, &w, &state, &c, &out, &none, 1, 0).is_err(), "dk above MAX_DK");
    let odd = DeltaNetShape { nv: 3, ..shape };
    assert!(delta_net(ctx, &odd, &proj, &w, &state, &c, &out, &none, 1, 0).is_err(), "nv not a multiple of nk");
    // a chunked step needs its scratch
    let t = CHUNK_MIN_ROWS;
    let (proj, c, out) = (b(t * shape.in_width()), b(t * shape.conv_dim()), b(t * shape.value_dim()));
    let err = delta_net(ctx, &shape, &proj, &w, &state, &c, &out, &none, t, 0).err().expect("no scratch");
    assert!(err.to_string().contains("scratch"), "{err}");
    let scratch = ctx.storage("scratch", shape.scratch_bytes(t)).unwrap();
    delta_net(ctx, &shape, &proj, &w, &state, &c, &out, &scratch, t, 0).expect("chunked step fits");
}
