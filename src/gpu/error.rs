//! Typed GPU errors: each says what is missing and by how much, so a caller (or a web page) can act on it.

/// Everything that can go wrong talking to the GPU or shaping a kernel call.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found ({backends}); on Linux install a Vulkan driver (e.g. mesa-vulkan-drivers), in a browser enable WebGPU")]
    NoAdapter { backends: String },

    #[error("the GPU adapter refused a device: {0}")]
    RequestDevice(String),

    #[error("{what}: device limit {limit} is {available} but {needed} is needed")]
    LimitTooSmall { limit: &'static str, needed: u64, available: u64, what: String },

    #[error("GPU feature `{0}` is required but the adapter does not offer it")]
    FeatureMissing(&'static str),

    #[error("out of GPU memory while allocating {what} ({bytes} bytes)")]
    OutOfMemory { what: String, bytes: u64 },

    #[error("shader `{shader}` failed to compile: {message}")]
    Shader { shader: &'static str, message: String },

    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

    #[error("GPU validation error: {0}")]
    Validation(String),

    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),

    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
}

pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// Shorthand for an op's argument check: `ensure(cond, "matmul", || format!(..))?`.
pub fn ensure(cond: bool, op: &'static str, message: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(GpuError::Shape { op, message: message() })
    }
}
