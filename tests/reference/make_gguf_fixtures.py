#!/usr/bin/env python3
"""Small GGUF files and their expected contents for tests/gguf.rs and tests/gguf_tokenizer.rs,
written with gguf-py (llama.cpp's own Python package: GGUFWriter, gguf.quants).

Writes tests/fixtures/gguf/ (every file a few KiB):
- types.gguf: one tensor per supported ggml type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; odd
  row counts and odd groups per row; Q4_K, Q5_K, Q6_K as random super-blocks), 1-D F32/F16/BF16
  vectors, raw-byte tensors of unsupported types (Q2_K, IQ4_NL), a 3-D tensor, and metadata of every
  value type incl. nested arrays.
- align64.gguf: general.alignment = 64.
- split-0000N-of-00002.gguf: one model split in two files by GGUFWriter(split_max_tensors=2).
- tok-spm.gguf, tok-gpt2-<pre>.gguf: vocabularies only (tokenizer.ggml.*, no tensors).
- expected.json: per file the metadata (type and value), the data offset, and per tensor its ggml
  type, dims (ggml order), absolute offset and the values gguf.quants.dequantize gives (f32, with the
  sha256 of their little-endian bytes); per tokenizer file, ids for awkward strings.

Expected token ids come from Python transcriptions of llama.cpp's algorithms (llama-vocab.cpp), not
from the code under test: llm_tokenizer_spm (best-scoring adjacent pair merged first, byte fallback
for leftovers, a space prefixed to each text fragment and spaces escaped to U+2581) and
llm_tokenizer_bpe (special tokens split out first, unicode_regex_split with the pre-tokenizer's
regexes applied in turn, GPT-2 byte-to-unicode, lowest-rank adjacent pair merged first). The
regexes are those of the models' tokenizer.json files (llama.cpp's are equivalent rewrites), run
with the `regex` module for \\p{L}/\\p{N}.

Install and run (outside the repo):
    python3 -m venv /tmp/ggvenv && /tmp/ggvenv/bin/pip install gguf numpy regex
    /tmp/ggvenv/bin/python tests/reference/make_gguf_fixtures.py
"""

import hashlib
import json
import unicodedata
from importlib.metadata import version
from pathlib import Path

import gguf
import numpy as np
import regex
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "gguf"
TT = gguf.TokenType


def sha(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).hexdigest()


def values_json(v: np.ndarray) -> list:
    return [float(x) for x in np.asarray(v, dtype=np.float32).reshape(-1)]


def metadata_json(reader: gguf.GGUFReader) -> dict:
    names = {V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32", V.INT32: "i32",
             V.FLOAT32: "f32", V.BOOL: "bool", V.STRING: "string", V.ARRAY: "array", V.UINT64: "u64",
             V.INT64: "i64", V.FLOAT64: "f64"}
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        if isinstance(value, float):
            value = float(np.float32(value)) if field.types[0] == V.FLOAT32 else value
        out[key] = {"type": names[field.types[0]], "value": value}
    return out


def file_json(path: Path) -> dict:
    r = gguf.GGUFReader(path)
    tensors = []
    for t in r.tensors:
        entry = {"name": t.name, "type": t.tensor_type.name, "dims": [int(d) for d in t.shape],
                 "offset": int(t.data_offset), "bytes": int(t.n_bytes)}
        if t.tensor_type in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K):
            vals = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
            entry["values"] = values_json(vals)
            entry["sha256"] = sha(vals)
        tensors.append(entry)
    return {"data_offset": int(r.data_offset), "file_bytes": path.stat().st_size, "metadata": metadata_json(r),
            "tensors": tensors}


def add_quant(w: gguf.GGUFWriter, name: str, data: np.ndarray, qtype: Q) -> None:
    if qtype == Q.F32:
        w.add_tensor(name, data.astype(np.float32))
    elif qtype == Q.F16:
        w.add_tensor(name, data.astype(np.float16))
    else:
        w.add_tensor(name, gguf.quants.quantize(data.astype(np.float32), qtype), raw_dtype=qtype)


