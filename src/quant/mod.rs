//! Weight formats on the CPU side: quantization (GGUF's reference rounding), our GPU layout, and the
//! scalar dequantization that `shaders/matmul.wgsl` and `shaders/embedding.wgsl` are tested against.
//!
//! A matrix W has `n` rows (outputs) × `k` columns (inputs), row-major. Quantized formats group each
//! row along k in groups of [`GROUP`] = 32, with GGUF's block semantics:
//! - `Q4` (Q4_0): value = (q − 8)·d, q in 0..=15, d an f16 per group.
//! - `Q4Asym` (Q4_1, MLC q4f16_1-like): value = q·d + m, d and m f16 per group.
//! - `Q8` (Q8_0): value = q·d, q an int8, d an f16 per group.
//! - `Q8Asym` (Q5_1 without change): value = q·d + m, q in 0..=31 stored as a byte, d and m f16.
//! - `Q4K`, `Q5K`, `Q6K` (GGUF's K-quants, 256-element super-blocks): see [`kquant`].
//!
//! GPU layout (all little-endian `u32` words, read by the shaders as `array<vec4<u32>>`):
//! - Q4/Q4Asym quants: per row k/32 groups × 16 bytes; byte b of a group holds element b in its low
//!   nibble and element b+16 in its high nibble (GGUF's order), so one group = one `vec4<u32>`.
//! - Q8/Q8Asym quants: per row k/32 groups × 32 bytes, element e in byte e (two's complement) = 2 `vec4<u32>`.
//! - Scales, Q4 and Q8: one f16 d per (row, group) at flat index `row * groups + g`, two per word
//!   (even index in the low half; the last word's high half is 0 when the count is odd).
//!   Q4Asym/Q8Asym: one word per (row, group) = `pack2x16float(d, m)` (d in the low half).
//! - K-quants: quants as Q4 (the low 4 bits of each element); "scales" hold each super-block's
//!   side data (scales, mins, high bits), [`WeightFormat::side_words`] words per super-block.
//! - F16: two per word (even element low), each row zero-padded to a multiple of 8 elements.
//!   F32: each row zero-padded to a multiple of 4 elements. Neither has scales.

use half::f16;

pub mod kquant;

/// Elements per quantization group (GGUF's QK4_0 = QK4_1 = QK8_0 = 32).
pub const GROUP: usize = 32;

/// How a weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    Q8,
    Q4,
    Q4Asym,
    Q8Asym,
    Q4K,
    Q5K,
    Q6K,
}

/// Why a matrix could not be quantized, packed or dequantized.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{format:?} groups k in blocks of {block} but k = {k}")]
    KNotMultipleOfBlock { format: WeightFormat, block: usize, k: usize },

    #[error("empty matrix: n = {n}, k = {k}")]
    Empty { n: usize, k: usize },

    #[error("a {n}×{k} matrix has {expected} values but {got} were given")]
    Length { n: usize, k: usize, expected: usize, got: usize },

    #[error("packed {format:?} {n}×{k} needs {expected} {what} words but holds {got}")]
    PackedLength { format: WeightFormat, n: usize, k: usize, what: &'static str, expected: usize, got: usize },

    #[error("a {n}×{k} matrix is too large to index")]
    TooLarge { n: usize, k: usize },

    #[error("row {row} is out of range for a matrix of {n} rows")]
    RowOutOfRange { row: usize, n: usize },
}

