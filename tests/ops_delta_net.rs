//! Gated DeltaNet (conv + SiLU, gated delta rule, gated RMSNorm) vs an f64 CPU reference
//! (tests/common/reference.rs::delta_net, written from docs/qwen35.md §5, which
//! tests/reference/qwen35_ref.py checks against transformers to 1e-13).
//!
//! Tolerance: the state is a sum of up to T rank-1 terms of normalised k (|k| = 1) times u
//! (|u| ≲ |v|), so its entries stay O(1) and each f32 update adds ~2⁻²⁴ relative; over 70 tokens
//! and dk ≤ 128 terms per dot the outputs (O(1) after the gated norm) carry ~1e-5. 2e-4 absolute +
//! 2e-4 relative leaves margin, while a transposed state, a missing decay, a wrong head group or
//! an off-by-one conv tap moves outputs by 0.1 and more.
//!
//! Also: a prefill of T rows in one dispatch gives the same bits as T single-token steps (the
//! kernel runs the same per-token arithmetic in the same order), and a prefill split across
//! calls (state and conv state carried) equals one call.

mod common;
use common::reference::delta_net as reference;
use common::*;
use webgpu_llm::ops::delta_net::{delta_net, DeltaNetShape, DeltaState, DeltaWeights};
use webgpu_llm::ops::Pos;
use webgpu_llm::Context;

const ATOL: f64 = 2e-4;
const RTOL: f64 = 2e-4;

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
        let k = delta_net(ctx, s, &proj, &w, &state, &cbuf, &out, n as u32, Pos::At(pos as u32)).unwrap();
        ctx.run(&k.iter().collect::<Vec<_>>());
        got.extend(read_f32(ctx, &out, n * vd));
        pos += n;
    }
    got
}

const SHAPES: [DeltaNetShape; 4] = [
    // the qwen35 fixture's layer: 2 key heads of 32, 4 value heads of 64
    DeltaNetShape { nk: 2, nv: 4, dk: 32, dv: 64, conv_k: 4, tiled: false },
    // the same in llama.cpp's GGUF order (value head h reads key head h mod nk)
    DeltaNetShape { nk: 2, nv: 4, dk: 32, dv: 64, conv_k: 4, tiled: true },
    // Qwen3.5's real head dims (fewer heads): dk = dv = 128, two value heads per key head, dv over 2 tiles
    DeltaNetShape { nk: 1, nv: 2, dk: 128, dv: 128, conv_k: 4, tiled: false },
    // odd sizes: dv not a multiple of the workgroup, conv width 2, one value head per key head
    DeltaNetShape { nk: 3, nv: 3, dk: 40, dv: 70, conv_k: 2, tiled: false },
];

#[test]
fn delta_net_matches_reference() {
    let mut rng = Rng::new(seed("delta_net"));
    for (name, ctx) in contexts() {
        for shape in SHAPES {
            let c = case(&mut rng, shape, 70);
            let want = reference(
                &c.proj,
                c.t,
                (
                    shape.nk as usize,
                    shape.nv as usize,
                    shape.dk as usize,
                    shape.dv as usize,
                    shape.conv_k as usize,
                    shape.tiled,
                ),
                &c.conv_w,
                &c.a_log,
                &c.dt_bias,
                &c.norm,
                1e-6,
            );
            // prefill in one call, then in uneven chunks (state carried), then token by token
            let whole = run(ctx, &c, &[c.t]);
            assert_close(&format!("{name} {shape:?} one call"), &whole, &want, ATOL, RTOL);
            let chunks = run(ctx, &c, &[1, 30, 2, 37]);
            assert_close(&format!("{name} {shape:?} chunks"), &chunks, &want, ATOL, RTOL);
            let steps = run(ctx, &c, &vec![1; c.t]);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&steps) == bits(&whole), "{name} {shape:?}: single-token steps differ from one prefill");
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
    delta_net(ctx, &shape, &proj, &w, &state, &c, &out, 2, 0).expect("fits");
    let err = delta_net(ctx, &shape, &proj, &w, &state, &c, &out, 3, 0).err().expect("3 rows in buffers of 2");
    assert!(err.to_string().contains("proj"), "{err}");
    let big = DeltaNetShape { dk: 256, ..shape };
    assert!(delta_net(ctx, &big, &proj, &w, &state, &c, &out, 1, 0).is_err(), "dk above MAX_DK");
    let odd = DeltaNetShape { nv: 3, ..shape };
    assert!(delta_net(ctx, &odd, &proj, &w, &state, &c, &out, 1, 0).is_err(), "nv not a multiple of nk");
}
