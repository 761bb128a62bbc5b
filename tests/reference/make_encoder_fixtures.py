#!/usr/bin/env python3
"""Reference fixtures for the encoders (src/model/encoder.rs) from Hugging Face transformers (float32,
CPU): two tiny random-weight models, read by tests/encoder_hf.rs.

- tests/fixtures/encoders/tokenizer.json (+ tokenizer_config.json): all-MiniLM-L6-v2's BERT WordPiece
  tokenizer (models/all-MiniLM-L6-v2, scripts/fetch-embedder.sh) with its vocabulary cut to ids < 3000
  (special, unused, single characters, the commonest ~1000 words) plus every "##x" single-character
  piece, so any lower-case ASCII word still splits into known pieces; its padding/truncation removed.
- tests/fixtures/encoders/bert/: a `BertModel` (hidden 64, 2 layers, 4 heads of 16, intermediate 128,
  max_position_embeddings 64, erf GELU, LayerNorm eps 1e-12).
- tests/fixtures/encoders/nomic/: a nomic-bert (`model_type: nomic_bert`, nomic-ai's config keys as
  nomic-embed-text-v1.5 has them: n_embd 64, n_head 4, n_layer 2, n_inner 200 -> 256 (the gated MLP
  rounds up to a multiple of 256), rotary_emb_base 1000, fraction 1.0, not interleaved, no biases,
  swiglu, post-LN, n_positions 128, max_trained_positions 32).
  config.json is in nomic-ai's format (what `convert` meets in the real checkpoints) and weights.json
  names the tensors as their model.safetensors does (`encoder.layers.N.attn.Wqkv`, `mlp.fc11`, ...).

Each directory: config.json, weights.json (no weights are committed: the same recipe as
make_fixtures.py, which tests/common/fixture.rs regenerates bit for bit; scales below), expected.json.

References:
- BERT: transformers' BertModel.
- nomic: transformers 5.x's native NomicBertModel, loaded by its own from_pretrained from a directory
  holding the original tensor names (so transformers' conversion mapping splits Wqkv and decides that
  fc12 is the gate), with its own config keys. Independently, `nomic_reference` below re-does the
  forward from nomic-ai's modeling_hf_nomic_bert.py (contrastors; the code nomic-embed-text runs with
  trust_remote_code) on the original names: y = fc11(x) * silu(fc12(x)); rotate_half RoPE over the
  whole head with positions 0.. per sequence; post-LN blocks. Both must agree within 2e-5.

expected.json:
- model, hidden, seed (also in weights.json), max_position (BERT) or n_positions / max_trained_positions
- cases: text, ids (tokenizer.json with [CLS] ... [SEP]), hidden (last hidden state, [len][hidden], 7
  significant digits), mean (sentence-transformers' Pooling mean over the tokens, not normalised),
  embedding (mean then L2-normalised, sentence-transformers' Normalize), cls (the first token's state)
- batch_max_abs_diff: transformers run on all cases padded into one batch vs one at a time (sanity)

Install (outside the repo): python3 -m venv /tmp/fxvenv3 &&
    /tmp/fxvenv3/bin/pip install torch "transformers>=5.25" sentence-transformers einops
Run: /tmp/fxvenv3/bin/python tests/reference/make_encoder_fixtures.py
"""
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel, NomicBertConfig, NomicBertModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import sha256, sig7, tensor_key, uniform  # noqa: E402 (the weight recipe)

ROOT = Path(__file__).resolve().parents[2]
MINILM = ROOT / "models" / "all-MiniLM-L6-v2"
OUT = ROOT / "tests" / "fixtures" / "encoders"
VOCAB_CUT = 3000

TEXTS = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "  leading and trailing spaces  ",
    "naive cafe, deja vu and numbers 3.14159",
    "x",
    "How do I bake sourdough bread at home?",
]
# Longer than nomic's max_trained_positions (32) and BERT's whole table (64): rotary positions go on.
LONG = " ".join(f"sentence {i} is about the weather in town" for i in range(6))

