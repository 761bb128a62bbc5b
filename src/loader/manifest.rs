//! Our package format, "manifest + shards": `manifest.json` says what each tensor is and where its
//! bytes lie in a few flat shard files (`shard-00000.bin`, …, at most `--shard-mb` MiB each).
//!
//! A tensor has one or two *parts*: `weights` (always) and `scales` (Q8/Q4/Q4Asym). A part's bytes
//! are exactly `PackedMatrix::weights` / `::scales` of [`crate::quant`] (1-D tensors: plain
//! little-endian f32), stored as a list of shard byte ranges that concatenate to that stream. Every
//! `MatrixChunk` the GPU loader forms (`ops::matmul::chunk_rows` against the device's binding limit,
//! known only at load time) is then a contiguous sub-range of that stream (`chunk_byte_ranges`), so
//! bytes go from a shard straight into the right chunk buffer, whatever the device.
//!
//! ```json
//! { "format": "webgpu-llm/1",
//!   "architecture": { …Hugging Face config.json… },
//!   "tokenizer": { "files": ["tokenizer.json", "tokenizer_config.json"] },
//!   "quant": "q4",
//!   "shards": [ { "file": "shard-00000.bin", "bytes": 33554432, "sha256": "3f…" } ],
//!   "tensors": [ { "name": "model.layers.0.self_attn.q_proj.weight", "format": "Q4", "shape": [3072, 3072],
//!                  "parts": [ { "kind": "weights", "ranges": [ { "shard": 0, "offset": 0, "bytes": 4718592 } ] },
//!                             { "kind": "scales",  "ranges": [ { "shard": 0, "offset": 4718592, "bytes": 589824 } ] } ] } ] }
//! ```
//!
//! The manifest is untrusted input (it may come from any URL): [`Manifest::from_json`] bounds its size
//! and counts and [`Manifest::validate`] checks every shape against its byte count and every range
//! against its shard, so the loaders can index without further checks.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::quant::{QuantError, WeightFormat};

/// The value of `format`; a reader rejects any other.
pub const FORMAT: &str = "webgpu-llm/1";
/// The manifest's file name in a package directory (or URL prefix).
pub const MANIFEST_FILE: &str = "manifest.json";

/// Largest manifest we parse: a 3B model's is ~100 KiB, so this only stops hostile input.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
const MAX_SHARDS: usize = 100_000;
const MAX_TENSORS: usize = 1_000_000;
const MAX_TOKENIZER_FILES: usize = 64;
const MAX_TENSOR_NAME_BYTES: usize = 1024;
const MAX_FILE_NAME_BYTES: usize = 255;
/// A part spans at most this many ranges (a range per shard it touches).
const MAX_RANGES_PER_PART: usize = 100_000;

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`] (`"webgpu-llm/1"`): the layout version.
    pub format: String,
    /// The model's Hugging Face `config.json`, verbatim: the model code resolves its own `Config`
    /// from it, so the package format knows no architecture.
    pub architecture: serde_json::Value,
    /// Text-side files copied beside the manifest.
    pub tokenizer: TokenizerFiles,
    /// The preset the package was converted with (informational; each tensor names its own format).
    pub quant: Quant,
    /// The shard files, in order; ranges refer to them by index.
    pub shards: Vec<Shard>,
    /// Every tensor of the checkpoint, by its Hugging Face name.
    pub tensors: Vec<Tensor>,
}

/// Files for the text side (tokenizer, chat template, generation defaults), relative to the package.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerFiles {
    /// Plain file names: `tokenizer.json`, `tokenizer_config.json`, and `generation_config.json`
    /// when the source had one.
    pub files: Vec<String>,
}

/// Conversion preset (`convert --quant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quant {
    /// `*_proj.weight` matrices Q4 (symmetric, Q4_0), every other matrix Q8.
    Q4,
    /// Every matrix Q8.
    Q8,
    /// Every matrix F16.
    F16,
}

/// One shard file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// Plain file name (no directories), relative to the manifest.
    pub file: String,
    /// Exact size of the file.
    pub bytes: u64,
    /// SHA-256 of the whole file, 64 lowercase hex digits; loaders check it while streaming.
    pub sha256: String,
}

/// One tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// The checkpoint's (Hugging Face) name, e.g. `model.layers.0.mlp.down_proj.weight`.
    pub name: String,
    /// `"F32" | "F16" | "Q8" | "Q4" | "Q4Asym"`; 1-D tensors are always F32.
    #[serde(with = "format_name")]
    pub format: WeightFormat,
    /// `[n, k]` (rows = outputs, columns = inputs, as in the checkpoint) or `[n]`.
    pub shape: Vec<u64>,
    /// `weights`, then `scales` for quantized formats.
    pub parts: Vec<Part>,
}

/// A part of a tensor's packed bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Which stream: `weights` or `scales`.
    pub kind: PartKind,
    /// Shard ranges that, concatenated in order, are the part's bytes.
    pub ranges: Vec<ByteRange>,
}

/// Which packed stream a part holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    /// `PackedMatrix::weights` (1-D tensors: the f32 values).
    Weights,
    /// `PackedMatrix::scales`.
    Scales,
}

