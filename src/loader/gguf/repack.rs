//! Tensor data into our layout: GGUF blocks read as `#[repr(C)]` structs and repacked a piece of
//! rows at a time ([`repack_rows`]), 1-D tensors widened to f32, the few tensors the model takes
//! otherwise ([`Fix`]: flat, A_log), and the CPU readers tests and the package converter use.

use bytemuck::{Pod, Zeroable};

use super::config::Fix;
use super::header::{le_u32, too_large, GgmlType, GgufFile, GgufSource, TensorInfo};
use super::{GgufError, Result};
use crate::loader::Layout;
use crate::quant::{kquant, pack_blocks, BlockQ4_0, BlockQ4_1, BlockQ5_1, BlockQ8_0, PackedMatrix, GROUP};

/// A 1-D tensor (norm, bias, rope factors) is read whole: it is a hidden size, not a vocabulary.
const MAX_VECTOR_ELEMS: u64 = 1 << 26;
/// Raw bytes read per piece of a matrix while repacking (and what is held at once).
pub const PIECE_BYTES: u64 = 8 << 20;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b.get(at).copied().unwrap_or(0), b.get(at + 1).copied().unwrap_or(0)])
}

/// ggml-common.h `block_q5_0`: d (f16 bits), qh (bit j = the fifth bit of element j), qs (low
/// nibbles as Q4_0); value = (q − 16)·d (ggml's dequantize_row_q5_0). qh is bytes, as in ggml, so
/// the struct has no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct BlockQ5_0 {
    d: u16,
    qh: [u8; 4],
    qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
// Blocks are read from file bytes in native order, and GGUF is little-endian.
const _: () = assert!(cfg!(target_endian = "little"));

impl BlockQ5_0 {
    /// The same values as a Q8_0 block with the same d: q − 16 is in −16..=15, an int8.
    fn to_q8(self) -> BlockQ8_0 {
        let qh = u32::from_le_bytes(self.qh);
        let mut out = [0i8; GROUP];
        for (j, &q) in self.qs.iter().enumerate() {
            let lo = (q & 0xF) | (((qh >> j) & 1) << 4) as u8;
            let hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
            out[j] = lo as i8 - 16;
            out[j + 16] = hi as i8 - 16;
        }
        BlockQ8_0 { d: self.d, qs: out }
    }
}

/// Row-major GGUF blocks (`block_q8_0`, `block_q4_0`, … in ggml-common.h, which the `#[repr(C)]`
/// structs mirror byte for byte) read from `raw`, whole blocks.
fn blocks<B: Pod>(raw: &[u8]) -> Vec<B> {
    raw.chunks_exact(std::mem::size_of::<B>()).map(bytemuck::pod_read_unaligned).collect()
}

/// Whole rows of matrix `t` (raw bytes as in the file) in our GPU layout; `n` of the result is the
/// number of rows given. Blocks never span rows (`dims[0]` is a multiple of the block size), so any
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
    let packed = match t.ty {
        GgmlType::Q8_0 => pack_blocks(rows, k, &blocks::<BlockQ8_0>(raw)),
        GgmlType::Q4_0 => pack_blocks(rows, k, &blocks::<BlockQ4_0>(raw)),
        GgmlType::Q4_1 => pack_blocks(rows, k, &blocks::<BlockQ4_1>(raw)),
        GgmlType::Q5_0 => {
            pack_blocks(rows, k, &blocks::<BlockQ5_0>(raw).into_iter().map(BlockQ5_0::to_q8).collect::<Vec<_>>())
        }
        GgmlType::Q5_1 => pack_blocks(rows, k, &blocks::<BlockQ5_1>(raw)),
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

pub(super) fn read(src: &mut dyn GgufSource, t: &TensorInfo, offset: u64, buf: &mut Vec<u8>, len: u64) -> Result<()> {
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
    matrix_of(file.require(name)?, src)
}

fn matrix_of(t: &TensorInfo, src: &mut dyn GgufSource) -> Result<PackedMatrix> {
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
    let Layout::Vector { .. } = t.layout()? else {
        return Err(t.shape_error("is not a vector"));
    };
    values_of(t, src)
}

/// The values of a tensor of any rank in row-major order, widened to f32 exactly: 1-D tensors,
/// and the small 2-D ones the model takes flat (F32, F16 or BF16).
pub(crate) fn values_of(t: &TensorInfo, src: &mut dyn GgufSource) -> Result<Vec<f32>> {
    too_large(format!("length of vector {}", t.name), t.elems(), MAX_VECTOR_ELEMS)?;
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

// ---- [`Fix`] --------------------------------------------------------------------------------

/// A tensor the model takes as a vector: `v` (its values in file order) as the model takes them.
pub(crate) fn fix_vector(t: &TensorInfo, fix: Fix, mut v: Vec<f32>) -> Result<Vec<f32>> {
    if fix == Fix::NegLog {
        for x in &mut v {
            // ssm_a = −exp(A_log) ≤ 0; 0 (A_log = −∞) is a head that never decays.
            if x.is_nan() || *x > 0.0 {
                return Err(t.shape_error(format!("holds {x}, but −exp(A_log) is never positive")));
            }
            *x = (-(*x as f64)).ln() as f32;
        }
    }
    Ok(v)
}

/// A tensor as the model takes it: a matrix in our layout, or a vector.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Matrix(PackedMatrix),
    Vector(Vec<f32>),
}

/// Tensor `t` as the model takes it ([`Fix`]), on the CPU (tests, conversion): what
/// [`GgufStream`](crate::loader::gguf_stream::GgufStream) uploads for it.
pub fn read_fixed(src: &mut dyn GgufSource, t: &TensorInfo, fix: Fix) -> Result<TensorData> {
    if fix.flattens() || matches!(t.layout()?, Layout::Vector { .. }) {
        return Ok(TensorData::Vector(fix_vector(t, fix, values_of(t, src)?)?));
    }
    Ok(TensorData::Matrix(matrix_of(t, src)?))
}
