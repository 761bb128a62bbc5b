#!/usr/bin/env python3
"""Reference fixtures from llama.cpp (via llama-cpp-python, CPU) for GGUFs in the quantization types
llama.cpp's own quantizer writes for Q4_K_M, Q5_K_M, Q6_K and Q5_1: tiny random llama-arch models,
recorded the way tests/reference/make_llamacpp_fixtures.py records the default model (prompt ids,
greedy continuation, teacher-forced top-10 logits, margins, and an exact float64 forward of the
dequantized weights), plus dequantization references for single tensors. tests/gguf_kquants.rs
consumes them.

Writes tests/fixtures/kquant/ (~4 MB in all):
- <name>.gguf: the quantized models (kept in the repo; the F32 models they come from are written to
  a temporary directory and not kept: the script rebuilds them from the seed).
- llamacpp.json: what llama.cpp did with each (its "schema" key documents the layout).

Install (outside the repo; see make_llamacpp_fixtures.py for the llama-cpp-python build):
    python3 -m venv /tmp/lcvenv
    CMAKE_ARGS="-DGGML_NATIVE=OFF" /tmp/lcvenv/bin/pip install llama-cpp-python==0.3.36
    /tmp/lcvenv/bin/pip install gguf==0.19.0 regex

Run (~20 s on 2 cores; two runs give identical bytes):
    /tmp/lcvenv/bin/python tests/reference/make_kquant_fixtures.py

The models (BASES below): llama arch, 2 layers, hidden 256, FFN 512, 4 heads / 2 KV heads (head_dim
64), rope theta 10000 (llama.cpp's ROPE_TYPE_NORM: adjacent pairs), RMS eps 1e-5, and the 288-token
byte-level BPE vocabulary of tests/fixtures/gguf/tok-gpt2-smollm.gguf (every tokenizer.* key copied,
chat template included). Every matrix row (ggml dims[0]) is 256 or 512 long, a multiple of the
K-quant super-block of 256, so llama.cpp never falls back to another type for shape reasons. Weights
are seeded Gaussians plus a planted bigram (make_weights) so the logits are decisive: llama.cpp's
top-1/top-2 margins have a median of 24-49 and are below 2 on 42 of 920 rows, against its ~0.5 rms
deviation from exact (see margins and agreement in the JSON). The two end-of-generation tokens
(<|endoftext|>, <|im_end|>) get classifier rows scaled down so greedy runs its full length. The
"untied" base has output.weight; the "tied" one has none (llama.cpp then uses, and quantizes,
token_embd.weight as the classifier).

Quantization: llama_model_quantize with default params (2 threads, no imatrix), ftype per model. The
mix llama.cpp chooses (llama_tensor_get_type) is recorded per file (norms stay F32 throughout):
- tiny-q4_k_m (untied): 13 Q4_K (token_embd too), 3 Q6_K: output.weight, and blk.1 attn_v and
  ffn_down (use_more_bits: the last eighth of the layers, i.e. layer 1 of 2);
- tiny-q5_k_m (untied): 13 Q5_K, the same 3 in Q6_K;
- tiny-q6_k (tied): 15 Q6_K;
- tiny-q5_1 (untied): 15 Q5_1 (token_embd too), output.weight Q6_K (llama.cpp's classifier rule
  applies to the legacy types too).

Exact reference: gguf.quants.dequantize of every tensor (float32; asserted bit-identical to ggml's
own to_float from libggml-base, called through ctypes), widened to float64, through
make_llamacpp_fixtures.exact_logits. llama.cpp differs from it because it quantizes the
activations for its dot products (Q8_K for Q4_K/Q5_K/Q6_K weights, Q8_1 for Q5_1) and keeps K/V
(and Q for K·Q) in f16; agreement in the JSON says by how much.

Dequantization references (models[].dequant): for 2-3 tensors of each of Q4_K, Q5_K, Q6_K, Q5_1 in
each file, the sha256 of gguf.quants.dequantize's values as little-endian f32 bytes (whole tensor,
row-major (ne1, ne0)) and the first 64 values, for a bit-exact check of a repack.
"""

import ctypes
import hashlib
import json
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import gguf
import numpy as np
import llama_cpp
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from llama_cpp import Llama

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_llamacpp_fixtures as base  # noqa: E402  (shared: rows, margins, greedy, exact_logits)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "kquant"
TOKENIZER = ROOT / "tests" / "fixtures" / "gguf" / "tok-gpt2-smollm.gguf"

