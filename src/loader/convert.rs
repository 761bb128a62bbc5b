//! Hugging Face checkpoint directory → our package (native only).
//!
//! Reads `config.json`, the `*.safetensors` weights (one file, or those a
//! `model.safetensors.index.json` lists) in BF16/F16/F32, and writes shards + `manifest.json` (see
//! [`super::manifest`]) plus the tokenizer files. Memory stays at one open source file and one
//! block of rows (~[`BATCH_ELEMS`] values): matrices are read, quantized and written a block at a
//! time, since `quantize` works per row and an even block of rows starts on a whole scale word.
//!
//! Formats per [`Quant`] preset: 1-D tensors (norms, biases) → F32; 2-D: `q4`: names ending in
//! `_proj.weight` (incl. Phi-3's fused `qkv_proj`/`gate_up_proj`) → Q4, other matrices (embeddings,
//! `lm_head`) → Q8; `q8`: all → Q8; `f16`: all → F16. A matrix whose k is not a multiple of 32
//! cannot be grouped, so it falls back to F16 and the report says so.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::manifest::{
    ByteRange, Manifest, ManifestError, Part, PartKind, Quant, Shard, Tensor, TokenizerFiles, FORMAT, MANIFEST_FILE,
};
use super::safetensors::{SafetensorsError, SafetensorsFile, SourceTensor};
use super::Sha256Hex;
use crate::quant::{dequantize, quantize, QuantError, WeightFormat, GROUP};

/// Values quantized per block (16 MiB of f32): bounds convert's memory for any matrix size.
pub const BATCH_ELEMS: usize = 4 << 20;
/// Cap on `config.json` and the index (real ones are a few KiB).
const MAX_JSON_BYTES: u64 = 16 << 20;
/// Files copied beside the manifest; the first two are required.
const TOKENIZER_FILES: [&str; 3] = ["tokenizer.json", "tokenizer_config.json", "generation_config.json"];
const INDEX_FILE: &str = "model.safetensors.index.json";

/// `convert` settings.
#[derive(Clone, Copy, Debug)]
pub struct ConvertOptions {
    pub quant: Quant,
    /// Largest shard in MiB (1..=4096; the CLI's default is 32).
    pub shard_mb: u64,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self { quant: Quant::Q4, shard_mb: 32 }
    }
}

/// Why a conversion failed; each variant names the file or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path} is missing: {what}")]
    MissingFile { path: String, what: &'static str },

    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },

    #[error("{path}: {message}")]
    Json { path: String, message: String },

    #[error("no *.safetensors files in {dir}")]
    NoWeights { dir: String },

    #[error("{path}: {message}")]
    BadIndex { path: String, message: String },

    #[error("tensor {name} is listed for {file} in {INDEX_FILE} but {file} does not contain it")]
    MissingTensor { name: String, file: String },

    #[error("tensor {name} is in both {first} and {second}")]
    DuplicateTensor { name: String, first: String, second: String },

    #[error(transparent)]
    Source(#[from] SafetensorsError),

    #[error("tensor {name} has shape {shape:?}; only 1-D and 2-D tensors are supported")]
    UnsupportedRank { name: String, shape: Vec<usize> },

    #[error("tensor {name}: {source}")]
    Quant { name: String, source: QuantError },

    #[error("shard_mb = {0}: use 1..=4096")]
    ShardSize(u64),

    #[error("the checkpoint has no tensors")]
    NoTensors,

    #[error("the written manifest failed its own check: {0}")]
    Manifest(#[from] ManifestError),
}

/// Quantization error of one tensor against its source values (f64 accumulation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    pub mean_abs_error: f64,
    pub max_abs_error: f64,
    /// Mean |source value|, so `mean_abs_error / mean_abs_value` is the relative error.
    pub mean_abs_value: f64,
}

/// One converted tensor.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    /// The checkpoint's dtype ("BF16", "F16", "F32").
    pub source_dtype: String,
    pub format: WeightFormat,
    /// Bytes in the package (weights + scales).
    pub bytes: u64,
    /// Error of the stored values vs the source; `None` for F32 (exact).
    pub error: Option<ErrorStats>,
}

/// What `convert` did.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    pub tensors: Vec<TensorReport>,
    pub shards: usize,
    /// Bytes of all shards.
    pub total_bytes: u64,
    /// Package bytes per stored format (formats with none left out).
    pub bytes_per_format: Vec<(WeightFormat, u64)>,
    /// Fallbacks and other things worth knowing (e.g. "k = 40 is not a multiple of 32 → F16").
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

