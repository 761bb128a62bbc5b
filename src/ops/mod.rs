//! One module per op: each checks shapes, picks a pipeline by key and returns bound `Kernel`s.
//! Recording and submitting are the caller's (see `Context::run`).

pub mod add;
pub mod argmax;
pub mod attention;
pub mod copy;
pub mod embedding;
pub mod kv_write;
pub mod matmul;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

use crate::gpu::{GpuError, Result};

/// Fail unless `buf` holds at least `elems` 4-byte elements.
pub(crate) fn check_len(op: &'static str, name: &str, buf: &wgpu::Buffer, elems: u64) -> Result<()> {
    let needed = elems * 4;
    if buf.size() < needed {
        return Err(GpuError::Shape {
            op,
            message: format!("buffer `{name}` holds {} bytes but {needed} are needed ({elems} elements)", buf.size()),
        });
    }
    Ok(())
}
