#!/usr/bin/env python3
"""Reference embeddings from sentence-transformers for a tiny Qwen3-Embedding-like model:
tests/fixtures/qwen3/embedding.json, which tests/embed_decoder.rs compares against (float32, CPU).

The model is the tiny random Qwen3 fixture (tests/fixtures/qwen3: its weights regenerated from the
seed in weights.json by make_fixtures.py's recipe and checked against its sha256s) saved as
Qwen3-Embedding saves a checkpoint, the layout `Fixture::write_embedding_dir` (tests/common/fixture.rs)
writes: tensor names without `model.` (Qwen3Model's), no lm_head, modules.json = Transformer, Pooling
(`pooling_mode_lasttoken`), Normalize, sentence_bert_config.json `max_seq_length` 64; and, as
Qwen3-Embedding's tokenizer.json has, a post-processor that appends <|endoftext|> (151643), which
sentence-transformers feeds as the tokenizer gives it. No weights are committed.

Install (outside the repo; plain PyPI, torch's CPU path only):
    python3 -m venv /tmp/fxvenv3
    /tmp/fxvenv3/bin/pip install torch "transformers>=4.57" sentence-transformers
Run (needs the real Qwen3 tokenizer: bash scripts/fetch-tokenizers.sh):
    /tmp/fxvenv3/bin/python tests/reference/make_decoder_embed_fixture.py

embedding.json:
- max_seq_length, pooling ("last"), normalize (true): what the checkpoint's files say
- cases: text, ids (what sentence-transformers feeds: the tokenizer, cut at max_seq_length with
  <|endoftext|> kept), embedding (the model's output: the last token's final state, normalised),
  last (that state, not normalised), mean (the mean of every row's final state, the end token's
  included, not normalised), prefix_mean (the mean of every row but the end token's: causal
  attention makes those rows what the model gives the text without the end token, i.e. mean
  pooling over a plain causal checkpoint whose tokenizer adds nothing)
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from sentence_transformers import SentenceTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import tensor_key, uniform  # noqa: E402  (the weights' recipe, not repeated here)

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "qwen3"
TOKENIZER = ROOT / "models" / "tokenizers" / "qwen3"
OUT = FIXTURE / "embedding.json"
MAX_SEQ_LENGTH = 64
END_TOKEN = ("<|endoftext|>", 151643)

# tests/embed_decoder.rs puts this tokenizer post-processor in (Qwen3-Embedding's appends the token)
POST_PROCESSOR = {
    "type": "TemplateProcessing",
    "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": END_TOKEN[0], "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
             {"SpecialToken": {"id": END_TOKEN[0], "type_id": 1}}],
    "special_tokens": {END_TOKEN[0]: {"id": END_TOKEN[0], "ids": [END_TOKEN[1]], "tokens": [END_TOKEN[0]]}},
}

TEXTS = [
    "The capital of France is",
    "x",
    "WebGPU runs language models privately in the browser!",
    "naïve café — déjà vu, 東京 and emoji 🎉",
    "  leading and trailing spaces  ",
    "def f(x):\n    return x * 2",
    # longer than max_seq_length (64) tokens: cut at the end, <|endoftext|> kept
    " ".join(f"word{i} is part of a rather long sentence" for i in range(12)),
]


def weights():
    """The fixture's tensors as f16 arrays, Qwen3-Embedding's names (no `model.`), sha256-checked."""
    spec = json.loads((FIXTURE / "weights.json").read_text())
    out = {}
    for t, w in enumerate(spec["tensors"]):
        n = int(np.prod(w["shape"]))
        vals = (w["offset"] + w["scale"] * (2.0 * uniform(tensor_key(spec["seed"], t), n) - 1.0)).astype(np.float16)
        assert hashlib.sha256(vals.tobytes()).hexdigest() == w["sha256"], w["name"]
        assert w["name"] != "lm_head.weight"  # tied: the embedding model has none either
        out[w["name"].removeprefix("model.")] = vals.reshape(w["shape"])
    return out


def write_checkpoint(d: Path):
    """The layout `Fixture::write_embedding_dir` writes, plus the end-token post-processor."""
    shutil.copy(FIXTURE / "config.json", d / "config.json")
    shutil.copy(TOKENIZER / "tokenizer_config.json", d / "tokenizer_config.json")
    tok = json.loads((TOKENIZER / "tokenizer.json").read_text())
    tok["post_processor"] = POST_PROCESSOR
    (d / "tokenizer.json").write_text(json.dumps(tok))
    save_file(weights(), str(d / "model.safetensors"), metadata={"format": "pt"})
    hidden = json.loads((FIXTURE / "config.json").read_text())["hidden_size"]
    module = lambda i, path, kind: {"idx": i, "name": str(i), "path": path,  # noqa: E731
                                    "type": f"sentence_transformers.models.{kind}"}
    (d / "modules.json").write_text(json.dumps(
        [module(0, "", "Transformer"), module(1, "1_Pooling", "Pooling"), module(2, "2_Normalize", "Normalize")]))
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
         "pooling_mode_mean_tokens": False, "pooling_mode_lasttoken": True}))
    (d / "2_Normalize").mkdir()
    (d / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False}))


def main():
    if not (TOKENIZER / "tokenizer.json").exists():
        sys.exit(f"{TOKENIZER}/tokenizer.json missing: run scripts/fetch-tokenizers.sh")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(Path(tmp))
        # config.json says float16 (the checkpoint's dtype): the reference runs in float32
        model = SentenceTransformer(tmp, device="cpu", model_kwargs={"dtype": torch.float32})
        model.eval()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert model.max_seq_length == MAX_SEQ_LENGTH
        cases = []
        for text in TEXTS:
            features = model.tokenize([text])
            ids = features["input_ids"][0].tolist()
            assert ids[-1] == END_TOKEN[1] and 2 <= len(ids) <= MAX_SEQ_LENGTH, (text, ids)
            with torch.no_grad():
                tokens = model(features)["token_embeddings"][0]
            emb = model.encode([text], convert_to_numpy=True)[0]
            last = tokens[-1]
            # the Pooling module took the last row and Normalize made it unit length
            assert torch.allclose(torch.nn.functional.normalize(last, dim=0), torch.tensor(emb), atol=1e-6)
            cases.append({
                "text": text,
                "ids": ids,
                "embedding": [float(v) for v in emb],
                "last": [float(v) for v in last],
                "mean": [float(v) for v in tokens.mean(0)],
                "prefix_mean": [float(v) for v in tokens[:-1].mean(0)],
            })
        # a padded batch gives the same vectors as one by one (sentence-transformers pads; checked here)
        batch = model.encode(TEXTS, convert_to_numpy=True)
        for c, b in zip(cases, batch):
            assert max(abs(x - y) for x, y in zip(c["embedding"], b)) < 1e-5, c["text"]
    doc = {
        "model": "tests/fixtures/qwen3 as a Qwen3-Embedding checkpoint (sentence-transformers "
                 f"{__import__('sentence_transformers').__version__}, transformers "
                 f"{__import__('transformers').__version__}, torch {torch.__version__}, float32 CPU)",
        "max_seq_length": MAX_SEQ_LENGTH,
        "pooling": "last",
        "normalize": True,
        "dims": len(cases[0]["embedding"]),
        "end_token": END_TOKEN[1],
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes): {len(cases)} cases, tokens {[len(c['ids']) for c in cases]}")


if __name__ == "__main__":
    main()