N_CTX = 128
N_THREADS = 2
SEED = 1234
GREEDY_STEPS = 32
TOP_K = base.TOP_K
MARGIN_THRESHOLDS = [0.1, 0.25, 0.5, 1.0, 2.0]
DEQUANT_TYPES = [Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q5_1]
DEQUANT_PER_TYPE = 3
DEQUANT_HEAD = 64

N_LAYER, HIDDEN, FFN, N_HEAD, N_KV_HEAD = 2, 256, 512, 4, 2
HEAD_DIM = HIDDEN // N_HEAD
ROPE_THETA, RMS_EPS, CONTEXT = 10000.0, 1e-5, 2048
EOG_IDS = [0, 2]  # <|endoftext|>, <|im_end|> in tok-gpt2-*.gguf
BIGRAM, KEY, SHIFT = 0.7, 0.5, 0.04  # make_weights

# base model name -> (seed, tied)
BASES = {"untied": (20261201, False), "tied": (20261202, True)}
# output file -> (base model, llama_ftype)
MODELS = [
    ("tiny-q4_k_m.gguf", "untied", "LLAMA_FTYPE_MOSTLY_Q4_K_M"),
    ("tiny-q5_k_m.gguf", "untied", "LLAMA_FTYPE_MOSTLY_Q5_K_M"),
    ("tiny-q6_k.gguf", "tied", "LLAMA_FTYPE_MOSTLY_Q6_K"),
    ("tiny-q5_1.gguf", "untied", "LLAMA_FTYPE_MOSTLY_Q5_1"),
]

PROMPTS = [
    ("plain", "Hello world, the winter is here in the north and the wind is cold."),
    ("digits", "In 1969, 123 people's café sold 42.5% (x+7) of 8080 cups; total: $3,141!"),
    ("chat", "<|im_start|>user\nHello world, is the 123 here?<|im_end|>\n<|im_start|>assistant\n"),
]


# ---- the models ----

def tokenizer_fields():
    """(key, value, type, sub_type) of every tokenizer.* key of TOKENIZER."""
    r = gguf.GGUFReader(TOKENIZER)
    out = []
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == V.ARRAY else None
        out.append((key, f.contents(), vtype, sub))
    return out


