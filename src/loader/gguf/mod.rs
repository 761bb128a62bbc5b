//! GGUF, llama.cpp's model file, read directly: header, metadata, tensor table; tensors repacked
//! into our GPU layout without changing a value; a Hugging Face–style config from the `<arch>.*`
//! keys so [`crate::model::Config::from_hf`] resolves the model as it does for a checkpoint.
//!
//! Layout (ggml/docs/gguf.md; little-endian, versions 2 and 3): magic `GGUF`, u32 version, u64
//! tensor count, u64 metadata count; the metadata (string key, u32 value type, value); the tensor
//! infos (string name, u32 n_dims, u64 dims with `ne[0]` the fastest-varying, i.e. a matrix's
//! columns, u32 ggml type, u64 offset into the data section); padding to `general.alignment`
//! (default 32); the data. A string is a u64 byte length and UTF-8 bytes.
//!
//! The file is untrusted input. Everything is parsed from a byte prefix through a bounded cursor
//! (the browser fetches a range; [`GgufError::TruncatedHeader`] says how far to read), every
//! length, count and nesting depth is capped before anything is allocated (as candle's
//! `gguf_file.rs` does against crafted files), and every tensor's byte range is checked against its
//! file, so later reads need no further checks.
//!
//! Types (values unchanged): F32 → F32; F16 → F16; BF16 → F32 (exact widening); Q8_0 → Q8; Q4_0 → Q4;
//! Q4_1 → Q4Asym (each block split into quants and scales: `quant::pack_blocks`); Q5_0 → Q8, since
//! its (q − 16)·d has q − 16 in −16..=15, an int8, with the same f16 d; Q5_1 → Q8Asym (q in 0..=31
//! as a byte, the same f16 d and m); Q4_K, Q5_K, Q6_K → Q4K, Q5K, Q6K (`quant::kquant`: nibbles
//! permuted, scales and high bits moved to side data). The rest: [`GgufError::UnsupportedType`].
//!
//! RoPE: llama.cpp's converter permutes the q/k rows of llama-architecture checkpoints
//! (`LlamaModel.permute` in convert_hf_to_gguf.py) so that ggml's normal rope mode, which rotates
//! interleaved pairs (2i, 2i+1), equals Hugging Face's rotate_half on the original rows. The
//! config built here says so with `"rope_interleaved": true`. qwen2, qwen3 and phi3 are converted
//! unpermuted and run with ggml's NEOX mode, i.e. halves, as in Hugging Face.
//!
//! Tensors the model takes otherwise than as they are: `config.rs`'s [`TensorMap`] says which, as a
//! [`Fix`], and `repack.rs` applies it as the bytes pass. Qwen3.5 (`qwen35`, convert_hf_to_gguf.py's
//! `Qwen3_5TextModel`): the DeltaNet tensors are `attn_qkv`, `attn_gate` (z), `ssm_beta`,
//! `ssm_alpha`, `ssm_conv1d` (dims [K, channels]: each channel's K taps, taken flat), `ssm_a`
//! (stored as −exp(A_log), so A_log = ln(−ssm_a)), `ssm_dt.bias`, `ssm_norm` and `ssm_out`. With
//! fewer key heads than value heads the converter tiles the value heads (checkpoint head g·r + j,
//! the j-th of key head g, at j·nk + g) in the rows of attn_qkv's v part, attn_gate, ssm_beta/alpha,
//! the conv's v channels, ssm_a, ssm_dt and the columns of ssm_out; the config says
//! `linear_value_heads_tiled` and the model reads value head h with key head h mod nk, so every
//! tensor loads in the file's order (a K-quant ssm_out too, whose blocks span two heads). Norms
//! hold 1 + w except `ssm_norm`; the MTP block after the layers (`nextn_predict_layers`) is left out.
//!
//! Files: `value.rs` (metadata value types and the key-value table), `header.rs` (ggml tensor
//! types, the bounded header parser, the model's tensor table and byte sources), `repack.rs`
//! (blocks into our layout, CPU readers), `config.rs` (HF names and config.json), `files.rs` and
//! `package.rs` (native: files on disk, GGUF → package). Tensors reach the GPU through
//! [`GgufStream`](super::gguf_stream::GgufStream) only, from `fetch` in the browser and from file
//! reads natively.

mod config;
#[cfg(not(target_arch = "wasm32"))]
mod files;
mod header;
#[cfg(not(target_arch = "wasm32"))]
mod package;
mod repack;
mod value;