impl From<QuantError> for crate::gpu::GpuError {
    fn from(e: QuantError) -> Self {
        crate::gpu::GpuError::Shape { op: "quant", message: e.to_string() }
    }
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 9] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Q8,
        WeightFormat::Q4,
        WeightFormat::Q4Asym,
        WeightFormat::Q8Asym,
        WeightFormat::Q4K,
        WeightFormat::Q5K,
        WeightFormat::Q6K,
    ];

    /// The value of the `FORMAT` override constant in matmul.wgsl and embedding.wgsl.
    pub fn shader_code(self) -> u32 {
        match self {
            WeightFormat::F32 => 0,
            WeightFormat::F16 => 1,
            WeightFormat::Q8 => 2,
            WeightFormat::Q4 => 3,
            WeightFormat::Q4Asym => 4,
            WeightFormat::Q8Asym => 5,
            WeightFormat::Q4K => 6,
            WeightFormat::Q5K => 7,
            WeightFormat::Q6K => 8,
        }
    }

    pub fn is_quantized(self) -> bool {
        !matches!(self, WeightFormat::F32 | WeightFormat::F16)
    }

    /// GGUF's K-quants: 256-element super-blocks with side data.
    pub fn is_k_quant(self) -> bool {
        matches!(self, WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K)
    }

    /// Elements per block along k: 256 for K-quants, [`GROUP`] for the other quantized formats, 1 otherwise.
    pub fn block_elems(self) -> usize {
        match self {
            _ if self.is_k_quant() => kquant::SUPER,
            _ if self.is_quantized() => GROUP,
            _ => 1,
        }
    }

    /// Side-data words per K-quant super-block (0 for other formats).
    pub fn side_words(self) -> usize {
        match self {
            WeightFormat::Q4K => 5,
            WeightFormat::Q5K => 13,
            WeightFormat::Q6K => 21,
            _ => 0,
        }
    }

    /// Elements covered by one 16-byte `vec4<u32>` of a row: the unit the shaders step over.
    pub fn elems_per_unit(self) -> usize {
        match self {
            WeightFormat::F32 => 4,
            WeightFormat::F16 => 8,
            WeightFormat::Q8 | WeightFormat::Q8Asym => 16,
            _ => 32,
        }
    }

    /// Fail unless `k` (and `n`) are a shape this format can store.
    pub fn check_shape(self, n: usize, k: usize) -> Result<(), QuantError> {
        if n == 0 || k == 0 {
            return Err(QuantError::Empty { n, k });
        }
        if self.is_quantized() && k % self.block_elems() != 0 {
            return Err(QuantError::KNotMultipleOfBlock { format: self, block: self.block_elems(), k });
        }
        // Every index the shaders form (elements and words) must fit in u32.
        if n.checked_mul(k.next_multiple_of(8)).is_none_or(|e| e > u32::MAX as usize) {
            return Err(QuantError::TooLarge { n, k });
        }
        Ok(())
    }

    /// `vec4<u32>` units per row (rows are padded to whole units).
    pub fn units_per_row(self, k: usize) -> usize {
        k.div_ceil(self.elems_per_unit())
    }

    /// Quantization groups per row (0 for F16/F32).
    pub fn groups_per_row(self, k: usize) -> usize {
        if self.is_quantized() {
            k / GROUP
        } else {
            0
        }
    }

    /// Bytes of one row of weights in the GPU layout.
    pub fn weight_row_bytes(self, k: usize) -> u64 {
        self.units_per_row(k) as u64 * 16
    }

    /// Bytes of scales for `rows` rows starting at an even flat (row, group) index, padded to a
    /// whole word. 0 for F16/F32.
    pub fn scale_bytes(self, rows: usize, k: usize) -> u64 {
        let entries = rows as u64 * self.groups_per_row(k) as u64;
        match self {
            WeightFormat::F32 | WeightFormat::F16 => 0,
            WeightFormat::Q8 | WeightFormat::Q4 => entries.div_ceil(2) * 4,
            WeightFormat::Q4Asym | WeightFormat::Q8Asym => entries * 4,
            _ => rows as u64 * (k / kquant::SUPER) as u64 * self.side_words() as u64 * 4,
        }
    }

    /// Scale bytes per row when rows are whole scale words (all formats but Q4/Q8 with an odd
    /// number of groups per row, whose f16 pairs straddle rows).
    pub fn scale_row_bytes(self, k: usize) -> u64 {
        match self {
            WeightFormat::Q8 | WeightFormat::Q4 => self.groups_per_row(k) as u64 * 2,
            _ => self.scale_bytes(1, k),
        }
    }
}

