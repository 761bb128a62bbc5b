//! GGUF, llama.cpp's model file, read directly: header, metadata, tensor table; tensors repacked
//! into our GPU layout without changing a value; a Hugging Face–style config from the `<arch>.*`
//! keys so [`crate::model::Config::from_hf`] resolves the model as it does for a checkpoint.
//!
//! Layout (ggml/docs/gguf.md; little-endian, versions 2 and 3): magic `GGUF`, u32 version, u64
//! tensor count, u64 metadata count; the metadata (string key, u32 value type, value); the tensor
//! infos (string name, u32 n_dims, u64 dims with ne[0] the fastest-varying, i.e. a matrix's
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

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use super::{GpuTensor, Layout};
use crate::gpu::{Context, GpuError};
use crate::ops::matmul::{chunk_byte_ranges, chunk_rows, MatrixChunk, QuantMatrix};
use crate::quant::{
    kquant, pack_blocks, BlockQ4_0, BlockQ4_1, BlockQ5_1, BlockQ8_0, PackedMatrix, QuantError, WeightFormat, GROUP,
};

/// `general.alignment` when the file does not set it (ggml's GGUF_DEFAULT_ALIGNMENT).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The largest header we read: a 256k-token vocabulary with its merges is ~20 MiB.
pub const MAX_HEADER_BYTES: u64 = 512 << 20;

// Caps against crafted files; each is far above anything a real model needs.
/// A chat template is ~10 KiB; a token a few bytes.
const MAX_STRING_BYTES: u64 = 16 << 20;
/// The largest vocabularies have ~260k tokens (and as many merges).
const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Arrays of arrays of arrays …: real files nest at most once.
const MAX_NESTING: usize = 4;
const MAX_KV: u64 = 1 << 16;
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KEY_BYTES: u64 = 1 << 16;
/// ggml's GGML_MAX_NAME is 64; allow more, but not megabytes.
const MAX_NAME_BYTES: u64 = 1 << 10;
/// GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// A 1-D tensor (norm, bias, rope factors) is read whole: it is a hidden size, not a vocabulary.
const MAX_VECTOR_ELEMS: u64 = 1 << 26;
/// Raw bytes read per piece of a matrix while repacking (and what is held at once).
pub const PIECE_BYTES: u64 = 8 << 20;
/// Queued `write_buffer` data is submitted (and, natively, waited for) at least this often.
pub(crate) const FLUSH_BYTES: u64 = 64 << 20;

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

    #[error("architecture {arch:?} is not supported (llama, qwen2, qwen3, phi3)")]
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

type Result<T, E = GgufError> = std::result::Result<T, E>;

/// ggml's tensor types (`enum ggml_type` in ggml.h), with their ids in the file.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

