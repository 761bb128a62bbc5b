//! The random 3B Q4_K_M GGUF of `scripts/make-3b-gguf.py`, written by a plain binary: the device machine of
//! `scripts/device-bench.sh` has no Python, and the ~1.9 GB file is too big to carry there, so this (built
//! here, carried) makes it on the spot in seconds.
//!
//! Same tensor names, types, shapes and order, same metadata keys, types and order as the Python (gguf-py's
//! GGUFWriter: `general.architecture` first, 32-byte alignment). The weights are random like the Python's but
//! not the same bytes (its numpy PCG64 stream is not reproduced): only the shapes and the d/dmin/scale ranges
//! matter for a benchmark.
//!
//!     cargo build --release --example make_3b_gguf
//!     target/release/examples/make_3b_gguf [--out FILE] [--tokenizer DIR] [--seed N]
//!
//! `--tokenizer` is the folder with the real Llama 3 `tokenizer.json` and `tokenizer_config.json`
//! (models/tokenizers/llama3, from scripts/fetch-tokenizers.sh).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

const LAYERS: usize = 28;
const HIDDEN: usize = 3072;
const HEADS: usize = 24;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 128;
const FFN: usize = 8192;
const VOCAB: usize = 128256;
const THETA: f64 = 500000.0;
const CONTEXT: u32 = 131072;
const QK_K: usize = 256;
const ALIGN: u64 = 32;

// GGML tensor types and GGUF value types used here.
const F32: u32 = 0;
const Q4_K: u32 = 12;
const Q6_K: u32 = 14;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
// gguf.TokenType
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_UNUSED: i32 = 5;
// gguf.LlamaFileType.MOSTLY_Q4_K_M
const FILE_TYPE_Q4_K_M: u32 = 15;

/// llama.cpp (llama-quant.cpp): the layers Q4_K_M gives Q6_K for attn_v and ffn_down.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as isize - (n / 8) as isize).rem_euclid(3) == 2
}

/// xoshiro256++: fast enough that writing the file, not the randomness, is the cost.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            // splitmix64 to spread the seed
            z = z.wrapping_add(0x9e3779b97f4a7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    /// Standard normal (Box–Muller), for the norm weights.
    fn normal(&mut self) -> f64 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// One tensor to write: its data is produced while streaming, never held whole.
struct Tensor {
    name: String,
    dims: Vec<u64>, // GGUF order: ne0 (columns) first
    ty: u32,
    kind: Kind,
}

enum Kind {
    Quant { rows: usize, cols: usize },
    Norm,
    Floats(Vec<f32>),
}

impl Tensor {
    fn bytes(&self) -> u64 {
        match &self.kind {
            Kind::Quant { rows, cols } => {
                let block = if self.ty == Q6_K { 210 } else { 144 };
                (rows * cols / QK_K * block) as u64
            }
            Kind::Norm => (HIDDEN * 4) as u64,
            Kind::Floats(v) => (v.len() * 4) as u64,
        }
    }
}

fn quant(name: &str, ty: u32, rows: usize, cols: usize) -> Tensor {
    Tensor { name: name.into(), dims: vec![cols as u64, rows as u64], ty, kind: Kind::Quant { rows, cols } }
}

fn norm(name: &str) -> Tensor {
    Tensor { name: name.into(), dims: vec![HIDDEN as u64], ty: F32, kind: Kind::Norm }
}

/// The divisors convert_hf_to_gguf.py writes as rope_freqs.weight for llama3 scaling.
fn llama3_rope_freqs() -> Vec<f32> {
    let (factor, low, high, original) = (32.0f64, 1.0f64, 4.0f64, 8192.0f64);
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    (0..HEAD_DIM)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / THETA.powf(i as f64 / HEAD_DIM as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor as f32
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect()
}

/// GGUF key/value section, in gguf-py's encoding.
#[derive(Default)]
struct Kv {
    buf: Vec<u8>,
    n: u64,
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u64).to_le_bytes());
    buf.extend(s.as_bytes());
}

impl Kv {
    fn raw(&mut self, key: &str, ty: u32, value: &[u8]) {
        put_str(&mut self.buf, key);
        self.buf.extend(ty.to_le_bytes());
        self.buf.extend(value);
        self.n += 1;
    }
    fn u32(&mut self, key: &str, v: u32) {
        self.raw(key, T_U32, &v.to_le_bytes())
    }
    fn f32(&mut self, key: &str, v: f32) {
        self.raw(key, T_F32, &v.to_le_bytes())
    }
    fn str(&mut self, key: &str, v: &str) {
        let mut b = Vec::new();
        put_str(&mut b, v);
        self.raw(key, T_STRING, &b)
    }
    fn strings(&mut self, key: &str, list: &[String]) {
        let mut b = T_STRING.to_le_bytes().to_vec();
        b.extend((list.len() as u64).to_le_bytes());
        for s in list {
            put_str(&mut b, s);
        }
        self.raw(key, T_ARRAY, &b)
    }
    fn i32s(&mut self, key: &str, list: &[i32]) {
        let mut b = T_I32.to_le_bytes().to_vec();
        b.extend((list.len() as u64).to_le_bytes());
        for x in list {
            b.extend(x.to_le_bytes());
        }
        self.raw(key, T_ARRAY, &b)
    }
}

