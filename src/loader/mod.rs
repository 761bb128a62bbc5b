//! Model packages: the format ([`manifest`]), the Hugging Face → package converter (`convert`,
//! native), and loading a package onto the GPU.
//!
//! Loading streams shard bytes through a [`ShardWriter`], which routes each piece to the buffer it
//! belongs to (`queue.write_buffer` at the right offset of the right row chunk) and checks each
//! shard's SHA-256 as it passes. No tensor or shard is ever whole in memory: [`load_tensors`] reads
//! [`STAGING_BYTES`] at a time from a [`ShardSource`] (files natively via [`Package`]; the browser
//! feeds `fetch` stream chunks to the same writer).

pub mod gguf;
pub mod gguf_stream;
pub mod gguf_tokenizer;
pub mod manifest;

#[cfg(not(target_arch = "wasm32"))]
pub mod convert;
#[cfg(not(target_arch = "wasm32"))]
pub mod safetensors;

use std::collections::HashMap;
use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::gpu::{Context, GpuError};
use crate::ops::matmul::{chunk_byte_ranges, chunk_rows, MatrixChunk, QuantMatrix};
pub use manifest::{ByteRange, Layout, Manifest, ManifestError, Part, PartKind, Quant, Shard, Tensor};

/// Bytes `load_tensors` reads from a source at a time (its staging buffer).
pub const STAGING_BYTES: usize = 8 << 20;
/// Queued `write_buffer` data is submitted (and, natively, waited for) at least this often, so
/// wgpu's internal staging copies stay bounded instead of growing to the model's size.
/// The one flush interval of every loader (packages, GGUF streams).
pub(crate) const FLUSH_BYTES: u64 = 64 << 20;

/// Why a package could not be opened or loaded; each variant names the shard, file or tensor.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),

    #[error(transparent)]
    Gpu(#[from] GpuError),

    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },

    #[error("shard {file} is missing ({path}); re-download or re-convert the package")]
    MissingShard { file: String, path: String },

    #[error(
        "shard {file} is {got} bytes but the manifest says {expected}; the file is truncated or from another package"
    )]
    ShardSize { file: String, expected: u64, got: u64 },

    #[error("shard {file} is corrupt: sha256 {got}, manifest says {expected}; re-download or re-convert it")]
    Sha256 { file: String, expected: String, got: String },

    #[error("shard {file}: {message}")]
    ShardRead { file: String, message: String },

    #[error("no shard {shard}: the manifest has {count}")]
    NoSuchShard { shard: usize, count: usize },

    #[error("tensor {name} is not in the package")]
    MissingTensor { name: String },

    #[error("tensor {name} is a {found}, not a {expected}")]
    WrongKind { name: String, expected: &'static str, found: &'static str },
}

/// A loaded tensor.
pub enum GpuTensor {
    /// A 2-D weight, in row chunks that each fit the binding limit.
    Matrix(QuantMatrix),
    /// A 1-D f32 vector (norm weights, biases).
    Vector(wgpu::Buffer),
}

impl GpuTensor {
    fn kind(&self) -> &'static str {
        match self {
            GpuTensor::Matrix(_) => "matrix",
            GpuTensor::Vector(_) => "vector",
        }
    }
}

/// Remove matrix `name` from a loaded table (a model's `Weights` takes each tensor once).
pub fn take_matrix(tensors: &mut HashMap<String, GpuTensor>, name: &str) -> Result<QuantMatrix, LoadError> {
    match tensors.remove(name) {
        Some(GpuTensor::Matrix(m)) => Ok(m),
        Some(other) => {
            let found = other.kind();
            tensors.insert(name.to_string(), other);
            Err(LoadError::WrongKind { name: name.to_string(), expected: "matrix", found })
        }
        None => Err(LoadError::MissingTensor { name: name.to_string() }),
    }
}

/// Remove vector `name` from a loaded table.
pub fn take_vector(tensors: &mut HashMap<String, GpuTensor>, name: &str) -> Result<wgpu::Buffer, LoadError> {
    match tensors.remove(name) {
        Some(GpuTensor::Vector(b)) => Ok(b),
        Some(other) => {
            let found = other.kind();
            tensors.insert(name.to_string(), other);
            Err(LoadError::WrongKind { name: name.to_string(), expected: "vector", found })
        }
        None => Err(LoadError::MissingTensor { name: name.to_string() }),
    }
}

