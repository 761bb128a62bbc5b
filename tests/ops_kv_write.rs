//! kv_write vs the CPU: the cache words are compared exactly. f32 rows are copied bit for bit;
//! f16 rows must equal `half::f16::from_f32` (round to nearest even) of the input, packed two per
//! word with the even dim low. Every other word of the cache must keep its old value.

mod common;
use common::*;
use webgpu_llm::ops::kv_write::{kv_write, KvCacheShape, KvDtype};

/// The cache words `vals` (one f32 per element, pairs adjacent) occupy in `dtype`.
fn words(vals: &[f32], dtype: KvDtype) -> Vec<u32> {
    match dtype {
        KvDtype::F32 => vals.iter().map(|v| v.to_bits()).collect(),
        KvDtype::F16 => vals
            .chunks(2)
            .map(|c| {
                let lo = half::f16::from_f32(c[0]).to_bits() as u32;
                let hi = half::f16::from_f32(c[1]).to_bits() as u32;
                lo | hi << 16
            })
            .collect(),
    }
}

/// Input rows with the values f16 rounding can get wrong: ties (round to even), f16 subnormals,
/// values that round up across a power of two, signed zero; the rest random.
fn rows(rng: &mut Rng, n: usize) -> Vec<f32> {
    let special = [
        1.0 + 2f32.powi(-11),       // tie between 1 and 1 + 2⁻¹⁰: to 1 (even)
        1.0 + 3.0 * 2f32.powi(-11), // tie: up to 1 + 2⁻⁹ (even)
        -(2.0 - 2f32.powi(-12)),    // rounds up to -2
        3.0e-6,                     // f16 subnormal
        -6.1e-5,                    // near the smallest f16 normal
        -0.0,
        65504.0, // f16 max
        0.1,
    ];
    let mut v: Vec<f32> = (0..n).map(|_| rng.normal(3.0)).collect();
    for (i, s) in special.iter().enumerate() {
        let at = rng.below(n as u64) as usize;
        v[(at + i) % n] = *s;
    }
    v
}

#[test]
fn kv_write_matches_reference() {
    let mut rng = Rng::new(seed("kv_write"));
    for (name, ctx) in contexts() {
        for dtype in [KvDtype::F32, KvDtype::F16] {
            for &(n_kv, head_dim, capacity, pos0, t) in
                &[(3u32, 64u32, 20u32, 5u32, 1u32), (3, 64, 20, 5, 7), (2, 6, 9, 2, 7), (8, 128, 40, 39, 1)]
            {
                let shape = KvCacheShape { n_kv_heads: n_kv, head_dim, capacity, dtype, ring: false };
                let kv_dim = (n_kv * head_dim) as usize;
                let k_new = rows(&mut rng, t as usize * kv_dim);
                let v_new = rows(&mut rng, t as usize * kv_dim);
                // Old cache contents: random words, which must survive outside the written rows.
                let n_words = (shape.bytes() / 4) as usize;
                let old_k: Vec<u32> = (0..n_words).map(|_| rng.next_u64() as u32).collect();
                let old_v: Vec<u32> = (0..n_words).map(|_| rng.next_u64() as u32).collect();
                let ck = upload_u32(ctx, &old_k);
                let cv = upload_u32(ctx, &old_v);
                let kb = upload_f32(ctx, &k_new);
                let vb = upload_f32(ctx, &v_new);
                let kern = kv_write(ctx, &kb, &vb, &ck, &cv, &shape, pos0, t).unwrap();
                ctx.run(&[&kern]);

                let row_words = shape.row_words() as usize;
                for (what, old, new, buf) in [("K", &old_k, &k_new, &ck), ("V", &old_v, &v_new, &cv)] {
                    let mut want = old.clone();
                    for i in 0..t as usize {
                        for h in 0..n_kv as usize {
                            let src = &new[i * kv_dim + h * head_dim as usize..][..head_dim as usize];
                            let dst = (h * capacity as usize + pos0 as usize + i) * row_words;
                            want[dst..dst + row_words].copy_from_slice(&words(src, dtype));
                        }
                    }
                    let got = read_u32(ctx, buf, n_words);
                    let bad = got.iter().zip(&want).position(|(g, w)| g != w);
                    if let Some(i) = bad {
                        let (h, rest) = (i / (capacity as usize * row_words), i % (capacity as usize * row_words));
                        panic!(
                            "kv_write {name} {dtype:?} {what} n_kv={n_kv} head_dim={head_dim} pos0={pos0} t={t}: word {i} \
                             (head {h}, position {}, word {}) is {:#010x}, want {:#010x}",
                            rest / row_words,
                            rest % row_words,
                            got[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn kv_write_rejects_bad_arguments() {
    let ctx = ctx();
    let shape = KvCacheShape { n_kv_heads: 2, head_dim: 8, capacity: 10, dtype: KvDtype::F16, ring: false };
    let new = ctx.storage("new", 4 * 3 * 16).unwrap();
    let ck = ctx.storage("ck", shape.bytes()).unwrap();
    let cv = ctx.storage("cv", shape.bytes()).unwrap();
    let err = kv_write(ctx, &new, &new, &ck, &cv, &shape, 8, 3).err().expect("8 + 3 > capacity 10");
    assert!(err.to_string().contains("capacity"), "{err}");
    kv_write(ctx, &new, &new, &ck, &cv, &shape, 7, 3).expect("7 + 3 = capacity fits");

    let odd = KvCacheShape { head_dim: 7, ..shape };
    let err = kv_write(ctx, &new, &new, &ck, &cv, &odd, 0, 1).err().expect("odd head_dim in f16");
    assert!(err.to_string().contains("even"), "{err}");

    let big = KvCacheShape { capacity: 11, ..shape };
    let err = kv_write(ctx, &new, &new, &ck, &cv, &big, 0, 1).err().expect("cache buffers too small");
    assert!(err.to_string().contains("cache_k"), "{err}");

    let err = kv_write(ctx, &new, &new, &ck, &cv, &shape, 0, 4).err().expect("new rows too short");
    assert!(err.to_string().contains("k_new"), "{err}");

    let err = kv_write(ctx, &new, &new, &ck, &ck, &shape, 0, 1).err().expect("K and V aliased");
    assert!(err.to_string().contains("different"), "{err}");
}