def make_weights(seed, vocab, tied):
    """Seeded weights in numpy (row-major, ggml dims reversed) layout.

    Gaussian weights alone give Gaussian logits, whose top-2 gap is a small fraction of their
    spread: near-ties everywhere, at the scale of llama.cpp's 8-bit activation rounding. So each
    model also learns a bigram, token t -> token perm[t]: the untied classifier row of perm[t] gets
    BIGRAM * embedding[t] added; the tied model, whose classifier is the embedding (and so would
    repeat its input token), gets FFN units in its last layer that recognize embedding[t] and add
    a multiple of embedding[perm[t]] - embedding[t] (key = value = KEY * embedding[t], output column
    SHIFT * (embedding[perm[t]] - embedding[t])). Attention and the other FFN units still move the
    logits, and the top-1 is often not the bigram's (prompts[].continuation shows both).
    """
    rng = np.random.default_rng(seed)

    def gauss(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def gain(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    emb = gauss((vocab, HIDDEN), 1.0)
    w = {"token_embd.weight": emb}
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = gain(HIDDEN)
        w[p + "attn_q.weight"] = gauss((N_HEAD * HEAD_DIM, HIDDEN), 1.0 / np.sqrt(HIDDEN))
        w[p + "attn_k.weight"] = gauss((N_KV_HEAD * HEAD_DIM, HIDDEN), 1.0 / np.sqrt(HIDDEN))
        w[p + "attn_v.weight"] = gauss((N_KV_HEAD * HEAD_DIM, HIDDEN), 1.0 / np.sqrt(HIDDEN))
        w[p + "attn_output.weight"] = gauss((HIDDEN, N_HEAD * HEAD_DIM), 1.5 / np.sqrt(HIDDEN))
        w[p + "ffn_norm.weight"] = gain(HIDDEN)
        w[p + "ffn_gate.weight"] = gauss((FFN, HIDDEN), 1.0 / np.sqrt(HIDDEN))
        w[p + "ffn_up.weight"] = gauss((FFN, HIDDEN), 1.0 / np.sqrt(HIDDEN))
        w[p + "ffn_down.weight"] = gauss((HIDDEN, FFN), 2.0 / np.sqrt(FFN))
    w["output_norm.weight"] = gain(HIDDEN)
    perm = rng.permutation(vocab)
    if tied:
        emb[EOG_IDS] *= 0.05  # end-of-generation tokens never win: greedy runs its full length
        p = f"blk.{N_LAYER - 1}."
        key = (KEY / np.sqrt(HIDDEN) * emb).astype(np.float32)
        w[p + "ffn_gate.weight"][:vocab] = key
        w[p + "ffn_up.weight"][:vocab] = key
        w[p + "ffn_down.weight"][:, :vocab] = (SHIFT * (emb[perm] - emb)).T
    else:
        out = gauss((vocab, HIDDEN), 1.0)
        out[perm] += BIGRAM * emb
        out[EOG_IDS] *= 0.05
        w["output.weight"] = out
    return w


def write_base(path, seed, tied):
    tok = tokenizer_fields()
    vocab = len(next(v for k, v, _, _ in tok if k == "tokenizer.ggml.tokens"))
    wr = gguf.GGUFWriter(path, arch="llama")
    wr.add_name(f"kquant-tiny-{'tied' if tied else 'untied'}")
    wr.add_block_count(N_LAYER)
    wr.add_context_length(CONTEXT)
    wr.add_embedding_length(HIDDEN)
    wr.add_feed_forward_length(FFN)
    wr.add_head_count(N_HEAD)
    wr.add_head_count_kv(N_KV_HEAD)
    wr.add_rope_dimension_count(HEAD_DIM)
    wr.add_rope_freq_base(ROPE_THETA)
    wr.add_layer_norm_rms_eps(RMS_EPS)
    wr.add_vocab_size(vocab)
    wr.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, val, vtype, sub in tok:
        wr.add_key_value(key, val, vtype, sub_type=sub)
    for name, t in make_weights(seed, vocab, tied).items():
        wr.add_tensor(name, t)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def quantize(src, dst, ftype_name):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = N_THREADS
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize {src} -> {dst} ({ftype_name}): {rc}")


# ---- dequantization: gguf-py, checked against ggml's own to_float ----

class GgmlTypeTraits(ctypes.Structure):  # struct ggml_type_traits (ggml.h)
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


TO_FLOAT_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)
_GGML = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
_GGML.ggml_get_type_traits.restype = ctypes.POINTER(GgmlTypeTraits)
_GGML.ggml_get_type_traits.argtypes = [ctypes.c_int]


def ggml_to_float(raw, qtype, n):
    tr = _GGML.ggml_get_type_traits(int(qtype)).contents
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    assert tr.type_name.decode().lower() == qtype.name.lower() and (tr.blck_size, tr.type_size) == (bs, ts), \
        (tr.type_name, tr.blck_size, tr.type_size, qtype)
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    out = np.empty(n, dtype=np.float32)
    TO_FLOAT_T(tr.to_float)(raw.ctypes.data, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n)
    return out


def load_dequantized(path):
    """(metadata, {name: float32 array (ne1, ne0) or (ne0,)}, {name: ggml type}) of a GGUF."""
    r = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    values, types = {}, {}
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        v = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(shape)
        if t.tensor_type not in (Q.F32, Q.F16):
            ref = ggml_to_float(t.data, t.tensor_type, v.size)
            assert ref.view(np.uint32).tobytes() == v.reshape(-1).view(np.uint32).tobytes(), \
                f"{path.name} {t.name}: gguf-py and ggml's to_float differ"
        values[t.name] = v
        types[t.name] = t.tensor_type
    return meta, values, types


def f32_sha(v):
    return hashlib.sha256(np.ascontiguousarray(v, dtype="<f4").tobytes()).hexdigest()


def dequant_refs(values, types):
    """Up to DEQUANT_PER_TYPE tensors per type of DEQUANT_TYPES: the classifier/embedding first, then
    one per new row length (ffn_down's rows are 512: two K-quant super-blocks), then new shapes."""
    out = []
    for qt in DEQUANT_TYPES:
        names = sorted((n for n in values if types[n] == qt),
                       key=lambda n: (n not in ("output.weight", "token_embd.weight"), n))
        picked = []
        for new in (lambda v, ps: v.shape[-1] not in {values[q].shape[-1] for q in ps},
                    lambda v, ps: v.shape not in {values[q].shape for q in ps},
                    lambda v, ps: True):
            for n in names:
                if n not in picked and len(picked) < DEQUANT_PER_TYPE and new(values[n], picked):
                    picked.append(n)
        for n in picked:
            v = values[n]
            out.append({"name": n, "type": qt.name, "dims": [int(d) for d in reversed(v.shape)],
                        "sha256": f32_sha(v), "head": [float(x) for x in v.reshape(-1)[:DEQUANT_HEAD]]})
    return out


# ---- recording ----

def record(path, base_name, ftype_name):
    meta, values, types = load_dequantized(path)
    w = {n: v.astype(np.float64) for n, v in values.items()}
    llm = Llama(model_path=str(path), n_ctx=N_CTX, n_batch=N_CTX, n_threads=N_THREADS,
                n_threads_batch=N_THREADS, seed=SEED, logits_all=True, n_gpu_layers=0, verbose=False)
    prompts, all_m, cont_m, exact_m, diffs, diffs_top, inc_diffs = [], [], [], [], [], [], []
    top5_min, differ_margins, splits = [], [], []
    for name, text in PROMPTS:
        ids = llm.tokenize(text.encode(), add_bos=True, special=True)
        assert ids == llm.tokenize(text.encode(), add_bos=False, special=True), name
        cont, inc_logits, eog = base.greedy(llm, ids, GREEDY_STEPS)
        seq = ids + cont[:-1]
        logits = base.decode_all(llm, seq)
        n = len(ids)
        exact = base.exact_logits(meta, w, seq)
        diff = np.abs(logits.astype(np.float64) - exact)
        top = np.argsort(-logits, axis=-1, kind="stable")[:, :TOP_K]
        diff_top = np.take_along_axis(diff, top, -1)
        m, m_exact = base.margins_of(logits), base.margins_of(exact)
        disagree = np.nonzero(exact.argmax(-1) != logits.argmax(-1))[0]
        inc_diff = np.abs(inc_logits - logits[n - 1:])
        # what an exact implementation does: its own greedy run, its top-5 against llama.cpp's
        ex_cont, ex_margins = exact_greedy(meta, w, ids, len(cont))
        top5_exact = np.argsort(-exact, axis=-1, kind="stable")[:, :5]
        shared = [len(set(a) & set(b)) for a, b in zip(top[:, :5].tolist(), top5_exact.tolist())]
        top5_min.append(min(shared))
        differ_margins += [float(m[r]) for r in disagree]
        split = next((j for j, (a, b) in enumerate(zip(ex_cont, cont)) if a != b), None)
        if split is not None:
            splits.append({"prompt": name, "step": split, "llamacpp_margin": float(f"{m[n - 1 + split]:.3g}"),
                           "exact_margin": float(f"{ex_margins[split]:.3g}")})
        all_m += m.tolist()
        cont_m += m[n - 1:].tolist()
        exact_m += m_exact.tolist()
        diffs.append(diff)
        diffs_top.append(diff_top)
        inc_diffs.append(inc_diff)
        # at a near-tie llama.cpp's one-token and batched decodes may pick different tokens
        batch_differs = [j for j, (a, b) in enumerate(zip(logits[n - 1:].argmax(-1).tolist(), cont)) if a != b]
        prompts.append({
            "name": name, "text": text, "ids": ids, "continuation": cont, "stopped_at_eog": eog,
            "continuation_text": llm.detokenize(cont, special=True).decode("utf-8", "replace"),
            "incremental_vs_batch_max_abs": float(f"{inc_diff.max():.3g}"),
            "batch_argmax_differs": batch_differs,
            **base.rows(logits),
            "exact": {
                **exact_rows(exact),
                "greedy": ex_cont, "greedy_margins": sig4(ex_margins),
                "vs_llamacpp": {"max_abs": float(f"{diff.max():.3g}"),
                                "max_abs_top10": float(f"{diff_top.max():.3g}"),
                                "rms": float(f"{np.sqrt((diff ** 2).mean()):.3g}"),
                                "argmax_differs": [{"row": int(r), "llamacpp_margin": float(f"{m[r]:.3g}"),
                                                    "exact_margin": float(f"{m_exact[r]:.3g}")}
                                                   for r in disagree]},
            },
        })
        print(f"{path.name} {name}: {n} ids, {len(cont)} generated (eog {eog}), exact max |d| {diff.max():.3f} "
              f"(top-10 {diff_top.max():.3f}), min margin {m.min():.3f}: {prompts[-1]['continuation_text']!r}",
              flush=True)
    del llm

    type_counts = {}
    for t in types.values():
        type_counts[t.name] = type_counts.get(t.name, 0) + 1
    n_differ = sum(len(p["exact"]["vs_llamacpp"]["argmax_differs"]) for p in prompts)
    return {
        "file": path.name, "sha256": base.sha256_file(path), "bytes": path.stat().st_size,
        "base": base_name, "ftype": ftype_name, "tied": "output.weight" not in types,
        "general_file_type": int(meta["general.file_type"]),
        "type_counts": dict(sorted(type_counts.items())),
        "tensor_types": {n: t.name for n, t in types.items()},
        "agreement": {"llamacpp_vs_exact": diff_stats(diffs), "llamacpp_vs_exact_top10": diff_stats(diffs_top),
                      "argmax_differs_rows": n_differ,
                      "argmax_differs_max_llamacpp_margin": float(f"{max(differ_margins, default=0):.3g}"),
                      "top5_min_shared_with_exact": min(top5_min),
                      "exact_greedy_parts_from_llamacpp": splits,
                      "incremental_vs_batch": diff_stats(inc_diffs)},
        "margins": {"all_rows": margin_stats(all_m), "continuation_rows": margin_stats(cont_m),
                    "exact_all_rows": margin_stats(exact_m)},
        "prompts": prompts,
        "dequant": dequant_refs(values, types),
    }


def exact_greedy(meta, w, ids, steps):
    """The exact forward's own greedy continuation (no EOG stop: EOG never wins here) and margins."""
    seq, margins = list(ids), []
    for _ in range(steps):
        last = base.exact_logits(meta, w, seq)[-1:]
        seq.append(int(last.argmax()))
        margins.append(float(base.margins_of(last)[0]))
    return seq[len(ids):], margins


def exact_rows(logits):
    """base.rows with 7 significant digits: these logits reach ~170, where 5 digits would round by
    up to 5e-3, the size of the tolerance they are checked with."""
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :TOP_K]
    return {"top_ids": top.tolist(),
            "top_logits": [[float(f"{v:.7g}") for v in r] for r in np.take_along_axis(logits, top, -1).tolist()],
            "margins": sig4(base.margins_of(logits).tolist())}


