//! Argmax vs a CPU argmax, exactly: ties to the lowest index, NaN never wins (a row of only NaN
//! gives u32::MAX). One context: argmax has no feature-dependent path.

mod common;
use common::reference::argmax as cpu_argmax;
use common::*;
use webgpu_llm::ops::argmax::argmax;

fn run(ctx: &webgpu_llm::Context, logits: &[f32], rows: usize, n: usize) -> Vec<u32> {
    let lb = upload_f32(ctx, logits);
    let ids = ctx.storage("ids", (rows * 4) as u64).unwrap();
    let kernels = argmax(ctx, &lb, &ids, rows as u32, n as u32).unwrap();
    assert_eq!(kernels.len(), if n <= 2048 { 1 } else { 2 });
    ctx.run(&kernels.iter().collect::<Vec<_>>());
    read_u32(ctx, &ids, rows)
}

#[test]
fn argmax_matches_cpu() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("argmax"));
    // 1, one partial chunk and a ragged one, SmolLM2's and Llama-3's vocabularies, and more
    for &n in &[1usize, 1001, 2048, 2049, 49152, 128256, 300_007] {
        for &rows in &[1usize, 3] {
            let mut logits: Vec<f32> = (0..rows * n).map(|_| rng.normal(4.0)).collect();
            for r in 0..rows {
                let row = &mut logits[r * n..(r + 1) * n];
                match r {
                    // planted tie of the maximum, far apart (different chunks) and close together
                    0 if n > 1 => {
                        let (i, j) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
                        row[i] = 50.0;
                        row[j] = 50.0;
                        row[(j + 1) % n] = 50.0;
                    }
                    // all equal: index 0
                    1 => row.fill(-3.5),
                    // very negative values, -inf and NaN mixed in, max at a random place
                    2 => {
                        for v in row.iter_mut() {
                            *v = -1e30 * (1.0 + rng.uniform().abs());
                        }
                        for _ in 0..n.min(50) {
                            let i = rng.below(n as u64) as usize;
                            row[i] = if rng.below(2) == 0 { f32::NAN } else { f32::NEG_INFINITY };
                        }
                    }
                    _ => {}
                }
            }
            let want: Vec<u32> = (0..rows).map(|r| cpu_argmax(&logits[r * n..(r + 1) * n])).collect();
            assert_eq!(run(ctx, &logits, rows, n), want, "argmax rows={rows} n={n}");
        }
    }
}

#[test]
fn argmax_special_rows() {
    let ctx = ctx();
    let n = 5000;
    let mut rows: Vec<Vec<f32>> = Vec::new();
    rows.push(vec![f32::NAN; n]); // no winner: u32::MAX
    let mut r = vec![f32::NAN; n];
    r[4321] = f32::NEG_INFINITY; // -inf beats NaN
    rows.push(r);
    let mut r = vec![f32::NEG_INFINITY; n];
    r[0] = f32::NAN;
    rows.push(r); // all -inf after a NaN: index 1
    let mut r = vec![-0.0f32; n];
    r[3000] = 0.0; // -0 == +0: the lowest index, 0
    rows.push(r);
    let mut r = vec![1.0f32; n];
    r[4999] = f32::INFINITY;
    r[2500] = f32::NAN;
    rows.push(r);
    let flat: Vec<f32> = rows.concat();
    let want: Vec<u32> = rows.iter().map(|r| cpu_argmax(r)).collect();
    assert_eq!(want, [u32::MAX, 4321, 1, 0, 4999]);
    assert_eq!(run(ctx, &flat, rows.len(), n), want);
    // and on the one-pass path
    let short: Vec<Vec<f32>> = rows.iter().map(|r| r[..1000].to_vec()).collect();
    let want: Vec<u32> = short.iter().map(|r| cpu_argmax(r)).collect();
    assert_eq!(run(ctx, &short.concat(), short.len(), 1000), want);
}

#[test]
fn argmax_rejects_bad_shapes() {
    let ctx = ctx();
    let logits = ctx.storage("logits", 4 * 100).unwrap();
    let ids = ctx.storage("ids", 4).unwrap();
    let err = argmax(ctx, &logits, &ids, 2, 50).err().expect("ids holds 1 row");
    assert!(err.to_string().contains("`ids`"), "{err}");
    assert!(argmax(ctx, &logits, &ids, 1, 101).is_err(), "logits holds 100");
}