/// The tokenizer keys, as add_tokenizer() in make-3b-gguf.py writes them.
fn add_tokenizer(kv: &mut Kv, dir: &PathBuf) -> Result<(), String> {
    let read = |name: &str| -> Result<serde_json::Value, String> {
        let p = dir.join(name);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let tok = read("tokenizer.json")?;
    let cfg = read("tokenizer_config.json")?;
    let mut tokens = vec![String::new(); VOCAB];
    let mut types = vec![TOKEN_NORMAL; VOCAB];
    let vocab = tok["model"]["vocab"].as_object().ok_or("tokenizer.json: no model.vocab")?;
    for (s, i) in vocab {
        tokens[i.as_u64().ok_or("bad vocab id")? as usize] = s.clone();
    }
    let (mut bos, mut eos) = (None, None);
    for t in tok["added_tokens"].as_array().map(|v| v.as_slice()).unwrap_or(&[]) {
        let (s, i) = (t["content"].as_str().unwrap_or(""), t["id"].as_u64().ok_or("bad added id")? as usize);
        tokens[i] = s.to_string();
        types[i] = TOKEN_CONTROL;
        match s {
            "<|begin_of_text|>" => bos = Some(i as u32),
            "<|eot_id|>" => eos = Some(i as u32),
            _ => {}
        }
    }
    for (i, s) in tokens.iter_mut().enumerate() {
        if s.is_empty() {
            *s = format!("[PAD{i}]");
            types[i] = TOKEN_UNUSED;
        }
    }
    let merges: Vec<String> = tok["model"]["merges"]
        .as_array()
        .ok_or("tokenizer.json: no model.merges")?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "),
            _ => String::new(),
        })
        .collect();
    kv.str("tokenizer.ggml.model", "gpt2");
    kv.str("tokenizer.ggml.pre", "llama-bpe");
    kv.strings("tokenizer.ggml.tokens", &tokens);
    kv.i32s("tokenizer.ggml.token_type", &types);
    kv.strings("tokenizer.ggml.merges", &merges);
    kv.u32("tokenizer.ggml.bos_token_id", bos.ok_or("no <|begin_of_text|>")?);
    kv.u32("tokenizer.ggml.eos_token_id", eos.ok_or("no <|eot_id|>")?);
    if let Some(t) = cfg["chat_template"].as_str().filter(|t| !t.is_empty()) {
        kv.str("tokenizer.chat_template", t);
    }
    Ok(())
}

fn write_data(w: &mut impl Write, t: &Tensor, rng: &mut Rng) -> std::io::Result<()> {
    match &t.kind {
        Kind::Quant { rows, cols } => {
            let nb = rows * cols / QK_K;
            let block = if t.ty == Q6_K { 210 } else { 144 };
            // a few MiB at a time: random bytes, then the fields that must stay small
            let per = 16384;
            let mut buf = vec![0u8; per * block];
            let (q4_d, q4_dmin, q6_d) = (f16(0.0005), f16(0.00375), f16(0.0004));
            let mut done = 0;
            while done < nb {
                let n = per.min(nb - done);
                let chunk = &mut buf[..n * block];
                rng.fill(chunk);
                for b in chunk.chunks_mut(block) {
                    if t.ty == Q6_K {
                        // int8 scales in [-16, 16), then d: value = d·sc·(q − 32)
                        for s in &mut b[192..208] {
                            *s = ((*s % 32) as i8 - 16) as u8;
                        }
                        b[208..210].copy_from_slice(&q6_d);
                    } else {
                        // value = d·sc·q − dmin·m with q, sc, m uniform: dmin = 7.5·d centres it; |w| ~ 0.07
                        b[0..2].copy_from_slice(&q4_d);
                        b[2..4].copy_from_slice(&q4_dmin);
                    }
                }
                w.write_all(chunk)?;
                done += n;
            }
        }
        Kind::Norm => {
            let v: Vec<u8> = (0..HIDDEN).flat_map(|_| ((1.0 + 0.05 * rng.normal()) as f32).to_le_bytes()).collect();
            w.write_all(&v)?;
        }
        Kind::Floats(v) => {
            let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.write_all(&b)?;
        }
    }
    Ok(())
}