impl fmt::Display for ConvertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |b: u64| match b {
            0..1048576 => format!("{:.1} KiB", b as f64 / 1024.0),
            _ => format!("{:.1} MiB", b as f64 / 1048576.0),
        };
        writeln!(
            f,
            "{} tensors, {} shards, {} in {:.1} s",
            self.tensors.len(),
            self.shards,
            size(self.total_bytes),
            self.elapsed.as_secs_f64()
        )?;
        for (format, bytes) in &self.bytes_per_format {
            writeln!(f, "  {format:?}: {}", size(*bytes))?;
        }
        writeln!(f, "quantization error (mean |err|, max |err|, mean |err| / mean |x|):")?;
        for t in &self.tensors {
            if let Some(e) = t.error {
                let rel = if e.mean_abs_value > 0.0 { e.mean_abs_error / e.mean_abs_value } else { 0.0 };
                writeln!(
                    f,
                    "  {:<48} {:>6?} {:.3e} {:.3e} {:.2}%",
                    t.name,
                    t.format,
                    e.mean_abs_error,
                    e.max_abs_error,
                    rel * 100.0
                )?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// The stored format of tensor `name` of `shape` under `quant`, and a note when it falls back.
pub fn choose_format(
    quant: Quant,
    name: &str,
    shape: &[usize],
) -> Result<(WeightFormat, Option<String>), ConvertError> {
    let k = match shape {
        [_] | [_, 1, _] => return Ok((WeightFormat::F32, None)),
        [_, k] => *k,
        _ => return Err(ConvertError::UnsupportedRank { name: name.to_string(), shape: shape.to_vec() }),
    };
    let want = match quant {
        // projections: q_proj, …, down_proj, and Qwen3.5's in_proj_qkv/z/a/b and out_proj; an
        // encoder's (nomic-bert's encoder.layers.N.attn.out_proj) stay Q8 like all of BERT's: encoders
        // are small and 4-bit weights cost their embeddings ~1% cosine
        Quant::Q4
            if (name.ends_with("_proj.weight") || name.contains("in_proj_")) && !name.contains("encoder.layers.") =>
        {
            WeightFormat::Q4
        }
        Quant::Q4 | Quant::Q8 => WeightFormat::Q8,
        Quant::F16 => WeightFormat::F16,
    };
    if want.is_quantized() && k % GROUP != 0 {
        let note = format!("{name}: k = {k} is not a multiple of {GROUP}, stored as F16 instead of {want:?}");
        return Ok((WeightFormat::F16, Some(note)));
    }
    Ok((want, None))
}

/// Convert the Hugging Face checkpoint in `from` into a package in `out` (created if needed).
pub fn convert(from: &Path, out: &Path, opts: ConvertOptions) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    if !(1..=4096).contains(&opts.shard_mb) {
        return Err(ConvertError::ShardSize(opts.shard_mb));
    }
    let architecture = read_json(&from.join("config.json"), "the model's config.json is required")?;
    if !architecture.is_object() {
        let path = from.join("config.json").display().to_string();
        return Err(ConvertError::Json { path, message: "must be a JSON object".into() });
    }
    // Check the text files before the long part.
    for name in &TOKENIZER_FILES[..2] {
        let p = from.join(name);
        if !p.is_file() {
            return Err(ConvertError::MissingFile { path: p.display().to_string(), what: "the tokenizer is required" });
        }
    }
    let sources = weight_files(from)?;
    std::fs::create_dir_all(out).map_err(io(out))?;

    let mut sink = ShardSink::new(out, opts.shard_mb << 20);
    let mut tensors = Vec::new();
    let mut reports = Vec::new();
    let mut notes = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut rows = Vec::new();
    let mut skipped = 0;
    for (file, listed) in &sources {
        let path = from.join(file);
        let mut st = SafetensorsFile::open(&path)?;
        let entries: Vec<SourceTensor> = match listed {
            None => st.tensors().to_vec(),
            Some(names) => {
                for name in names {
                    if !st.tensors().iter().any(|t| &t.name == name) {
                        return Err(ConvertError::MissingTensor { name: name.clone(), file: file.clone() });
                    }
                }
                st.tensors().iter().filter(|t| names.contains(&t.name)).cloned().collect()
            }
        };
        for t in entries {
            // BERT's position_ids: an integer buffer saved with the weights, not a weight
            // (any other integer tensor is still refused)
            if is_integer(t.dtype) && t.name.ends_with("position_ids") {
                notes.push(format!("{}: {:?} buffer skipped", t.name, t.dtype));
                continue;
            }
            let Some(name) = text_model_name(&t.name) else {
                skipped += 1;
                continue;
            };
            if let Some(first) = seen.insert(name.clone(), file.clone()) {
                return Err(ConvertError::DuplicateTensor { name, first, second: file.clone() });
            }
            let (format, note) = choose_format(opts.quant, &name, &t.shape)?;
            notes.extend(note);
            let (mut tensor, mut report) = convert_tensor(&mut st, &t, format, &mut sink, &mut rows)?;
            tensor.name.clone_from(&name);
            report.name = name;
            tensors.push(tensor);
            reports.push(report);
        }
    }
    if skipped > 0 {
        notes.push(format!("{skipped} vision tensors skipped: only the text model runs"));
        // (the count includes Qwen3.5's multi-token-prediction head, which generation does not use)
    }
    if tensors.is_empty() {
        return Err(ConvertError::NoTensors);
    }
    let shards = sink.finish()?;

    let mut files = Vec::new();
    // Embedding models: sentence-transformers' pooling, normalisation and length, as one file.
    let settings = crate::embed::EmbedSettings::from_sentence_transformers(from)
        .map_err(|message| ConvertError::Json { path: from.display().to_string(), message })?;
    if let Some(settings) = settings {
        let dst = out.join(crate::embed::SETTINGS_FILE);
        let json = serde_json::to_string_pretty(&settings).expect("settings serialize");
        std::fs::write(&dst, json).map_err(io(&dst))?;
        files.push(crate::embed::SETTINGS_FILE.to_string());
    }
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            let dst = out.join(name);
            std::fs::copy(&src, &dst).map_err(io(&dst))?;
            files.push(name.to_string());
        }
    }
    let manifest = Manifest {
        format: FORMAT.to_string(),
        architecture,
        tokenizer: TokenizerFiles { files },
        quant: opts.quant,
        shards,
        tensors,
    };
    manifest.validate()?;
    // Write then rename, so an interrupted conversion never leaves a manifest that looks complete.
    let tmp = out.join(format!("{MANIFEST_FILE}.tmp"));
    std::fs::write(&tmp, manifest.to_json()?).map_err(io(&tmp))?;
    let dst = out.join(MANIFEST_FILE);
    std::fs::rename(&tmp, &dst).map_err(io(&dst))?;

    let mut bytes_per_format = Vec::new();
    for format in WeightFormat::ALL {
        let bytes: u64 = reports.iter().filter(|r| r.format == format).map(|r| r.bytes).sum();
        if bytes > 0 {
            bytes_per_format.push((format, bytes));
        }
    }
    Ok(ConvertReport {
        tensors: reports,
        shards: manifest.shards.len(),
        total_bytes: manifest.total_bytes(),
        bytes_per_format,
        notes,
        elapsed: started.elapsed(),
    })
}

