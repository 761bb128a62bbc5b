//! Copies by compute kernels (`shaders/copy.wgsl`): a plain buffer copy — the benchmark's bandwidth
//! yardstick, so a bare vec4 load/store — and a column-block copy between row-major matrices.

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/copy.wgsl (tests/shaders.rs checks)
pub const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_vec4: u32,
    _pad: [u32; 3],
}

/// `dst[..n] = src[..n]` for `n` 4-byte elements, `n` a multiple of 4.
pub fn copy(ctx: &Context, src: &wgpu::Buffer, dst: &wgpu::Buffer, n: u32) -> Result<Kernel> {
    ensure(n % 4 == 0, "copy", || format!("element count {n} is not a multiple of 4"))?;
    check_len("copy", "src", src, n as u64)?;
    check_len("copy", "dst", dst, n as u64)?;
    let params = ctx.uniform("copy.params", &Params { n_vec4: n / 4, _pad: [0; 3] });
    let key = PipelineKey::new(Shader::Copy, "copy");
    Kernel::new(ctx, &key, &[(1, src), (2, dst)], Some(params), ctx.grid((n / 4).div_ceil(WG)))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColsParams {
    rows: u32,
    width: u32,
    src_stride: u32,
    src_col: u32,
    dst_stride: u32,
    dst_col: u32,
    _pad: [u32; 2],
}

/// Where a column block lives: a row-major matrix of `stride` 4-byte elements per row, from `col`.
#[derive(Clone, Copy, Debug)]
pub struct Cols<'a> {
    pub buf: &'a wgpu::Buffer,
    pub stride: u32,
    pub col: u32,
}

/// `dst[r, dst.col + c] = src[r, src.col + c]` for `r < rows`, `c < width` (4-byte elements).
pub fn copy_cols(ctx: &Context, src: Cols, dst: Cols, rows: u32, width: u32) -> Result<Kernel> {
    for (name, m) in [("src", &src), ("dst", &dst)] {
        ensure(m.col + width <= m.stride, "copy_cols", || {
            format!("{name}: columns {}..{} exceed its row of {}", m.col, m.col + width, m.stride)
        })?;
        check_len("copy_cols", name, m.buf, rows as u64 * m.stride as u64)?;
    }
    ensure(src.buf != dst.buf, "copy_cols", || "src and dst must be different buffers".into())?;
    let n = rows as u64 * width as u64;
    ensure(n <= u32::MAX as u64 - WG as u64, "copy_cols", || format!("{n} elements exceed u32 indexing"))?;
    let params = ctx.uniform(
        "copy_cols.params",
        &ColsParams {
            rows,
            width,
            src_stride: src.stride,
            src_col: src.col,
            dst_stride: dst.stride,
            dst_col: dst.col,
            _pad: [0; 2],
        },
    );
    let key = PipelineKey::new(Shader::Copy, "copy_cols");
    Kernel::new(ctx, &key, &[(3, &params), (4, src.buf), (5, dst.buf)], None, ctx.grid((n as u32).div_ceil(WG)))
}
