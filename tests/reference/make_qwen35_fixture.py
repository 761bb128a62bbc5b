#!/usr/bin/env python3
"""Reference fixture for Qwen3.5 (HF `Qwen3_5ForCausalLM`, model_type `qwen3_5_text`): the hybrid of Gated
DeltaNet (linear attention) and gated full attention layers, 3:1. Spec: docs/qwen35.md.

Writes tests/fixtures/qwen35/{config.json, weights.json, expected.json} for a tiny random-weight model, in the
format of tests/reference/make_fixtures.py (whose weight recipe, Q4/Q8 emulation, probe ids and row format are
imported from it unchanged; read its header), and checks the numpy float64 reference in qwen35_ref.py against
transformers.

Install (transformers 5.x has Qwen3.5; keep /tmp/fxvenv's 4.57 for make_fixtures.py: 5.x goes to its own target):
    /tmp/fxvenv/bin/pip install --target /tmp/tf5 "transformers==5.25.0"
Run (needs models/tokenizers/qwen3: bash scripts/fetch-tokenizers.sh; one to a few minutes on 2 cores):
    PYTHONPATH=/tmp/tf5 /tmp/fxvenv/bin/python tests/reference/make_qwen35_fixture.py

Model: hidden 96, intermediate 160, 4 layers: linear, linear, linear, full (layer_types written explicitly).
Full attention: 3 query heads, 1 KV head, head_dim 64 (q_proj [3*64*2, 96]: query and output gate per head),
partial RoPE 0.25 (the first 16 dims of a head), rope_theta 1e7, mrope_section [3, 3, 2] interleaved (text
positions make it plain RoPE). Gated DeltaNet: 2 key heads x 32, 4 value heads x 64 (each key head serves 2
value heads; d_k != d_v so an orientation mix-up in the state fails loudly), conv kernel 4. Untied lm_head.
vocab 151936 with the Qwen3 tokenizer (real Qwen3.5 checkpoints have their own 248320-entry vocabulary).
Every matmul input (96, 192, 256, 160) is a multiple of 32.

Weights: make_fixtures.py's recipe (splitmix per tensor index in sorted-name order, f16), with Qwen3.5's
(scale, offset) per tensor: RMSNorms are (1 + w) (Qwen3_5RMSNorm: input_layernorm, post_attention_layernorm,
model.norm, q_norm, k_norm), so their w is (0.1, 0); linear_attn.norm.weight is a plain gain
(Qwen3_5RMSNormGated), (0.1, 1); A_log (1, -2): A = exp(A_log) in [0.05, 0.37]; dt_bias (0.5, 1);
conv1d.weight [conv_dim, 1, 4] (1.5, 0) (3/sqrt(fan-in 4), the matrix rule); embed_tokens and lm_head
(0.5, 0); other matrices 3/sqrt(in_features) rounded to a multiple of 2^-12. weights.json records each.
Q4 variant: 2-D Linear weights Q4_0, embed_tokens/lm_head Q8_0; conv1d (3-D), A_log, dt_bias and norms stay.

expected.json: as make_fixtures.py's (prompts with greedy continuation and logits rows, q4, tokenize, chat),
plus:
- prompt "long" has more than 64 tokens, so transformers' chunked prefill (chunk 64) runs over 2 chunks.
- `decode_paths`: every f32 row is the full-sequence forward (use_cache=False: the chunked delta rule over the
  whole sequence). The same rows computed with the cache: prefill the prompt (chunked), then one token at a
  time (torch_recurrent_gated_delta_rule, conv state update) — max |diff| per prompt, asserted < 1e-4; and
  for "long" all rows token by token from the first token, stored in full (`stepwise`).
- `numpy_f64`: max |diff| of qwen35_ref.py (float64) against transformers (float32): one Gated DeltaNet layer
  on random input (the recurrent and the chunked numpy forms), and the whole model's logits.
"""

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import transformers
from jinja2.exceptions import TemplateError
from transformers import AutoTokenizer, DynamicCache, Qwen3_5ForCausalLM, Qwen3_5TextConfig
import transformers.models.qwen3_5.modeling_qwen3_5 as hf_qwen35

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (the shared recipe; read-only here)
import qwen35_ref as ref  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "qwen35"
TOK_NAME = "qwen3"
BASE_SEED = 35000  # the search starts here; 35005 is the first with margins >= MIN_MARGIN
PATH_TOL = 5e-4  # f32 paths; ~3e-5 of the logits' range (|logit| <= 15); see decode_paths
CHUNK = 64  # torch_chunk_gated_delta_rule's default chunk_size; the layer does not pass one