/// The text model's name for a checkpoint tensor, `None` for a vision tower's (or Qwen3.5's MTP
/// head): multimodal checkpoints (Gemma 3 4B+, Qwen3.5) keep the language model under `language_model.model.` (or
/// `model.language_model.` as transformers 4.52+ saves them) next to `vision_tower` and
/// `multi_modal_projector`.
pub fn text_model_name(name: &str) -> Option<String> {
    // (Qwen3.5: model.visual and the multi-token-prediction head mtp are not run either)
    for vision in [
        "vision_tower.",
        "multi_modal_projector.",
        "model.vision_tower.",
        "model.multi_modal_projector.",
        "model.visual.",
        "mtp.",
    ] {
        if name.starts_with(vision) {
            return None;
        }
    }
    if let Some(rest) = name.strip_prefix("language_model.") {
        return Some(rest.to_string()); // language_model.model.X, language_model.lm_head.weight
    }
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        return Some(format!("model.{rest}"));
    }
    Some(name.to_string())
}

fn is_integer(dtype: safetensors::Dtype) -> bool {
    use safetensors::Dtype::*;
    matches!(dtype, BOOL | U8 | I8 | I16 | U16 | I32 | U32 | I64 | U64)
}

/// A weight file and the tensor names the index assigns to it (`None`: no index, take every tensor).
type WeightFile = (String, Option<Vec<String>>);

