#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from real files (no dependencies beyond the standard library).

- gguf_header, gguf_tokenizer: the small GGUF fixtures (tests/fixtures/gguf), and SmolLM2-135M's
  real header (models/SmolLM2-135M-Instruct.Q4_1.gguf, scripts/fetch-model.sh) with its metadata,
  chat template and full 272-tensor table but the vocabulary cut to its first 512 tokens.
- gguf_stream: the fixtures that hold tensor data, and a one-layer model with SmolLM2's metadata and
  tensor names, every loadable ggml type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, F16, BF16,
  F32) and random data, each followed by chunk sizes and their count (see fuzz_targets/gguf_stream.rs).
- manifest: manifest.json of packages converted from the k-quant fixtures and from SmolLM2
  (`webgpu-llm convert --from X.gguf --out DIR`), SmolLM2's cut to the tensors around its shard
  boundaries. Pass the package directories: make_seeds.py [PKG_DIR ...].

Seeds are small (~175 KB all together) and committed; rerunning rewrites them.
"""

import json
import random
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests/fixtures/gguf"
SEEDS = REPO / "fuzz/seeds"
SMOLLM2 = REPO / "models/SmolLM2-135M-Instruct.Q4_1.gguf"

SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class Reader:
    def __init__(self, b):
        self.b, self.pos = b, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return v[0]

    def string(self):
        n = self.take("Q")
        s = self.b[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def value(self, ty):
        if ty in SCALAR:
            return self.take(SCALAR[ty])
        if ty == 8:
            return self.string()
        et, n = self.take("I"), self.take("Q")
        return (et, [self.value(et) for _ in range(n)])


def read_header(b):
    r = Reader(b)
    assert r.take("4s") == b"GGUF"
    r.take("I")
    nt, nkv = r.take("Q"), r.take("Q")
    kv = []
    for _ in range(nkv):
        k = r.string()
        ty = r.take("I")
        kv.append((k, ty, r.value(ty)))
    tensors = []
    for _ in range(nt):
        name = r.string()
        dims = [r.take("Q") for _ in range(r.take("I"))]
        tensors.append((name, dims, r.take("I"), r.take("Q")))
    return kv, tensors


def w_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def w_value(ty, v):
    if ty in SCALAR:
        return struct.pack("<" + SCALAR[ty], v)
    if ty == 8:
        return w_str(v)
    et, items = v
    return struct.pack("<IQ", et, len(items)) + b"".join(w_value(et, x) for x in items)


def write_gguf(kv, tensors, data=b"", alignment=32):
    """tensors: (name, dims, type, offset relative to the data section)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, ty, v in kv:
        out += w_str(k) + struct.pack("<I", ty) + w_value(ty, v)
    for name, dims, ty, off in tensors:
        out += w_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, off)
    if data:
        out += b"\0" * (-len(out) % alignment) + data
    return out


def cut_vocab(kv, n):
    """SmolLM2's metadata with the first n tokens, the merges among them, ids kept in range."""
    keep = None
    out = []
    for k, ty, v in kv:
        if k == "tokenizer.ggml.tokens":
            keep = set(v[1][:n])
            v = (v[0], v[1][:n])
        elif k in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            v = (v[0], v[1][:n])
        elif k == "llama.vocab_size":
            v = n
        out.append((k, ty, v))
    for i, (k, ty, v) in enumerate(out):
        if k == "tokenizer.ggml.merges":
            merges = [m for m in v[1] if all(p in keep for p in m.split(" ", 1)) and m.replace(" ", "", 1) in keep]
            out[i] = (k, ty, (v[0], merges))
    return out


# (ggml type, elements per block, bytes per block)
TYPES = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22),
         "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176),
         "Q6_K": (14, 256, 210), "BF16": (30, 1, 2)}