def write_types() -> None:
    rng = np.random.RandomState(20261123)
    w = gguf.GGUFWriter(OUT / "types.gguf", arch="llama")
    # Every value type, and arrays (nested too).
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ▁ 👋")
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", 1e-300)
    w.add_array("test.array_i32", [1, -2, 3])
    w.add_array("test.array_f32", [0.5, -1.25])
    w.add_array("test.array_string", ["a", "", "ü"])
    w.add_array("test.array_nested", [[1, 2], [3]])
    w.add_array("test.array_bool", [True, False])

    def data(n: int, k: int) -> np.ndarray:
        x = rng.standard_normal((n, k)).astype(np.float32)
        x[0, :32] = 0.0          # an all-zero block: d = 0
        x[-1, -1] = 40.0         # an outlier
        return x

    add_quant(w, "f32", data(3, 7), Q.F32)          # k not a multiple of 4: padded rows
    add_quant(w, "f16", data(3, 13), Q.F16)         # odd k: the last word's high half is 0
    add_quant(w, "bf16", data(2, 10), Q.BF16)
    add_quant(w, "q8_0", data(5, 64), Q.Q8_0)
    add_quant(w, "q4_0", data(3, 96), Q.Q4_0)       # odd rows × odd groups per row: scale words straddle rows
    add_quant(w, "q4_1", data(4, 64), Q.Q4_1)
    add_quant(w, "q5_0", data(3, 96), Q.Q5_0)
    w.add_tensor("vec.f32", rng.standard_normal(7).astype(np.float32))
    w.add_tensor("vec.f16", rng.standard_normal(5).astype(np.float16))
    w.add_tensor("vec.bf16", gguf.quants.quantize(rng.standard_normal(6).astype(np.float32), Q.BF16),
                 raw_dtype=Q.BF16)
    w.add_tensor("f32.3d", rng.standard_normal((2, 3, 4)).astype(np.float32))
    add_quant(w, "q5_1", data(3, 96), Q.Q5_1)
    # K-quants: gguf-py only reads them, so random super-blocks (random quant and scale bits) with
    # finite f16 d/dmin, 3 rows of 2 super-blocks; llama.cpp-quantized models: make_kquant_fixtures.py.
    for name, qtype, size, f16_at in [("q4_k", Q.Q4_K, 144, [0, 2]), ("q5_k", Q.Q5_K, 176, [0, 2]),
                                      ("q6_k", Q.Q6_K, 210, [208])]:
        raw = np.frombuffer(rng.bytes(size * 6), dtype=np.uint8).reshape(6, size).copy()
        for at in f16_at:
            d = (rng.standard_normal(6) * 0.01).astype(np.float16)
            raw[:, at:at + 2] = d.view(np.uint8).reshape(6, 2)
        w.add_tensor(name, raw.reshape(3, 2 * size), raw_dtype=qtype)
    # Types we do not load: raw bytes, for the error path.
    for name, qtype, size in [("q2_k", Q.Q2_K, 84), ("iq4_nl", Q.IQ4_NL, 18)]:
        raw = np.frombuffer(rng.bytes(size), dtype=np.uint8).reshape(1, size)
        w.add_tensor(name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_align64() -> None:
    rng = np.random.RandomState(64)
    w = gguf.GGUFWriter(OUT / "align64.gguf", arch="llama")
    w.add_custom_alignment(64)
    add_quant(w, "a", rng.standard_normal((1, 3)), Q.F32)   # 12 bytes: the next tensor is padded to 64
    add_quant(w, "b", rng.standard_normal((2, 32)), Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_split() -> None:
    rng = np.random.RandomState(2)
    w = gguf.GGUFWriter(OUT / "split.gguf", arch="llama", split_max_tensors=2)
    w.add_string("general.name", "split test")
    w.add_uint32("llama.block_count", 1)
    for i, qtype in enumerate([Q.F32, Q.Q8_0, Q.Q4_1, Q.F16]):
        add_quant(w, f"t{i}", rng.standard_normal((2, 32)), qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- tokenizers ------------------------------------------------------------------------------

def bytes_to_unicode() -> dict:
    """GPT-2's byte → printable character map (encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRE = {
    "smollm": [r"\p{N}", GPT2],
    "gpt2": [GPT2],
    "llama-bpe": [r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
    "qwen2": [r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
}

TEXTS = [
    "Hello world",
    "the 12345 in 4567.89",
    "   leading spaces and trailing   ",
    "tabs\tand\nnew\n\nlines\r\n",
    "it's I'LL we've",
    "<|im_start|>user\nHello<|im_end|>\n",
    "<think>hello</think>",
    "héllo wörld ünïcode",
    "emoji 👋🏽 and 中文字符",
    "fn main() { let x = [1, 2]; }",
    "",
]


def partition(text: str, specials: dict) -> list:
    """llama.cpp's tokenizer_st_partition: special/added tokens (longest first) out of the raw text."""
    parts = [text]
    for tok in sorted(specials, key=len, reverse=True):
        out = []
        for p in parts:
            if isinstance(p, int):
                out.append(p)
                continue
            pieces = p.split(tok)
            for i, piece in enumerate(pieces):
                if i:
                    out.append(specials[tok])
                if piece:
                    out.append(piece)
        parts = out
    return parts


def regex_split(text: str, exprs: list) -> list:
    """llama.cpp's unicode_regex_split: each regex splits every piece into matches and the gaps."""
    words = [text]
    for e in exprs:
        r = regex.compile(e)
        out = []
        for w in words:
            pos = 0
            for m in r.finditer(w):
                if m.start() > pos:
                    out.append(w[pos:m.start()])
                out.append(m.group())
                pos = m.end()
            if pos < len(w):
                out.append(w[pos:])
        words = out
    return words


def bpe_word(word: str, vocab: dict, ranks: dict, ignore_merges: bool) -> list:
    if ignore_merges and word in vocab:
        return [vocab[word]]
    syms = list(word)
    while True:
        best = None
        for i in range(len(syms) - 1):
            r = ranks.get((syms[i], syms[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    out = []
    for s in syms:
        if s in vocab:
            out.append(vocab[s])
        else:  # llama.cpp: a symbol that is no token goes out byte by byte
            out.extend(vocab[c] for c in s)
    return out


def bpe_tokenize(text: str, pre: str, vocab: dict, ranks: dict, specials: dict) -> list:
    ids = []
    for part in partition(text, specials):
        if isinstance(part, int):
            ids.append(part)
            continue
        if pre == "qwen2":  # Qwen's tokenizer.json normalizes to NFC (llama.cpp does not; equal on these texts)
            part = unicodedata.normalize("NFC", part)
        for word in regex_split(part, PRE[pre]):
            enc = "".join(B2U[b] for b in word.encode("utf-8"))
            ids.extend(bpe_word(enc, vocab, ranks, ignore_merges=(pre == "llama-bpe")))
    return ids


def write_gpt2() -> dict:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = list(specials) + [B2U[b] for b in range(256)]
    types = [TT.CONTROL] * len(specials) + [TT.NORMAL] * 256
    merge_list = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("l", "l"), ("ll", "o"),
                  ("H", "e"), ("He", "llo"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld"),
                  ("1", "2"), ("12", "3"), ("Ġ", "Ġ"), ("ĠĠ", "ĠĠ"), ("Ċ", "Ċ"), ("Ġ", "1"), ("e", "r"),
                  ("'", "s"), ("Ã", "©"), ("h", "Ã©"), ("Ġ", "i"), ("Ġi", "n"), ("u", "s"), ("Ġ", "{")]
    for l, r in merge_list:
        tokens.append(l + r)
        types.append(TT.NORMAL)
    # A user-defined (non-special) added token, as convert_hf_to_gguf.py writes Qwen3's <think>.
    tokens.append("<think>")
    types.append(TT.USER_DEFINED)
    vocab = {t: i for i, t in enumerate(tokens)}
    ranks = {m: i for i, m in enumerate(merge_list)}
    added = {t: vocab[t] for t in specials + ["<think>"]}
    out = {}
    for pre in PRE:
        name = f"tok-gpt2-{pre}.gguf"
        w = gguf.GGUFWriter(OUT / name, arch="llama")
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types([int(t) for t in types])
        w.add_token_merges([f"{l} {r}" for l, r in merge_list])
        w.add_bos_token_id(0)
        w.add_eos_token_id(2)
        w.add_add_bos_token(False)
        w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        out[name] = {"cases": [{"text": t, "ids": bpe_tokenize(t, pre, vocab, ranks, added)} for t in TEXTS]}
    return out


def spm_tokenize(text: str, vocab: dict, scores: list, specials: dict, add_space_prefix: bool = True) -> list:
    ids = []
    prev_special = True  # llama.cpp: a space before the first fragment and after each special token
    for part in partition(text, specials):
        if isinstance(part, int):
            ids.append(part)
            prev_special = True
            continue
        if add_space_prefix and prev_special:
            part = " " + part
        prev_special = False
        syms = list(part.replace(" ", "\u2581"))
        while True:
            best = None
            for i in range(len(syms) - 1):
                cand = syms[i] + syms[i + 1]
                if cand in vocab and (best is None or scores[vocab[cand]] > best[0]):
                    best = (scores[vocab[cand]], i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        for s in syms:
            if s in vocab:
                ids.append(vocab[s])
            else:
                ids.extend(vocab[f"<0x{b:02X}>"] for b in s.encode("utf-8"))
    return ids


def write_spm() -> dict:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TT.UNKNOWN, TT.CONTROL, TT.CONTROL] + [TT.BYTE] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    pieces = ["▁", "e", "l", "o", "h", "w", "r", "d", "t", "a", "s", "i", "n", "H", "1", "2", "3", "'",
              "▁t", "he", "▁the", "ll", "llo", "▁H", "▁He", "▁Hello", "▁w", "or", "▁wor", "ld", "▁world", "in",
              "▁in", "12", "▁1", "▁▁", "▁▁▁▁", "er", "é", "hé", "▁a", "an", "▁an", "nd", "▁and", "is", "▁is"]
    for rank, p in enumerate(pieces):
        tokens.append(p)
        types.append(TT.NORMAL)
        scores.append(-float(rank))  # distinct scores: both algorithms then agree on every tie
    vocab = {t: i for i, t in enumerate(tokens)}
    specials = {"<s>": 1, "</s>": 2}
    name = "tok-spm.gguf"
    w = gguf.GGUFWriter(OUT / name, arch="llama")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types([int(t) for t in types])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    texts = TEXTS + ["Hello<s>world</s>", "the  and   is"]
    cases = [{"text": t, "ids": spm_tokenize(t, vocab, scores, specials)} for t in texts]
    return {name: {"cases": cases, "bos_id": 1}}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.gguf"):
        old.unlink()
    write_types()
    write_align64()
    write_split()
    tokenizers = {**write_gpt2(), **write_spm()}
    files = {p.name: file_json(p) for p in sorted(OUT.glob("*.gguf")) if not p.name.startswith("tok-")}
    expected = {"generator": "tests/reference/make_gguf_fixtures.py", "gguf_py": version("gguf"),
                "files": files, "tokenizers": tokenizers}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