CONFIG = dict(
    vocab_size=151936, hidden_size=96, intermediate_size=160, num_hidden_layers=4,
    layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    num_attention_heads=3, num_key_value_heads=1, head_dim=64, hidden_act="silu",
    max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
    rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                     "mrope_section": [3, 3, 2], "mrope_interleaved": True},
    linear_conv_kernel_dim=4, linear_key_head_dim=32, linear_value_head_dim=64,
    linear_num_key_heads=2, linear_num_value_heads=4,
    bos_token_id=151643, eos_token_id=151645, dtype="float16")

PROMPTS = mf.PROMPTS + [
    ("long", "A gated delta rule keeps a matrix of memory per head: every token decays it, reads what the "
             "memory predicts for its key, and writes back only the error, scaled by beta. This prompt is long "
             "on purpose, so that the chunked prefill covers more than one chunk of 64 tokens: one, two, three, "
             "four, five, six, seven.")]
CHAT_PROMPT = mf.CHAT_PROMPT


def scale_offset(name, shape):
    if name.endswith("linear_attn.norm.weight"):
        return 0.1, 1.0  # Qwen3_5RMSNormGated: plain weight
    if "norm" in name:
        return 0.1, 0.0  # Qwen3_5RMSNorm: (1 + w)
    if name.endswith(".A_log"):
        return 1.0, -2.0
    if name.endswith(".dt_bias"):
        return 0.5, 1.0
    if "embed_tokens" in name or name.startswith("lm_head"):
        return 0.5, 0.0
    if name.endswith("conv1d.weight"):
        assert len(shape) == 3 and shape[1] == 1, (name, shape)
        return round(mf.MATRIX_GAIN / math.sqrt(shape[2]) * 4096) / 4096, 0.0
    assert len(shape) == 2, name
    return round(mf.MATRIX_GAIN / math.sqrt(shape[1]) * 4096) / 4096, 0.0


def make_weights(seed, names_shapes):
    """make_fixtures.make_weights with Qwen3.5's (scale, offset)."""
    out = []
    for t, (name, shape) in enumerate(names_shapes):
        scale, offset = scale_offset(name, shape)
        u = mf.uniform(mf.tensor_key(seed, t), int(np.prod(shape)))
        vals = (offset + scale * (2.0 * u - 1.0)).astype(np.float16).reshape(shape)
        out.append((name, shape, scale, offset, vals))
    return out


def checkpoint_tensors(config):
    with torch.device("meta"):
        model = Qwen3_5ForCausalLM._from_config(config, dtype=torch.float32)
    sd = model.state_dict()
    if config.tie_word_embeddings:
        sd.pop("lm_head.weight")
    return sorted((k, list(v.shape)) for k, v in sd.items())


@torch.no_grad()
def build(config, weights):
    model = Qwen3_5ForCausalLM._from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    sd = model.state_dict()
    names = {w[0] for w in weights}
    missing = set(sd) - names - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    assert not missing, missing
    for name, _, _, _, vals in weights:
        sd[name].copy_(torch.from_numpy(vals.astype(np.float32)))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return model


class Calls:
    """Counts calls of the torch delta-rule functions, to prove which path a forward took."""

    def __init__(self):
        self.n = {"chunk": 0, "recurrent": 0}
        self.orig = (hf_qwen35.torch_chunk_gated_delta_rule, hf_qwen35.torch_recurrent_gated_delta_rule)

        def chunk(*a, **k):
            self.n["chunk"] += 1
            return self.orig[0](*a, **k)

        def recurrent(*a, **k):
            self.n["recurrent"] += 1
            return self.orig[1](*a, **k)
        hf_qwen35.torch_chunk_gated_delta_rule, hf_qwen35.torch_recurrent_gated_delta_rule = chunk, recurrent

    def take(self):
        n, self.n = self.n, {"chunk": 0, "recurrent": 0}
        return n


CALLS = None


@torch.no_grad()
def full_logits(model, ids):
    return model(torch.tensor([ids]), use_cache=False).logits[0]