BERT = dict(vocab_size=None, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
            position_embedding_type="absolute", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
BERT_SEED = 1600

# nomic-ai's keys, as nomic-embed-text-v1.5's config.json spells them (auto_map and the training-only
# flags left out); n_inner 200 exercises the gated MLP's rounding up to 256.
NOMIC = {
    "model_type": "nomic_bert", "architectures": ["NomicBertModel"], "activation_function": "swiglu",
    "n_embd": 64, "n_head": 4, "n_layer": 2, "n_inner": 200, "n_positions": 128, "max_trained_positions": 32,
    "vocab_size": None, "type_vocab_size": 2, "layer_norm_epsilon": 1e-12, "prenorm": False,
    "rotary_emb_base": 1000, "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False,
    "rotary_emb_scale_base": None, "rotary_scaling_factor": None, "qkv_proj_bias": False,
    "mlp_fc1_bias": False, "mlp_fc2_bias": False, "causal": False, "parallel_block": False,
    "use_rms_norm": False, "pad_vocab_size_multiple": 1, "pad_token_id": 0,
}
NOMIC_FFN = 256
NOMIC_SEED = 1700


def scale_offset(name, shape):
    """LayerNorm gains 1 +- 0.1, biases +- 0.1, embedding tables +- 1, matrices +- 3/sqrt(in) (dyadic)."""
    if name.endswith(".bias"):
        return 0.1, 0.0
    if len(shape) == 1:
        return 0.1, 1.0
    if "embeddings" in name:
        return 1.0, 0.0
    return round(3.0 / math.sqrt(shape[1]) * 4096) / 4096, 0.0


def make_weights(seed, shapes):
    """{name: f16 array} and weights.json's entries, sorted by name (the recipe's tensor index)."""
    tensors, spec = {}, []
    for t, name in enumerate(sorted(shapes)):
        shape = shapes[name]
        scale, offset = scale_offset(name, shape)
        vals = (offset + scale * (2.0 * uniform(tensor_key(seed, t), int(np.prod(shape))) - 1.0))
        vals = vals.astype(np.float16).reshape(shape)
        tensors[name] = vals
        flat = vals.astype(np.float64).ravel()
        spec.append({"name": name, "shape": list(shape), "scale": scale, "offset": offset,
                     "sum": math.fsum(flat), "first": [float(v) for v in flat[:8]], "sha256": sha256(vals),
                     "quant": None, "quant_sha256": None})
    return tensors, {"seed": seed, "tensors": spec}


def small_tokenizer():
    t = json.loads((MINILM / "tokenizer.json").read_text())
    vocab = t["model"]["vocab"]
    keep = sorted((i, s) for s, i in vocab.items() if i < VOCAB_CUT)
    pieces = sorted((i, s) for s, i in vocab.items() if i >= VOCAB_CUT and s.startswith("##") and len(s) == 3)
    t["model"]["vocab"] = {s: n for n, (_, s) in enumerate(keep + pieces)}
    t["truncation"] = None
    t["padding"] = None
    t["added_tokens"] = [a for a in t["added_tokens"] if a["id"] < VOCAB_CUT]
    for a in t["added_tokens"]:
        assert t["model"]["vocab"][a["content"]] == a["id"], a
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tokenizer.json").write_text(json.dumps(t, ensure_ascii=False, separators=(",", ":")))
    (OUT / "tokenizer_config.json").write_text((MINILM / "tokenizer_config.json").read_text())
    return Tokenizer.from_file(str(OUT / "tokenizer.json")), len(t["model"]["vocab"])


def pooled(hidden):
    """sentence-transformers' mean Pooling and Normalize modules on one sequence's states."""
    feats = {"token_embeddings": hidden[None], "attention_mask": torch.ones(1, hidden.shape[0])}
    mean = Pooling(hidden.shape[1], pooling_mode="mean")(feats)["sentence_embedding"][0]
    emb = Normalize()({"sentence_embedding": mean[None]})["sentence_embedding"][0]
    return mean, emb


def run_cases(model, tok, texts):
    """Each text alone, then all padded into one batch: the cases and the batch's largest deviation."""
    cases, alone = [], []
    for text in texts:
        ids = tok.encode(text).ids
        with torch.no_grad():
            h = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        h = h.last_hidden_state[0]
        mean, emb = pooled(h)
        alone.append(h)
        cases.append({"text": text, "ids": ids, "hidden": [sig7(r.tolist()) for r in h],
                      "mean": sig7(mean.tolist()), "embedding": sig7(emb.tolist()), "cls": sig7(h[0].tolist())})
    n = max(len(c["ids"]) for c in cases)
    ids = torch.tensor([c["ids"] + [0] * (n - len(c["ids"])) for c in cases])
    mask = torch.tensor([[1] * len(c["ids"]) + [0] * (n - len(c["ids"])) for c in cases])
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask).last_hidden_state
    diff = max(float((batch[i, :len(h)] - h).abs().max()) for i, h in enumerate(alone))
    assert diff < 1e-5, diff
    return cases, alone, diff


