//! Reading Hugging Face `.safetensors` files without loading them whole (a 3B model's file is
//! ~5 GB): the header is parsed with the safetensors crate's types and checked here, then tensor
//! elements are read with a seek, a block of rows at a time.
//!
//! File layout (safetensors spec): u64 little-endian header length N, N bytes of JSON
//! `{name: {dtype, shape, data_offsets: [start, end]}, "__metadata__": {…}}`, then the data;
//! offsets are relative to the data's start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ::safetensors::tensor::TensorInfo;
use ::safetensors::Dtype;
use half::{bf16, f16};

/// The safetensors crate's own header cap (`MAX_HEADER_SIZE`).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A problem with a source checkpoint file; each variant names the file (and tensor).
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },

    #[error("{path}: header of {bytes} bytes exceeds the {MAX_HEADER_BYTES}-byte limit or the file")]
    HeaderSize { path: String, bytes: u64 },

    #[error("{path}: bad header: {message}")]
    Header { path: String, message: String },

    #[error("{path}: tensor {name}: {dtype:?} × shape {shape:?} needs {needed} bytes but data_offsets span {got}")]
    ShapeMismatch { path: String, name: String, dtype: Dtype, shape: Vec<usize>, needed: String, got: u64 },

    #[error("{path}: tensor {name} ends at byte {end} of the data but the file holds {available}")]
    OutOfFile { path: String, name: String, end: u64, available: u64 },

    #[error("{path}: tensor {name} has dtype {dtype:?}; only BF16, F16 and F32 can be converted")]
    UnsupportedDtype { path: String, name: String, dtype: Dtype },

    #[error("{path}: tensor {name}: elements {start}..{end} are outside its {len}")]
    ElementRange { path: String, name: String, start: usize, end: usize, len: usize },
}

/// A tensor's header entry, checked.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Element count (product of `shape`).
    pub len: usize,
    /// Absolute file offset of the first byte.
    offset: u64,
}

/// An open `.safetensors` file: the parsed header and a file handle for reading tensors.
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    /// Tensors in file order (ascending offset), so reading them in turn is one forward pass.
    tensors: Vec<SourceTensor>,
    /// Reused raw-byte buffer of one read.
    raw: Vec<u8>,
}

impl SafetensorsFile {
    /// Read and check the header: every tensor's byte span matches dtype × shape and lies in the file.
    pub fn open(path: &Path) -> Result<Self, SafetensorsError> {
        let shown = path.display().to_string();
        let io = |source| SafetensorsError::Io { path: shown.clone(), source };
        let mut file = File::open(path).map_err(io)?;
        let file_bytes = file.metadata().map_err(io)?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(io)?;
        let header_bytes = u64::from_le_bytes(len);
        if header_bytes > MAX_HEADER_BYTES || header_bytes > file_bytes.saturating_sub(8) {
            return Err(SafetensorsError::HeaderSize { path: shown, bytes: header_bytes });
        }
        let mut header = vec![0u8; header_bytes as usize];
        file.read_exact(&mut header).map_err(io)?;
        let bad = |message: String| SafetensorsError::Header { path: shown.clone(), message };
        let entries: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
        let data_start = 8 + header_bytes;
        let available = file_bytes - data_start;
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            if name == "__metadata__" {
                continue;
            }
            let info: TensorInfo = serde_json::from_value(value).map_err(|e| bad(format!("tensor {name}: {e}")))?;
            let (start, end) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
            let elems = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let needed = elems.and_then(|e| e.checked_mul(info.dtype.bitsize())).map(|bits| bits.div_ceil(8) as u64);
            if end < start || needed != Some(end - start) {
                return Err(SafetensorsError::ShapeMismatch {
                    path: shown.clone(),
                    name,
                    dtype: info.dtype,
                    shape: info.shape,
                    needed: needed.map_or("more than usize".into(), |n| n.to_string()),
                    got: end.saturating_sub(start),
                });
            }
            if end > available {
                return Err(SafetensorsError::OutOfFile { path: shown.clone(), name, end, available });
            }
            let len = elems.unwrap_or(0);
            tensors.push(SourceTensor { name, dtype: info.dtype, shape: info.shape, len, offset: data_start + start });
        }
        tensors.sort_by_key(|t| t.offset);
        Ok(Self { path: path.to_path_buf(), file, tensors, raw: Vec::new() })
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    /// Elements `[start, start + count)` of `t` (row-major) as f32, into `out` (replaced).
    /// BF16 and F16 widen exactly.
    pub fn read_f32(
        &mut self,
        t: &SourceTensor,
        start: usize,
        count: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), SafetensorsError> {
        let path = self.path.display().to_string();
        let size = match t.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            dtype => return Err(SafetensorsError::UnsupportedDtype { path, name: t.name.clone(), dtype }),
        };
        let end = start.checked_add(count).filter(|&e| e <= t.len);
        let Some(end) = end else {
            return Err(SafetensorsError::ElementRange {
                path,
                name: t.name.clone(),
                start,
                end: start.saturating_add(count),
                len: t.len,
            });
        };
        // Within the tensor's span, which `open` checked lies in the file.
        let io = |source| SafetensorsError::Io { path: path.clone(), source };
        self.file.seek(SeekFrom::Start(t.offset + (start * size) as u64)).map_err(io)?;
        self.raw.resize((end - start) * size, 0);
        self.file.read_exact(&mut self.raw).map_err(io)?;
        out.clear();
        match t.dtype {
            Dtype::F32 => out.extend(self.raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Dtype::F16 => out.extend(self.raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
            _ => out.extend(self.raw.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        }
        Ok(())
    }
}