/// (id, type, elements per block, bytes per block): ggml.c's `type_traits` (block structs in
/// ggml-common.h); ids 4, 5 and 31..=33, 36..=38 were removed from ggml and are unknown here.
const TYPES: [(u32, GgmlType, u64, u64); 34] = [
    (0, GgmlType::F32, 1, 4),
    (1, GgmlType::F16, 1, 2),
    (2, GgmlType::Q4_0, 32, 18),
    (3, GgmlType::Q4_1, 32, 20),
    (6, GgmlType::Q5_0, 32, 22),
    (7, GgmlType::Q5_1, 32, 24),
    (8, GgmlType::Q8_0, 32, 34),
    (9, GgmlType::Q8_1, 32, 36),
    (10, GgmlType::Q2_K, 256, 84),
    (11, GgmlType::Q3_K, 256, 110),
    (12, GgmlType::Q4_K, 256, 144),
    (13, GgmlType::Q5_K, 256, 176),
    (14, GgmlType::Q6_K, 256, 210),
    (15, GgmlType::Q8_K, 256, 292),
    (16, GgmlType::IQ2_XXS, 256, 66),
    (17, GgmlType::IQ2_XS, 256, 74),
    (18, GgmlType::IQ3_XXS, 256, 98),
    (19, GgmlType::IQ1_S, 256, 50),
    (20, GgmlType::IQ4_NL, 32, 18),
    (21, GgmlType::IQ3_S, 256, 110),
    (22, GgmlType::IQ2_S, 256, 82),
    (23, GgmlType::IQ4_XS, 256, 136),
    (24, GgmlType::I8, 1, 1),
    (25, GgmlType::I16, 1, 2),
    (26, GgmlType::I32, 1, 4),
    (27, GgmlType::I64, 1, 8),
    (28, GgmlType::F64, 1, 8),
    (29, GgmlType::IQ1_M, 256, 56),
    (30, GgmlType::BF16, 1, 2),
    (34, GgmlType::TQ1_0, 256, 54),
    (35, GgmlType::TQ2_0, 256, 66),
    (39, GgmlType::MXFP4, 32, 17),
    (40, GgmlType::NVFP4, 64, 36),
    (41, GgmlType::Q1_0, 128, 18),
];

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().find(|t| t.0 == id).map(|t| t.1)
    }

    pub fn id(self) -> u32 {
        TYPES.iter().find(|t| t.1 == self).map_or(u32::MAX, |t| t.0)
    }

    /// Elements per block (1 for plain types).
    pub fn block_elems(self) -> u64 {
        TYPES.iter().find(|t| t.1 == self).map_or(1, |t| t.2)
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        TYPES.iter().find(|t| t.1 == self).map_or(1, |t| t.3)
    }

    /// Our GPU format for a matrix of this type, or `None` where it needs kernels we do not have.
    pub fn target_format(self) -> Option<WeightFormat> {
        match self {
            GgmlType::F32 | GgmlType::BF16 => Some(WeightFormat::F32),
            GgmlType::F16 => Some(WeightFormat::F16),
            GgmlType::Q8_0 | GgmlType::Q5_0 => Some(WeightFormat::Q8),
            GgmlType::Q4_0 => Some(WeightFormat::Q4),
            GgmlType::Q4_1 => Some(WeightFormat::Q4Asym),
            GgmlType::Q5_1 => Some(WeightFormat::Q8Asym),
            GgmlType::Q4_K => Some(WeightFormat::Q4K),
            GgmlType::Q5_K => Some(WeightFormat::Q5K),
            GgmlType::Q6_K => Some(WeightFormat::Q6K),
            _ => None,
        }
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: typed, so a 100k-entry list costs its elements' size, not an enum's each.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float (F32 widened exactly, or F64).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The type's name in error messages (`u32`, `array of string`, …).
    pub fn type_name(&self) -> String {
        match self {
            MetaValue::U8(_) => "u8".into(),
            MetaValue::I8(_) => "i8".into(),
            MetaValue::U16(_) => "u16".into(),
            MetaValue::I16(_) => "i16".into(),
            MetaValue::U32(_) => "u32".into(),
            MetaValue::I32(_) => "i32".into(),
            MetaValue::F32(_) => "f32".into(),
            MetaValue::Bool(_) => "bool".into(),
            MetaValue::String(_) => "string".into(),
            MetaValue::Array(a) => format!("array of {}", a.type_name()),
            MetaValue::U64(_) => "u64".into(),
            MetaValue::I64(_) => "i64".into(),
            MetaValue::F64(_) => "f64".into(),
        }
    }
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's name.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaArray::U8(_) => "u8",
            MetaArray::I8(_) => "i8",
            MetaArray::U16(_) => "u16",
            MetaArray::I16(_) => "i16",
            MetaArray::U32(_) => "u32",
            MetaArray::I32(_) => "i32",
            MetaArray::F32(_) => "f32",
            MetaArray::Bool(_) => "bool",
            MetaArray::String(_) => "string",
            MetaArray::Array(_) => "array",
            MetaArray::U64(_) => "u64",
            MetaArray::I64(_) => "i64",
            MetaArray::F64(_) => "f64",
        }
    }

    /// Integer elements widened to i64 (token types are i32, but a converter may pick another width).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        Some(match self {
            MetaArray::U8(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::I8(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::U16(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::I16(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::U32(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::I32(v) => v.iter().map(|&x| x as i64).collect(),
            MetaArray::I64(v) => v.clone(),
            MetaArray::U64(v) => v.iter().map(|&x| i64::try_from(x).ok()).collect::<Option<_>>()?,
            _ => return None,
        })
    }
}

/// The metadata key-value pairs of a file (of the first part, for a split model).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: BTreeMap<String, MetaValue>,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` (tests and converters build metadata by hand).
    pub fn insert(&mut self, key: impl Into<String>, value: MetaValue) {
        self.entries.insert(key.into(), value);
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.entries.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &MetaValue)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_string() })
    }

    fn wrong(key: &str, expected: &'static str, v: &MetaValue) -> GgufError {
        GgufError::WrongType { key: key.to_string(), expected, found: v.type_name() }
    }

    /// An unsigned integer of any width that fits u32.
    pub fn u32(&self, key: &str) -> Result<u32> {
        let v = self.require(key)?;
        v.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| Self::wrong(key, "an integer in u32 range", v))
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        if self.contains(key) {
            self.u32(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// F32 or F64.
    pub fn float(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| Self::wrong(key, "a float", v))
    }

    pub fn opt_float(&self, key: &str) -> Result<Option<f64>> {
        if self.contains(key) {
            self.float(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        if self.contains(key) {
            self.str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong(key, "a bool", v)),
        }
    }

    pub fn array(&self, key: &str) -> Result<&MetaArray> {
        match self.require(key)? {
            MetaValue::Array(a) => Ok(a),
            v => Err(Self::wrong(key, "an array", v)),
        }
    }

    pub fn str_array(&self, key: &str) -> Result<&[String]> {
        match self.array(key)? {
            MetaArray::String(v) => Ok(v),
            a => Err(GgufError::WrongType {
                key: key.to_string(),
                expected: "an array of strings",
                found: format!("array of {}", a.type_name()),
            }),
        }
    }

    /// An array of F32 (or F64, narrowed).
    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>> {
        match self.array(key)? {
            MetaArray::F32(v) => Ok(v.clone()),
            MetaArray::F64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            a => Err(GgufError::WrongType {
                key: key.to_string(),
                expected: "an array of floats",
                found: format!("array of {}", a.type_name()),
            }),
        }
    }

    /// An array of integers of any width.
    pub fn int_array(&self, key: &str) -> Result<Vec<i64>> {
        let a = self.array(key)?;
        a.to_i64().ok_or_else(|| GgufError::WrongType {
            key: key.to_string(),
            expected: "an array of integers",
            found: format!("array of {}", a.type_name()),
        })
    }
}

/// One tensor of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (a matrix's columns, k; `dims[1]` its rows, n).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// The file it is in (0 unless the model is split).
    pub part: usize,
    /// Absolute byte offset in that file.
    pub offset: u64,
    /// Byte length.
    pub bytes: u64,
}

impl TensorInfo {
    pub fn elems(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Bytes of one row (`dims[0]` elements).
    pub fn row_bytes(&self) -> u64 {
        self.dims.first().map_or(0, |&k| k / self.ty.block_elems() * self.ty.block_bytes())
    }

    fn shape_error(&self, reason: impl Into<String>) -> GgufError {
        GgufError::Shape { tensor: self.name.clone(), ty: self.ty, dims: self.dims.clone(), reason: reason.into() }
    }

    /// A vector (1-D) or a matrix `[n, k]` (2-D, or more with trailing dims of 1), sizes within
    /// u32 as the shaders index.
    pub fn layout(&self) -> Result<Layout> {
        let fit = |d: u64| -> Result<usize> {
            if d == 0 || d > u32::MAX as u64 {
                return Err(self.shape_error(format!("dimension {d} is outside 1..=2^32-1")));
            }
            usize::try_from(d).map_err(|_| self.shape_error("does not fit this platform"))
        };
        match self.dims[..] {
            [len] => Ok(Layout::Vector { len: fit(len)? }),
            [k, n, ref rest @ ..] if rest.iter().all(|&d| d == 1) => Ok(Layout::Matrix { n: fit(n)?, k: fit(k)? }),
            _ => Err(self.shape_error("only 1-D and 2-D tensors are loaded")),
        }
    }
}

/// A parsed header of one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: Metadata,
    /// In file order; offsets absolute, `part` 0.
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Where the data section starts.
    pub data_offset: u64,
}

/// Reads the header's fields from a prefix of the file; running out of prefix is
/// [`GgufError::TruncatedHeader`] with the length that would have been needed.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn truncated(&self, n: u64) -> GgufError {
        GgufError::TruncatedHeader { available: self.buf.len() as u64, needed: (self.pos as u64).saturating_add(n) }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(n));
        }
        let end = self.pos + n as usize;
        let s = self.buf.get(self.pos..end).ok_or_else(|| self.truncated(n))?;
        self.pos = end;
        Ok(s)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// Fail before allocating when `count` items of at least `min_bytes` each cannot be in the prefix.
    fn ensure(&self, count: u64, min_bytes: u64) -> Result<()> {
        let need = count.saturating_mul(min_bytes);
        if need > self.remaining() {
            return Err(self.truncated(need));
        }
        Ok(())
    }

    fn string(&mut self, what: &dyn Fn() -> String, limit: u64) -> Result<String> {
        let len = self.u64()?;
        if len > limit {
            return Err(GgufError::TooLarge { what: format!("length of {}", what()), value: len, limit });
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| GgufError::Utf8 { what: what() })
    }
}

