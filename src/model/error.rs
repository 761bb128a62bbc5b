//! What can be wrong with a model or a request to it, as distinct from the GPU under it: a caller
//! (the CLI, `src/web.rs`) tells "this file is broken" from "this request is wrong" by variant.

use super::config::ConfigError;
use crate::gpu::GpuError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gpu(#[from] GpuError),

    #[error("tensor `{name}` is missing from the model")]
    MissingTensor { name: String },

    #[error("tensor `{name}` is {found} but the config implies {expected}")]
    TensorShape { name: String, found: String, expected: String },

    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("token id {id} is out of range: the vocabulary has ids 0..{vocab}")]
    TokenOutOfRange { id: u32, vocab: u32 },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// The first id of `tokens` outside `0..vocab`, as an error.
pub fn check_ids(tokens: &[u32], vocab: u32) -> Result<()> {
    match tokens.iter().find(|&&id| id >= vocab) {
        Some(&id) => Err(ModelError::TokenOutOfRange { id, vocab }),
        None => Ok(()),
    }
}
