//! The copy kernel moves bits exactly (compared as u32, so NaN payloads count too).

mod common;
use common::*;
use webgpu_llm::ops::copy::copy;

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