fn too_large(what: impl Into<String>, value: u64, limit: u64) -> Result<()> {
    if value > limit {
        return Err(GgufError::TooLarge { what: what.into(), value, limit });
    }
    Ok(())
}

/// Value type ids (`enum gguf_type` in gguf.h).
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

/// Bytes of one element of a fixed-size value type, or the minimum for strings (the length) and
/// arrays (type + count).
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        T_STRING => 8,
        T_ARRAY => 12,
        _ => return None,
    })
}

fn read_value(c: &mut Cursor, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
    Ok(match ty {
        0 => MetaValue::U8(c.bytes::<1>()?[0]),
        1 => MetaValue::I8(c.bytes::<1>()?[0] as i8),
        2 => MetaValue::U16(u16::from_le_bytes(c.bytes()?)),
        3 => MetaValue::I16(i16::from_le_bytes(c.bytes()?)),
        4 => MetaValue::U32(c.u32()?),
        5 => MetaValue::I32(i32::from_le_bytes(c.bytes()?)),
        6 => MetaValue::F32(f32::from_le_bytes(c.bytes()?)),
        7 => MetaValue::Bool(c.bytes::<1>()?[0] != 0),
        T_STRING => MetaValue::String(c.string(&|| format!("metadata {key}"), MAX_STRING_BYTES)?),
        T_ARRAY => MetaValue::Array(read_array(c, key, depth + 1)?),
        10 => MetaValue::U64(c.u64()?),
        11 => MetaValue::I64(i64::from_le_bytes(c.bytes()?)),
        12 => MetaValue::F64(f64::from_le_bytes(c.bytes()?)),
        type_id => return Err(GgufError::BadValueType { key: key.to_string(), type_id }),
    })
}

fn read_array(c: &mut Cursor, key: &str, depth: usize) -> Result<MetaArray> {
    if depth > MAX_NESTING {
        return Err(GgufError::TooDeep { key: key.to_string(), limit: MAX_NESTING });
    }
    let ty = c.u32()?;
    let count = c.u64()?;
    too_large(format!("length of array {key}"), count, MAX_ARRAY_LEN)?;
    let min = min_value_bytes(ty).ok_or_else(|| GgufError::BadValueType { key: key.to_string(), type_id: ty })?;
    c.ensure(count, min)?;
    let n = count as usize;
    // Fixed-size elements: one bounds-checked take (count ≤ 2^24, so no overflow), then decode.
    Ok(match ty {
        0 => MetaArray::U8(c.take(count)?.to_vec()),
        1 => MetaArray::I8(c.take(count)?.iter().map(|&b| b as i8).collect()),
        2 => MetaArray::U16(c.take(count * 2)?.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()),
        3 => MetaArray::I16(c.take(count * 2)?.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()),
        4 => MetaArray::U32(c.take(count * 4)?.chunks_exact(4).map(le_u32).collect()),
        5 => MetaArray::I32(c.take(count * 4)?.chunks_exact(4).map(|b| le_u32(b) as i32).collect()),
        6 => MetaArray::F32(c.take(count * 4)?.chunks_exact(4).map(|b| f32::from_bits(le_u32(b))).collect()),
        7 => MetaArray::Bool(c.take(count)?.iter().map(|&b| b != 0).collect()),
        10 => MetaArray::U64(c.take(count * 8)?.chunks_exact(8).map(le_u64).collect()),
        11 => MetaArray::I64(c.take(count * 8)?.chunks_exact(8).map(|b| le_u64(b) as i64).collect()),
        12 => MetaArray::F64(c.take(count * 8)?.chunks_exact(8).map(|b| f64::from_bits(le_u64(b))).collect()),
        T_STRING => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.string(&|| format!("metadata {key}[{i}]"), MAX_STRING_BYTES)?);
            }
            MetaArray::String(v)
        }
        _ => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            MetaArray::Array(v)
        }
    })
}

/// Little-endian u32 of up to 4 bytes (missing high bytes are 0).
fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    u64::from_le_bytes(a)
}

/// Parse a file's header from its first bytes. `prefix` may be the whole file or any prefix that
/// holds the header; if it is too short the error says how many bytes are needed at least.
pub fn parse_header(prefix: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf: prefix, pos: 0 };
    let magic: [u8; 4] = c.bytes()?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32()?;
    if version != 2 && version != 3 {
        // A big-endian file (gguf-py's --bigendian) has the version's bytes swapped.
        let big_endian = (1..=3).contains(&version.swap_bytes());
        return Err(GgufError::UnsupportedVersion { version, big_endian });
    }
    let n_tensors = c.u64()?;
    too_large("tensor count", n_tensors, MAX_TENSORS)?;
    let n_kv = c.u64()?;
    too_large("metadata count", n_kv, MAX_KV)?;

    let mut metadata = Metadata::new();
    for _ in 0..n_kv {
        let key = c.string(&|| "a metadata key".to_string(), MAX_KEY_BYTES)?;
        let ty = c.u32()?;
        let value = read_value(&mut c, ty, &key, 0)?;
        if metadata.contains(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = v.as_u64().ok_or_else(|| Metadata::wrong("general.alignment", "an unsigned integer", v))?;
            if !a.is_power_of_two() {
                return Err(GgufError::BadAlignment { alignment: a });
            }
            a
        }
    };

    // name (≥ 8) + n_dims (4) + one dim (8) + type (4) + offset (8) per tensor at least.
    c.ensure(n_tensors, 32)?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut relative = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for _ in 0..n_tensors {
        let name = c.string(&|| "a tensor name".to_string(), MAX_NAME_BYTES)?;
        let n_dims = c.u32()?;
        too_large(format!("number of dims of tensor {name}"), n_dims as u64, MAX_DIMS as u64)?;
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64()?);
        }
        let type_id = c.u32()?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownType { tensor: name.clone(), type_id })?;
        let offset = c.u64()?;
        let bad = |reason: String| GgufError::Shape { tensor: name.clone(), ty, dims: dims.clone(), reason };
        let Some(&ne0) = dims.first() else {
            return Err(bad("a tensor needs at least one dimension".into()));
        };
        // ggml_nbytes: rows of whole blocks; the element count must fit i64 (ggml's int64_t ne).
        let elems = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&e| e <= i64::MAX as u64);
        let Some(elems) = elems else {
            return Err(bad("the element count overflows".into()));
        };
        if ne0 % ty.block_elems() != 0 {
            return Err(bad(format!("dims[0] is not a multiple of the block size {}", ty.block_elems())));
        }
        let bytes =
            (elems / ty.block_elems()).checked_mul(ty.block_bytes()).ok_or_else(|| bad("size overflows".into()))?;
        if offset % alignment != 0 {
            return Err(GgufError::Misaligned { tensor: name, offset, alignment });
        }
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { name });
        }
        relative.push(offset);
        tensors.push(TensorInfo { name, dims, ty, part: 0, offset: 0, bytes });
    }
    let data_offset = (c.pos as u64).next_multiple_of(alignment);
    for (t, rel) in tensors.iter_mut().zip(relative) {
        t.offset = data_offset.checked_add(rel).ok_or(GgufError::TooLarge {
            what: format!("offset of tensor {}", t.name),
            value: rel,
            limit: u64::MAX,
        })?;
    }
    Ok(Header { version, metadata, tensors, alignment, data_offset })
}

