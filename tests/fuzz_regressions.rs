//! Inputs the fuzz targets (fuzz/, `scripts/fuzz.sh`, docs/reliability.md "Fuzzing") found or
//! made worth pinning: each must give a typed error (or the same result as the whole-buffer path),
//! never a panic, a hang or an allocation sized by a count in the input.
//!
//! - GGUF header parser: a real header's every prefix asks for more bytes than it has; counts and
//!   lengths at their caps in a tiny file are truncation, not allocation; offsets and alignments
//!   at the ends of u64 are errors, not overflows.
//! - `GgufStream`: a model (SmolLM2's metadata, every loadable ggml type; the `gguf_stream` seed,
//!   tests/fixtures/fuzz/smollm2-tiny-model.gguf) fed in chunks of 1, 7, 100 and 4065 bytes, with
//!   its data pushed past the first header parse as the fuzz target does, loads the same bytes as
//!   the whole file written at once (table and config as the whole-buffer parser gives them);
//!   misfed streams are `Read` errors.
//! - manifest.json: nesting past serde_json's recursion limit, numbers outside u64, offsets and
//!   shapes at the ends of their ranges.
//! - The tokenizer from GGUF metadata: odd vocabularies (empty, NaN scores, merges of unknown
//!   tokens, a merge without a space, ids past the vocabulary) build or give typed errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use webgpu_llm::loader::gguf::{
    hf_config, parse_header, GgufError, GgufFile, MetaArray, MetaValue, Metadata, SliceSource,
};
use webgpu_llm::loader::gguf_stream::GgufStream;
use webgpu_llm::loader::gguf_tokenizer::{GgufTokenizer, TokenizerError};
use webgpu_llm::loader::{GpuTensor, Manifest, ManifestError, PartKind};
use webgpu_llm::{Context, ContextOptions};

fn fixture(path: &str) -> Vec<u8> {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---- GGUF header ---------------------------------------------------------------------------

/// GGUF v3 with these tensor/kv counts and body (metadata, then tensor infos).
fn gguf(n_tensors: u64, n_kv: u64, body: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b.extend(body);
    b
}

fn s(v: &str) -> Vec<u8> {
    let mut b = (v.len() as u64).to_le_bytes().to_vec();
    b.extend(v.as_bytes());
    b
}

/// A metadata entry: key, value type, value bytes.
fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut b = s(key);
    b.extend(ty.to_le_bytes());
    b.extend(value);
    b
}

/// A tensor info: name, dims, ggml type, offset relative to the data section.
fn tensor_info(name: &str, dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut b = s(name);
    b.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend(d.to_le_bytes());
    }
    b.extend(ty.to_le_bytes());
    b.extend(offset.to_le_bytes());
    b
}

fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    GgufFile::parse(bytes, bytes.len() as u64)
}

#[test]
fn every_prefix_of_a_real_header_asks_for_more() {
    // The fuzz target's prefix property on the richest seed (chat template, vocabulary, merges,
    // 13 tensors of 11 types).
    let bytes = fixture("fuzz/smollm2-tiny-model.gguf");
    let whole = parse_header(&bytes).unwrap();
    for len in 0..whole.data_offset as usize {
        match parse_header(&bytes[..len]) {
            Ok(h) => assert_eq!(h, whole, "prefix {len}"),
            Err(GgufError::TruncatedHeader { available, needed }) => {
                assert_eq!(available, len as u64);
                assert!(needed > len as u64 && needed <= whole.data_offset, "prefix {len}: needed {needed}");
            }
            Err(e) => panic!("prefix {len}: {e}"),
        }
    }
}