/// Random access to shard bytes. [`load_tensors`] reads each shard once, front to back.
pub trait ShardSource {
    /// Fill `buf` with the bytes of shard `shard` (an index into `Manifest::shards`) at `offset`.
    fn read_exact_at(&mut self, shard: usize, offset: u64, buf: &mut [u8]) -> Result<(), LoadError>;
}

/// Allocate every tensor of `manifest` on the GPU and fill it from `source`, checking each shard's
/// SHA-256. Memory: one [`STAGING_BYTES`] buffer plus at most ~`FLUSH_BYTES` queued in wgpu.
pub fn load_tensors(
    ctx: &Context,
    manifest: &Manifest,
    source: &mut dyn ShardSource,
) -> Result<HashMap<String, GpuTensor>, LoadError> {
    let mut writer = ShardWriter::new(ctx, manifest.clone())?;
    let largest = manifest.shards.iter().map(|s| s.bytes).max().unwrap_or(0);
    let mut buf = vec![0u8; largest.min(STAGING_BYTES as u64) as usize];
    for (i, shard) in manifest.shards.iter().enumerate() {
        let mut offset = 0u64;
        while offset < shard.bytes {
            let n = (shard.bytes - offset).min(buf.len() as u64) as usize;
            let piece = &mut buf[..n];
            source.read_exact_at(i, offset, piece)?;
            writer.write(i, piece)?;
            offset += n as u64;
        }
        writer.finish_shard(i)?;
    }
    writer.finish()
}

/// Shard bytes → GPU buffers. Feed each shard's bytes in order (any piece sizes, shards in any
/// order or interleaved), call [`finish_shard`](Self::finish_shard) after each shard's last byte,
/// then [`finish`](Self::finish). Target-independent: the browser drives it from `fetch` streams.
pub struct ShardWriter<'a> {
    ctx: &'a Context,
    manifest: Manifest,
    tensors: HashMap<String, GpuTensor>,
    /// Per shard: where its bytes go, sorted by shard offset (non-overlapping per the manifest).
    routes: Vec<Vec<Route>>,
    streams: Vec<ShardStream>,
    unflushed: u64,
}

/// Shard bytes `[offset, offset + bytes)` go to `buffer` at `buffer_offset`.
struct Route {
    offset: u64,
    bytes: u64,
    buffer: wgpu::Buffer,
    buffer_offset: u64,
}

/// Progress of one shard's stream: bytes seen, their running hash, and up to 3 bytes held back so
/// every GPU write is whole 4-byte words (fetch chunks have arbitrary lengths).
#[derive(Default)]
struct ShardStream {
    received: u64,
    hasher: Sha256Hex,
    carry: [u8; 4],
    carry_len: usize,
    done: bool,
}