/// The weight files in conversion order.
fn weight_files(from: &Path) -> Result<Vec<WeightFile>, ConvertError> {
    let index = from.join(INDEX_FILE);
    if index.is_file() {
        let json = read_json(&index, "")?;
        let bad = |message: String| ConvertError::BadIndex { path: index.display().to_string(), message };
        let map =
            json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no weight_map object".into()))?;
        let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| bad(format!("{name}: file is not a string")))?;
            // Index entries are joined to `from`: plain names only.
            if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
                return Err(bad(format!("{name}: {file:?} is not a plain file name")));
            }
            by_file.entry(file.to_string()).or_default().push(name.clone());
        }
        if by_file.is_empty() {
            return Err(bad("weight_map is empty".into()));
        }
        return Ok(by_file.into_iter().map(|(f, names)| (f, Some(names))).collect());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && entry.path().is_file() {
            files.push((name, None));
        }
    }
    if files.is_empty() {
        return Err(ConvertError::NoWeights { dir: from.display().to_string() });
    }
    files.sort();
    Ok(files)
}

/// Quantize `t` a block of rows at a time into `sink`; return its manifest entry and report.
fn convert_tensor(
    st: &mut SafetensorsFile,
    t: &SourceTensor,
    format: WeightFormat,
    sink: &mut ShardSink,
    rows_buf: &mut Vec<f32>,
) -> Result<(Tensor, TensorReport), ConvertError> {
    let quant_err = |source| ConvertError::Quant { name: t.name.clone(), source };
    // A depthwise conv's [channels, 1, width] is stored as its flat [channels · width] (F32).
    let flat = match t.shape[..] {
        [c, 1, w] => Some(c * w),
        _ => None,
    };
    let shape64: Vec<u64> = match flat {
        Some(len) => vec![len as u64],
        None => t.shape.iter().map(|&d| d as u64).collect(),
    };
    let mut weights = Vec::new();
    let mut parts = Vec::new();
    let mut error = None;
    let shape: &[usize] = match &flat {
        Some(len) => std::slice::from_ref(len),
        None => &t.shape,
    };
    match shape[..] {
        [len] => {
            // 1-D tensors are small (a hidden size, a conv's weights): one read.
            st.read_f32(t, 0, len, rows_buf)?;
            let bytes: Vec<u8> = rows_buf.iter().flat_map(|v| v.to_le_bytes()).collect();
            sink.append(&bytes, &mut weights)?;
            parts.push(Part { kind: PartKind::Weights, ranges: weights });
        }
        [n, k] => {
            format.check_shape(n, k).map_err(quant_err)?;
            // An even block of rows starts at an even (row, group) index: whole Q4/Q8 scale words.
            let block = (BATCH_ELEMS / k).max(2) & !1;
            let mut scales: Vec<u32> = Vec::new();
            let mut stats = ErrorAcc::default();
            let mut row0 = 0;
            while row0 < n {
                let rows = block.min(n - row0);
                st.read_f32(t, row0 * k, rows * k, rows_buf)?;
                let packed = quantize(format, rows_buf, rows, k).map_err(quant_err)?;
                sink.append(packed.weight_bytes(), &mut weights)?;
                scales.extend_from_slice(&packed.scales);
                if format != WeightFormat::F32 {
                    stats.add(rows_buf, &dequantize(&packed).map_err(quant_err)?);
                }
                row0 += rows;
            }
            parts.push(Part { kind: PartKind::Weights, ranges: weights });
            if !scales.is_empty() {
                let mut ranges = Vec::new();
                sink.append(bytemuck::cast_slice(&scales), &mut ranges)?;
                parts.push(Part { kind: PartKind::Scales, ranges });
            }
            error = (format != WeightFormat::F32).then(|| stats.finish());
        }
        _ => return Err(ConvertError::UnsupportedRank { name: t.name.clone(), shape: t.shape.clone() }),
    }
    let bytes = parts.iter().flat_map(|p| &p.ranges).map(|r| r.bytes).sum();
    let tensor = Tensor { name: t.name.clone(), format, shape: shape64, parts };
    let report = TensorReport {
        name: t.name.clone(),
        shape: t.shape.clone(),
        source_dtype: format!("{:?}", t.dtype),
        format,
        bytes,
        error,
    };
    Ok((tensor, report))
}