/// A matrix in the GPU layout described in the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedMatrix {
    pub format: WeightFormat,
    /// Rows (outputs).
    pub n: usize,
    /// Columns (inputs).
    pub k: usize,
    /// `n * units_per_row(k) * 4` words.
    pub weights: Vec<u32>,
    /// `scale_bytes(n, k) / 4` words (empty for F16/F32).
    pub scales: Vec<u32>,
}

impl PackedMatrix {
    /// Fail unless the shape is valid for the format and both vectors have exactly the right length.
    pub fn validate(&self) -> Result<(), QuantError> {
        let (format, n, k) = (self.format, self.n, self.k);
        format.check_shape(n, k)?;
        let expected = n * format.units_per_row(k) * 4;
        if self.weights.len() != expected {
            let got = self.weights.len();
            return Err(QuantError::PackedLength { format, n, k, what: "weight", expected, got });
        }
        let expected = (format.scale_bytes(n, k) / 4) as usize;
        if self.scales.len() != expected {
            let got = self.scales.len();
            return Err(QuantError::PackedLength { format, n, k, what: "scale", expected, got });
        }
        Ok(())
    }

    pub fn weight_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.weights)
    }

    pub fn scale_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.scales)
    }
}

/// One GGUF block (32 elements) as stored in a .gguf file; `pack_blocks` turns row-major blocks
/// into our layout.
pub trait Block {
    const FORMAT: WeightFormat;
    /// Quantize 32 values with ggml's reference rounding.
    fn quantize(x: &[f32; GROUP]) -> Self;
    /// The 32 values this block stands for (ggml's dequantize_row_*).
    fn decode(&self) -> [f32; GROUP];
    /// The block's quant bytes as little-endian words (4 for Q4_0/Q4_1, 8 for Q8_0).
    fn quant_words(&self) -> impl Iterator<Item = u32>;
    /// The scale entry: d's f16 bits (Q4_0, Q8_0) or d | m << 16 (Q4_1).
    fn scale_entry(&self) -> u32;
}

/// GGUF `block_q4_0`: value = (q − 8)·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// f16 bits.
    pub d: u16,
    /// Byte b: element b in the low nibble, element b + 16 in the high nibble.
    pub qs: [u8; 16],
}

/// GGUF `block_q4_1`: value = q·d + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; 16],
}

/// GGUF `block_q8_0`: value = q·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; 32],
}

/// GGUF `block_q5_1`: value = q·d + m, q = low nibble | fifth bit from qh (bit j = element j).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    pub d: u16,
    pub m: u16,
    pub qh: u32,
    pub qs: [u8; 16],
}

// Same sizes as ggml's static_asserts in ggml-common.h.
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

impl Block for BlockQ4_0 {
    const FORMAT: WeightFormat = WeightFormat::Q4;

    /// ggml `quantize_row_q4_0_ref`: d = max / −8 where max is the value of largest magnitude,
    /// q = min(15, trunc(x/d + 8.5)).
    fn quantize(x: &[f32; GROUP]) -> Self {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        let mut qs = [0u8; 16];
        for (j, b) in qs.iter_mut().enumerate() {
            *b = q(x[j]) | (q(x[j + 16]) << 4);
        }
        Self { d: f16::from_f32(d).to_bits(), qs }
    }

    fn decode(&self) -> [f32; GROUP] {
        let d = f16_to_f32(self.d);
        let mut out = [0.0; GROUP];
        for (j, &b) in self.qs.iter().enumerate() {
            out[j] = ((b & 0xF) as i32 - 8) as f32 * d;
            out[j + 16] = ((b >> 4) as i32 - 8) as f32 * d;
        }
        out
    }

    fn quant_words(&self) -> impl Iterator<Item = u32> {
        let qs = self.qs;
        (0..4).map(move |w| u32::from_le_bytes([qs[4 * w], qs[4 * w + 1], qs[4 * w + 2], qs[4 * w + 3]]))
    }

    fn scale_entry(&self) -> u32 {
        self.d as u32
    }
}