#[test]
fn counts_at_their_caps_in_a_tiny_file_are_truncation_not_allocation() {
    let r = |b: &[u8]| parse_header(b).map(|_| ()).unwrap_err();
    // 2^20 tensors (the cap) and no tensor infos: 32 bytes each are asked for before any Vec.
    let e = r(&gguf(1 << 20, 0, &[]));
    assert!(matches!(e, GgufError::TruncatedHeader { needed, .. } if needed >= 32 << 20), "{e}");
    // Arrays of 2^24 (the cap) u64s, strings and arrays, declared in a few bytes.
    for (ty, min) in [(10u32, 8u64), (8, 8), (9, 12)] {
        let mut v = ty.to_le_bytes().to_vec();
        v.extend((1u64 << 24).to_le_bytes());
        let e = r(&gguf(0, 1, &kv("a", 9, &v)));
        assert!(matches!(e, GgufError::TruncatedHeader { needed, .. } if needed >= min << 24), "type {ty}: {e}");
    }
    // One past the caps is too large.
    assert!(matches!(r(&gguf((1 << 20) + 1, 0, &[])), GgufError::TooLarge { .. }));
    let mut v = 0u32.to_le_bytes().to_vec();
    v.extend(((1u64 << 24) + 1).to_le_bytes());
    assert!(matches!(r(&gguf(0, 1, &kv("a", 9, &v))), GgufError::TooLarge { .. }));
    // A string of u64::MAX bytes.
    assert!(matches!(r(&gguf(0, 1, &kv("a", 8, &u64::MAX.to_le_bytes()))), GgufError::TooLarge { .. }));
}

#[test]
fn offsets_and_alignments_at_the_ends_of_u64_are_errors() {
    let f32_t = |offset| tensor_info("t", &[4], 0, offset);
    // general.alignment = 2^63 (a power of two): the data section starts at 2^63, past any file.
    let body = [kv("general.alignment", 10, &(1u64 << 63).to_le_bytes()), f32_t(0)].concat();
    let e = parse(&gguf(1, 1, &body)).unwrap_err();
    assert!(matches!(e, GgufError::TruncatedData { end, .. } if end == (1 << 63) + 16), "{e}");
    // A relative offset that overflows when the data offset is added.
    let e = parse(&gguf(1, 0, &f32_t(u64::MAX - 31))).unwrap_err();
    assert!(matches!(e, GgufError::TooLarge { .. }), "{e}");
    // An offset whose end overflows (saturates): truncated data.
    let e = parse(&gguf(1, 0, &f32_t(u64::MAX - 63 - 32))).unwrap_err();
    assert!(matches!(e, GgufError::TruncatedData { .. }), "{e}");
    // 2^32 × 2^31 elements: past i64, as ggml counts them.
    let e = parse(&gguf(1, 0, &tensor_info("t", &[1 << 32, 1 << 31], 0, 0))).unwrap_err();
    assert!(matches!(e, GgufError::Shape { .. }), "{e}");
    // Alignment 0 and a non-integer alignment.
    let e = parse(&gguf(0, 1, &kv("general.alignment", 4, &0u32.to_le_bytes()))).unwrap_err();
    assert!(matches!(e, GgufError::BadAlignment { alignment: 0 }), "{e}");
    let e = parse(&gguf(0, 1, &kv("general.alignment", 6, &32f32.to_le_bytes()))).unwrap_err();
    assert!(matches!(e, GgufError::WrongType { .. }), "{e}");
}

// ---- GgufStream ----------------------------------------------------------------------------

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        // As the fuzz target: a small binding limit, so matrices split into several row chunks.
        let opts = ContextOptions { max_binding_bytes: Some(1024), portable_only: true, ..Default::default() };
        Context::new_blocking(opts).expect("a GPU adapter (install mesa-vulkan-drivers)")
    })
}

/// `file` with a `fuzz.pad` string first in its metadata, `size` bytes in all (a multiple of the
/// alignment), so the data section moves by `size` (fuzz/fuzz_targets/gguf_stream.rs).
fn padded(file: &[u8], size: u64) -> Vec<u8> {
    let fixed = 8 + 8 + 4 + 8;
    let n_kv = u64::from_le_bytes(file[16..24].try_into().unwrap()) + 1;
    let mut out = file[..16].to_vec();
    out.extend(n_kv.to_le_bytes());
    let pad = " ".repeat((size - fixed) as usize);
    out.extend(kv("fuzz.pad", 8, &s(&pad)));
    out.extend(&file[24..]);
    out
}

