//! A GGUF model streamed front to back into GPU buffers: the browser feeds `fetch` stream chunks,
//! the native loader feeds file reads, both through [`GgufStream`]. Nothing needs random access or
//! the whole file: each part's header is parsed from its first bytes as they arrive, every matrix
//! is allocated as soon as its header is known (so a model that does not fit fails before its data
//! is downloaded), and tensor bytes are repacked a piece of rows at a time as they pass.
//!
//! Memory: the header (a vocabulary, a few MiB), one piece of rows per matrix in flight (at most
//! [`super::gguf::PIECE_BYTES`] raw plus its repacked words), the vectors (norms, rope factors,
//! Qwen3.5's conv weights, which the model takes flat: kilobytes), and the caller's chunk.
//!
//! Every tensor goes through [`TensorMap::target`]: its checkpoint name and its [`Fix`] (applied
//! here to the tensors the model takes as vectors; matrices are only repacked).

use std::collections::{HashMap, HashSet};

use super::gguf::{
    fix_vector, parse_header, piece_rows, repack_rows, values_of, Fix, GgufError, GgufFile, GgufSource, Header,
    TensorInfo, TensorMap, MAX_HEADER_BYTES,
};
use super::manifest::Layout;
use super::{GpuTensor, FLUSH_BYTES};
use crate::gpu::Context;
use crate::ops::matmul::{chunk_byte_ranges, chunk_rows, MatrixChunk, QuantMatrix};

type Result<T, E = GgufError> = std::result::Result<T, E>;

/// The first header parse is tried after this many bytes (most headers are smaller).
const FIRST_HEADER_TRY: usize = 256 << 10;

/// What happens to one tensor's bytes.
enum Target {
    /// Not used by the model (and not 1-D).
    Skip,
    /// A 1-D tensor (or one the model takes flat), kept whole: uploaded under `name` if the model
    /// takes it, and, when 1-D (`keep`), kept for the config (rope factor tables).
    Vector { name: Option<String>, fix: Fix, keep: bool, bytes: Vec<u8> },
    /// A matrix: rows gathered into `pending` and repacked a piece at a time into `m`.
    Matrix { name: String, m: QuantMatrix, row0: u64, pending: Vec<u8>, step: u64 },
}

struct Planned {
    info: TensorInfo,
    target: Target,
}

/// Feed each part's bytes in order with [`write`](Self::write), call
/// [`finish_part`](Self::finish_part) after each part, then [`finish`](Self::finish).
pub struct GgufStream<'a> {
    ctx: &'a Context,
    part_bytes: Vec<u64>,
    /// The part being received (== headers.len() while its header is incomplete).
    current: usize,
    received: u64,
    head: Vec<u8>,
    next_try: usize,
    headers: Vec<Header>,
    /// From the first part's header.
    map: Option<TensorMap>,
    /// The current part's tensors in file order, and the first one not yet complete.
    plan: Vec<Planned>,
    next: usize,
    names: HashSet<String>,
    tensors: HashMap<String, GpuTensor>,
    captured: Vec<(usize, u64, Vec<u8>)>,
    unflushed: u64,
}

impl<'a> GgufStream<'a> {
    /// A model of `part_bytes.len()` files (one, or a split model's parts in order) of these sizes.
    pub fn new(ctx: &'a Context, part_bytes: Vec<u64>) -> Result<Self> {
        if part_bytes.is_empty() {
            return Err(GgufError::Split { message: "no files given".into() });
        }
        Ok(Self {
            ctx,
            part_bytes,
            current: 0,
            received: 0,
            head: Vec::new(),
            next_try: FIRST_HEADER_TRY,
            headers: Vec::new(),
            map: None,
            plan: Vec::new(),
            next: 0,
            names: HashSet::new(),
            tensors: HashMap::new(),
            captured: Vec::new(),
            unflushed: 0,
        })
    }

    /// Bytes of all parts together.
    /// Each part's size in bytes.
    pub fn part_sizes(&self) -> &[u64] {
        &self.part_bytes
    }

    /// Part `part`'s size in bytes (0 past the last).
    pub fn part_size(&self, part: usize) -> u64 {
        self.part_bytes.get(part).copied().unwrap_or(0)
    }

    pub fn total_bytes(&self) -> u64 {
        self.part_bytes.iter().sum()
    }

    /// Bytes received so far.
    pub fn loaded_bytes(&self) -> u64 {
        self.part_bytes[..self.current.min(self.part_bytes.len())].iter().sum::<u64>() + self.received
    }

    /// Whether part `part` is the one being read and its header is not parsed yet (its next
    /// bytes may allocate its tensors).
    pub fn header_pending(&self, part: usize) -> bool {
        part == self.current && self.headers.len() == part
    }

    /// The first part's header, once parsed (the model's metadata).
    pub fn header(&self) -> Option<&Header> {
        self.headers.first()
    }

    fn map(&self) -> Result<&TensorMap> {
        self.map.as_ref().ok_or_else(|| GgufError::Read {
            part: self.current,
            offset: 0,
            len: 0,
            message: "tensors before the first part's header".into(),
        })
    }

