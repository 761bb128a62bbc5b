//! `GgufStream`, the front-to-back GGUF reader the browser and the native loader feed, given a
//! file in chunks of fuzzer-chosen sizes, against the whole buffer on the same bytes (the table
//! and config from `GgufFile::parse` + `hf_config` over a `SliceSource`, the tensors from the
//! file written in one piece) on one GPU context (any adapter: lavapipe does; a small binding
//! limit so matrices split into several row chunks).
//!
//! Input: `file ‖ sizes ‖ n`: the last byte `n` says how many bytes before it are chunk sizes
//! (each byte one size, used in turn; none: the file in one write); the rest is the .gguf file.
//!
//! `GgufStream` buffers the first 256 KiB before it first parses a header, so the data of a file
//! smaller than that reaches the tensors in one piece whatever the chunks. When chunk sizes are
//! given and the header parses, the file is therefore first padded: a string key `fuzz.pad` is
//! inserted as the first metadata entry, a multiple of the alignment long, so the data section
//! starts just below 256 KiB and the tensors' bytes arrive in the fuzzer's chunks (the padded file
//! is what both paths read).
//!
//! Properties: no panic, hang or unbounded allocation; streaming in chunks and the whole buffer
//! agree: both fail, or both succeed with the same tensor table, the same config and the same
//! bytes in every GPU buffer. Streaming needs tensors in ascending, non-overlapping byte ranges
//! (it passes each byte once), which `GgufFile::parse` does not check; both sides stream, so
//! such a file fails on both (llama.cpp's reader rejects it too).
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use webgpu_llm::loader::gguf::{hf_config, parse_header, GgufError, GgufFile, SliceSource};
use webgpu_llm::loader::gguf_stream::GgufStream;
use webgpu_llm::loader::GpuTensor;
use webgpu_llm::{Context, ContextOptions};

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let opts = ContextOptions { max_binding_bytes: Some(1024), portable_only: true, ..Default::default() };
        Context::new_blocking(opts).expect("a GPU adapter (mesa-vulkan-drivers' lavapipe will do)")
    })
}

/// `GgufStream`'s first header parse waits for this many bytes (FIRST_HEADER_TRY).
const FIRST_HEADER_TRY: u64 = 256 << 10;

/// `file` with a `fuzz.pad` string entry first in its metadata, so its data starts just below
/// [`FIRST_HEADER_TRY`]; `None` when its header does not parse or the alignment is too coarse.
fn padded(file: &[u8]) -> Option<Vec<u8>> {
    const KEY: &[u8] = b"fuzz.pad";
    let h = parse_header(file).ok()?;
    if h.alignment > 4096 {
        return None;
    }
    // key length, key, value type, string length, string: `size` bytes in all, a multiple of the
    // alignment, so every offset after it (and the data section) moves by exactly `size`.
    let fixed = 8 + KEY.len() as u64 + 4 + 8;
    let size = FIRST_HEADER_TRY.checked_sub(h.data_offset)? / h.alignment * h.alignment;
    if size < fixed {
        return None;
    }
    let n_kv = u64::from_le_bytes(file[16..24].try_into().unwrap()).checked_add(1)?;
    let mut out = Vec::with_capacity(file.len() + size as usize);
    out.extend_from_slice(&file[..16]);
    out.extend_from_slice(&n_kv.to_le_bytes());
    out.extend_from_slice(&(KEY.len() as u64).to_le_bytes());
    out.extend_from_slice(KEY);
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(size - fixed).to_le_bytes());
    out.resize(out.len() + (size - fixed) as usize, b' ');
    out.extend_from_slice(&file[24..]);
    Some(out)
}

fn chunk_size(b: u8) -> usize {
    // 1..=128 bytes, or 1..=4065 in steps of 32.
    1 + ((b & 0x7f) as usize) * if b & 0x80 != 0 { 32 } else { 1 }
}

fn stream(file: &[u8], sizes: &[u8]) -> Result<(GgufFile, HashMap<String, GpuTensor>, Config), GgufError> {
    let mut s = GgufStream::new(ctx(), vec![file.len() as u64])?;
    let mut at = 0;
    let mut i = 0;
    while at < file.len() {
        let n = if sizes.is_empty() { file.len() } else { chunk_size(sizes[i % sizes.len()]) };
        let end = (at + n).min(file.len());
        s.write(0, &file[at..end])?;
        at = end;
        i += 1;
    }
    s.finish_part(0)?;
    let (f, t, mut kept) = s.finish()?;
    let config = config_of(hf_config(&f, &mut kept));
    Ok((f, t, config))
}