fn pad(w: &mut impl Write, written: u64) -> std::io::Result<u64> {
    let to = written.next_multiple_of(ALIGN);
    w.write_all(&vec![0u8; (to - written) as usize])?;
    Ok(to)
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = PathBuf::from("models/llama-3.2-3b-shape.Q4_K_M.gguf");
    let mut tokdir = repo.join("models/tokenizers/llama3");
    let mut seed = 3u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--out" => out = val().into(),
            "--tokenizer" => tokdir = val().into(),
            "--seed" => seed = val().parse().expect("--seed N"),
            _ => {
                eprintln!("usage: make_3b_gguf [--out FILE] [--tokenizer DIR] [--seed N]");
                std::process::exit(2);
            }
        }
    }
    let start = Instant::now();

    let mut kv = Kv::default();
    kv.str("general.architecture", "llama");
    kv.str("general.name", "Llama-3.2-3B shapes, random Q4_K_M weights (webgpu-llm benchmark)");
    kv.u32("llama.block_count", LAYERS as u32);
    kv.u32("llama.context_length", CONTEXT);
    kv.u32("llama.embedding_length", HIDDEN as u32);
    kv.u32("llama.feed_forward_length", FFN as u32);
    kv.u32("llama.attention.head_count", HEADS as u32);
    kv.u32("llama.attention.head_count_kv", KV_HEADS as u32);
    kv.u32("llama.rope.dimension_count", HEAD_DIM as u32);
    kv.f32("llama.rope.freq_base", THETA as f32);
    kv.f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    kv.u32("llama.vocab_size", VOCAB as u32);
    kv.u32("general.file_type", FILE_TYPE_Q4_K_M);
    if let Err(e) = add_tokenizer(&mut kv, &tokdir) {
        eprintln!("make_3b_gguf: tokenizer: {e}");
        std::process::exit(1);
    }

    let mut tensors = vec![quant("token_embd.weight", Q6_K, VOCAB, HIDDEN)];
    let freqs = llama3_rope_freqs();
    tensors.push(Tensor {
        name: "rope_freqs.weight".into(),
        dims: vec![freqs.len() as u64],
        ty: F32,
        kind: Kind::Floats(freqs),
    });
    for i in 0..LAYERS {
        let p = format!("blk.{i}");
        let more = use_more_bits(i, LAYERS);
        let big = if more { Q6_K } else { Q4_K };
        tensors.push(norm(&format!("{p}.attn_norm.weight")));
        tensors.push(quant(&format!("{p}.attn_q.weight"), Q4_K, HEADS * HEAD_DIM, HIDDEN));
        tensors.push(quant(&format!("{p}.attn_k.weight"), Q4_K, KV_HEADS * HEAD_DIM, HIDDEN));
        tensors.push(quant(&format!("{p}.attn_v.weight"), big, KV_HEADS * HEAD_DIM, HIDDEN));
        tensors.push(quant(&format!("{p}.attn_output.weight"), Q4_K, HIDDEN, HEADS * HEAD_DIM));
        tensors.push(norm(&format!("{p}.ffn_norm.weight")));
        tensors.push(quant(&format!("{p}.ffn_gate.weight"), Q4_K, FFN, HIDDEN));
        tensors.push(quant(&format!("{p}.ffn_up.weight"), Q4_K, FFN, HIDDEN));
        tensors.push(quant(&format!("{p}.ffn_down.weight"), big, HIDDEN, FFN));
    }
    tensors.push(norm("output_norm.weight"));

    // header, KV, tensor infos (offsets known up front), then the data streamed tensor by tensor
    let mut head = b"GGUF".to_vec();
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend(kv.n.to_le_bytes());
    head.extend(&kv.buf);
    let mut offset = 0u64;
    for t in &tensors {
        put_str(&mut head, &t.name);
        head.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend(d.to_le_bytes());
        }
        head.extend(t.ty.to_le_bytes());
        head.extend(offset.to_le_bytes());
        offset = (offset + t.bytes()).next_multiple_of(ALIGN);
    }
    let run = || -> std::io::Result<u64> {
        let mut w = BufWriter::with_capacity(8 << 20, File::create(&out)?);
        w.write_all(&head)?;
        let mut written = pad(&mut w, head.len() as u64)?;
        let mut rng = Rng::new(seed);
        for t in &tensors {
            write_data(&mut w, t, &mut rng)?;
            written = pad(&mut w, written + t.bytes())?;
        }
        w.flush()?;
        Ok(written)
    };
    match run() {
        Ok(size) => println!(
            "make_3b_gguf: {} {size} bytes ({:.2} GB) in {:.1} s",
            out.display(),
            size as f64 / 1e9,
            start.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("make_3b_gguf: {}: {e}", out.display());
            std::process::exit(1);
        }
    }
}