impl Block for BlockQ4_1 {
    const FORMAT: WeightFormat = WeightFormat::Q4Asym;

    /// ggml `quantize_row_q4_1_ref`: d = (max − min)/15, m = min, q = min(15, trunc((x − min)/d + 0.5)).
    fn quantize(x: &[f32; GROUP]) -> Self {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in x {
            min = min.min(v);
            max = max.max(v);
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
        let mut qs = [0u8; 16];
        for (j, b) in qs.iter_mut().enumerate() {
            *b = q(x[j]) | (q(x[j + 16]) << 4);
        }
        Self { d: f16::from_f32(d).to_bits(), m: f16::from_f32(min).to_bits(), qs }
    }

    fn decode(&self) -> [f32; GROUP] {
        let (d, m) = (f16_to_f32(self.d), f16_to_f32(self.m));
        let mut out = [0.0; GROUP];
        for (j, &b) in self.qs.iter().enumerate() {
            out[j] = (b & 0xF) as f32 * d + m;
            out[j + 16] = (b >> 4) as f32 * d + m;
        }
        out
    }

    fn quant_words(&self) -> impl Iterator<Item = u32> {
        let qs = self.qs;
        (0..4).map(move |w| u32::from_le_bytes([qs[4 * w], qs[4 * w + 1], qs[4 * w + 2], qs[4 * w + 3]]))
    }

    fn scale_entry(&self) -> u32 {
        self.d as u32 | (self.m as u32) << 16
    }
}

impl Block for BlockQ8_0 {
    const FORMAT: WeightFormat = WeightFormat::Q8;

    /// ggml `quantize_row_q8_0_ref`: d = amax/127, q = round(x/d) (half away from zero).
    fn quantize(x: &[f32; GROUP]) -> Self {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        Self { d: f16::from_f32(d).to_bits(), qs }
    }

    fn decode(&self) -> [f32; GROUP] {
        let d = f16_to_f32(self.d);
        let mut out = [0.0; GROUP];
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
        out
    }

    fn quant_words(&self) -> impl Iterator<Item = u32> {
        let qs = self.qs;
        (0..8).map(move |w| {
            u32::from_le_bytes([qs[4 * w] as u8, qs[4 * w + 1] as u8, qs[4 * w + 2] as u8, qs[4 * w + 3] as u8])
        })
    }

    fn scale_entry(&self) -> u32 {
        self.d as u32
    }
}

impl BlockQ5_1 {
    fn quant(&self, j: usize) -> u8 {
        let nib = if j < 16 { self.qs[j] & 0xF } else { self.qs[j - 16] >> 4 };
        nib | (((self.qh >> j) & 1) << 4) as u8
    }
}

impl Block for BlockQ5_1 {
    const FORMAT: WeightFormat = WeightFormat::Q8Asym;

