//! The copy kernel moves bits exactly (compared as u32, so NaN payloads count too).

mod common;
use common::*;
use webgpu_llm::ops::copy::{copy, copy_cols, Cols};

#[test]
fn copy_is_exact() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("copy"));
    // one vec4, a ragged last workgroup, and a few MiB
    for &n in &[4usize, 1028, 4 * 256 * 2001 + 12] {
        let src: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
        let s = upload_u32(ctx, &src);
        let d = ctx.storage("dst", (n * 4 + 16) as u64).unwrap();
        ctx.run(&[&copy(ctx, &s, &d, n as u32).unwrap()]);
        let got = read_u32(ctx, &d, n);
        assert!(got == src, "copy of {n} elements differs");
    }
}

#[test]
fn copy_rejects_bad_counts() {
    let ctx = ctx();
    let b = ctx.storage("b", 64).unwrap();
    assert!(copy(ctx, &b, &b, 6).is_err(), "6 is not a multiple of 4");
    assert!(copy(ctx, &b, &b, 32).is_err(), "buffers hold only 16 elements");
    // a binding above the device limit is a typed error, not a wgpu validation panic
    let limit = ctx.limits.max_storage_buffer_binding_size;
    if limit < ctx.limits.max_buffer_size {
        let big = ctx.storage("big", limit + 16).unwrap();
        let err = copy(ctx, &big, &big, ((limit + 16) / 4) as u32).err().expect("binding too large");
        assert!(err.to_string().contains("maxStorageBufferBindingSize"), "{err}");
    }
}

#[test]
fn copy_cols_moves_a_column_block() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("copy_cols"));
    // a fused [rows, 9 + 3 + 3] matrix split like q, k, v; odd widths and offsets
    let (rows, stride) = (7usize, 15usize);
    let src: Vec<u32> = (0..rows * stride).map(|_| rng.next_u64() as u32).collect();
    let s = upload_u32(ctx, &src);
    for (col, width) in [(0usize, 9usize), (9, 3), (12, 3)] {
        let d = upload_u32(ctx, &vec![0xDEAD_BEEF; rows * (width + 2)]);
        let dst = Cols { buf: &d, stride: (width + 2) as u32, col: 1 };
        let k =
            copy_cols(ctx, Cols { buf: &s, stride: stride as u32, col: col as u32 }, dst, rows as u32, width as u32)
                .unwrap();
        ctx.run(&[&k]);
        let got = read_u32(ctx, &d, rows * (width + 2));
        for r in 0..rows {
            let row = &got[r * (width + 2)..(r + 1) * (width + 2)];
            assert_eq!(row[0], 0xDEAD_BEEF, "column before the block untouched");
            assert_eq!(&row[1..=width], &src[r * stride + col..r * stride + col + width], "row {r}");
            assert_eq!(row[width + 1], 0xDEAD_BEEF, "column after the block untouched");
        }
    }
    let d = ctx.storage("d", 64).unwrap();
    let bad = copy_cols(ctx, Cols { buf: &s, stride: 15, col: 10 }, Cols { buf: &d, stride: 8, col: 0 }, 2, 8);
    assert!(bad.is_err(), "columns 10..18 exceed a row of 15");
}