    fn read_error(&self, part: usize, message: String) -> GgufError {
        GgufError::Read { part, offset: self.received, len: 0, message }
    }

    /// The next bytes of part `part` (parts in order, each from its byte 0).
    pub fn write(&mut self, part: usize, bytes: &[u8]) -> Result<()> {
        if part != self.current {
            let msg = format!("bytes for part {} arrived while part {} is being read", part + 1, self.current + 1);
            return Err(self.read_error(part, msg));
        }
        let size = self.part_bytes.get(part).copied().unwrap_or(0);
        let end = self.received + bytes.len() as u64;
        if end > size {
            return Err(self.read_error(part, format!("{end} bytes arrived but the file is {size} bytes")));
        }
        let pos = self.received;
        self.received = end;
        if self.headers.len() == part {
            self.head.extend_from_slice(bytes);
            if self.head.len() < self.next_try && end < size {
                return Ok(());
            }
            match parse_header(&self.head) {
                Ok(h) => {
                    let head = std::mem::take(&mut self.head);
                    self.on_header(h)?;
                    return self.data(0, &head);
                }
                Err(GgufError::TruncatedHeader { needed, .. }) if end < size && needed < MAX_HEADER_BYTES => {
                    // Re-parse once at least `needed` bytes are in, and no more often than each
                    // doubling, so a long header is parsed O(log) times.
                    self.next_try = (needed as usize).max(self.head.len() * 2);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.data(pos, bytes)
    }

    fn on_header(&mut self, h: Header) -> Result<()> {
        let part = self.current;
        let size = self.part_bytes[part];
        if part == 0 {
            self.map = Some(TensorMap::new(&h.metadata)?);
            let count = h.metadata.opt_u32("split.count")?.unwrap_or(1).max(1) as usize;
            if count != self.part_bytes.len() {
                let given = self.part_bytes.len();
                return Err(GgufError::Split {
                    message: format!("split.count is {count} but {given} file(s) were given"),
                });
            }
        }
        let mut infos = h.tensors.clone();
        infos.sort_by_key(|t| t.offset);
        let mut plan = Vec::with_capacity(infos.len());
        let mut prev_end = 0u64;
        for mut t in infos {
            t.part = part;
            let end = t.offset.saturating_add(t.bytes);
            if end > size {
                return Err(GgufError::TruncatedData { tensor: t.name, part, end, file_bytes: size });
            }
            if t.offset < prev_end {
                let message = format!("tensor {} overlaps the tensor before it", t.name);
                return Err(GgufError::Read { part, offset: t.offset, len: t.bytes, message });
            }
            prev_end = end;
            if !self.names.insert(t.name.clone()) {
                return Err(GgufError::DuplicateTensor { name: t.name });
            }
            let wanted = self.map()?.target(&t)?;
            // Tensors the model does not take may have any shape; those it takes must load.
            let layout = match (t.layout(), &wanted) {
                (Ok(l), _) => Some(l),
                (Err(_), None) => None,
                (Err(e), Some(_)) => return Err(e),
            };
            let target = match (layout, wanted) {
                (Some(Layout::Vector { .. }), w) => {
                    let (name, fix) = w.map_or((None, Fix::None), |w| (Some(w.name), w.fix));
                    Target::Vector { name, fix, keep: true, bytes: Vec::new() }
                }
                (Some(Layout::Matrix { .. }), Some(w)) if w.fix.flattens() => {
                    Target::Vector { name: Some(w.name), fix: w.fix, keep: false, bytes: Vec::new() }
                }
                (Some(Layout::Matrix { n, k }), Some(w)) => {
                    let m = alloc_matrix(self.ctx, &t, &w.name, n, k)?;
                    let step = piece_rows(&t);
                    Target::Matrix { name: w.name, m, row0: 0, pending: Vec::new(), step }
                }
                _ => Target::Skip,
            };
            plan.push(Planned { info: t, target });
        }
        // An allocation the device refused shows up here, before any data is written.
        if let Some(e) = self.ctx.take_error() {
            return Err(e.into());
        }
        self.headers.push(h);
        self.plan = plan;
        self.next = 0;
        Ok(())
    }

    /// Bytes `[pos, pos + bytes.len())` of the current part, header parsed.
    fn data(&mut self, pos: u64, bytes: &[u8]) -> Result<()> {
        let end = pos + bytes.len() as u64;
        while let Some(p) = self.plan.get_mut(self.next) {
            let (t0, t1) = (p.info.offset, p.info.offset + p.info.bytes);
            if t0 >= end {
                break;
            }
            let (a, b) = (t0.max(pos), t1.min(end));
            if a < b {
                let slice = &bytes[(a - pos) as usize..(b - pos) as usize];
                match &mut p.target {
                    Target::Skip => {}
                    Target::Vector { bytes, .. } => bytes.extend_from_slice(slice),
                    Target::Matrix { m, row0, pending, step, .. } => {
                        pending.extend_from_slice(slice);
                        let piece = (*step * p.info.row_bytes()) as usize;
                        while pending.len() >= piece {
                            self.unflushed += write_rows(self.ctx, &p.info, m, *row0, &pending[..piece])?;
                            pending.drain(..piece);
                            *row0 += *step;
                        }
                    }
                }
            }
            if t1 > end {
                break;
            }
            self.complete()?;
        }
        if self.unflushed >= FLUSH_BYTES {
            self.unflushed = 0;
            self.ctx.flush_writes()?;
        }
        Ok(())
    }

    /// The tensor at `self.next` has all its bytes.
    fn complete(&mut self) -> Result<()> {
        let p = &mut self.plan[self.next];
        self.next += 1;
        match std::mem::replace(&mut p.target, Target::Skip) {
            Target::Skip => {}
            Target::Vector { name, fix, keep, bytes } => {
                if let Some(name) = name {
                    let at_zero = TensorInfo { part: 0, offset: 0, ..p.info.clone() };
                    let v = values_of(&at_zero, &mut super::gguf::SliceSource::new(vec![&bytes]))?;
                    let v = fix_vector(&p.info, fix, v)?;
                    self.unflushed += v.len() as u64 * 4;
                    self.tensors.insert(
                        name,
                        GpuTensor::Vector(self.ctx.storage_init(&p.info.name, bytemuck::cast_slice(&v))?),
                    );
                }
                if keep {
                    self.captured.push((p.info.part, p.info.offset, bytes));
                }
            }
            Target::Matrix { name, m, row0, pending, .. } => {
                // The last piece: fewer rows than a step.
                if !pending.is_empty() {
                    self.unflushed += write_rows(self.ctx, &p.info, &m, row0, &pending)?;
                }
                self.tensors.insert(name, GpuTensor::Matrix(m));
            }
        }
        Ok(())
    }

    /// Part `part` has had all its bytes.
    pub fn finish_part(&mut self, part: usize) -> Result<()> {
        let size = self.part_bytes.get(part).copied().unwrap_or(0);
        if part != self.current
            || self.received != size
            || self.headers.len() != part + 1
            || self.next != self.plan.len()
        {
            let msg = format!("part {} ended after {} of its {size} bytes", part + 1, self.received);
            return Err(self.read_error(part, msg));
        }
        self.current += 1;
        self.received = 0;
        self.next_try = FIRST_HEADER_TRY;
        self.plan.clear();
        self.next = 0;
        Ok(())
    }

    /// Forget what arrived of the part being read (to read it again from byte 0).
    pub fn restart_part(&mut self, part: usize) -> Result<()> {
        if part != self.current {
            return Err(self.read_error(part, format!("only the part being read ({}) can restart", self.current + 1)));
        }
        if self.headers.len() > part {
            self.headers.truncate(part);
            for p in std::mem::take(&mut self.plan) {
                self.names.remove(&p.info.name);
                if let Some(t) = self.map()?.target(&p.info)? {
                    self.tensors.remove(&t.name);
                }
            }
            if part == 0 {
                self.map = None;
            }
            self.captured.retain(|c| c.0 != part);
        }
        self.received = 0;
        self.head.clear();
        self.next_try = FIRST_HEADER_TRY;
        self.next = 0;
        Ok(())
    }

    /// Every part done: the model's tensor table, its tensors (by checkpoint name), and the 1-D
    /// tensors' bytes as a source for [`super::gguf::hf_config`].
    pub fn finish(self) -> Result<(GgufFile, HashMap<String, GpuTensor>, CapturedSource)> {
        if self.current != self.part_bytes.len() {
            let msg = format!("{} of {} parts arrived", self.current, self.part_bytes.len());
            return Err(GgufError::Read { part: self.current, offset: 0, len: 0, message: msg });
        }
        self.ctx.flush_writes()?;
        let file = GgufFile::from_parts(self.headers.into_iter().zip(self.part_bytes).collect())?;
        Ok((file, self.tensors, CapturedSource { tensors: self.captured }))
    }
}

/// The 1-D tensors kept by a [`GgufStream`], readable where they were in the file.
pub struct CapturedSource {
    tensors: Vec<(usize, u64, Vec<u8>)>,
}

impl GgufSource for CapturedSource {
    fn read_exact_at(&mut self, part: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        let found = self
            .tensors
            .iter()
            .find(|(p, off, bytes)| *p == part && *off <= offset && offset + len <= off + bytes.len() as u64);
        match found {
            Some((_, off, bytes)) => {
                let start = (offset - off) as usize;
                buf.copy_from_slice(&bytes[start..start + buf.len()]);
                Ok(())
            }
            None => Err(GgufError::Read { part, offset, len, message: "not a 1-D tensor kept while streaming".into() }),
        }
    }
}

/// Uninitialised GPU buffers for matrix `t` (`n` × `k`), in the row chunks `chunk_rows` plans for
/// this device.
fn alloc_matrix(ctx: &Context, t: &TensorInfo, name: &str, n: usize, k: usize) -> Result<QuantMatrix> {
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
/// see [`piece_rows`](super::gguf::piece_rows)) and write them into `m`'s chunks. Returns the bytes queued.
fn write_rows(ctx: &Context, t: &TensorInfo, m: &QuantMatrix, row0: u64, raw: &[u8]) -> Result<u64> {
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