#[derive(Default)]
struct ErrorAcc {
    sum_err: f64,
    max_err: f64,
    sum_abs: f64,
    count: u64,
}

impl ErrorAcc {
    fn add(&mut self, source: &[f32], stored: &[f32]) {
        for (&x, &y) in source.iter().zip(stored) {
            let e = (x as f64 - y as f64).abs();
            self.sum_err += e;
            self.max_err = self.max_err.max(e);
            self.sum_abs += (x as f64).abs();
        }
        self.count += source.len() as u64;
    }

    fn finish(&self) -> ErrorStats {
        let n = self.count.max(1) as f64;
        ErrorStats { mean_abs_error: self.sum_err / n, max_abs_error: self.max_err, mean_abs_value: self.sum_abs / n }
    }
}

/// Shard files being written: fills each to `shard_bytes`, then starts the next, so a tensor may
/// span shards (split points are multiples of 4, as every appended stream is whole words).
/// Shared by safetensors and GGUF conversion.
pub(crate) struct ShardSink {
    dir: PathBuf,
    shard_bytes: u64,
    done: Vec<Shard>,
    current: Option<OpenShard>,
}

struct OpenShard {
    name: String,
    out: BufWriter<File>,
    written: u64,
    hash: Sha256Hex,
}

impl ShardSink {
    pub(crate) fn new(dir: &Path, shard_bytes: u64) -> Self {
        Self { dir: dir.to_path_buf(), shard_bytes, done: Vec::new(), current: None }
    }

    /// Append `bytes`, recording where they went in `ranges` (adjacent pieces merged).
    pub(crate) fn append(&mut self, mut bytes: &[u8], ranges: &mut Vec<ByteRange>) -> Result<(), ConvertError> {
        while !bytes.is_empty() {
            let cur = match &mut self.current {
                Some(c) if c.written < self.shard_bytes => c,
                slot => {
                    if let Some(full) = slot.take() {
                        self.done.push(close(&self.dir, full)?);
                    }
                    let name = format!("shard-{:05}.bin", self.done.len());
                    let path = self.dir.join(&name);
                    let file = File::create(&path).map_err(io(&path))?;
                    let out = BufWriter::with_capacity(1 << 20, file);
                    slot.insert(OpenShard { name, out, written: 0, hash: Sha256Hex::default() })
                }
            };
            let shard = self.done.len() as u32; // the open shard follows the closed ones
            let n = (self.shard_bytes - cur.written).min(bytes.len() as u64) as usize;
            let (piece, rest) = bytes.split_at(n);
            cur.out.write_all(piece).map_err(io(&self.dir.join(&cur.name)))?;
            cur.hash.update(piece);
            match ranges.last_mut() {
                Some(r) if r.shard == shard && r.offset + r.bytes == cur.written => r.bytes += n as u64,
                _ => ranges.push(ByteRange { shard, offset: cur.written, bytes: n as u64 }),
            }
            cur.written += n as u64;
            bytes = rest;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Vec<Shard>, ConvertError> {
        if let Some(last) = self.current.take() {
            self.done.push(close(&self.dir, last)?);
        }
        Ok(self.done)
    }
}

fn close(dir: &Path, s: OpenShard) -> Result<Shard, ConvertError> {
    let path = dir.join(&s.name);
    let file = s
        .out
        .into_inner()
        .map_err(|e| ConvertError::Io { path: path.display().to_string(), source: e.into_error() })?;
    file.sync_all().map_err(io(&path))?;
    Ok(Shard { file: s.name, bytes: s.written, sha256: s.hash.finish() })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io { path: path.display().to_string(), source }
}

/// Read a small JSON file (bounded); `missing` explains a missing file (empty: plain I/O error).
fn read_json(path: &Path, missing: &'static str) -> Result<serde_json::Value, ConvertError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if !missing.is_empty() => {
            ConvertError::MissingFile { path: shown.clone(), what: missing }
        }
        _ => ConvertError::Io { path: shown.clone(), source: e },
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1).read_to_end(&mut bytes).map_err(io(path))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(ConvertError::Json { path: shown, message: format!("larger than {MAX_JSON_BYTES} bytes") });
    }
    serde_json::from_slice(&bytes).map_err(|e| ConvertError::Json { path: shown, message: e.to_string() })
}
