//! Package → GPU: a converted tiny checkpoint is loaded on a context whose binding limit is forced
//! to 48 KiB, so matrices are split into many row chunks and tensors span 1 MiB shards; every chunk
//! buffer read back must equal its `chunk_byte_ranges` slice of `quantize(format, source values)`,
//! exactly. Also: the streaming writer with arbitrary piece sizes and interleaved shards, corrupt /
//! truncated / missing shards named in the error, missing tensors, and manifest validation.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::Rng;
use half::bf16;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use webgpu_llm::loader::convert::{convert, ConvertOptions};
use webgpu_llm::loader::manifest::{Manifest, ManifestError, PartKind, Quant};
use webgpu_llm::loader::{take_matrix, take_vector, GpuTensor, LoadError, Package, ShardWriter};
use webgpu_llm::ops::matmul::chunk_byte_ranges;
use webgpu_llm::quant::quantize;
use webgpu_llm::{Context, ContextOptions};

/// Far below any device's limit, so a 4096-row embedding becomes ~20 chunks.
const BINDING_BYTES: u64 = 48 << 10;

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let opts = ContextOptions { max_binding_bytes: Some(BINDING_BYTES), portable_only: true, ..Default::default() };
        Context::new_blocking(opts).expect("a GPU adapter (install mesa-vulkan-drivers)")
    })
}

