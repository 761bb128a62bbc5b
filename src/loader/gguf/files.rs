//! GGUF files on disk (native only): a header read until it fits, the parts of a split model, and
//! a [`GgufSource`] over their open handles.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::header::{parse_header, GgufFile, GgufSource, Header};
use super::{GgufError, Result, MAX_HEADER_BYTES};

/// First read of a header; doubled until the header fits (SmolLM2-135M's is 1.8 MB).
const FIRST_READ_BYTES: u64 = 4 << 20;

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GgufError + '_ {
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
