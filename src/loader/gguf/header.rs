//! The header of one file (magic, version, metadata, tensor infos) parsed from a byte prefix
//! through a bounded cursor, ggml's tensor types, and the whole model's tensor table
//! ([`GgufFile`]) with random access to its bytes ([`GgufSource`]).

use std::collections::HashSet;

use super::value::{MetaArray, MetaValue, Metadata, ValueType};
use super::{GgufError, Result, DEFAULT_ALIGNMENT};
use crate::loader::Layout;
use crate::quant::WeightFormat;

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

    pub(super) fn shape_error(&self, reason: impl Into<String>) -> GgufError {
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

pub(super) fn too_large(what: impl Into<String>, value: u64, limit: u64) -> Result<()> {
    if value > limit {
        return Err(GgufError::TooLarge { what: what.into(), value, limit });
    }
    Ok(())
}

/// The value type id read next, or [`GgufError::BadValueType`] naming `key`.
fn value_type(c: &mut Cursor, key: &str) -> Result<ValueType> {
    let id = c.u32()?;
    ValueType::try_from(id).map_err(|type_id| GgufError::BadValueType { key: key.to_string(), type_id })
}

fn read_value(c: &mut Cursor, ty: ValueType, key: &str, depth: usize) -> Result<MetaValue> {
    Ok(match ty {
        ValueType::U8 => MetaValue::U8(c.bytes::<1>()?[0]),
        ValueType::I8 => MetaValue::I8(c.bytes::<1>()?[0] as i8),
        ValueType::U16 => MetaValue::U16(u16::from_le_bytes(c.bytes()?)),
        ValueType::I16 => MetaValue::I16(i16::from_le_bytes(c.bytes()?)),
        ValueType::U32 => MetaValue::U32(c.u32()?),
        ValueType::I32 => MetaValue::I32(i32::from_le_bytes(c.bytes()?)),
        ValueType::F32 => MetaValue::F32(f32::from_le_bytes(c.bytes()?)),
        ValueType::Bool => MetaValue::Bool(c.bytes::<1>()?[0] != 0),
        ValueType::String => MetaValue::String(c.string(&|| format!("metadata {key}"), MAX_STRING_BYTES)?),
        ValueType::Array => MetaValue::Array(read_array(c, key, depth + 1)?),
        ValueType::U64 => MetaValue::U64(c.u64()?),
        ValueType::I64 => MetaValue::I64(i64::from_le_bytes(c.bytes()?)),
        ValueType::F64 => MetaValue::F64(f64::from_le_bytes(c.bytes()?)),
    })
}

fn read_array(c: &mut Cursor, key: &str, depth: usize) -> Result<MetaArray> {
    if depth > MAX_NESTING {
        return Err(GgufError::TooDeep { key: key.to_string(), limit: MAX_NESTING });
    }
    // The element type's id is checked before the count is read, as it always was: a bad id
    // is BadValueType whatever follows.
    let id = c.u32()?;
    let count = c.u64()?;
    too_large(format!("length of array {key}"), count, MAX_ARRAY_LEN)?;
    let ty = ValueType::try_from(id).map_err(|type_id| GgufError::BadValueType { key: key.to_string(), type_id })?;
    c.ensure(count, ty.min_bytes())?;
    let n = count as usize;
    // Fixed-size elements: one bounds-checked take (count ≤ 2^24, so no overflow), then decode.
    Ok(match ty {
        ValueType::U8 => MetaArray::U8(c.take(count)?.to_vec()),
        ValueType::I8 => MetaArray::I8(c.take(count)?.iter().map(|&b| b as i8).collect()),
        ValueType::U16 => {
            MetaArray::U16(c.take(count * 2)?.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect())
        }
        ValueType::I16 => {
            MetaArray::I16(c.take(count * 2)?.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
        }
        ValueType::U32 => MetaArray::U32(c.take(count * 4)?.chunks_exact(4).map(le_u32).collect()),
        ValueType::I32 => MetaArray::I32(c.take(count * 4)?.chunks_exact(4).map(|b| le_u32(b) as i32).collect()),
        ValueType::F32 => {
            MetaArray::F32(c.take(count * 4)?.chunks_exact(4).map(|b| f32::from_bits(le_u32(b))).collect())
        }
        ValueType::Bool => MetaArray::Bool(c.take(count)?.iter().map(|&b| b != 0).collect()),
        ValueType::U64 => MetaArray::U64(c.take(count * 8)?.chunks_exact(8).map(le_u64).collect()),
        ValueType::I64 => MetaArray::I64(c.take(count * 8)?.chunks_exact(8).map(|b| le_u64(b) as i64).collect()),
        ValueType::F64 => {
            MetaArray::F64(c.take(count * 8)?.chunks_exact(8).map(|b| f64::from_bits(le_u64(b))).collect())
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.string(&|| format!("metadata {key}[{i}]"), MAX_STRING_BYTES)?);
            }
            MetaArray::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            MetaArray::Array(v)
        }
    })
}

/// Little-endian u32 of up to 4 bytes (missing high bytes are 0).
pub(super) fn le_u32(b: &[u8]) -> u32 {
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
        let ty = value_type(&mut c, &key)?;
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

    pub(super) fn require(&self, name: &str) -> Result<&TensorInfo> {
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