/// Source tensors (BF16, so the values are exactly what convert reads) by name: (shape, values).
type Sources = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webgpu-llm-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A llama-like checkpoint in `dir`: an embedding of ~1 MiB in Q8 (spans 1 MiB shards), projections
/// with 8 and 21 (odd) groups per row, an odd row count, a k of 40 (→ F16), norms and a bias.
fn write_checkpoint(dir: &Path, seed: u64) -> Sources {
    let mut rng = Rng::new(seed);
    let shapes: [(&str, &[usize]); 8] = [
        ("model.embed_tokens.weight", &[4096, 256]),
        ("model.layers.0.self_attn.q_proj.weight", &[256, 256]),
        ("model.layers.0.self_attn.q_proj.bias", &[256]),
        ("model.layers.0.mlp.down_proj.weight", &[256, 672]),
        ("model.layers.0.mlp.odd_proj.weight", &[75, 96]),
        ("model.layers.0.mlp.tiny_proj.weight", &[24, 40]),
        ("model.layers.0.input_layernorm.weight", &[256]),
        ("model.norm.weight", &[256]),
    ];
    let mut src = Sources::new();
    let mut bytes = Vec::new();
    for (name, shape) in shapes {
        let len = shape.iter().product();
        let values: Vec<f32> = (0..len).map(|_| bf16::from_f32(rng.normal(0.05)).to_f32()).collect();
        bytes.push((name, shape.to_vec(), values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect()));
        src.insert(name.to_string(), (shape.to_vec(), values));
    }
    let views: Vec<(&str, TensorView)> = bytes
        .iter()
        .map(|(n, s, b): &(&str, Vec<usize>, Vec<u8>)| (*n, TensorView::new(Dtype::BF16, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "llama", "hidden_size": 256}"#).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), "{}").unwrap();
    src
}

/// Convert once per preset and test binary; returns the package dir and the sources.
fn package(quant: Quant) -> &'static (PathBuf, Sources) {
    static PACKAGES: OnceLock<Vec<(Quant, (PathBuf, Sources))>> = OnceLock::new();
    let all = PACKAGES.get_or_init(|| {
        let from = tmpdir("load-src");
        let src = write_checkpoint(&from, common::seed("package_load"));
        let out: Vec<_> = [Quant::Q4, Quant::F16]
            .into_iter()
            .map(|q| {
                let out = tmpdir(&format!("load-{q:?}"));
                convert(&from, &out, ConvertOptions { quant: q, shard_mb: 1 }).unwrap();
                (q, (out, src.clone()))
            })
            .collect();
        let _ = std::fs::remove_dir_all(&from);
        out
    });
    &all.iter().find(|(q, _)| *q == quant).unwrap().1
}

fn read(ctx: &Context, buffer: &wgpu::Buffer, bytes: u64) -> Vec<u8> {
    pollster::block_on(ctx.read_bytes(buffer, 0, bytes)).unwrap()
}

/// Every loaded buffer equals its slice of the packed source, byte for byte.
fn check_loaded(ctx: &Context, manifest: &Manifest, src: &Sources, loaded: &HashMap<String, GpuTensor>) {
    assert_eq!(loaded.len(), manifest.tensors.len());
    let mut max_chunks = 0;
    for t in &manifest.tensors {
        let (shape, values) = &src[&t.name];
        match (&loaded[&t.name], &shape[..]) {
            (GpuTensor::Matrix(m), &[n, k]) => {
                let packed = quantize(t.format, values, n, k).unwrap();
                assert_eq!((m.format, m.n, m.k), (t.format, n as u32, k as u32), "{}", t.name);
                let mut next_row = 0;
                for (i, c) in m.chunks.iter().enumerate() {
                    assert_eq!(c.row0, next_row, "{} chunk {i} starts where the last ended", t.name);
                    next_row += c.rows;
                    let (w, s) = chunk_byte_ranges(t.format, k, c.row0, c.rows);
                    assert!(c.weights.size() <= BINDING_BYTES, "{} chunk {i} fits the binding limit", t.name);
                    let got = read(ctx, &c.weights, w.end - w.start);
                    let want = &packed.weight_bytes()[w.start as usize..w.end as usize];
                    assert!(got == want, "{} chunk {i} (rows {}+{}) weights differ", t.name, c.row0, c.rows);
                    match &c.scales {
                        Some(b) => {
                            let got = read(ctx, b, s.end - s.start);
                            let want = &packed.scale_bytes()[s.start as usize..s.end as usize];
                            assert!(got == want, "{} chunk {i} scales differ", t.name);
                        }
                        None => assert!(!t.format.is_quantized() && s.is_empty(), "{} chunk {i} lacks scales", t.name),
                    }
                }
                assert_eq!(next_row as usize, n, "{}: chunks cover every row", t.name);
                max_chunks = max_chunks.max(m.chunks.len());
            }
            (GpuTensor::Vector(b), &[len]) => {
                let want: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                assert_eq!(read(ctx, b, len as u64 * 4), want, "{}", t.name);
            }
            _ => panic!("{}: loaded as the wrong kind for shape {shape:?}", t.name),
        }
    }
    assert!(max_chunks >= 10, "the forced binding limit must split the embedding (got {max_chunks} chunks)");
}

#[test]
fn loads_chunked_tensors_byte_exact() {
    for quant in [Quant::Q4, Quant::F16] {
        let (dir, src) = package(quant);
        let pkg = Package::open(dir).unwrap();
        let spanning = pkg
            .manifest
            .tensors
            .iter()
            .filter(|t| t.parts.iter().flat_map(|p| &p.ranges).map(|r| r.shard).collect::<HashSet<_>>().len() > 1)
            .count();
        assert!(spanning >= 1, "{quant:?}: a tensor spans shards");
        pkg.verify().unwrap();
        let loaded = pkg.load(ctx()).unwrap();
        check_loaded(ctx(), &pkg.manifest, src, &loaded);
    }
}

#[test]
fn writer_takes_any_piece_sizes_and_interleaved_shards() {
    let (dir, src) = package(Quant::Q4);
    let pkg = Package::open(dir).unwrap();
    let shards: Vec<Vec<u8>> = pkg.manifest.shards.iter().map(|s| std::fs::read(pkg.path(&s.file)).unwrap()).collect();
    let mut writer = ShardWriter::new(ctx(), pkg.manifest.clone()).unwrap();
    // Piece sizes like a fetch stream's: not multiples of 4, some tiny.
    let sizes = [1usize, 3, 4093, 2, 65_537, 5, 200_003];
    let mut pos = vec![0usize; shards.len()];
    let mut step = 0;
    while pos.iter().zip(&shards).any(|(p, s)| *p < s.len()) {
        for (i, s) in shards.iter().enumerate() {
            if pos[i] == s.len() {
                continue;
            }
            let n = sizes[step % sizes.len()].min(s.len() - pos[i]);
            step += 1;
            writer.write(i, &s[pos[i]..pos[i] + n]).unwrap();
            pos[i] += n;
            if pos[i] == s.len() {
                writer.finish_shard(i).unwrap();
            }
        }
    }
    assert_eq!(writer.loaded_bytes(), writer.total_bytes());
    let loaded = writer.finish().unwrap();
    check_loaded(ctx(), &pkg.manifest, src, &loaded);
}

fn copy_package(from: &Path, name: &str) -> PathBuf {
    let dir = tmpdir(name);
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

#[test]
fn bad_shards_are_named() {
    let (dir, _) = package(Quant::Q4);

    // A flipped byte: open succeeds (sizes match), loading and verifying name the shard.
    let bad = copy_package(dir, "load-corrupt");
    let shard = bad.join("shard-00001.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    let pkg = Package::open(&bad).unwrap();
    let err = pkg.load(ctx()).err().expect("a corrupt shard must not load");
    eprintln!("{err}");
    assert!(matches!(&err, LoadError::Sha256 { file, .. } if file == "shard-00001.bin"), "{err}");
    assert!(err.to_string().contains("shard-00001.bin"));
    let err = pkg.verify().unwrap_err();
    assert!(matches!(&err, LoadError::Sha256 { file, .. } if file == "shard-00001.bin"), "{err}");

    // Truncated.
    std::fs::write(&shard, &bytes[..mid]).unwrap();
    let err = Package::open(&bad).err().expect("a truncated shard must not open");
    eprintln!("{err}");
    assert!(matches!(&err, LoadError::ShardSize { file, got, .. } if file == "shard-00001.bin" && *got == mid as u64));

    // Missing.
    std::fs::remove_file(&shard).unwrap();
    let err = Package::open(&bad).err().expect("a missing shard must not open");
    eprintln!("{err}");
    assert!(matches!(&err, LoadError::MissingShard { file, .. } if file == "shard-00001.bin"), "{err}");
    let _ = std::fs::remove_dir_all(&bad);

    // A writer that never got a shard's bytes says which.
    let pkg = Package::open(dir).unwrap();
    let err = ShardWriter::new(ctx(), pkg.manifest.clone()).unwrap().finish().err().expect("nothing was streamed");
    assert!(matches!(&err, LoadError::ShardSize { file, got: 0, .. } if file == "shard-00000.bin"), "{err}");
}

#[test]
fn missing_tensors_and_wrong_kinds_are_clear() {
    let (dir, _) = package(Quant::F16);
    let mut loaded = Package::open(dir).unwrap().load(ctx()).unwrap();
    let err = take_matrix(&mut loaded, "lm_head.weight").err().unwrap();
    assert!(matches!(&err, LoadError::MissingTensor { name } if name == "lm_head.weight"), "{err}");
    let err = take_matrix(&mut loaded, "model.norm.weight").err().unwrap();
    assert!(matches!(err, LoadError::WrongKind { expected: "matrix", found: "vector", .. }), "{err}");
    assert!(take_vector(&mut loaded, "model.norm.weight").is_ok(), "a failed take leaves the tensor in place");
    let m = take_matrix(&mut loaded, "model.embed_tokens.weight").unwrap();
    assert_eq!((m.n, m.k), (4096, 256));
}

#[test]
fn manifest_validation_rejects_bad_input() {
    let (dir, _) = package(Quant::Q4);
    let good = Manifest::from_json(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let q4 = good.tensors.iter().position(|t| t.format.is_quantized()).unwrap();
    let vec = good.tensors.iter().position(|t| t.shape.len() == 1).unwrap();
    let check = |what: &str, edit: &dyn Fn(&mut Manifest), ok: &dyn Fn(&ManifestError) -> bool| {
        let mut m = good.clone();
        edit(&mut m);
        // Through JSON, as a loader sees it.
        let err = Manifest::from_json(m.to_json().unwrap().as_bytes()).expect_err(what);
        eprintln!("{what}: {err}");
        assert!(ok(&err), "{what}: unexpected {err:?}");
    };
    use ManifestError as E;
    check("version", &|m| m.format = "webgpu-llm/2".into(), &|e| matches!(e, E::Version { .. }));
    check("path escape", &|m| m.shards[0].file = "../shard.bin".into(), &|e| matches!(e, E::BadFileName { .. }));
    check("tokenizer path", &|m| m.tokenizer.files[0] = "/etc/passwd".into(), &|e| matches!(e, E::BadFileName { .. }));
    check("sha256", &|m| m.shards[0].sha256 = "xyz".into(), &|e| matches!(e, E::BadSha256 { .. }));
    check("no shard", &|m| m.tensors[q4].parts[0].ranges[0].shard = 99, &|e| {
        matches!(e, E::Range { reason: "no such shard", .. })
    });
    check("past end", &|m| m.tensors[q4].parts[0].ranges[0].offset = m.shards[0].bytes, &|e| {
        matches!(e, E::Range { reason: "ends past the end of its shard", .. })
    });
    check("unaligned", &|m| m.tensors[q4].parts[0].ranges[0].offset += 2, &|e| matches!(e, E::Range { .. }));
    check("part bytes", &|m| m.tensors[q4].parts[0].ranges[0].bytes -= 4, &|e| {
        matches!(e, E::PartBytes { kind: PartKind::Weights, .. })
    });
    check("no scales", &|m| drop(m.tensors[q4].parts.pop()), &|e| matches!(e, E::Parts { .. }));
    check("k not grouped", &|m| m.tensors[q4].shape[1] = 40, &|e| matches!(e, E::Shape { .. }));
    check("zero dim", &|m| m.tensors[vec].shape[0] = 0, &|e| matches!(e, E::Shape { .. }));
    check("3-D", &|m| m.tensors[vec].shape = vec![1, 1, 1], &|e| matches!(e, E::Shape { .. }));
    check("quantized vector", &|m| m.tensors[vec].format = webgpu_llm::quant::WeightFormat::Q8, &|e| {
        matches!(e, E::Shape { .. })
    });
    check("duplicate", &|m| m.tensors.push(m.tensors[vec].clone()), &|e| matches!(e, E::DuplicateTensor { .. }));
    check(
        "overlap",
        &|m| {
            let mut t = m.tensors[vec].clone();
            t.name = "model.alias.weight".into();
            m.tensors.push(t);
        },
        &|e| matches!(e, E::Overlap { .. }),
    );
    check("architecture", &|m| m.architecture = serde_json::json!([1]), &|e| matches!(e, E::ArchitectureNotObject));

    let err = Manifest::from_json(b"{\"format\": \"webgpu-llm/1\"").unwrap_err();
    assert!(matches!(err, E::Json(_)), "{err}");
    let err = Manifest::from_json(br#"{"format":"webgpu-llm/1","architecture":{},"tokenizer":{"files":[]},"quant":"q4","shards":[],"tensors":[{"name":"x","format":"Q5","shape":[1],"parts":[]}]}"#).unwrap_err();
    assert!(err.to_string().contains("Q5"), "{err}");
    let huge = vec![b' '; (64 << 20) + 1];
    assert!(matches!(Manifest::from_json(&huge), Err(E::TooLarge { .. })));
}