/// A whole model: one file, or the parts of a split model presented as one tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    /// The first part's metadata (gguf-split writes the model's keys there only).
    pub metadata: Metadata,
    /// Every tensor of every part, in part then file order.
    pub tensors: Vec<TensorInfo>,
    /// Each part's size in bytes.
    pub part_bytes: Vec<u64>,
    pub version: u32,
}

impl GgufFile {
    /// A single file from its header and size.
    pub fn parse(prefix: &[u8], file_bytes: u64) -> Result<Self> {
        Self::from_parts(vec![(parse_header(prefix)?, file_bytes)])
    }

    /// Join the parts of a model (in order) and check every tensor lies inside its file. A split
    /// model's parts carry `split.no` = their index and the same `split.count` (llama.cpp's
    /// gguf-split); a single file may omit both.
    pub fn from_parts(parts: Vec<(Header, u64)>) -> Result<Self> {
        let Some((first, _)) = parts.first() else {
            return Err(GgufError::Split { message: "no files given".into() });
        };
        let count = first.metadata.opt_u32("split.count")?.unwrap_or(1).max(1) as usize;
        if count != parts.len() {
            return Err(GgufError::Split {
                message: format!("split.count is {count} but {} file(s) were given", parts.len()),
            });
        }
        let (metadata, version) = (first.metadata.clone(), first.version);
        let mut tensors = Vec::new();
        let mut part_bytes = Vec::with_capacity(parts.len());
        let mut names = HashSet::new();
        for (i, (h, file_bytes)) in parts.into_iter().enumerate() {
            if count > 1 {
                let no = h.metadata.opt_u32("split.no")?;
                let c = h.metadata.opt_u32("split.count")?;
                if no != Some(i as u32) || c != Some(count as u32) {
                    return Err(GgufError::Split {
                        message: format!(
                            "part {} has split.no {no:?} and split.count {c:?}, expected {i} and {count}",
                            i + 1
                        ),
                    });
                }
            }
            for mut t in h.tensors {
                let end = t.offset.saturating_add(t.bytes);
                if end > file_bytes {
                    return Err(GgufError::TruncatedData { tensor: t.name, part: i, end, file_bytes });
                }
                if !names.insert(t.name.clone()) {
                    return Err(GgufError::DuplicateTensor { name: t.name });
                }
                t.part = i;
                tensors.push(t);
            }
            part_bytes.push(file_bytes);
        }
        Ok(Self { metadata, tensors, part_bytes, version })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor { name: name.to_string() })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.metadata.str("general.architecture")
    }
}

/// Random access to the bytes of each part of a model.
pub trait GgufSource {
    /// Fill `buf` from byte `offset` of part `part`.
    fn read_exact_at(&mut self, part: usize, offset: u64, buf: &mut [u8]) -> Result<()>;
}

/// Parts held in memory (tests, or a browser that fetched them whole).
pub struct SliceSource<'a> {
    parts: Vec<&'a [u8]>,
}

impl<'a> SliceSource<'a> {
    pub fn new(parts: Vec<&'a [u8]>) -> Self {
        Self { parts }
    }
}