type Loaded = (GgufFile, HashMap<String, GpuTensor>, String);

fn stream(file: &[u8], chunk: usize) -> Result<Loaded, GgufError> {
    let mut s = GgufStream::new(ctx(), vec![file.len() as u64])?;
    for piece in file.chunks(chunk) {
        s.write(0, piece)?;
    }
    s.finish_part(0)?;
    let (f, t, mut kept) = s.finish()?;
    let config = format!("{:?}", hf_config(&f, &mut kept)?);
    Ok((f, t, config))
}

/// The table and config parsed from the whole buffer, the tensors streamed in one write.
fn whole(file: &[u8]) -> Loaded {
    let f = parse(file).unwrap();
    let mut src = SliceSource::new(vec![file]);
    let t = stream(file, file.len()).unwrap().1;
    let config = format!("{:?}", hf_config(&f, &mut src).unwrap());
    (f, t, config)
}

fn read(b: &wgpu::Buffer) -> Vec<u8> {
    pollster::block_on(ctx().read_bytes(b, 0, b.size())).unwrap()
}

fn buffers(t: &GpuTensor) -> Vec<Vec<u8>> {
    match t {
        GpuTensor::Vector(b) => vec![read(b)],
        GpuTensor::Matrix(m) => m.buffers().map(read).collect(),
    }
}

#[test]
fn stream_in_any_chunks_equals_the_whole_buffer_load() {
    let file = fixture("fuzz/smollm2-tiny-model.gguf");
    let h = parse_header(&file).unwrap();
    // The data section just below 256 KiB, where GgufStream first parses a header: from there on
    // tensor bytes arrive in the chunks given.
    let size = ((256 << 10) - h.data_offset) / h.alignment * h.alignment;
    for file in [file.clone(), padded(&file, size)] {
        let (fb, tb, cb) = whole(&file);
        assert_eq!(tb.len(), 12);
        let want: HashMap<&String, Vec<Vec<u8>>> = tb.iter().map(|(k, v)| (k, buffers(v))).collect();
        for chunk in [1, 7, 100, 4065, file.len()] {
            let (fa, ta, ca) = stream(&file, chunk).unwrap_or_else(|e| panic!("chunks of {chunk}: {e}"));
            assert_eq!(fa, fb, "chunks of {chunk}");
            assert_eq!(ca, cb, "chunks of {chunk}");
            assert_eq!(ta.len(), tb.len(), "chunks of {chunk}");
            for (name, t) in &ta {
                assert_eq!(buffers(t), want[name], "chunks of {chunk}: {name}");
            }
        }
    }
}

#[test]
fn misfed_streams_are_read_errors() {
    let file = fixture("fuzz/smollm2-tiny-model.gguf");
    let n = file.len() as u64;
    // More bytes than the part has.
    let mut s = GgufStream::new(ctx(), vec![n - 1]).unwrap();
    assert!(matches!(s.write(0, &file), Err(GgufError::Read { .. })));
    // A part that ends early, or bytes for a part that is not being read.
    let mut s = GgufStream::new(ctx(), vec![n]).unwrap();
    s.write(0, &file[..100]).unwrap();
    assert!(matches!(s.write(1, &file[100..200]), Err(GgufError::Read { .. })));
    assert!(matches!(s.finish_part(0), Err(GgufError::Read { .. })));
    // No parts; finish before the part is done.
    assert!(matches!(GgufStream::new(ctx(), vec![]), Err(GgufError::Split { .. })));
    let s = GgufStream::new(ctx(), vec![n]).unwrap();
    assert!(matches!(s.finish(), Err(GgufError::Read { .. })));
    // A header cut short by the file's end: the header error, not a wait for more.
    let cut = &file[..100];
    let mut s = GgufStream::new(ctx(), vec![cut.len() as u64]).unwrap();
    assert!(matches!(s.write(0, cut), Err(GgufError::TruncatedHeader { .. })));
}

