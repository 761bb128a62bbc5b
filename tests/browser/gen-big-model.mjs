// Writes a package (manifest.json + shards, format webgpu-llm/1, see src/loader/manifest.rs) of a
// llama-architecture model with random Q8 weights, for the memory-bound test. Not committed: the
// runner writes it under /tmp and deletes it afterwards.
//
//   node tests/browser/gen-big-model.mjs OUT_DIR TOKENIZER_DIR [--layers 20] [--shard-mb 64]
//
// TOKENIZER_DIR holds tokenizer.json (+ tokenizer_config.json), e.g. a converted SmolLM2 package
// (vocab 49152). Layout of a Q8 matrix [n, k] (src/quant): weights n·k bytes (int8, 16 per vec4<u32>
// unit), scales ceil(n·k/32 / 2)·4 bytes (one f16 per 32-element group, two per word). Values:
// random int8 × a small constant scale, so activations stay finite. 1-D tensors are F32 ones.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";

export function bigModelConfig({ layers = 20, vocab = 49152 } = {}) {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 2048,
    intermediate_size: 5632,
    num_hidden_layers: layers,
    num_attention_heads: 32,
    num_key_value_heads: 4,
    head_dim: 64,
    vocab_size: vocab,
    max_position_embeddings: 1024,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
  };
}

function tensorsOf(cfg) {
  const h = cfg.hidden_size, f = cfg.intermediate_size, q = cfg.num_attention_heads * cfg.head_dim;
  const kv = cfg.num_key_value_heads * cfg.head_dim;
  const t = [{ name: "model.embed_tokens.weight", shape: [cfg.vocab_size, h] }];
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    t.push(
      { name: `${p}.input_layernorm.weight`, shape: [h] },
      { name: `${p}.self_attn.q_proj.weight`, shape: [q, h] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, h] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, h] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, q] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [h] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [f, h] },
      { name: `${p}.mlp.up_proj.weight`, shape: [f, h] },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, f] },
    );
  }
  t.push({ name: "model.norm.weight", shape: [h] }, { name: "lm_head.weight", shape: [cfg.vocab_size, h] });
  return t;
}

/** Streams bytes into shard files of at most `shardBytes`, hashing each; returns ranges per write. */
class ShardWriter {
  constructor(dir, shardBytes) {
    this.dir = dir;
    this.shardBytes = shardBytes;
    this.shards = [];
    this.open();
  }
  open() {
    const file = `shard-${String(this.shards.length).padStart(5, "0")}.bin`;
    this.cur = { file, fd: fs.openSync(path.join(this.dir, file), "w"), bytes: 0, hash: crypto.createHash("sha256") };
  }
  close() {
    fs.closeSync(this.cur.fd);
    this.shards.push({ file: this.cur.file, bytes: this.cur.bytes, sha256: this.cur.hash.digest("hex") });
  }
  /** Write `total` bytes produced by fill(buf) in pieces; returns the shard ranges they landed in. */
  write(total, fill) {
    const ranges = [];
    let left = total;
    while (left > 0) {
      if (this.cur.bytes === this.shardBytes) {
        this.close();
        this.open();
      }
      const n = Math.min(left, this.shardBytes - this.cur.bytes, 8 << 20);
      const buf = Buffer.allocUnsafe(n);
      fill(buf);
      fs.writeSync(this.cur.fd, buf);
      this.cur.hash.update(buf);
      const last = ranges[ranges.length - 1];
      const shard = this.shards.length;
      if (last && last.shard === shard && last.offset + last.bytes === this.cur.bytes) last.bytes += n;
      else ranges.push({ shard, offset: this.cur.bytes, bytes: n });
      this.cur.bytes += n;
      left -= n;
    }
    return ranges;
  }
  finish() {
    this.close();
    return this.shards;
  }
}

export function generateBigModel(outDir, tokenizerDir, { layers = 20, shardMb = 64 } = {}) {
  fs.mkdirSync(outDir, { recursive: true });
  const tokJson = JSON.parse(fs.readFileSync(path.join(tokenizerDir, "tokenizer.json"), "utf8"));
  const vocab = Object.keys(tokJson.model?.vocab ?? {}).length + (tokJson.added_tokens ?? []).filter((t) => !(t.content in (tokJson.model?.vocab ?? {}))).length;
  const cfg = bigModelConfig({ layers, vocab: Math.max(vocab, 1) });
  const files = [];
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    if (fs.existsSync(path.join(tokenizerDir, f))) {
      fs.copyFileSync(path.join(tokenizerDir, f), path.join(outDir, f));
      files.push(f);
    }
  }
  const w = new ShardWriter(outDir, shardMb << 20);
  const SCALE = 0x1018; // f16 ≈ 5.03e-4
  const fillRandom = (buf) => crypto.randomFillSync(buf);
  const fillScales = (buf) => { for (let i = 0; i < buf.length; i += 2) buf.writeUInt16LE(SCALE, i); };
  const fillOnes = (buf) => { for (let i = 0; i < buf.length; i += 4) buf.writeFloatLE(1.0, i); };
  const tensors = [];
  let weightBytes = 0;
  for (const t of tensorsOf(cfg)) {
    if (t.shape.length === 1) {
      const bytes = t.shape[0] * 4;
      tensors.push({ name: t.name, format: "F32", shape: t.shape, parts: [{ kind: "weights", ranges: w.write(bytes, fillOnes) }] });
      weightBytes += bytes;
    } else {
      const [n, k] = t.shape;
      const wb = n * k; // Q8: k/16 units of 16 bytes per row
      const sb = Math.ceil((n * k) / 32 / 2) * 4;
      tensors.push({
        name: t.name, format: "Q8", shape: t.shape,
        parts: [{ kind: "weights", ranges: w.write(wb, fillRandom) }, { kind: "scales", ranges: w.write(sb, fillScales) }],
      });
      weightBytes += wb + sb;
    }
  }
  const shards = w.finish();
  const manifest = { format: "webgpu-llm/1", architecture: cfg, tokenizer: { files }, quant: "q8", shards, tensors };
  fs.writeFileSync(path.join(outDir, "manifest.json"), JSON.stringify(manifest, null, 1));
  return { weightBytes, shardCount: shards.length, config: cfg };
}

if (process.argv[1] && import.meta.url === new URL(`file://${path.resolve(process.argv[1])}`).href) {
  const [out, tok, ...rest] = process.argv.slice(2);
  const opt = (name, def) => { const i = rest.indexOf(name); return i >= 0 ? Number(rest[i + 1]) : def; };
  const t = Date.now();
  const r = generateBigModel(out, tok, { layers: opt("--layers", 20), shardMb: opt("--shard-mb", 64) });
  console.log(`${out}: ${(r.weightBytes / 2 ** 30).toFixed(3)} GiB of weights in ${r.shardCount} shards (${((Date.now() - t) / 1000).toFixed(1)} s)`);
}