impl GgufSource for SliceSource<'_> {
    fn read_exact_at(&mut self, part: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        let err = |message: &str| GgufError::Read { part, offset, len, message: message.to_string() };
        let bytes = self.parts.get(part).ok_or_else(|| err("no such part"))?;
        let start = usize::try_from(offset).map_err(|_| err("offset too large"))?;
        let src =
            start.checked_add(buf.len()).and_then(|end| bytes.get(start..end)).ok_or_else(|| err("past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b.get(at).copied().unwrap_or(0), b.get(at + 1).copied().unwrap_or(0)])
}

fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    for (d, s) in a.iter_mut().zip(b.iter().skip(at)) {
        *d = *s;
    }
    a
}

/// ggml-common.h `block_q8_0`: d (f16), qs[32] (int8).
fn block_q8_0(b: &[u8]) -> BlockQ8_0 {
    let qs = bytes_at::<32>(b, 2).map(|q| q as i8);
    BlockQ8_0 { d: u16_at(b, 0), qs }
}

/// `block_q4_0`: d, qs[16] (element j low nibble, j + 16 high).
fn block_q4_0(b: &[u8]) -> BlockQ4_0 {
    BlockQ4_0 { d: u16_at(b, 0), qs: bytes_at(b, 2) }
}

/// `block_q4_1`: d, m, qs[16].
fn block_q4_1(b: &[u8]) -> BlockQ4_1 {
    BlockQ4_1 { d: u16_at(b, 0), m: u16_at(b, 2), qs: bytes_at(b, 4) }
}

/// `block_q5_1`: d, m, qh[4], qs[16].
fn block_q5_1(b: &[u8]) -> BlockQ5_1 {
    BlockQ5_1 { d: u16_at(b, 0), m: u16_at(b, 2), qh: u32::from_le_bytes(bytes_at(b, 4)), qs: bytes_at(b, 8) }
}

/// `block_q5_0`: d, qh[4] (bit j = 5th bit of element j), qs[16] (low nibbles as Q4_0); value =
/// (q − 16)·d (ggml's dequantize_row_q5_0), stored as a Q8_0 block with the same d.
fn block_q5_0_as_q8(b: &[u8]) -> BlockQ8_0 {
    let qh = u32::from_le_bytes(bytes_at(b, 2));
    let qs: [u8; 16] = bytes_at(b, 6);
    let mut out = [0i8; GROUP];
    for (j, &q) in qs.iter().enumerate() {
        let lo = (q & 0xF) | (((qh >> j) & 1) << 4) as u8;
        let hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
        out[j] = lo as i8 - 16;
        out[j + 16] = hi as i8 - 16;
    }
    BlockQ8_0 { d: u16_at(b, 0), qs: out }
}

/// Whole rows of matrix `t` (raw bytes as in the file) in our GPU layout; `n` of the result is the
/// number of rows given. Blocks never span rows (dims[0] is a multiple of the block size), so any
/// run of rows repacks on its own.
pub fn repack_rows(t: &TensorInfo, raw: &[u8]) -> Result<PackedMatrix> {
    let Layout::Matrix { k, .. } = t.layout()? else {
        return Err(t.shape_error("is not a matrix"));
    };
    let format = t.ty.target_format().ok_or_else(|| GgufError::UnsupportedType { tensor: t.name.clone(), ty: t.ty })?;
    let row_bytes = t.row_bytes() as usize;
    if row_bytes == 0 || raw.len() % row_bytes != 0 {
        return Err(t.shape_error(format!("{} bytes are not whole rows of {row_bytes}", raw.len())));
    }
    let rows = raw.len() / row_bytes;
    let quant = |source| GgufError::Quant { tensor: t.name.clone(), source };
    let block = t.ty.block_bytes() as usize;
    let packed = match t.ty {
        GgmlType::Q8_0 => pack_blocks(rows, k, &raw.chunks_exact(block).map(block_q8_0).collect::<Vec<_>>()),
        GgmlType::Q4_0 => pack_blocks(rows, k, &raw.chunks_exact(block).map(block_q4_0).collect::<Vec<_>>()),
        GgmlType::Q4_1 => pack_blocks(rows, k, &raw.chunks_exact(block).map(block_q4_1).collect::<Vec<_>>()),
        GgmlType::Q5_0 => pack_blocks(rows, k, &raw.chunks_exact(block).map(block_q5_0_as_q8).collect::<Vec<_>>()),
        GgmlType::Q5_1 => pack_blocks(rows, k, &raw.chunks_exact(block).map(block_q5_1).collect::<Vec<_>>()),
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => kquant::repack(format, rows, k, raw),
        _ => {
            format.check_shape(rows, k).map_err(quant)?;
            // F32/F16 rows are zero-padded to whole 16-byte units (quant.rs module docs).
            let row_words = format.units_per_row(k) * 4;
            let mut weights = Vec::with_capacity(rows * row_words);
            for row in raw.chunks_exact(row_bytes) {
                let start = weights.len();
                match t.ty {
                    GgmlType::BF16 => {
                        weights.extend(row.chunks_exact(2).map(|b| (u16_at(b, 0) as u32) << 16));
                    }
                    // F32 words as they are; F16 pairs (even element low) are the LE bytes read as u32.
                    _ => weights.extend(row.chunks(4).map(le_u32)),
                }
                weights.resize(start + row_words, 0);
            }
            Ok(PackedMatrix { format, n: rows, k, weights, scales: Vec::new() })
        }
    };
    packed.map_err(quant)
}

fn read(src: &mut dyn GgufSource, t: &TensorInfo, offset: u64, buf: &mut Vec<u8>, len: u64) -> Result<()> {
    let len_usize = usize::try_from(len).map_err(|_| t.shape_error("too large for this platform"))?;
    buf.resize(len_usize, 0);
    src.read_exact_at(t.part, t.offset.saturating_add(offset), buf)
}

/// Rows per repacking piece: about [`PIECE_BYTES`] of raw data, and even, so every piece of a
/// Q4/Q8 matrix starts on a whole scale word (two f16 scales per word) whatever k is.
pub(crate) fn piece_rows(t: &TensorInfo) -> u64 {
    ((PIECE_BYTES / t.row_bytes().max(1)).max(2)) & !1
}

/// Matrix `name` in our layout on the CPU, read a piece at a time (tests, conversion).
pub fn read_matrix(file: &GgufFile, src: &mut dyn GgufSource, name: &str) -> Result<PackedMatrix> {
    let t = file.require(name)?;
    let Layout::Matrix { n, k } = t.layout()? else {
        return Err(t.shape_error("is not a matrix"));
    };
    let format = t.ty.target_format().ok_or_else(|| GgufError::UnsupportedType { tensor: t.name.clone(), ty: t.ty })?;
    let mut out = PackedMatrix { format, n, k, weights: Vec::new(), scales: Vec::new() };
    let mut raw = Vec::new();
    let step = piece_rows(t);
    let mut row0 = 0u64;
    while row0 < n as u64 {
        let rows = step.min(n as u64 - row0);
        read(src, t, row0 * t.row_bytes(), &mut raw, rows * t.row_bytes())?;
        let piece = repack_rows(t, &raw)?;
        out.weights.extend_from_slice(&piece.weights);
        out.scales.extend_from_slice(&piece.scales);
        row0 += rows;
    }
    out.validate().map_err(|source| GgufError::Quant { tensor: t.name.clone(), source })?;
    Ok(out)
}

/// A 1-D tensor as f32 (F32, or F16/BF16 widened exactly).
pub fn read_vector(file: &GgufFile, src: &mut dyn GgufSource, name: &str) -> Result<Vec<f32>> {
    vector_of(file.require(name)?, src)
}

pub(crate) fn vector_of(t: &TensorInfo, src: &mut dyn GgufSource) -> Result<Vec<f32>> {
    let Layout::Vector { len } = t.layout()? else {
        return Err(t.shape_error("is not a vector"));
    };
    too_large(format!("length of vector {}", t.name), len as u64, MAX_VECTOR_ELEMS)?;
    if !matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Err(GgufError::UnsupportedType { tensor: t.name.clone(), ty: t.ty });
    }
    let mut raw = Vec::new();
    read(src, t, 0, &mut raw, t.bytes)?;
    Ok(match t.ty {
        GgmlType::F32 => raw.chunks_exact(4).map(|b| f32::from_bits(le_u32(b))).collect(),
        GgmlType::F16 => raw.chunks_exact(2).map(|b| half::f16::from_bits(u16_at(b, 0)).to_f32()).collect(),
        GgmlType::BF16 => raw.chunks_exact(2).map(|b| f32::from_bits((u16_at(b, 0) as u32) << 16)).collect(),
        ty => return Err(GgufError::UnsupportedType { tensor: t.name.clone(), ty }),
    })
}