/// `bytes` bytes at `offset` of shard `shard`. Offsets and lengths are multiples of 4, so every
/// piece can go to `queue.write_buffer` as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// Index into [`Manifest::shards`].
    pub shard: u32,
    /// Byte offset in the shard file.
    pub offset: u64,
    /// Length (> 0).
    pub bytes: u64,
}

/// What a tensor is on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A weight matrix of `n` rows × `k` columns (a `QuantMatrix`).
    Matrix { n: usize, k: usize },
    /// A 1-D f32 vector of `len` elements (norm weights, biases).
    Vector { len: usize },
}

/// Why a manifest was rejected; each variant names the offending item.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {bytes} bytes, more than the {limit}-byte limit")]
    TooLarge { bytes: u64, limit: u64 },

    #[error("manifest is not valid JSON for format {FORMAT}: {0}")]
    Json(#[from] serde_json::Error),

    #[error("manifest format is {found:?} but this build reads {FORMAT:?}; re-convert the model or update webgpu-llm")]
    Version { found: String },

    #[error("manifest has {count} {what}, more than the limit of {limit}")]
    Count { what: &'static str, count: usize, limit: usize },

    #[error("`architecture` must be a JSON object (the model's config.json)")]
    ArchitectureNotObject,

    #[error("file name {name:?} must be a plain name of 1..={MAX_FILE_NAME_BYTES} bytes of [A-Za-z0-9._-], not starting with '.'")]
    BadFileName { name: String },

    #[error("shard {file}: sha256 {value:?} is not 64 lowercase hex digits")]
    BadSha256 { file: String, value: String },

    #[error("shard {file}: {bytes} bytes is not a multiple of 4")]
    ShardSize { file: String, bytes: u64 },

    #[error("tensor name {name:?} is empty or longer than {MAX_TENSOR_NAME_BYTES} bytes")]
    BadTensorName { name: String },

    #[error("tensor {name} appears twice")]
    DuplicateTensor { name: String },

    #[error("tensor {name}: {format:?} with shape {shape:?}: {reason}")]
    Shape { name: String, format: WeightFormat, shape: Vec<u64>, reason: String },

    #[error("tensor {name}: parts must be [weights] for {format:?}{}, found {found:?}", if format.is_quantized() { " plus scales" } else { "" })]
    Parts { name: String, format: WeightFormat, found: Vec<PartKind> },

    #[error("tensor {name}: {kind:?} part must be {expected} bytes but its ranges total {got}")]
    PartBytes { name: String, kind: PartKind, expected: u64, got: u64 },

    #[error("tensor {name}: {kind:?} range {range:?}: {reason}")]
    Range { name: String, kind: PartKind, range: ByteRange, reason: &'static str },

    #[error("shard {file}: ranges of {first} and {second} overlap")]
    Overlap { file: String, first: String, second: String },
}

impl Manifest {
    /// Parse and validate untrusted manifest bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { bytes: bytes.len() as u64, limit: MAX_MANIFEST_BYTES });
        }
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Pretty JSON, as written to `manifest.json`.
    pub fn to_json(&self) -> Result<String, ManifestError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The tensor called `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Total bytes of all shards (what a loader streams).
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }

    /// Check everything a loader relies on: version, counts, file names, each tensor's shape vs
    /// format vs part byte counts, every range inside its shard and 4-byte aligned, no two ranges
    /// overlapping (one byte feeds one place).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Version { found: self.format.clone() });
        }
        if !self.architecture.is_object() {
            return Err(ManifestError::ArchitectureNotObject);
        }
        count("shards", self.shards.len(), MAX_SHARDS)?;
        count("tensors", self.tensors.len(), MAX_TENSORS)?;
        count("tokenizer files", self.tokenizer.files.len(), MAX_TOKENIZER_FILES)?;
        for f in &self.tokenizer.files {
            check_file_name(f)?;
        }
        let mut files = HashSet::new();
        for s in &self.shards {
            check_file_name(&s.file)?;
            if !files.insert(s.file.as_str()) {
                return Err(ManifestError::BadFileName { name: format!("{} (listed twice)", s.file) });
            }
            if s.sha256.len() != 64 || !s.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(ManifestError::BadSha256 { file: s.file.clone(), value: s.sha256.clone() });
            }
            if s.bytes % 4 != 0 {
                return Err(ManifestError::ShardSize { file: s.file.clone(), bytes: s.bytes });
            }
        }
        let mut names = HashSet::new();
        // (shard, offset, end, tensor index) of every range, to find overlaps.
        let mut spans: Vec<(u32, u64, u64, usize)> = Vec::new();
        for (ti, t) in self.tensors.iter().enumerate() {
            if t.name.is_empty() || t.name.len() > MAX_TENSOR_NAME_BYTES {
                return Err(ManifestError::BadTensorName { name: t.name.chars().take(64).collect() });
            }
            if !names.insert(t.name.as_str()) {
                return Err(ManifestError::DuplicateTensor { name: t.name.clone() });
            }
            t.layout()?;
            let kinds: Vec<PartKind> = t.parts.iter().map(|p| p.kind).collect();
            let want: &[PartKind] =
                if t.format.is_quantized() { &[PartKind::Weights, PartKind::Scales] } else { &[PartKind::Weights] };
            if kinds != want {
                return Err(ManifestError::Parts { name: t.name.clone(), format: t.format, found: kinds });
            }
            for p in &t.parts {
                count("ranges in one part", p.ranges.len(), MAX_RANGES_PER_PART)?;
                let mut total = 0u64;
                for &r in &p.ranges {
                    let bad = |reason| ManifestError::Range { name: t.name.clone(), kind: p.kind, range: r, reason };
                    let shard = self.shards.get(r.shard as usize).ok_or_else(|| bad("no such shard"))?;
                    if r.bytes == 0 {
                        return Err(bad("is empty"));
                    }
                    if r.offset % 4 != 0 || r.bytes % 4 != 0 {
                        return Err(bad("offset and length must be multiples of 4"));
                    }
                    let end = r.offset.checked_add(r.bytes).ok_or_else(|| bad("overflows"))?;
                    if end > shard.bytes {
                        return Err(bad("ends past the end of its shard"));
                    }
                    total = total.checked_add(r.bytes).ok_or_else(|| bad("overflows"))?;
                    spans.push((r.shard, r.offset, end, ti));
                }
                let expected = t.part_bytes(p.kind)?;
                if total != expected {
                    return Err(ManifestError::PartBytes { name: t.name.clone(), kind: p.kind, expected, got: total });
                }
            }
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.0 == b.0 && b.1 < a.2 {
                return Err(ManifestError::Overlap {
                    file: self.shards.get(a.0 as usize).map(|s| s.file.clone()).unwrap_or_default(),
                    first: self.tensors.get(a.3).map(|t| t.name.clone()).unwrap_or_default(),
                    second: self.tensors.get(b.3).map(|t| t.name.clone()).unwrap_or_default(),
                });
            }
        }
        Ok(())
    }
}

impl Tensor {
    /// Matrix or vector, with the shape checked against the format (sizes fit `usize` and the
    /// shaders' u32 indexing; k a multiple of 32 for quantized formats; vectors are F32).
    pub fn layout(&self) -> Result<Layout, ManifestError> {
        let bad = |reason: String| ManifestError::Shape {
            name: self.name.clone(),
            format: self.format,
            shape: self.shape.clone(),
            reason,
        };
        let dim = |d: u64| -> Result<usize, ManifestError> {
            if d == 0 || d > u32::MAX as u64 {
                return Err(bad(format!("dimension {d} is outside 1..=2^32-1")));
            }
            usize::try_from(d).map_err(|_| bad(format!("dimension {d} does not fit this platform")))
        };
        match self.shape[..] {
            [n, k] => {
                let (n, k) = (dim(n)?, dim(k)?);
                self.format.check_shape(n, k).map_err(|e: QuantError| bad(e.to_string()))?;
                Ok(Layout::Matrix { n, k })
            }
            [len] => {
                if self.format != WeightFormat::F32 {
                    return Err(bad("1-D tensors are stored as F32".into()));
                }
                Ok(Layout::Vector { len: dim(len)? })
            }
            _ => Err(bad("only 1-D and 2-D tensors are stored".into())),
        }
    }

    /// Exact byte count of part `kind` for this tensor's shape and format (0 if it has none).
    pub fn part_bytes(&self, kind: PartKind) -> Result<u64, ManifestError> {
        Ok(match (self.layout()?, kind) {
            (Layout::Vector { len }, PartKind::Weights) => len as u64 * 4,
            (Layout::Vector { .. }, PartKind::Scales) => 0,
            (Layout::Matrix { n, k }, PartKind::Weights) => n as u64 * self.format.weight_row_bytes(k),
            (Layout::Matrix { n, k }, PartKind::Scales) => self.format.scale_bytes(n, k),
        })
    }

    /// The part of kind `kind`, if the tensor has one.
    pub fn part(&self, kind: PartKind) -> Option<&Part> {
        self.parts.iter().find(|p| p.kind == kind)
    }
}

fn count(what: &'static str, count: usize, limit: usize) -> Result<(), ManifestError> {
    if count > limit {
        return Err(ManifestError::Count { what, count, limit });
    }
    Ok(())
}

/// Shard and tokenizer names are joined to a directory or URL: plain names only, so a manifest
/// cannot point outside its package (`../`, absolute paths, URLs).
fn check_file_name(name: &str) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_FILE_NAME_BYTES
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadFileName { name: name.chars().take(300).collect() })
    }
}

/// `WeightFormat` as its Rust variant name ("Q4", "Q4Asym", …) without making `quant` depend on serde.
mod format_name {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use crate::quant::WeightFormat;

    pub fn serialize<S: Serializer>(f: &WeightFormat, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{f:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WeightFormat, D::Error> {
        let name = String::deserialize(d)?;
        WeightFormat::ALL
            .into_iter()
            .find(|f| format!("{f:?}") == name)
            .ok_or_else(|| D::Error::custom(format!("unknown tensor format {name:?} (F32, F16, Q8, Q4, Q4Asym)")))
    }
}