@torch.no_grad()
def cached_logits(model, seq, prefill):
    """Rows for seq with the cache: one forward over seq[:prefill], then one token per forward."""
    cache = DynamicCache(config=model.config)
    out = [model(torch.tensor([seq[:prefill]]), cache=cache, use_cache=True).logits[0]]
    for t in range(prefill, len(seq)):
        out.append(model(torch.tensor([[seq[t]]]), cache=cache, use_cache=True).logits[0])
    return torch.cat(out)


@torch.no_grad()
def greedy(model, ids):
    seq, cont, margins = list(ids), [], []
    for _ in range(mf.GREEDY_STEPS):
        last = model(torch.tensor([seq]), use_cache=False, logits_to_keep=1).logits[0, -1]
        top2 = torch.topk(last, 2)
        cont.append(int(top2.indices[0]))
        margins.append(float(top2.values[0] - top2.values[1]))
        seq.append(cont[-1])
    return cont, margins


class AllF64:
    """Runs transformers' Qwen3.5 code entirely in float64: its module sees torch.float32 (and torch.float) as
    float64 and Tensor.float() as .double(), so the f32 islands (RMSNorm, rotary, g, the delta-rule functions)
    go f64 too. Then transformers and qwen35_ref.py must agree to rounding (~1e-13), which proves the spec's
    formulas rather than merely bounding them by f32 noise."""

    class _Torch:
        def __getattr__(self, k):
            return torch.float64 if k in ("float32", "float") else getattr(torch, k)

    def __enter__(self):
        self.saved = hf_qwen35.torch, torch.Tensor.float
        hf_qwen35.torch, torch.Tensor.float = self._Torch(), lambda t, *a, **k: t.double()

    def __exit__(self, *exc):
        hf_qwen35.torch, torch.Tensor.float = self.saved


def numpy_checks(model, config, weights, seqs):
    """qwen35_ref.py (f64) against transformers, in f32 and in all-f64. seqs: name -> teacher-forced ids.
    Returns the report and the exact (f64) logits per name."""
    cfg = ref.Cfg(config.to_dict())
    W = {name: vals.astype(np.float64) for name, _, _, _, vals in weights}
    res = {}
    with AllF64():
        m64 = build(config, weights).double()
        assert m64.model.rotary_emb.inv_freq.dtype == torch.float64
    # One Gated DeltaNet layer on random input, 150 tokens (3 chunks: the last one padded).
    p = "model.layers.0.linear_attn."
    x = np.random.default_rng(35).standard_normal((150, config.hidden_size))
    CALLS.take()
    with torch.no_grad():
        y32 = model.model.layers[0].linear_attn(hidden_states=torch.from_numpy(x.astype(np.float32))[None])
        with AllF64():
            y64 = m64.model.layers[0].linear_attn(hidden_states=torch.from_numpy(x.astype(np.float32)).double()[None])
    assert CALLS.take() == {"chunk": 2, "recurrent": 0}
    y32, y64 = y32.double().numpy()[0], y64.numpy()[0]
    xr = x.astype(np.float32).astype(np.float64)
    y_rec, _ = ref.gdn_layer(xr, W, p, cfg)
    y_chk, _ = ref.gdn_layer(xr, W, p, cfg, chunked=True)
    y1, st = ref.gdn_layer(xr[:70], W, p, cfg)
    y2, _ = ref.gdn_layer(xr[70:], W, p, cfg, st, chunked=True)
    res["gdn_layer"] = {
        "input": "150 x 96 standard normal (numpy default_rng(35)) rounded to f32, layer 0, no cache (chunked)",
        "max_abs_output": float(np.abs(y64).max()),
        "max_abs_diff_ref_recurrent_vs_torch_f64": float(np.abs(y_rec - y64).max()),
        "max_abs_diff_ref_chunked_vs_torch_f64": float(np.abs(y_chk - y64).max()),
        "max_abs_diff_ref_recurrent_vs_torch_f32": float(np.abs(y_rec - y32).max()),
        "max_abs_diff_ref_chunked_vs_ref_recurrent": float(np.abs(y_chk - y_rec).max()),
        "max_abs_diff_ref_split_70_then_80_vs_whole": float(np.abs(np.concatenate([y1, y2]) - y_rec).max())}
    # The whole model, every prompt's teacher-forced sequence: full (chunked) and token by token (recurrent).
    res["model_logits"] = {"sequences": "each prompt + continuation[:15]",
                           "max_abs_diff_ref_vs_torch_f64_full": 0.0, "max_abs_diff_ref_vs_torch_f64_stepwise": 0.0,
                           "max_abs_diff_ref_stepwise_vs_ref_full": 0.0}
    exact = {}
    for name, seq in seqs.items():
        lg, _ = ref.forward(np.array(seq), W, cfg)
        with AllF64():
            full64 = full_logits(m64, seq).numpy()
            step64 = cached_logits(m64, seq, 1).numpy()
        cache, rows = None, []
        for t in seq:
            r, cache = ref.forward(np.array([t]), W, cfg, cache)
            rows.append(r[0])
        m = res["model_logits"]
        for k, d in (("max_abs_diff_ref_vs_torch_f64_full", full64 - lg),
                     ("max_abs_diff_ref_vs_torch_f64_stepwise", step64 - lg),
                     ("max_abs_diff_ref_stepwise_vs_ref_full", np.array(rows) - lg)):
            m[k] = max(m[k], float(np.abs(d).max()))
        exact[name] = lg
    CALLS.take()
    return res, exact