    /// ggml `quantize_row_q5_1_ref`: d = (max − min)/31, m = min, q = trunc((x − min)/d + 0.5).
    fn quantize(x: &[f32; GROUP]) -> Self {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in x {
            min = min.min(v);
            max = max.max(v);
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |v: f32| ((v - min) * id + 0.5) as u8;
        let (mut qs, mut qh) = ([0u8; 16], 0u32);
        for j in 0..16 {
            let (a, b) = (q(x[j]), q(x[j + 16]));
            qs[j] = (a & 0xF) | (b & 0xF) << 4;
            qh |= ((a as u32 >> 4) & 1) << j | ((b as u32 >> 4) & 1) << (j + 16);
        }
        Self { d: f16::from_f32(d).to_bits(), m: f16::from_f32(min).to_bits(), qh, qs }
    }

    fn decode(&self) -> [f32; GROUP] {
        let (d, m) = (f16_to_f32(self.d), f16_to_f32(self.m));
        std::array::from_fn(|j| self.quant(j) as f32 * d + m)
    }

    /// One quant (0..=31) per byte, as Q8 stores its int8s.
    fn quant_words(&self) -> impl Iterator<Item = u32> {
        let b = *self;
        (0..8).map(move |w| u32::from_le_bytes(std::array::from_fn(|i| b.quant(4 * w + i))))
    }

    fn scale_entry(&self) -> u32 {
        self.d as u32 | (self.m as u32) << 16
    }
}

/// Repack row-major GGUF blocks (`n * k/32` of them, as in a .gguf tensor) into our layout.
pub fn pack_blocks<B: Block>(n: usize, k: usize, blocks: &[B]) -> Result<PackedMatrix, QuantError> {
    let format = B::FORMAT;
    format.check_shape(n, k)?;
    let expected = n * (k / GROUP);
    if blocks.len() != expected {
        return Err(QuantError::Length { n, k, expected: expected * GROUP, got: blocks.len() * GROUP });
    }
    let mut weights = Vec::with_capacity(n * format.units_per_row(k) * 4);
    for b in blocks {
        weights.extend(b.quant_words());
    }
    let scales = match format {
        WeightFormat::Q4Asym | WeightFormat::Q8Asym => blocks.iter().map(Block::scale_entry).collect(),
        _ => blocks
            .chunks(2)
            .map(|pair| pair[0].scale_entry() | pair.get(1).map_or(0, |b| b.scale_entry() << 16))
            .collect(),
    };
    Ok(PackedMatrix { format, n, k, weights, scales })
}

fn check_len(n: usize, k: usize, got: usize) -> Result<(), QuantError> {
    let expected = n.checked_mul(k).ok_or(QuantError::TooLarge { n, k })?;
    if got != expected {
        return Err(QuantError::Length { n, k, expected, got });
    }
    Ok(())
}

fn blocks_of<B: Block>(data: &[f32]) -> Vec<B> {
    data.chunks_exact(GROUP)
        .map(|c| {
            let mut g = [0.0; GROUP];
            g.copy_from_slice(c);
            B::quantize(&g)
        })
        .collect()
}

/// Store `data` (`n` rows × `k`, row-major) in `format` with GGUF's reference rounding.
pub fn quantize(format: WeightFormat, data: &[f32], n: usize, k: usize) -> Result<PackedMatrix, QuantError> {
    format.check_shape(n, k)?;
    check_len(n, k, data.len())?;
    match format {
        WeightFormat::Q4 => pack_blocks(n, k, &blocks_of::<BlockQ4_0>(data)),
        WeightFormat::Q4Asym => pack_blocks(n, k, &blocks_of::<BlockQ4_1>(data)),
        WeightFormat::Q8 => pack_blocks(n, k, &blocks_of::<BlockQ8_0>(data)),
        WeightFormat::Q8Asym => pack_blocks(n, k, &blocks_of::<BlockQ5_1>(data)),
        WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K => kquant::quantize(format, data, n, k),
        WeightFormat::F16 => {
            let row_words = format.units_per_row(k) * 4;
            let mut weights = Vec::with_capacity(n * row_words);
            for row in data.chunks_exact(k) {
                let start = weights.len();
                weights.extend(row.chunks(2).map(|p| {
                    let lo = f16::from_f32(p[0]).to_bits() as u32;
                    let hi = p.get(1).map_or(0, |&v| f16::from_f32(v).to_bits() as u32);
                    lo | hi << 16
                }));
                weights.resize(start + row_words, 0);
            }
            Ok(PackedMatrix { format, n, k, weights, scales: Vec::new() })
        }
        WeightFormat::F32 => {
            let row_words = format.units_per_row(k) * 4;
            let mut weights = Vec::with_capacity(n * row_words);
            for row in data.chunks_exact(k) {
                let start = weights.len();
                weights.extend(row.iter().map(|v| v.to_bits()));
                weights.resize(start + row_words, 0);
            }
            Ok(PackedMatrix { format, n, k, weights, scales: Vec::new() })
        }
    }
}

/// The f16 scale entry (d bits, or d | m << 16 for Q4Asym/Q8Asym) at flat index `i` = row * groups + g.
fn scale_entry(p: &PackedMatrix, i: usize) -> u32 {
    match p.format {
        WeightFormat::Q4Asym | WeightFormat::Q8Asym => p.scales[i],
        _ => (p.scales[i / 2] >> (16 * (i % 2))) & 0xFFFF,
    }
}

/// The additive term of group `g` of row `row`: m (Q4Asym, Q8Asym), −dmin·m (Q4K, Q5K), else 0.
/// Kernels may sum it apart from the q·d products, so error bounds count it.
pub fn group_offset(p: &PackedMatrix, row: usize, g: usize) -> f32 {
    let groups = p.format.groups_per_row(p.k);
    match p.format {
        WeightFormat::Q4Asym | WeightFormat::Q8Asym => f16_to_f32((scale_entry(p, row * groups + g) >> 16) as u16),
        WeightFormat::Q4K | WeightFormat::Q5K => {
            let sb = (row * groups + g) / 8 * p.format.side_words();
            let m = (p.scales[sb + 3 + (g % 8) / 4] >> (8 * (g % 4))) & 0xFF;
            -f16_to_f32((p.scales[sb] >> 16) as u16) * m as f32
        }
        _ => 0.0,
    }
}

/// Row `row` of `p` as f32 values, computed exactly as the shaders do (bit-identical: every
/// product of a small integer and an f16 is exact in f32, and q·d + m is rounded once).
pub fn dequantize_row(p: &PackedMatrix, row: usize) -> Result<Vec<f32>, QuantError> {
    p.validate()?;
    if row >= p.n {
        return Err(QuantError::RowOutOfRange { row, n: p.n });
    }
    let (format, k) = (p.format, p.k);
    let row_words = format.units_per_row(k) * 4;
    let w = &p.weights[row * row_words..(row + 1) * row_words];
    let mut out = Vec::with_capacity(k);
    match format {
        WeightFormat::F32 => out.extend(w[..k].iter().map(|&b| f32::from_bits(b))),
        WeightFormat::F16 => out.extend((0..k).map(|e| f16_to_f32((w[e / 2] >> (16 * (e % 2))) as u16))),
        WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K => {
            let (sw, supers) = (format.side_words(), k / kquant::SUPER);
            for (g, gw) in w.chunks_exact(4).enumerate() {
                let sb = row * supers + g / 8;
                out.extend(kquant::decode_group(format, gw, &p.scales[sb * sw..(sb + 1) * sw], g % 8));
            }
        }
        _ => {
            let groups = format.groups_per_row(k);
            let group_words = row_words / groups;
            for (g, gw) in w.chunks_exact(group_words).enumerate() {
                let entry = scale_entry(p, row * groups + g);
                let d = f16_to_f32(entry as u16);
                let m = f16_to_f32((entry >> 16) as u16);
                let bytes: Vec<u8> = gw.iter().flat_map(|x| x.to_le_bytes()).collect();
                let mut vals = [0.0f32; GROUP];
                for (j, &b) in bytes.iter().enumerate() {
                    match format {
                        WeightFormat::Q8 => vals[j] = (b as i8) as f32 * d,
                        WeightFormat::Q8Asym => vals[j] = b as f32 * d + m,
                        WeightFormat::Q4 => {
                            vals[j] = ((b & 0xF) as i32 - 8) as f32 * d;
                            vals[j + 16] = ((b >> 4) as i32 - 8) as f32 * d;
                        }
                        _ => {
                            vals[j] = (b & 0xF) as f32 * d + m;
                            vals[j + 16] = (b >> 4) as f32 * d + m;
                        }
                    }
                }
                out.extend_from_slice(&vals);
            }
        }
    }
    Ok(out)
}

/// The whole matrix as f32 (`n * k`, row-major): the scalar reference the GPU kernels are tested
/// against.
pub fn dequantize(p: &PackedMatrix) -> Result<Vec<f32>, QuantError> {
    p.validate()?;
    let mut out = Vec::with_capacity(p.n * p.k);
    for row in 0..p.n {
        out.extend(dequantize_row(p, row)?);
    }
    Ok(out)
}