def sig4(x):
    return [float(f"{v:.4g}") for v in x]


def margin_stats(ms):
    return {"n": len(ms), "min": float(f"{min(ms):.4g}"), "median": float(f"{statistics.median(ms):.4g}"),
            "count_below": {str(t): sum(x < t for x in ms) for t in MARGIN_THRESHOLDS}}


def diff_stats(diffs):
    d = np.concatenate([x.reshape(-1) for x in diffs])
    return {"max_abs": float(f"{d.max():.3g}"), "p99_abs": float(f"{np.quantile(d, 0.99):.3g}"),
            "rms": float(f"{np.sqrt((d ** 2).mean()):.3g}")}


SCHEMA = {
    "models[]": "one quantized GGUF each, tests/fixtures/kquant/<file>",
    "models[].file / sha256 / bytes": "the GGUF and its sha256 and size",
    "models[].base": "which seeded F32 model it was quantized from (settings.bases)",
    "models[].ftype / general_file_type": "the llama_ftype asked of llama_model_quantize, and the file's general.file_type",
    "models[].tied": "true: no output.weight, the classifier is token_embd.weight",
    "models[].type_counts / tensor_types": "ggml type (gguf-py's name: F32, Q4_K, ...) per tensor as llama.cpp chose it",
    "models[].prompts[]": "name, text, ids (llm.tokenize(text, add_bos=True, special=True); the GGUF has "
                          "add_bos_token false, so no BOS), continuation (greedy, token by token, GREEDY_STEPS "
                          "or up to an end-of-generation token, which is then its last token: stopped_at_eog), "
                          "continuation_text (detokenized, special=True)",
    "models[].prompts[] rows": "top_ids / top_logits / margins: one row per position of ids + continuation[:-1] "
                               "(one batched decode, teacher forcing); row len(ids)-1+j predicts continuation[j]; "
                               "top_ids/top_logits: llama.cpp's top-10 (logits to 5 significant digits), margins: "
                               "its top-1 minus top-2",
    "models[].prompts[].exact": "the same rows from the float64 forward of the dequantized weights (logits to 7 "
                                "significant digits, margins to 4), and vs_llamacpp: "
                                "the distance between the two (max_abs over the vocabulary, max_abs_top10 over "
                                "llama.cpp's top-10, rms) and the rows where their argmax differs",
    "models[].prompts[].exact.greedy / greedy_margins": "the exact forward's own greedy continuation (as many "
                                                        "tokens as continuation) and its top-2 margin at each step",
    "models[].prompts[].incremental_vs_batch_max_abs": "llama.cpp's one-token decodes vs its batched decode, "
                                                       "largest logit difference over the continuation rows",
    "models[].prompts[].batch_argmax_differs": "steps j where the batched row's argmax is not continuation[j] "
                                               "(llama.cpp against itself at a near-tie)",
    "models[].agreement": "llama.cpp vs exact over all prompts: logit distance (max, p99, rms), rows whose "
                          "argmax differs and the largest llama.cpp margin among them, the fewest ids shared "
                          "by the two top-5s of a row, where the exact greedy run first parts from llama.cpp's "
                          "(step, both margins there), and llama.cpp's one-token vs batched decodes",
    "models[].margins": "top-1 minus top-2 of llama.cpp's rows (all, continuation rows) and of the exact rows: "
                        "min, median, count below each threshold",
    "models[].dequant[]": "name, type, dims (ggml order: [ne0, ne1]), sha256 of gguf.quants.dequantize's values "
                          "as little-endian f32 (row-major: ne1 rows of ne0), head: its first 64 values; "
                          "gguf-py's values equal ggml's to_float bit for bit (checked by the generator)",
}