pub use config::{hf_config, hf_name, pooling, Fix, Target, TensorMap};
#[cfg(not(target_arch = "wasm32"))]
pub use files::{open, read_header_file, FileSource};
pub use header::{parse_header, GgmlType, GgufFile, GgufSource, Header, SliceSource, TensorInfo};
#[cfg(not(target_arch = "wasm32"))]
pub use package::gguf_to_package;
pub(crate) use repack::{fix_vector, piece_rows, values_of};
pub use repack::{read_fixed, read_matrix, read_vector, repack_rows, TensorData, PIECE_BYTES};
pub use value::{MetaArray, MetaValue, Metadata, ValueType};

use crate::gpu::GpuError;
use crate::quant::QuantError;

/// `general.alignment` when the file does not set it (ggml's GGUF_DEFAULT_ALIGNMENT).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The largest header we read: a 256k-token vocabulary with its merges is ~20 MiB.
pub const MAX_HEADER_BYTES: u64 = 512 << 20;

/// Why a GGUF file could not be read or loaded; each variant names the key, tensor or limit.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: it starts with {found:02x?}, not \"GGUF\"")]
    BadMagic { found: [u8; 4] },

    #[error("GGUF version {version} is not supported (2 and 3 are){}", if *.big_endian { "; the file looks big-endian" } else { "" })]
    UnsupportedVersion { version: u32, big_endian: bool },

    #[error(
        "the GGUF header continues past the {available} bytes read; read at least {needed} bytes (a truncated file?)"
    )]
    TruncatedHeader { available: u64, needed: u64 },

    #[error("{what} is {value}, more than the limit of {limit} (a corrupt or hostile file)")]
    TooLarge { what: String, value: u64, limit: u64 },

    #[error("metadata {key}: arrays nested deeper than {limit}")]
    TooDeep { key: String, limit: usize },

    #[error("metadata {key}: unknown value type {type_id}")]
    BadValueType { key: String, type_id: u32 },

    #[error("{what} is not valid UTF-8")]
    Utf8 { what: String },

    #[error("metadata key {key} appears twice")]
    DuplicateKey { key: String },

    #[error("general.alignment = {alignment}: must be a power of two")]
    BadAlignment { alignment: u64 },

    #[error("tensor {name} appears twice")]
    DuplicateTensor { name: String },

    #[error("tensor {tensor}: unknown ggml type {type_id}")]
    UnknownType { tensor: String, type_id: u32 },

    #[error("tensor {tensor} is {ty:?}, which cannot be loaded yet (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K can)")]
    UnsupportedType { tensor: String, ty: GgmlType },

    #[error("tensor {tensor}: {ty:?} with dims {dims:?}: {reason}")]
    Shape { tensor: String, ty: GgmlType, dims: Vec<u64>, reason: String },

    #[error("tensor {tensor}: data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned { tensor: String, offset: u64, alignment: u64 },

    #[error("tensor {tensor} ends at byte {end} of part {part} but the file holds {file_bytes}; it is truncated")]
    TruncatedData { tensor: String, part: usize, end: u64, file_bytes: u64 },

    #[error("metadata key {key} is missing")]
    MissingKey { key: String },

    #[error("metadata {key} is {found}, expected {expected}")]
    WrongType { key: String, expected: &'static str, found: String },

    #[error("tensor {name} is not in the file")]
    MissingTensor { name: String },

    #[error("architecture {arch:?} is not supported (llama, qwen2, qwen3, phi3, smollm3, gemma2, gemma3, qwen35)")]
    UnsupportedArch { arch: String },

    #[error("{what} is not supported: {detail}")]
    Unsupported { what: String, detail: String },

    #[error("split model: {message}")]
    Split { message: String },

    #[error("part {part}: cannot read {len} bytes at {offset}: {message}")]
    Read { part: usize, offset: u64, len: u64, message: String },

    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },

    #[error("tensor {tensor}: {source}")]
    Quant { tensor: String, source: QuantError },

    #[error(transparent)]
    Gpu(#[from] GpuError),

    #[error("tokenizer: {message}")]
    Tokenizer { message: String },

    #[error(transparent)]
    Manifest(#[from] super::ManifestError),

    /// Writing a package's shards (GGUF → package conversion).
    #[cfg(not(target_arch = "wasm32"))]
    #[error(transparent)]
    Convert(#[from] super::convert::ConvertError),
}

pub(crate) type Result<T, E = GgufError> = std::result::Result<T, E>;
