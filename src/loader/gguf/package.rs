//! GGUF → package conversion (native only): the same repacked streams and vectors the GGUF loads
//! as ([`TensorMap`] names each tensor and says how the model takes it), written into shards with a
//! manifest and tokenizer files.

use std::path::Path;

use super::config::{hf_config, TensorMap};
use super::files::{io, open};
use super::repack::{piece_rows, read, read_fixed, repack_rows, TensorData};
use super::{GgufError, Result};
use crate::loader::gguf_tokenizer::GgufTokenizer;
use crate::loader::manifest::{Manifest, Part, PartKind, Quant, Tensor, TokenizerFiles, FORMAT, MANIFEST_FILE};
use crate::loader::Layout;
use crate::quant::WeightFormat;

/// Convert a GGUF model (given any part of a split one) into a package directory: shards,
/// `manifest.json` with the config [`hf_config`] builds, and tokenizer.json /
/// tokenizer_config.json from the vocabulary. Tensors are taken through [`TensorMap`] and
/// repacked exactly as [`GgufStream`](crate::loader::gguf_stream::GgufStream) does, a piece at a
/// time, so a package loads the same buffers as the GGUF; nothing is requantized. Tensors the model
/// takes as vectors (norms, Qwen3.5's flat conv weights and A_log) are stored as F32 `[len]`.
/// `shard_mb`: largest shard in MiB (1..=4096).
pub fn gguf_to_package(path: &Path, out: &Path, shard_mb: u64) -> Result<Manifest> {
    if !(1..=4096).contains(&shard_mb) {
        return Err(GgufError::Unsupported { what: "shard_mb".into(), detail: format!("{shard_mb}; use 1..=4096") });
    }
    let (file, mut src) = open(path)?;
    let architecture = hf_config(&file, &mut src)?;
    let tok =
        GgufTokenizer::from_metadata(&file.metadata).map_err(|e| GgufError::Tokenizer { message: e.to_string() })?;
    let tok_json = tok.tokenizer_json().map_err(|e| GgufError::Tokenizer { message: e.to_string() })?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let map = TensorMap::new(&file.metadata)?;
    let mut sink = crate::loader::convert::ShardSink::new(out, shard_mb << 20);
    let mut tensors = Vec::new();
    let mut raw = Vec::new();
    for t in &file.tensors {
        let Some(target) = map.target(t)? else {
            continue;
        };
        let mut weights = Vec::new();
        let (format, shape, scales) = match t.layout()? {
            Layout::Matrix { n, k } if !target.fix.flattens() => {
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
            _ => {
                let TensorData::Vector(v) = read_fixed(&mut src, t, target.fix)? else {
                    return Err(t.shape_error("is not a vector"));
                };
                sink.append(bytemuck::cast_slice(&v), &mut weights)?;
                (WeightFormat::F32, vec![v.len() as u64], Vec::new())
            }
        };
        let mut parts = vec![Part { kind: PartKind::Weights, ranges: weights }];
        if !scales.is_empty() {
            let mut ranges = Vec::new();
            sink.append(bytemuck::cast_slice(&scales), &mut ranges)?;
            parts.push(Part { kind: PartKind::Scales, ranges });
        }
        tensors.push(Tensor { name: target.name, format, shape, parts });
    }
    let shards = sink.finish()?;
    let files = [("tokenizer.json", tok_json), ("tokenizer_config.json", tok.tokenizer_config_json().into_bytes())];
    for (name, bytes) in &files {
        let p = out.join(name);
        std::fs::write(&p, bytes).map_err(io(&p))?;
    }
    // Informational: the narrowest format any matrix has.
    let has = |f: WeightFormat| tensors.iter().any(|t| t.format == f);
    let quant = if [WeightFormat::Q4, WeightFormat::Q4Asym, WeightFormat::Q4K, WeightFormat::Q5K].into_iter().any(has) {
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
