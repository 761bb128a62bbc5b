#!/usr/bin/env python3
"""A BERT or nomic-bert sentence-embedding checkpoint (BertModel safetensors + tokenizer.json + sentence-transformers
files) as a GGUF laid out as llama.cpp's converter writes it (convert_hf_to_gguf.py, class BertModel in
conversion/bert.py), using llama.cpp's own Python package (PyPI `gguf`): its tensor name map
(gguf.get_tensor_name_map), its GGUFWriter and its SpecialVocab. Without torch, so it runs in setup
(scripts/fetch-embedder.sh) and tests/embed_gguf.rs has a real llama.cpp-layout BERT GGUF to load.

What the converter does and this repeats: the `bert.` prefix, position_ids and the pooler dropped;
tensors named through gguf's map (token_embd, position_embd, token_types, token_embd_norm,
blk.N.attn_{q,k,v,output}, attn_output_norm, ffn_{up,down}, layer_output_norm); matrices in the output
type (f16 here, `--outtype f16`), 1-D tensors (norms, biases) and the position and token-type tables in
f32; the `bert.*` hyperparameters
(block_count, context_length, embedding_length, feed_forward_length, attention.head_count,
attention.layer_norm_epsilon, attention.causal = false, pooling_type from 1_Pooling/config.json); the
WordPiece vocabulary in llama.cpp's "phantom space" form (`##x` → `x`, other pieces `▁x`, control tokens
as they are), tokenizer.ggml.model = "bert", token types, token_type_count, and SpecialVocab's ids.
nomic-bert (class NomicBertModel there): architecture `nomic-bert`, its GPT-2-style keys as the same
`nomic-bert.*` hyperparameters plus rope.freq_base = rotary_emb_base, Wqkv fused as attn_qkv, fc11 as
ffn_up and fc12 (the gate) as ffn_gate; its n_positions override for nomic-embed-text (8192 -> 2048) is
applied only when the config has those values. Not repeated: the pre-tokenizer hash lookup (tokenizer.ggml.pre is written as "default"; llama.cpp's
WordPiece tokenizer does not use it).

    python3 -m venv /tmp/ggvenv && /tmp/ggvenv/bin/pip install gguf==0.19.0 numpy safetensors
    /tmp/ggvenv/bin/python scripts/bert_to_gguf.py models/all-MiniLM-L6-v2 models/all-MiniLM-L6-v2.f16.gguf
"""
import json
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file


def main(src: Path, out: Path) -> None:
    hp = json.loads((src / "config.json").read_text())
    nomic = hp.get("model_type") == "nomic_bert"
    assert nomic or hp.get("model_type") == "bert", f"{src}: model_type {hp.get('model_type')}"
    arch = gguf.MODEL_ARCH.NOMIC_BERT if nomic else gguf.MODEL_ARCH.BERT
    if nomic:
        # NomicBertModel.__init__'s checks, and its context length for nomic-embed-text v1/v1.5
        assert hp["activation_function"] == "swiglu" and not hp["prenorm"] and not hp["causal"]
        assert not hp["qkv_proj_bias"] and not hp["mlp_fc1_bias"] and not hp["mlp_fc2_bias"]
        assert hp["rotary_emb_fraction"] == 1.0 and not hp["rotary_emb_interleaved"]
        if hp["n_positions"] == 8192 and hp.get("max_trained_positions") == 2048:
            hp["n_positions"] = 2048
        n_layers, ctx, width, ffn, heads, eps = (hp["n_layer"], hp["n_positions"], hp["n_embd"], hp["n_inner"],
                                                 hp["n_head"], hp["layer_norm_epsilon"])
    else:
        n_layers, ctx, width, ffn, heads, eps = (hp["num_hidden_layers"], hp["max_position_embeddings"],
                                                 hp["hidden_size"], hp["intermediate_size"],
                                                 hp["num_attention_heads"], hp["layer_norm_eps"])
    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])

    # TextModel.set_gguf_parameters + BertModel.set_gguf_parameters
    w.add_name(src.name)
    w.add_block_count(n_layers)
    w.add_context_length(ctx)
    w.add_embedding_length(width)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_layer_norm_eps(eps)
    if nomic:
        w.add_rope_freq_base(hp["rotary_emb_base"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_causal_attention(False)
    pooling = pooling_type(src)
    if pooling is not None:
        w.add_pooling_type(pooling)

    # BertModel.set_vocab (get_vocab_base from tokenizer.json: added special tokens are CONTROL)
    tok = json.loads((src / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    n_vocab = max(hp["vocab_size"], len(vocab))
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for t, i in vocab.items():
        tokens[i] = t
        types[i] = gguf.TokenType.NORMAL
    for a in tok.get("added_tokens", []):
        tokens[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
    w.add_token_type_count(hp.get("type_vocab_size", 1))

    def phantom(t, ty):
        if ty == gguf.TokenType.CONTROL:
            return t
        if t.startswith("##"):
            return t[2:]
        return "\u2581" + t

    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list([phantom(t, ty) for t, ty in zip(tokens, types)])
    w.add_token_types(types)
    gguf.SpecialVocab(src, n_vocab=n_vocab).add_to_gguf(w)

    # Tensors: BertModel.filter_tensors, then the name map; f16 matrices, f32 vectors.
    names = gguf.get_tensor_name_map(arch, n_layers)
    weights = {}
    for f in sorted(src.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    for name, data in weights.items():
        if name.startswith("bert."):
            name = name[5:]
        if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias") or name.startswith("cls."):
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            sys.exit(f"{name}: no GGUF name")
        # prepare_tensors: 1-D, norms, biases, position and token-type tables stay f32.
        data = data.astype(np.float32)
        if data.ndim > 1 and new.endswith(".weight") and not new.startswith(("position_embd.", "token_types.")):
            data = data.astype(np.float16)
        w.add_tensor(new, data)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def pooling_type(src: Path):
    """Base._try_set_pooling_type: the sentence-transformers Pooling module's mode."""
    modules = src / "modules.json"
    if not modules.is_file():
        return None
    for m in json.loads(modules.read_text()):
        if m["type"].endswith("Pooling"):
            c = json.loads((src / m["path"] / "config.json").read_text())
            if c.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            if c.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
            if c.get("pooling_mode_lasttoken"):
                return gguf.PoolingType.LAST
            sys.exit(f"{src}: pooling mode {c} is not supported")
    return None


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