// ---- manifest.json -------------------------------------------------------------------------

/// A valid manifest: one F32 vector and one Q8 matrix in one shard.
fn manifest() -> serde_json::Value {
    serde_json::json!({
        "format": "webgpu-llm/1",
        "architecture": { "model_type": "llama" },
        "tokenizer": { "files": ["tokenizer.json"] },
        "quant": "q8",
        "shards": [{ "file": "shard-00000.bin", "bytes": 1024, "sha256": "0".repeat(64) }],
        "tensors": [
            { "name": "norm", "format": "F32", "shape": [4],
              "parts": [{ "kind": "weights", "ranges": [{ "shard": 0, "offset": 0, "bytes": 16 }] }] },
            { "name": "m", "format": "Q8", "shape": [2, 32],
              "parts": [{ "kind": "weights", "ranges": [{ "shard": 0, "offset": 16, "bytes": 64 }] },
                        { "kind": "scales", "ranges": [{ "shard": 0, "offset": 80, "bytes": 4 }] }] }
        ]
    })
}

fn from_value(v: &serde_json::Value) -> Result<Manifest, ManifestError> {
    Manifest::from_json(serde_json::to_string(v).unwrap().as_bytes())
}

#[test]
fn manifest_edge_cases_are_typed_errors() {
    let m = from_value(&manifest()).unwrap();
    assert_eq!(m.tensor("m").unwrap().part_bytes(PartKind::Scales).unwrap(), 4);

    // Nesting far past serde_json's recursion limit: an error, not a stack overflow.
    for depth in [200, 100_000] {
        let deep = format!(r#"{{"format":"webgpu-llm/1","architecture":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(Manifest::from_json(deep.as_bytes()), Err(ManifestError::Json(_))), "depth {depth}");
    }
    // Numbers outside u64 where a u64 goes.
    for n in ["-1", "18446744073709551616", "1e400", "4.5", "null"] {
        let text = serde_json::to_string(&manifest()).unwrap().replace(r#""bytes":1024"#, &format!(r#""bytes":{n}"#));
        assert!(matches!(Manifest::from_json(text.as_bytes()), Err(ManifestError::Json(_))), "{n}");
    }
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = manifest();
        f(&mut v);
        from_value(&v)
    };
    // A range whose end overflows u64, and one past a shard of u64::MAX - 3 bytes.
    let e = edit(&|v| v["tensors"][0]["parts"][0]["ranges"][0]["offset"] = (u64::MAX - 3).into()).unwrap_err();
    assert!(matches!(e, ManifestError::Range { reason: "overflows", .. }), "{e}");
    // Shapes at and past the u32 edge, empty, 3-D, zero.
    for shape in [vec![1u64 << 32, 32], vec![], vec![2, 32, 1], vec![0, 32], vec![2, 0]] {
        let e = edit(&|v| v["tensors"][1]["shape"] = shape.clone().into()).unwrap_err();
        assert!(matches!(e, ManifestError::Shape { .. }), "{shape:?}: {e}");
    }
    // The largest row count u32 allows, with a shard that large: too large to index, before any
    // part size is computed.
    let e = edit(&|v| {
        v["shards"][0]["bytes"] = (u32::MAX as u64 * 64).into();
        v["tensors"][1]["shape"] = vec![u32::MAX as u64, 32].into();
    })
    .unwrap_err();
    assert!(matches!(e, ManifestError::Shape { .. }), "{e}");
    // Two ranges over the same bytes.
    let e = edit(&|v| v["tensors"][1]["parts"][1]["ranges"][0]["offset"] = 12.into()).unwrap_err();
    assert!(matches!(e, ManifestError::Overlap { .. }), "{e}");
    // A shard index past the list, u32::MAX.
    let e = edit(&|v| v["tensors"][0]["parts"][0]["ranges"][0]["shard"] = u32::MAX.into()).unwrap_err();
    assert!(matches!(e, ManifestError::Range { reason: "no such shard", .. }), "{e}");
}

// ---- the tokenizer from GGUF metadata ------------------------------------------------------

fn strings(v: &[&str]) -> MetaValue {
    MetaValue::Array(MetaArray::String(v.iter().map(|s| s.to_string()).collect()))
}

fn vocab(model: &str, tokens: &[&str]) -> Metadata {
    let mut md = Metadata::new();
    md.insert("tokenizer.ggml.model", MetaValue::String(model.into()));
    md.insert("tokenizer.ggml.tokens", strings(tokens));
    md
}

/// Builds, encodes and decodes, or gives a typed error.
fn build(md: &Metadata) -> Result<(), TokenizerError> {
    let t = GgufTokenizer::from_metadata(md)?;
    let _ = t.tokenizer_config_json();
    let tok = t.tokenizer()?;
    let enc = tok.encode("Hello world! ü 👋 12345\n", true).map_err(|e| TokenizerError::Build(e.to_string()))?;
    tok.decode(enc.get_ids(), false).map_err(|e| TokenizerError::Build(e.to_string()))?;
    Ok(())
}

#[test]
fn odd_vocabularies_build_or_give_typed_errors() {
    // Empty vocabularies.
    let mut md = vocab("gpt2", &[]);
    md.insert("tokenizer.ggml.merges", strings(&[]));
    build(&md).unwrap();
    let mut md = vocab("llama", &[]);
    md.insert("tokenizer.ggml.scores", MetaValue::Array(MetaArray::F32(vec![])));
    let _ = build(&md);

    // SentencePiece scores that are NaN or infinite: merges still sort (total order).
    let mut md = vocab("llama", &["<unk>", "a", "b", "ab", "▁", "▁ab"]);
    md.insert(
        "tokenizer.ggml.scores",
        MetaValue::Array(MetaArray::F32(vec![0.0, f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0])),
    );
    build(&md).unwrap();

    // Merges of tokens that are not in the vocabulary are left out; a merge without a separating
    // space (or only a leading one) is an error naming it.
    let mut md = vocab("gpt2", &["a", "b", "ab"]);
    md.insert("tokenizer.ggml.merges", strings(&["a b", "x y", "ab c"]));
    build(&md).unwrap();
    for bad in ["ab", " ab", ""] {
        md.insert("tokenizer.ggml.merges", strings(&["a b", bad]));
        let e = build(&md).unwrap_err();
        assert!(matches!(&e, TokenizerError::BadMerge { index: 1, merge } if merge == bad), "{bad:?}: {e}");
    }
    md.insert("tokenizer.ggml.merges", strings(&["a b"]));

    // Ids at the vocabulary's end, types and scores of the wrong length.
    md.insert("tokenizer.ggml.eos_token_id", MetaValue::U32(3));
    assert!(matches!(build(&md), Err(TokenizerError::IdOutOfRange { id: 3, vocab: 3, .. })));
    md.insert("tokenizer.ggml.eos_token_id", MetaValue::U32(2));
    md.insert("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(vec![1, 3])));
    assert!(matches!(build(&md), Err(TokenizerError::Length { expected: 3, got: 2, .. })));
    // Unknown token types are normal tokens.
    md.insert("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(vec![i32::MIN, 99, 3])));
    build(&md).unwrap();
    // The same token twice (the later id wins), as special and plain.
    let mut md = vocab("gpt2", &["a", "a", "<s>", "<s>"]);
    md.insert("tokenizer.ggml.merges", strings(&[]));
    md.insert("tokenizer.ggml.bos_token_id", MetaValue::U32(2));
    md.insert("tokenizer.ggml.add_bos_token", MetaValue::Bool(true));
    let _ = build(&md);
}