impl<'a> ShardWriter<'a> {
    /// Validate `manifest` and allocate every tensor's buffers (uninitialised) through `ctx`, split
    /// into row chunks against `ctx.max_binding_bytes()`.
    pub fn new(ctx: &'a Context, manifest: Manifest) -> Result<Self, LoadError> {
        manifest.validate()?;
        let mut tensors = HashMap::with_capacity(manifest.tensors.len());
        let mut routes: Vec<Vec<Route>> = manifest.shards.iter().map(|_| Vec::new()).collect();
        for t in &manifest.tensors {
            let (tensor, targets) = allocate(ctx, t)?;
            for part in &t.parts {
                let targets: Vec<&Target> = targets.iter().filter(|x| x.0 == part.kind).collect();
                let mut logical = 0u64; // offset of the current range within the part's stream
                for r in &part.ranges {
                    let span = logical..logical + r.bytes;
                    for (_, dst, buffer) in &targets {
                        let (start, end) = (span.start.max(dst.start), span.end.min(dst.end));
                        if start < end {
                            // Validated: r.shard < shards.len().
                            if let Some(list) = routes.get_mut(r.shard as usize) {
                                list.push(Route {
                                    offset: r.offset + (start - span.start),
                                    bytes: end - start,
                                    buffer: buffer.clone(),
                                    buffer_offset: start - dst.start,
                                });
                            }
                        }
                    }
                    logical = span.end;
                }
            }
            tensors.insert(t.name.clone(), tensor);
        }
        for list in &mut routes {
            list.sort_by_key(|r| r.offset);
        }
        if let Some(e) = ctx.take_error() {
            return Err(e.into());
        }
        let streams = manifest.shards.iter().map(|_| ShardStream::default()).collect();
        Ok(Self { ctx, manifest, tensors, routes, streams, unflushed: 0 })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Bytes of all shards together.
    pub fn total_bytes(&self) -> u64 {
        self.manifest.total_bytes()
    }

    /// Bytes received so far, all shards together (for progress events).
    pub fn loaded_bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.received).sum()
    }

    /// The next `bytes` of shard `shard`.
    pub fn write(&mut self, shard: usize, bytes: &[u8]) -> Result<(), LoadError> {
        let count = self.manifest.shards.len();
        let (Some(info), Some(stream)) = (self.manifest.shards.get(shard), self.streams.get_mut(shard)) else {
            return Err(LoadError::NoSuchShard { shard, count });
        };
        let end = stream.received + bytes.len() as u64;
        if stream.done || end > info.bytes {
            return Err(LoadError::ShardSize { file: info.file.clone(), expected: info.bytes, got: end });
        }
        stream.hasher.update(bytes);
        // Word-align: complete a held-back partial word first, hold back the new tail.
        let mut rest = bytes;
        let mut word_at = stream.received - stream.carry_len as u64;
        let mut word = None;
        if stream.carry_len > 0 {
            let take = (4 - stream.carry_len).min(rest.len());
            stream.carry[stream.carry_len..stream.carry_len + take].copy_from_slice(&rest[..take]);
            stream.carry_len += take;
            rest = &rest[take..];
            if stream.carry_len == 4 {
                word = Some(stream.carry);
                stream.carry_len = 0;
            }
        }
        let aligned = rest.len() & !3;
        let (body, tail) = rest.split_at(aligned);
        if !tail.is_empty() {
            stream.carry[..tail.len()].copy_from_slice(tail);
            stream.carry_len = tail.len();
        }
        stream.received = end;
        let routes = self.routes.get(shard).map_or(&[][..], |r| &r[..]);
        if let Some(w) = word {
            route(self.ctx, routes, word_at, &w);
            word_at += 4;
        }
        route(self.ctx, routes, word_at, body);
        self.unflushed += bytes.len() as u64;
        if self.unflushed >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Check that shard `shard` arrived whole and matches its SHA-256.
    pub fn finish_shard(&mut self, shard: usize) -> Result<(), LoadError> {
        let count = self.manifest.shards.len();
        let (Some(info), Some(stream)) = (self.manifest.shards.get(shard), self.streams.get_mut(shard)) else {
            return Err(LoadError::NoSuchShard { shard, count });
        };
        if stream.received != info.bytes || stream.done {
            return Err(LoadError::ShardSize { file: info.file.clone(), expected: info.bytes, got: stream.received });
        }
        stream.done = true;
        let got = std::mem::take(&mut stream.hasher).finish();
        if got != info.sha256 {
            return Err(LoadError::Sha256 { file: info.file.clone(), expected: info.sha256.clone(), got });
        }
        Ok(())
    }

    /// Forget what arrived of shard `shard`, to receive it again from byte 0 (after a bad hash or
    /// a failed download); its routes are rewritten as the new bytes pass.
    pub fn restart_shard(&mut self, shard: usize) -> Result<(), LoadError> {
        let count = self.manifest.shards.len();
        let stream = self.streams.get_mut(shard).ok_or(LoadError::NoSuchShard { shard, count })?;
        *stream = ShardStream::default();
        Ok(())
    }

    /// All shards done: submit the last writes and hand over the tensors.
    pub fn finish(mut self) -> Result<HashMap<String, GpuTensor>, LoadError> {
        for (info, stream) in self.manifest.shards.iter().zip(&self.streams) {
            if !stream.done {
                return Err(LoadError::ShardSize {
                    file: info.file.clone(),
                    expected: info.bytes,
                    got: stream.received,
                });
            }
        }
        self.flush()?;
        Ok(self.tensors)
    }

    fn flush(&mut self) -> Result<(), LoadError> {
        self.unflushed = 0;
        Ok(self.ctx.flush_writes()?)
    }
}