def tiny_model(kv):
    """One llama layer, hidden 32, SmolLM2's metadata: every loadable type once, random data."""
    rng = random.Random(1)
    n_vocab = 64
    md = []
    for k, ty, v in cut_vocab(kv, n_vocab):
        v = {"llama.block_count": 1, "llama.embedding_length": 32, "llama.feed_forward_length": 64,
             "llama.attention.head_count": 1, "llama.attention.head_count_kv": 1,
             "llama.rope.dimension_count": 32, "llama.context_length": 64}.get(k, v)
        md.append((k, ty, v))
    layout = [("token_embd.weight", [32, n_vocab], "Q8_0"), ("output_norm.weight", [32], "F32"),
              ("output.weight", [32, n_vocab], "Q4_0"), ("blk.0.attn_norm.weight", [32], "F16"),
              ("blk.0.ffn_norm.weight", [32], "BF16"), ("blk.0.attn_q.weight", [256, 2], "Q4_K"),
              ("blk.0.attn_k.weight", [256, 2], "Q5_K"), ("blk.0.attn_v.weight", [256, 2], "Q6_K"),
              ("blk.0.attn_output.weight", [32, 32], "Q5_0"), ("blk.0.ffn_gate.weight", [32, 64], "Q4_1"),
              ("blk.0.ffn_up.weight", [32, 64], "Q5_1"), ("blk.0.ffn_down.weight", [64, 32], "F16"),
              ("rope_freqs.weight", [16], "F32")]
    tensors, data = [], b""
    for name, dims, t in layout:
        ty, be, bb = TYPES[t]
        elems = 1
        for d in dims:
            elems *= d
        if t in ("F32", "F16", "BF16"):
            # Finite values: small floats.
            vals = [rng.uniform(-1, 1) for _ in range(elems)]
            if t == "F32":
                raw = struct.pack(f"<{elems}f", *vals)
            elif t == "F16":
                raw = struct.pack(f"<{elems}e", *vals)
            else:
                raw = b"".join(struct.pack("<f", x)[2:] for x in vals)
        else:
            raw = bytes(rng.randrange(256) for _ in range(elems // be * bb))
        data += b"\0" * (-len(data) % 32)
        tensors.append((name, dims, ty, len(data)))
        data += raw
    return write_gguf(md, tensors, data)


def stream_seed(file, rng):
    sizes = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
    return file + sizes + bytes([len(sizes)])


def put(target, name, b):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(b)


def main():
    rng = random.Random(0)
    small = ["align64", "split-00001-of-00002", "split-00002-of-00002", "types"]
    tok = ["tok-gpt2-default", "tok-gpt2-llama-bpe", "tok-gpt2-qwen2", "tok-gpt2-smollm", "tok-spm"]
    for f in small + tok:
        b = (FIX / f"{f}.gguf").read_bytes()
        if f in small or f in ("tok-gpt2-smollm", "tok-spm"):
            put("gguf_header", f + ".gguf", b)
        if f in tok:
            put("gguf_tokenizer", f + ".gguf", b)
        else:
            put("gguf_stream", f + ".bin", stream_seed(b, rng))
    if SMOLLM2.exists():
        with SMOLLM2.open("rb") as fh:
            kv, tensors = read_header(fh.read(4 << 20))
        mini = write_gguf(cut_vocab(kv, 512), tensors)
        put("gguf_header", "smollm2-header-vocab512.gguf", mini)
        put("gguf_tokenizer", "smollm2-header-vocab512.gguf", mini)
        model = tiny_model(kv)
        put("gguf_header", "smollm2-tiny-model.gguf", model)
        put("gguf_stream", "smollm2-tiny-model.bin", stream_seed(model, rng))
        # tests/fuzz_regressions.rs streams it too.
        (REPO / "tests/fixtures/fuzz").mkdir(parents=True, exist_ok=True)
        (REPO / "tests/fixtures/fuzz/smollm2-tiny-model.gguf").write_bytes(model)
    else:
        print(f"{SMOLLM2} missing (scripts/fetch-model.sh): its seeds are skipped", file=sys.stderr)

    for pkg in map(Path, sys.argv[1:]):
        m = json.loads((pkg / "manifest.json").read_text())
        if len(m["tensors"]) > 40:
            # Keep the tensors that span shards and a few others; the rest are alike.
            spans = [t for t in m["tensors"] if any(len(p["ranges"]) > 1 for p in t["parts"])]
            m["tensors"] = m["tensors"][:6] + [t for t in spans if t not in m["tensors"][:6]][:6]
        put("manifest", pkg.name + ".json", json.dumps(m, indent=1).encode())


if __name__ == "__main__":
    main()