/// `hf_config`'s result, errors as text, so the two paths' configs compare.
type Config = Result<String, String>;

fn config_of<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> Config {
    r.map(|v| format!("{v:?}")).map_err(|e| e.to_string())
}

fn whole(file: &[u8]) -> Result<(GgufFile, HashMap<String, GpuTensor>, Config), GgufError> {
    let f = GgufFile::parse(file, file.len() as u64)?;
    // What GgufStream checks from the first part's header.
    f.architecture()?;
    let mut src = SliceSource::new(vec![file]);
    let t = stream(file, &[])?.1;
    let config = config_of(hf_config(&f, &mut src));
    Ok((f, t, config))
}

fn read(buffer: &wgpu::Buffer) -> Vec<u8> {
    pollster::block_on(ctx().read_bytes(buffer, 0, buffer.size())).expect("readback")
}

fn same_tensor(name: &str, a: &GpuTensor, b: &GpuTensor) {
    match (a, b) {
        (GpuTensor::Vector(x), GpuTensor::Vector(y)) => assert_eq!(read(x), read(y), "{name}"),
        (GpuTensor::Matrix(x), GpuTensor::Matrix(y)) => {
            assert_eq!((x.format, x.n, x.k, x.chunks.len()), (y.format, y.n, y.k, y.chunks.len()), "{name}");
            for (i, (cx, cy)) in x.chunks.iter().zip(&y.chunks).enumerate() {
                assert_eq!((cx.row0, cx.rows), (cy.row0, cy.rows), "{name} chunk {i}");
                assert_eq!(read(&cx.weights), read(&cy.weights), "{name} chunk {i} weights");
                match (&cx.scales, &cy.scales) {
                    (Some(sx), Some(sy)) => assert_eq!(read(sx), read(sy), "{name} chunk {i} scales"),
                    (None, None) => {}
                    _ => panic!("{name} chunk {i}: scales on one side only"),
                }
            }
        }
        _ => panic!("{name}: a vector on one side, a matrix on the other"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_last() else {
        return;
    };
    let n = (n as usize).min(rest.len());
    let (file, sizes) = rest.split_at(rest.len() - n);
    let pad = if sizes.is_empty() { None } else { padded(file) };
    let file = pad.as_deref().unwrap_or(file);
    let _ = ctx().take_error();
    let a = stream(file, sizes);
    let _ = ctx().take_error();
    let b = whole(file);
    let _ = ctx().take_error();
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        let outcome = |r: &Result<(GgufFile, HashMap<String, GpuTensor>, Config), GgufError>| match r {
            Ok((f, t, c)) => {
                format!("{} tensors in the table, {} loaded, config {}", f.tensors.len(), t.len(), c.is_ok())
            }
            Err(e) => format!("error: {e}"),
        };
        eprintln!(
            "{} bytes (padded: {}) in chunks of {sizes:?}\n  stream: {}\n  whole:  {}",
            file.len(),
            pad.is_some(),
            outcome(&a),
            outcome(&b)
        );
    }
    match (a, b) {
        (Err(_), Err(_)) => {}
        (Ok((fa, ta, ca)), Ok((fb, tb, cb))) => {
            // Debug text, not ==: a NaN in the metadata is not equal to itself.
            assert_eq!(format!("{fa:?}"), format!("{fb:?}"), "tensor tables differ");
            assert_eq!(ca, cb, "configs differ");
            let mut ka: Vec<_> = ta.keys().collect();
            let mut kb: Vec<_> = tb.keys().collect();
            ka.sort();
            kb.sort();
            assert_eq!(ka, kb, "loaded tensors differ");
            for (name, x) in &ta {
                same_tensor(name, x, &tb[name]);
            }
        }
        (Err(e), Ok(_)) => panic!("streaming in chunks failed but the whole buffer loaded: {e}"),
        (Ok(_), Err(e)) => panic!("the whole buffer failed but streaming in chunks worked: {e}"),
    }
});