/// Write `bytes`, which start at shard offset `at` (4-aligned, whole words), to every route they cover.
fn route(ctx: &Context, routes: &[Route], at: u64, bytes: &[u8]) {
    let end = at + bytes.len() as u64;
    let first = routes.partition_point(|r| r.offset + r.bytes <= at);
    for r in routes[first..].iter().take_while(|r| r.offset < end) {
        let (start, stop) = (at.max(r.offset), end.min(r.offset + r.bytes));
        if let Some(piece) = bytes.get((start - at) as usize..(stop - at) as usize) {
            ctx.write(&r.buffer, r.buffer_offset + (start - r.offset), piece);
        }
    }
}

/// A buffer holding bytes `range` of part `kind`'s stream.
type Target = (PartKind, Range<u64>, wgpu::Buffer);

/// Create `t`'s buffers; return the tensor and where each buffer's bytes come from.
fn allocate(ctx: &Context, t: &Tensor) -> Result<(GpuTensor, Vec<Target>), LoadError> {
    match t.layout()? {
        Layout::Vector { len } => {
            let bytes = len as u64 * 4;
            if bytes > ctx.max_binding_bytes() {
                return Err(GpuError::LimitTooSmall {
                    limit: "max_binding_bytes",
                    needed: bytes,
                    available: ctx.max_binding_bytes(),
                    what: format!("vector {}", t.name),
                }
                .into());
            }
            let buffer = ctx.storage(&t.name, bytes)?;
            let targets = vec![(PartKind::Weights, 0..bytes, buffer.clone())];
            Ok((GpuTensor::Vector(buffer), targets))
        }
        Layout::Matrix { n, k } => {
            let format = t.format;
            let mut chunks = Vec::new();
            let mut targets = Vec::new();
            for (i, (row0, rows)) in chunk_rows(format, n, k, ctx.max_binding_bytes())?.into_iter().enumerate() {
                let (w, s) = chunk_byte_ranges(format, k, row0, rows);
                let weights = ctx.storage(&format!("{}.w{i}", t.name), w.end - w.start)?;
                targets.push((PartKind::Weights, w, weights.clone()));
                let scales = if s.is_empty() {
                    None
                } else {
                    let b = ctx.storage(&format!("{}.s{i}", t.name), s.end - s.start)?;
                    targets.push((PartKind::Scales, s, b.clone()));
                    Some(b)
                };
                chunks.push(MatrixChunk { row0, rows, weights, scales });
            }
            Ok((GpuTensor::Matrix(QuantMatrix { format, n: n as u32, k: k as u32, chunks }), targets))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a byte stream as lowercase hex (the manifest's `sha256`).
#[derive(Default)]
pub(crate) struct Sha256Hex(Sha256);

impl Sha256Hex {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{DirSource, Package};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::collections::HashMap;
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom};
    use std::path::{Path, PathBuf};

    use super::{load_tensors, GpuTensor, LoadError, Manifest, Sha256Hex, ShardSource, STAGING_BYTES};
    use crate::gpu::Context;
    use crate::loader::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES};

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
        move |source| LoadError::Io { path: path.display().to_string(), source }
    }

    /// A package directory: `manifest.json`, its shards and tokenizer files.
    pub struct Package {
        pub dir: PathBuf,
        pub manifest: Manifest,
    }

    impl Package {
        /// Read and validate `dir/manifest.json` and check that every shard and tokenizer file is
        /// there with the right size. Contents are checked (SHA-256) while loading, or by [`verify`](Self::verify).
        pub fn open(dir: &Path) -> Result<Self, LoadError> {
            let path = dir.join(MANIFEST_FILE);
            let file = File::open(&path).map_err(io(&path))?;
            let mut bytes = Vec::new();
            // One byte past the limit tells "too large" from "exactly at the limit".
            file.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(io(&path))?;
            let manifest = Manifest::from_json(&bytes)?;
            for s in &manifest.shards {
                let p = dir.join(&s.file);
                let meta = std::fs::metadata(&p).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        LoadError::MissingShard { file: s.file.clone(), path: p.display().to_string() }
                    }
                    _ => LoadError::Io { path: p.display().to_string(), source: e },
                })?;
                if meta.len() != s.bytes {
                    return Err(LoadError::ShardSize { file: s.file.clone(), expected: s.bytes, got: meta.len() });
                }
            }
            for f in &manifest.tokenizer.files {
                let p = dir.join(f);
                std::fs::metadata(&p).map_err(io(&p))?;
            }
            Ok(Self { dir: dir.to_path_buf(), manifest })
        }

        /// Path of a file listed in the manifest (shard or tokenizer file).
        pub fn path(&self, file: &str) -> PathBuf {
            self.dir.join(file)
        }

        /// Reads this package's shard files.
        pub fn source(&self) -> DirSource {
            DirSource {
                dir: self.dir.clone(),
                files: self.manifest.shards.iter().map(|s| s.file.clone()).collect(),
                open: None,
            }
        }

        /// All tensors on the GPU ([`load_tensors`] over [`source`](Self::source)).
        pub fn load(&self, ctx: &Context) -> Result<HashMap<String, GpuTensor>, LoadError> {
            load_tensors(ctx, &self.manifest, &mut self.source())
        }

        /// Check every shard's SHA-256 without a GPU; the error names the first bad shard.
        pub fn verify(&self) -> Result<(), LoadError> {
            let mut buf = vec![0u8; STAGING_BYTES];
            for s in &self.manifest.shards {
                let p = self.path(&s.file);
                let mut f = File::open(&p).map_err(io(&p))?;
                let mut hash = Sha256Hex::default();
                let mut total = 0u64;
                loop {
                    let n = f.read(&mut buf).map_err(io(&p))?;
                    if n == 0 {
                        break;
                    }
                    hash.update(&buf[..n]);
                    total += n as u64;
                }
                if total != s.bytes {
                    return Err(LoadError::ShardSize { file: s.file.clone(), expected: s.bytes, got: total });
                }
                let got = hash.finish();
                if got != s.sha256 {
                    return Err(LoadError::Sha256 { file: s.file.clone(), expected: s.sha256.clone(), got });
                }
            }
            Ok(())
        }
    }

    /// Shard files in a directory, read with one open file at a time.
    pub struct DirSource {
        dir: PathBuf,
        files: Vec<String>,
        /// (shard index, file, current position).
        open: Option<(usize, File, u64)>,
    }

    impl ShardSource for DirSource {
        fn read_exact_at(&mut self, shard: usize, offset: u64, buf: &mut [u8]) -> Result<(), LoadError> {
            let name = self.files.get(shard).ok_or(LoadError::NoSuchShard { shard, count: self.files.len() })?;
            let path = self.dir.join(name);
            let (_, file, pos) = match &mut self.open {
                Some(o) if o.0 == shard => o,
                slot => {
                    let f = File::open(&path).map_err(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => {
                            LoadError::MissingShard { file: name.clone(), path: path.display().to_string() }
                        }
                        _ => LoadError::Io { path: path.display().to_string(), source: e },
                    })?;
                    slot.insert((shard, f, 0))
                }
            };
            if *pos != offset {
                file.seek(SeekFrom::Start(offset)).map_err(io(&path))?;
            }
            *pos = u64::MAX; // unknown until the read succeeds
            file.read_exact(buf).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => LoadError::ShardRead {
                    file: name.clone(),
                    message: format!("ends before byte {}", offset + buf.len() as u64),
                },
                _ => LoadError::Io { path: path.display().to_string(), source: e },
            })?;
            *pos = offset + buf.len() as u64;
            Ok(())
        }
    }
}