/// The checkpoint (Hugging Face) name of GGUF tensor `name` in a model of architecture `arch`
/// (llama.cpp's `LLM_TENSOR_NAMES` read backwards), or `None` for tensors the model does not take
/// (rope factor tables are read into the config instead).
pub fn hf_name(arch: &str, name: &str) -> Option<String> {
    let global = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(g) = global {
        return Some(g.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (base, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf = match base {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_qkv" => "self_attn.qkv_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        // Phi-3's converter stores the fused gate_up_proj (gate rows first) as ffn_up.
        "ffn_up" if arch == "phi3" => "mlp.gate_up_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// A Hugging Face–style config.json for the model, from the `<arch>.*` keys (llama.cpp's
/// `LLM_KV_*` names), the token list and the tensor table, so `Config::from_hf` resolves it.
/// Reads the small rope-factor tensors from `src` when the file has them.
pub fn hf_config(file: &GgufFile, src: &mut dyn GgufSource) -> Result<Value> {
    let md = &file.metadata;
    let arch = file.architecture()?;
    if !matches!(arch, "llama" | "qwen2" | "qwen3" | "phi3") {
        return Err(GgufError::UnsupportedArch { arch: arch.to_string() });
    }
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = md.u32(&key("embedding_length"))?;
    let n_heads = md.u32(&key("attention.head_count"))?;
    let n_kv_heads = md.opt_u32(&key("attention.head_count_kv"))?.unwrap_or(n_heads);
    if n_heads == 0 {
        return Err(GgufError::Unsupported { what: key("attention.head_count"), detail: "0 heads".into() });
    }
    let head_dim = md.opt_u32(&key("attention.key_length"))?.unwrap_or(hidden / n_heads);
    let rope_dims = md.opt_u32(&key("rope.dimension_count"))?.unwrap_or(head_dim);
    let context = md.u32(&key("context_length"))?;
    let vocab = match md.get("tokenizer.ggml.tokens") {
        Some(_) => md.array("tokenizer.ggml.tokens")?.len() as u64,
        None => match md.opt_u32(&key("vocab_size"))? {
            Some(v) => v as u64,
            None => file.require("token_embd.weight")?.dims.get(1).copied().unwrap_or(0),
        },
    };
    let mut c = json!({
        "architectures": [match arch {
            "llama" => "LlamaForCausalLM",
            "qwen2" => "Qwen2ForCausalLM",
            "qwen3" => "Qwen3ForCausalLM",
            _ => "Phi3ForCausalLM",
        }],
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": md.u32(&key("block_count"))?,
        "intermediate_size": md.u32(&key("feed_forward_length"))?,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": md.float(&key("attention.layer_norm_rms_epsilon"))?,
        "rope_theta": md.opt_float(&key("rope.freq_base"))?.unwrap_or(10_000.0),
        "max_position_embeddings": context,
        "vocab_size": vocab,
        // llama.cpp ties the classifier to the embedding when output.weight is absent.
        "tie_word_embeddings": file.tensor("output.weight").is_none(),
    });
    let obj = c.as_object_mut().ok_or_else(|| GgufError::Unsupported { what: "config".into(), detail: "".into() })?;
    if arch == "llama" {
        obj.insert("rope_interleaved".into(), Value::Bool(true));
        let bias = file.tensor("blk.0.attn_q.bias").is_some() || file.tensor("blk.0.attn_output.bias").is_some();
        obj.insert("attention_bias".into(), Value::Bool(bias));
    }
    if rope_dims != head_dim {
        // from_hf takes rotary_dim = trunc(head_dim · factor) & !1; check that gives rope_dims back.
        let factor = rope_dims as f64 / head_dim as f64;
        if ((head_dim as f64 * factor) as u32) & !1 != rope_dims {
            return Err(GgufError::Unsupported {
                what: key("rope.dimension_count"),
                detail: format!("{rope_dims} of head_dim {head_dim}"),
            });
        }
        obj.insert("partial_rotary_factor".into(), json!(factor));
    }
    for (k, id) in [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")] {
        if let Some(v) = md.opt_u32(id)? {
            obj.insert(k.into(), json!(v));
        }
    }
    if let Some(s) = rope_scaling(file, src, arch, context)? {
        obj.insert("rope_scaling".into(), s);
    }
    Ok(c)
}

/// `rope_scaling` for the config: `<arch>.rope.scaling.*` keys, or the factor tables llama.cpp's
/// converter stores as tensors (which the model then divides the frequencies by, as ggml_rope_ext's
/// `freq_factors` does).
fn rope_scaling(file: &GgufFile, src: &mut dyn GgufSource, arch: &str, context: u32) -> Result<Option<Value>> {
    let md = &file.metadata;
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let original = md.opt_u32(&key("original_context_length"))?;
    // Phi-3 LongRoPE: short and long factor tables, attn_factor precomputed by the converter.
    if let (Some(long), Some(short)) =
        (file.tensor("rope_factors_long.weight"), file.tensor("rope_factors_short.weight"))
    {
        let original = original.ok_or_else(|| GgufError::MissingKey { key: key("original_context_length") })?;
        let mut s = json!({
            "type": "longrope",
            "long_factor": vector_of(long, src)?,
            "short_factor": vector_of(short, src)?,
            "original_max_position_embeddings": original,
        });
        if let (Some(a), Some(o)) = (md.opt_float(&key("attn_factor"))?, s.as_object_mut()) {
            o.insert("attention_factor".into(), json!(a));
        }
        return Ok(Some(s));
    }
    // Llama 3.1+: convert_hf_to_gguf.py stores the llama3 frequency divisors as rope_freqs.weight
    // instead of the scaling parameters. Dividing each frequency by its factor is what LongRoPE
    // does with one table for both lengths and no attention scaling.
    if let Some(t) = file.tensor("rope_freqs.weight") {
        let f = vector_of(t, src)?;
        return Ok(Some(json!({
            "rope_type": "longrope",
            "short_factor": f,
            "long_factor": f,
            "original_max_position_embeddings": context,
            "attention_factor": 1.0,
        })));
    }
    match md.opt_str(&key("type"))? {
        None | Some("none") => Ok(None),
        Some("linear") => {
            let factor = md.float(&key("factor"))?;
            Ok(Some(json!({ "rope_type": "linear", "factor": factor })))
        }
        Some(other) => Err(GgufError::Unsupported { what: key("type"), detail: format!("{other:?} scaling") }),
    }
}

/// Upload every tensor the model takes (those [`hf_name`] maps), by checkpoint name, repacking a
/// piece of rows at a time straight into the row-chunk buffers `ops::matmul::chunk_rows` plans for
/// this device. Memory: one piece (~[`PIECE_BYTES`] raw plus its repacked words) and at most
/// ~[`FLUSH_BYTES`] queued in wgpu.
pub fn load_tensors(ctx: &Context, file: &GgufFile, src: &mut dyn GgufSource) -> Result<HashMap<String, GpuTensor>> {
    let arch = file.architecture()?;
    let mut out = HashMap::new();
    let mut loader = Uploader { ctx, raw: Vec::new(), unflushed: 0 };
    for t in &file.tensors {
        let Some(name) = hf_name(arch, &t.name) else {
            continue;
        };
        let tensor = match t.layout()? {
            Layout::Vector { .. } => {
                let v = vector_of(t, src)?;
                loader.unflushed += v.len() as u64 * 4;
                GpuTensor::Vector(ctx.storage_init(&name, bytemuck::cast_slice(&v))?)
            }
            Layout::Matrix { n, k } => GpuTensor::Matrix(loader.matrix(t, &name, n, k, src)?),
        };
        out.insert(name, tensor);
        if loader.unflushed >= FLUSH_BYTES {
            loader.flush()?;
        }
    }
    loader.flush()?;
    Ok(out)
}

struct Uploader<'a> {
    ctx: &'a Context,
    raw: Vec<u8>,
    unflushed: u64,
}

impl Uploader<'_> {
    fn matrix(
        &mut self,
        t: &TensorInfo,
        name: &str,
        n: usize,
        k: usize,
        src: &mut dyn GgufSource,
    ) -> Result<QuantMatrix> {
        let m = alloc_matrix(self.ctx, t, name, n, k)?;
        let step = piece_rows(t);
        let mut row0 = 0u64;
        while row0 < n as u64 {
            let rows = step.min(n as u64 - row0);
            read(src, t, row0 * t.row_bytes(), &mut self.raw, rows * t.row_bytes())?;
            self.unflushed += write_rows(self.ctx, t, &m, row0, &self.raw)?;
            row0 += rows;
            if self.unflushed >= FLUSH_BYTES {
                self.flush()?;
            }
        }
        Ok(m)
    }

    fn flush(&mut self) -> Result<()> {
        self.unflushed = 0;
        Ok(self.ctx.flush_writes()?)
    }
}

/// Uninitialised GPU buffers for matrix `t` (`n` × `k`), in the row chunks `chunk_rows` plans for
/// this device.
pub(crate) fn alloc_matrix(ctx: &Context, t: &TensorInfo, name: &str, n: usize, k: usize) -> Result<QuantMatrix> {
    let format = t.ty.target_format().ok_or_else(|| GgufError::UnsupportedType { tensor: t.name.clone(), ty: t.ty })?;
    let mut chunks = Vec::new();
    for (i, (row0, rows)) in chunk_rows(format, n, k, ctx.max_binding_bytes())?.into_iter().enumerate() {
        let (w, s) = chunk_byte_ranges(format, k, row0, rows);
        let weights = ctx.storage(&format!("{name}.w{i}"), w.end - w.start)?;
        let scales = if s.is_empty() { None } else { Some(ctx.storage(&format!("{name}.s{i}"), s.end - s.start)?) };
        chunks.push(MatrixChunk { row0, rows, weights, scales });
    }
    Ok(QuantMatrix { format, n: n as u32, k: k as u32, chunks })
}

/// Repack whole rows of `t` starting at row `row0` (`raw`: their bytes as in the file; `row0` even,
/// see [`piece_rows`]) and write them into `m`'s chunks. Returns the bytes queued.
pub(crate) fn write_rows(ctx: &Context, t: &TensorInfo, m: &QuantMatrix, row0: u64, raw: &[u8]) -> Result<u64> {
    let piece = repack_rows(t, raw)?;
    let (format, k) = (m.format, m.k as usize);
    // Piece and chunks as byte ranges of the whole matrix's weight and scale streams; both start
    // on even rows, so the ranges are whole words of the same packing.
    let (pw, ps) = chunk_byte_ranges(format, k, row0 as u32, piece.n as u32);
    let mut queued = 0;
    for c in &m.chunks {
        let (cw, cs) = chunk_byte_ranges(format, k, c.row0, c.rows);
        queued += write_overlap(ctx, &c.weights, &cw, &pw, piece.weight_bytes());
        if let Some(b) = &c.scales {
            queued += write_overlap(ctx, b, &cs, &ps, piece.scale_bytes());
        }
    }
    Ok(queued)
}

/// Write the part of `bytes` (stream range `from`) that falls in `buffer` (stream range `to`).
fn write_overlap(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    to: &std::ops::Range<u64>,
    from: &std::ops::Range<u64>,
    bytes: &[u8],
) -> u64 {
    let (start, end) = (to.start.max(from.start), to.end.min(from.end));
    if start >= end {
        return 0;
    }
    match bytes.get((start - from.start) as usize..(end - from.start) as usize) {
        Some(piece) => {
            ctx.write(buffer, start - to.start, piece);
            piece.len() as u64
        }
        None => 0,
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{gguf_to_package, open, read_header_file, FileSource};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom};
    use std::path::{Path, PathBuf};

    use super::{
        hf_config, hf_name, parse_header, piece_rows, read, repack_rows, vector_of, GgufError, GgufFile, GgufSource,
        Header, Result, MAX_HEADER_BYTES,
    };
    use crate::loader::gguf_tokenizer::GgufTokenizer;
    use crate::loader::manifest::{Manifest, Part, PartKind, Quant, Tensor, TokenizerFiles, FORMAT, MANIFEST_FILE};
    use crate::loader::Layout;
    use crate::quant::WeightFormat;

    /// First read of a header; doubled until the header fits (SmolLM2-135M's is 1.8 MB).
    const FIRST_READ_BYTES: u64 = 4 << 20;

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GgufError + '_ {
        move |source| GgufError::Io { path: path.display().to_string(), source }
    }

    /// The parts' files, one open handle each.
    pub struct FileSource {
        paths: Vec<PathBuf>,
        files: Vec<File>,
    }

    impl FileSource {
        pub fn paths(&self) -> &[PathBuf] {
            &self.paths
        }
    }

    impl GgufSource for FileSource {
        fn read_exact_at(&mut self, part: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
            let (Some(path), Some(file)) = (self.paths.get(part), self.files.get_mut(part)) else {
                let len = buf.len() as u64;
                return Err(GgufError::Read { part, offset, len, message: "no such part".into() });
            };
            file.seek(SeekFrom::Start(offset)).map_err(io(path))?;
            file.read_exact(buf).map_err(io(path))
        }
    }

    /// Read and parse `path`'s header, reading more of the file until the header fits.
    pub fn read_header_file(path: &Path) -> Result<(Header, u64, File)> {
        let mut file = File::open(path).map_err(io(path))?;
        let file_bytes = file.metadata().map_err(io(path))?.len();
        let mut want = FIRST_READ_BYTES.min(file_bytes);
        loop {
            let mut buf = Vec::new();
            file.seek(SeekFrom::Start(0)).map_err(io(path))?;
            (&mut file).take(want).read_to_end(&mut buf).map_err(io(path))?;
            match parse_header(&buf) {
                Ok(h) => return Ok((h, file_bytes, file)),
                Err(GgufError::TruncatedHeader { needed, .. }) if want < file_bytes && want < MAX_HEADER_BYTES => {
                    want = needed.max(want.saturating_mul(2)).min(file_bytes).min(MAX_HEADER_BYTES);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The paths of every part of a split model, given one of them: llama.cpp's
    /// `llama_split_path` names them `<prefix>-%05d-of-%05d.gguf`.
    fn split_paths(path: &Path, count: u32) -> Result<Vec<PathBuf>> {
        let bad = || GgufError::Split {
            message: format!("{} is one of {count} parts but not named <name>-NNNNN-of-NNNNN.gguf", path.display()),
        };
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
        let stem = name.strip_suffix(".gguf").ok_or_else(bad)?;
        // "-00001-of-00003" is 15 bytes.
        let cut = stem.len().checked_sub(15).ok_or_else(bad)?;
        let (prefix, tail) = (stem.get(..cut).ok_or_else(bad)?, stem.get(cut..).ok_or_else(bad)?);
        let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
        let ok = tail.starts_with('-') && tail.get(6..10) == Some("-of-");
        if !ok || !tail.get(1..6).is_some_and(digits) || !tail.get(10..).is_some_and(digits) {
            return Err(bad());
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        Ok((1..=count).map(|i| dir.join(format!("{prefix}-{i:05}-of-{count:05}.gguf"))).collect())
    }

    /// Open a GGUF model: one file, or (given any part) every part of a split model.
    pub fn open(path: &Path) -> Result<(GgufFile, FileSource)> {
        let (header, bytes, file) = read_header_file(path)?;
        let count = header.metadata.opt_u32("split.count")?.unwrap_or(1);
        if count <= 1 {
            let model = GgufFile::from_parts(vec![(header, bytes)])?;
            return Ok((model, FileSource { paths: vec![path.to_path_buf()], files: vec![file] }));
        }
        let paths = split_paths(path, count)?;
        let mut parts = Vec::with_capacity(paths.len());
        let mut files = Vec::with_capacity(paths.len());
        for p in &paths {
            let (h, b, f) = read_header_file(p)?;
            parts.push((h, b));
            files.push(f);
        }
        Ok((GgufFile::from_parts(parts)?, FileSource { paths, files }))
    }

    /// Convert a GGUF model (given any part of a split one) into a package directory: shards,
    /// `manifest.json` with the config [`hf_config`] builds, and tokenizer.json /
    /// tokenizer_config.json from the vocabulary. Tensors are repacked exactly as [`super::load_tensors`]
    /// does, a piece at a time, so a package loads the same buffers as the GGUF; nothing is requantized.
    /// `shard_mb`: largest shard in MiB (1..=4096).
    pub fn gguf_to_package(path: &Path, out: &Path, shard_mb: u64) -> Result<Manifest> {
        if !(1..=4096).contains(&shard_mb) {
            return Err(GgufError::Unsupported {
                what: "shard_mb".into(),
                detail: format!("{shard_mb}; use 1..=4096"),
            });
        }
        let (file, mut src) = open(path)?;
        let architecture = hf_config(&file, &mut src)?;
        let tok = GgufTokenizer::from_metadata(&file.metadata)
            .map_err(|e| GgufError::Tokenizer { message: e.to_string() })?;
        let tok_json = tok.tokenizer_json().map_err(|e| GgufError::Tokenizer { message: e.to_string() })?;
        std::fs::create_dir_all(out).map_err(io(out))?;
        let arch = file.architecture()?;
        let mut sink = crate::loader::convert::ShardSink::new(out, shard_mb << 20);
        let mut tensors = Vec::new();
        let mut raw = Vec::new();
        for t in &file.tensors {
            let Some(name) = hf_name(arch, &t.name) else {
                continue;
            };
            let mut weights = Vec::new();
            let (format, shape, scales) = match t.layout()? {
                Layout::Vector { len } => {
                    let v = vector_of(t, &mut src)?;
                    sink.append(bytemuck::cast_slice(&v), &mut weights)?;
                    (WeightFormat::F32, vec![len as u64], Vec::new())
                }
                Layout::Matrix { n, k } => {
                    let mut scales: Vec<u32> = Vec::new();
                    let mut format = WeightFormat::F32;
                    let mut row0 = 0u64;
                    while row0 < n as u64 {
                        let rows = piece_rows(t).min(n as u64 - row0);
                        read(&mut src, t, row0 * t.row_bytes(), &mut raw, rows * t.row_bytes())?;
                        let piece = repack_rows(t, &raw)?;
                        sink.append(piece.weight_bytes(), &mut weights)?;
                        scales.extend_from_slice(&piece.scales);
                        format = piece.format;
                        row0 += rows;
                    }
                    (format, vec![n as u64, k as u64], scales)
                }
            };
            let mut parts = vec![Part { kind: PartKind::Weights, ranges: weights }];
            if !scales.is_empty() {
                let mut ranges = Vec::new();
                sink.append(bytemuck::cast_slice(&scales), &mut ranges)?;
                parts.push(Part { kind: PartKind::Scales, ranges });
            }
            tensors.push(Tensor { name, format, shape, parts });
        }
        let shards = sink.finish()?;
        let files = [("tokenizer.json", tok_json), ("tokenizer_config.json", tok.tokenizer_config_json().into_bytes())];
        for (name, bytes) in &files {
            let p = out.join(name);
            std::fs::write(&p, bytes).map_err(io(&p))?;
        }
        // Informational: the narrowest format any matrix has.
        let has = |f: WeightFormat| tensors.iter().any(|t| t.format == f);
        let quant =
            if [WeightFormat::Q4, WeightFormat::Q4Asym, WeightFormat::Q4K, WeightFormat::Q5K].into_iter().any(has) {
                Quant::Q4
            } else if has(WeightFormat::Q8) {
                Quant::Q8
            } else {
                Quant::F16
            };
        let manifest = Manifest {
            format: FORMAT.to_string(),
            architecture,
            tokenizer: TokenizerFiles { files: files.iter().map(|f| f.0.to_string()).collect() },
            quant,
            shards,
            tensors,
        };
        manifest.validate()?;
        // Write then rename, so an interrupted conversion never leaves a manifest that looks complete.
        let tmp = out.join(format!("{MANIFEST_FILE}.tmp"));
        std::fs::write(&tmp, manifest.to_json()?).map_err(io(&tmp))?;
        let dst = out.join(MANIFEST_FILE);
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        Ok(manifest)
    }
}