def write(name, config, spec, expected):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (d / "weights.json").write_text(json.dumps(spec, indent=1) + "\n")
    (d / "expected.json").write_text(json.dumps(expected, separators=(",", ":")))
    print(f"wrote {d}: {[len(c['ids']) for c in expected['cases']]} tokens")


def bert(tok, vocab):
    cfg = dict(BERT, vocab_size=vocab)
    model = BertModel(BertConfig(**cfg), add_pooling_layer=False).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if "position_ids" not in k}
    tensors, spec = make_weights(BERT_SEED, shapes)
    missing = model.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()},
                                    strict=False)
    assert not missing.unexpected_keys and all("position_ids" in k for k in missing.missing_keys), missing
    cases, _, diff = run_cases(model, tok, TEXTS)
    config = {"architectures": ["BertModel"], "model_type": "bert", **cfg}
    write("bert", config, spec, {"model": "BertModel", "hidden": cfg["hidden_size"], "seed": BERT_SEED,
                                  "max_position": cfg["max_position_embeddings"], "cases": cases,
                                  "batch_max_abs_diff": diff})


def nomic_shapes(vocab):
    h, f = NOMIC["n_embd"], NOMIC_FFN
    shapes = {"embeddings.word_embeddings.weight": (vocab, h), "embeddings.token_type_embeddings.weight": (2, h),
              "emb_ln.weight": (h,), "emb_ln.bias": (h,)}
    for i in range(NOMIC["n_layer"]):
        p = f"encoder.layers.{i}."
        shapes.update({p + "attn.Wqkv.weight": (3 * h, h), p + "attn.out_proj.weight": (h, h),
                       p + "mlp.fc11.weight": (f, h), p + "mlp.fc12.weight": (f, h), p + "mlp.fc2.weight": (h, f)})
        for n in ("norm1", "norm2"):
            shapes.update({p + n + ".weight": (h,), p + n + ".bias": (h,)})
    return shapes