def main():
    global CALLS
    t0 = time.time()
    torch.manual_seed(0)
    mf.self_test_quant()
    for pkg in ("fla", "causal_conv1d"):  # the fast kernels would replace the torch path being documented
        try:
            __import__(pkg)
            sys.exit(f"{pkg} is importable: run without it so transformers takes its torch path")
        except ImportError:
            pass
    CALLS = Calls()

    config = Qwen3_5TextConfig(**CONFIG)
    config.architectures = ["Qwen3_5ForCausalLM"]
    tok_dir = mf.TOKENIZERS / TOK_NAME
    if not (tok_dir / "tokenizer.json").exists():
        sys.exit(f"{tok_dir}/tokenizer.json missing: run scripts/fetch-tokenizers.sh")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert config.vocab_size >= len(tok), (config.vocab_size, len(tok))

    prompts = []
    for pname, text in PROMPTS:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok(text, add_special_tokens=True).input_ids == ids
        prompts.append({"name": pname, "text": text, "add_special_tokens": False, "bos_prepended": False,
                        "ids": ids})
    chat_text = tok.apply_chat_template(CHAT_PROMPT, add_generation_prompt=True, tokenize=False)
    chat_ids = tok(chat_text, add_special_tokens=False).input_ids
    prompts.append({"name": "chat", "messages": CHAT_PROMPT, "text": chat_text, "add_special_tokens": False,
                    "bos_prepended": False, "ids": chat_ids})
    lens = {p["name"]: len(p["ids"]) for p in prompts}
    assert lens["long"] > CHUNK, lens
    print(f"prompt lengths {lens}", flush=True)

    tensors = checkpoint_tensors(config)
    probes = mf.probe_ids(config.vocab_size)
    for seed in range(BASE_SEED, BASE_SEED + 100):
        weights = make_weights(seed, tensors)
        model = build(config, weights)
        runs = [greedy(model, p["ids"]) for p in prompts]
        worst = min(min(m) for _, m in runs)
        print(f"qwen35: seed {seed}: min greedy margin {worst:.4f}", flush=True)
        if worst >= mf.MIN_MARGIN:
            break
    else:
        sys.exit(f"qwen35: no seed with margins >= {mf.MIN_MARGIN}")

    # f32 rows (full-sequence forward, chunked delta rule), teacher-forced on prompt + continuation.
    min_margin_all = math.inf
    f32_logits = {}
    for p, (cont, margins) in zip(prompts, runs):
        seq = p["ids"] + cont[:-1]
        CALLS.take()
        logits = full_logits(model, seq)
        assert CALLS.take() == {"chunk": 3, "recurrent": 0}
        n = len(p["ids"])
        assert logits[n - 1:].argmax(-1).tolist() == cont, p["name"]
        p.update(continuation=cont, margins=mf.sig7(margins), **mf.rows(logits, probes))
        top2 = torch.topk(logits, 2).values
        min_margin_all = min(min_margin_all, float((top2[:, 0] - top2[:, 1]).min()))
        f32_logits[p["name"]] = (seq, logits)

    # The reference (f64) against transformers (f64 and f32); exact logits per prompt.
    np_checks, exact = numpy_checks(model, config, weights, {k: v[0] for k, v in f32_logits.items()})
    print(f"numpy f64 reference: {json.dumps(np_checks)}", flush=True)
    g, ml = np_checks["gdn_layer"], np_checks["model_logits"]
    assert g["max_abs_diff_ref_recurrent_vs_torch_f64"] < 1e-10 and g["max_abs_diff_ref_chunked_vs_torch_f64"] < 1e-10, g
    assert g["max_abs_diff_ref_recurrent_vs_torch_f32"] < 1e-4 * max(1.0, g["max_abs_output"]), g
    assert g["max_abs_diff_ref_chunked_vs_ref_recurrent"] < 1e-10 and g["max_abs_diff_ref_split_70_then_80_vs_whole"] < 1e-10
    assert max(v for k, v in ml.items() if k != "sequences") < 1e-10, ml

    # The same f32 rows through the cache: prefill + decode, and token by token from the start.
    paths = {"chunk_size": CHUNK, "tolerance": PATH_TOL,
             "protocol": "rows as `prompts` (prompt + continuation[:15]); full = one forward, use_cache=False "
                         "(chunked delta rule; these are the `prompts` rows); prefill_decode = one forward over "
                         "the prompt with a DynamicCache, then one token per forward (recurrent delta rule); "
                         "stepwise = one token per forward from the first token; exact = qwen35_ref.py in f64 "
                         "(= transformers in all-f64 to ~1e-13)",
             "max_abs_diff": {}}
    worst_path = 0.0
    for p in prompts:
        seq, logits = f32_logits[p["name"]]
        n = len(p["ids"])
        CALLS.take()
        dec = cached_logits(model, seq, n)
        calls = CALLS.take()
        assert calls == {"chunk": 3, "recurrent": 3 * (len(seq) - n)}, calls
        step = cached_logits(model, seq, 1)
        calls = CALLS.take()
        assert calls == {"chunk": 3, "recurrent": 3 * (len(seq) - 1)}, calls
        ex = torch.from_numpy(exact[p["name"]])
        d = {"full_vs_prefill_decode": dec - logits, "full_vs_stepwise": step - logits,
             "full_vs_exact": logits.double() - ex, "prefill_decode_vs_exact": dec.double() - ex,
             "stepwise_vs_exact": step.double() - ex}
        d = {k: float(v.abs().max()) for k, v in d.items()}
        paths["max_abs_diff"][p["name"]] = d
        worst_path = max(worst_path, d["full_vs_prefill_decode"], d["full_vs_stepwise"])
        assert max(d.values()) < PATH_TOL, (p["name"], d)
        assert step[n - 1:].argmax(-1).tolist() == p["continuation"], p["name"]
        if p["name"] == "long":
            paths["stepwise"] = {"name": "long", **mf.rows(step, probes)}
        print(f"{p['name']}: max |logit| {float(logits.abs().max()):.2f}, max |diff| "
              + ", ".join(f"{k} {v:.2g}" for k, v in d.items()), flush=True)
    print(f"chunked (full) vs recurrent (cache) f32 logits: max |diff| {worst_path:.3g}", flush=True)

    # Q4 variant, teacher-forced on the f32 continuation.
    qweights = []
    for wname, shape, scale, offset, vals in weights:
        fmt = mf.quant_format(wname, shape)
        f32 = vals.astype(np.float32)
        deq = {"Q4": mf.q4_0, "Q8": mf.q8_0}[fmt](f32) if fmt else f32
        qweights.append((wname, shape, scale, offset, deq, fmt))
    qmodel = build(config, [w[:5] for w in qweights])
    q4 = {"protocol": "teacher-forced: input = prompt ids + the f32 model's continuation[:15]",
          "formats": "every 2-D Linear weight Q4 (Q4_0), embed_tokens and lm_head Q8 (Q8_0), f16 scales; "
                     "norms, conv1d, A_log and dt_bias unquantized",
          "prompts": []}
    q4_agree = q4_total = 0
    for p in prompts:
        seq = p["ids"] + p["continuation"][:-1]
        logits = full_logits(qmodel, seq)
        n = len(p["ids"])
        top2 = torch.topk(logits, 2)
        argmax = top2.indices[:, 0].tolist()
        q4_agree += sum(a == c for a, c in zip(argmax[n - 1:], p["continuation"]))
        q4_total += mf.GREEDY_STEPS
        q4["prompts"].append({"name": p["name"], "argmax": argmax,
                              "margins": mf.sig7((top2.values[:, 0] - top2.values[:, 1]).tolist()),
                              **mf.rows(logits, probes)})

    # Tokenization (same tokenizer as the qwen3 fixture: checked equal where it has the case) and chat.
    tokenize = {"add_special_tokens": False, "cases": []}
    qwen3_expected = ROOT / "tests" / "fixtures" / "qwen3" / "expected.json"
    known = {}
    if qwen3_expected.exists():
        known = {c["text"]: c["ids"] for c in json.loads(qwen3_expected.read_text())["tokenize"]["cases"]}
    for text in mf.TOKENIZE_CASES:
        ids = tok(text, add_special_tokens=False).input_ids
        assert text not in known or known[text] == ids, text
        tokenize["cases"].append({"text": text, "ids": ids})
    template = json.loads((tok_dir / "tokenizer_config.json").read_text())["chat_template"]
    chat = {"template_source": f"models/tokenizers/{TOK_NAME}/tokenizer_config.json",
            "template_sha256": hashlib.sha256(template.encode()).hexdigest(),
            "add_generation_prompt": True, "conversations": []}
    for c in mf.CONVERSATIONS:
        try:
            chat["conversations"].append(
                {"messages": c, "text": tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False)})
        except TemplateError as e:
            chat.setdefault("raises", []).append({"messages": c, "error": str(e)})
    chat["enable_thinking_false"] = {
        "messages": CHAT_PROMPT,
        "text": tok.apply_chat_template(CHAT_PROMPT, add_generation_prompt=True, tokenize=False,
                                        enable_thinking=False)}

    # Write.
    OUT.mkdir(parents=True, exist_ok=True)
    config.dtype = CONFIG["dtype"]  # _from_config(dtype=float32) set it to the run's dtype
    config.save_pretrained(OUT)
    (OUT / "generation_config.json").unlink(missing_ok=True)
    saved = json.loads((OUT / "config.json").read_text())
    assert saved["layer_types"] == CONFIG["layer_types"] and saved["rope_parameters"] == CONFIG["rope_parameters"]
    assert saved["dtype"] == "float16", saved["dtype"]
    wjson = {"seed": seed, "recipe": "see tests/reference/make_fixtures.py and make_qwen35_fixture.py",
             "tensors": []}
    for (wname, shape, scale, offset, vals), (_, _, _, _, deq, fmt) in zip(weights, qweights):
        flat = vals.reshape(-1)
        wjson["tensors"].append({
            "name": wname, "shape": shape, "scale": scale, "offset": offset, "dtype": "f16",
            "sum": math.fsum(flat.astype(np.float64)), "first": [float(v) for v in flat[:8]],
            "sha256": mf.sha256(flat), "quant": fmt,
            "quant_sha256": mf.sha256(deq.reshape(-1).astype(np.float32)) if fmt else None})
    mf.dump(OUT / "weights.json", wjson)
    tok_json = tok_dir / "tokenizer.json"
    expected = {
        "generator": "tests/reference/make_qwen35_fixture.py", "transformers": transformers.__version__,
        "torch": torch.__version__, "dtype": "float32", "device": "cpu", "attn_implementation": "eager",
        "gated_delta_rule": "transformers' torch fallback (no fla / causal_conv1d)",
        "tokenizer": TOK_NAME, "tokenizer_json_sha256": hashlib.sha256(tok_json.read_bytes()).hexdigest(),
        "greedy_steps": mf.GREEDY_STEPS, "top_k": mf.TOP_K, "probe_ids": probes,
        "rows": "logits row r = position r of ids + continuation[:15]; row len(ids)-1+j predicts continuation[j]",
        "prompts": prompts, "decode_paths": paths, "numpy_f64": np_checks, "q4": q4, "tokenize": tokenize,
        "chat": chat}
    mf.dump(OUT / "expected.json", expected)
    worst_greedy = min(min(p["margins"]) for p in prompts)
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"qwen35: seed {seed}, min top-1 margin {worst_greedy:.4f} (greedy steps), {min_margin_all:.4f} "
          f"(all f32 rows); q4 argmax = f32 continuation at {q4_agree}/{q4_total} steps; "
          f"{size / 1024:.0f} KiB; {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