def main():
    t0 = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.gguf"):
        old.unlink()
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        bases = {}
        for name, (seed, tied) in BASES.items():
            bases[name] = Path(tmp) / f"base-{name}-f32.gguf"
            write_base(bases[name], seed, tied)
        for file, base_name, ftype in MODELS:
            quantize(bases[base_name], OUT / file, ftype)
            models.append(record(OUT / file, base_name, ftype))
        base_info = {name: {"seed": seed, "tied": tied, "f32_sha256": base.sha256_file(bases[name])}
                     for name, (seed, tied) in BASES.items()}
    present = {t for m in models for t in m["type_counts"]}
    missing = [t.name for t in DEQUANT_TYPES if t.name not in present]
    assert not missing, f"no tensor of {missing} in any file"
    obj = {
        "generator": "tests/reference/make_kquant_fixtures.py",
        "schema": SCHEMA,
        "versions": {"llama_cpp_python": llama_cpp.__version__, "gguf_py": version("gguf"),
                     "system_info": llama_cpp.llama_print_system_info().decode().strip()},
        "settings": {"device": "cpu", "n_ctx": N_CTX, "n_batch": N_CTX, "n_threads": N_THREADS, "seed": SEED,
                     "logits_all": True, "flash_attn": False, "kv_cache": "f16", "greedy_steps": GREEDY_STEPS,
                     "top_k": TOP_K, "logits": "rounded to 5 significant digits",
                     "quantize": "llama_model_quantize, default params (no imatrix), nthread 2",
                     "bases": base_info,
                     "model": {"arch": "llama", "n_layer": N_LAYER, "hidden": HIDDEN, "ffn": FFN, "n_head": N_HEAD,
                               "n_kv_head": N_KV_HEAD, "head_dim": HEAD_DIM, "rope_theta": ROPE_THETA,
                               "rms_eps": RMS_EPS, "context_length": CONTEXT,
                               "tokenizer": f"tokenizer.* of tests/fixtures/gguf/{TOKENIZER.name}"}},
        "precision_note": "llama.cpp's CPU matmuls quantize the activations to 8 bits (Q8_K for Q4_K/Q5_K/Q6_K "
                          "weights, Q8_1 for Q5_1) and keep K/V (and Q in K.Q) in f16; the embedding lookup "
                          "dequantizes exactly. models[].agreement says how far that moves its logits from the "
                          "exact forward. Compare an f32 implementation with prompts[].exact tightly, and with "
                          "llama.cpp's rows loosely (top-1 where its margin is clear, top-k overlap).",
        "models": models,
    }
    path = OUT / "llamacpp.json"
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
    for m in models:
        print(f"{m['file']}: {m['bytes']} bytes, {m['type_counts']}, tied {m['tied']}")
        print(f"  margins {m['margins']}")
        print(f"  agreement {m['agreement']}")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT.relative_to(ROOT)} ({total} bytes in all, llamacpp.json {path.stat().st_size}) "
          f"in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