def nomic_reference(w, ids, cfg):
    """One sequence through nomic-bert as modeling_hf_nomic_bert.py computes it (float32), from the
    original tensor names: NomicBertEmbeddings (word + token type 0, no position table) -> emb_ln;
    per NomicBertBlock (prenorm False): Wqkv -> "(three h d)", RoPE (NomicBertRotaryEmbedding:
    inv_freq = 1 / base^(arange(0, dim, 2) / dim), freqs = outer(t, inv_freq), apply_rotary_emb with
    rotate_half: x * cos + cat(-x2, x1) * sin, cos/sin repeated "(2 d)") on q and k; softmax(q k^T /
    sqrt(hd)) v; out_proj; norm1(x + attn); NomciBertGatedMLP: fc2(fc11(x) * silu(fc12(x))); norm2."""
    W = {k: torch.from_numpy(v.astype(np.float32)) for k, v in w.items()}
    h, nh = cfg["n_embd"], cfg["n_head"]
    hd, eps, n = h // nh, cfg["layer_norm_epsilon"], len(ids)
    x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.token_type_embeddings.weight"][0]
    x = F.layer_norm(x, (h,), W["emb_ln.weight"], W["emb_ln.bias"], eps)
    dim = int(hd * cfg["rotary_emb_fraction"])
    inv_freq = 1.0 / (float(cfg["rotary_emb_base"]) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    freqs = torch.outer(torch.arange(n, dtype=torch.float32), inv_freq)
    cos, sin = torch.cos(freqs).repeat(1, 2)[:, None, :], torch.sin(freqs).repeat(1, 2)[:, None, :]

    def rope(t):  # t: (n, heads, hd)
        r, rest = t[..., :dim], t[..., dim:]
        x1, x2 = r.chunk(2, dim=-1)
        return torch.cat([r * cos + torch.cat((-x2, x1), dim=-1) * sin, rest], dim=-1)

    for i in range(cfg["n_layer"]):
        p = f"encoder.layers.{i}."
        qkv = (x @ W[p + "attn.Wqkv.weight"].T).view(n, 3, nh, hd)
        q, k, v = rope(qkv[:, 0]), rope(qkv[:, 1]), qkv[:, 2]
        att = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd), dim=-1)
        o = torch.einsum("hqk,khd->qhd", att, v).reshape(n, h) @ W[p + "attn.out_proj.weight"].T
        x = F.layer_norm(x + o, (h,), W[p + "norm1.weight"], W[p + "norm1.bias"], eps)
        y = (x @ W[p + "mlp.fc11.weight"].T) * F.silu(x @ W[p + "mlp.fc12.weight"].T)
        x = F.layer_norm(x + y @ W[p + "mlp.fc2.weight"].T, (h,), W[p + "norm2.weight"], W[p + "norm2.bias"], eps)
    return x


def nomic(tok, vocab):
    cfg = dict(NOMIC, vocab_size=vocab)
    tensors, spec = make_weights(NOMIC_SEED, nomic_shapes(vocab))
    # transformers' own NomicBertConfig keys; the tensors under their original names, so that
    # transformers' conversion mapping (Wqkv split, fc11 -> up_proj, fc12 -> gate_proj) does the rest
    hf = NomicBertConfig(vocab_size=vocab, hidden_size=cfg["n_embd"], num_hidden_layers=cfg["n_layer"],
                         num_attention_heads=cfg["n_head"], intermediate_size=NOMIC_FFN,
                         max_position_embeddings=cfg["n_positions"], type_vocab_size=2,
                         layer_norm_eps=cfg["layer_norm_epsilon"], hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": float(cfg["rotary_emb_base"])})
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        save_file({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, f"{d}/model.safetensors",
                  metadata={"format": "pt"})
        model, info = NomicBertModel.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    model.eval()
    cases, alone, diff = run_cases(model, tok, TEXTS + [LONG])
    assert len(cases[-1]["ids"]) > cfg["max_trained_positions"]
    worst = 0.0
    for c, h in zip(cases, alone):
        with torch.no_grad():
            worst = max(worst, float((nomic_reference(tensors, c["ids"], cfg) - h).abs().max()))
    assert worst < 2e-5, f"transformers' NomicBertModel vs modeling_hf_nomic_bert.py's math: {worst}"
    print(f"nomic: transformers vs the nomic-ai reference forward: max |diff| {worst:.2e}")
    write("nomic", cfg, spec, {"model": "nomic_bert", "hidden": cfg["n_embd"], "seed": NOMIC_SEED,
                               "n_positions": cfg["n_positions"], "max_trained_positions": cfg["max_trained_positions"],
                               "cases": cases, "batch_max_abs_diff": diff, "reference_max_abs_diff": worst})


def main():
    torch.manual_seed(0)
    tok, vocab = small_tokenizer()
    print(f"tokenizer: {vocab} tokens")
    bert(tok, vocab)
    nomic(tok, vocab)


if __name__ == "__main__":
    main()
