#!/usr/bin/env python3
"""A float64 numpy reference of the Qwen3.5 text model (HF `Qwen3_5ForCausalLM`, model_type `qwen3_5_text`).

Written from docs/qwen35.md, independently of transformers' code paths, and checked against transformers
(tests/reference/make_qwen35_fixture.py runs the checks and prints the differences). Nothing here imports
torch or transformers: the formulas are the spec.

Shapes: one sequence, no batch dimension. x is [T, hidden]. Weights are a dict name -> np.ndarray (f64) with
the checkpoint's names (model.layers.{i}.linear_attn.in_proj_qkv.weight, ...), Linear weights [out, in].
"""

import numpy as np


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softplus(x):
    # torch.nn.functional.softplus (beta 1, threshold 20): x itself above 20.
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def rmsnorm_1p(x, w, eps):
    """Qwen3_5RMSNorm: zero-centred weight, gain (1 + w). Used by input_layernorm, post_attention_layernorm,
    model.norm, self_attn.q_norm and self_attn.k_norm."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + w)


def rmsnorm_gated(x, z, w, eps):
    """Qwen3_5RMSNormGated (linear_attn.norm): plain weight (ones-initialised), normalise, then gate by silu(z)."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w * silu(z)


def l2norm(x, eps=1e-6):
    """FLA's l2norm: x / sqrt(sum(x^2) + eps) over the last axis (eps inside the sqrt, not max(norm, eps))."""
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + eps)


class Cfg:
    def __init__(self, c):
        """c: the text config as a dict (config.json, or its text_config for multimodal checkpoints)."""
        self.hidden = c["hidden_size"]
        self.eps = c["rms_norm_eps"]
        self.layer_types = c["layer_types"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv = c["num_key_value_heads"]
        self.head_dim = c["head_dim"]
        rp = c.get("rope_parameters") or {}
        self.rope_theta = rp.get("rope_theta", c.get("rope_theta", 10000.0))
        self.partial = rp.get("partial_rotary_factor", c.get("partial_rotary_factor", 0.25))
        self.rot = int(self.head_dim * self.partial)
        self.nk = c["linear_num_key_heads"]
        self.nv = c["linear_num_value_heads"]
        self.dk = c["linear_key_head_dim"]
        self.dv = c["linear_value_head_dim"]
        self.kernel = c["linear_conv_kernel_dim"]
        self.tied = c.get("tie_word_embeddings", False)


# ---- Gated DeltaNet (linear_attention layers) ----

def gdn_project(x, W, p, cfg, conv_state=None):
    """in-projections, causal depthwise conv + SiLU, split, L2 norms, beta and g.
    conv_state: [K-1, conv_dim] of the previous K-1 inputs of the conv (qkv projections), zeros at start.
    Returns q [T, nv, dk] (normalised, scaled by dk^-0.5, already repeated over value heads), k [T, nv, dk],
    v [T, nv, dv], z [T, nv, dv], beta [T, nv], g [T, nv], new conv_state."""
    T = x.shape[0]
    K, key_dim = cfg.kernel, cfg.nk * cfg.dk
    qkv = x @ W[p + "in_proj_qkv.weight"].T                      # [T, 2*key_dim + value_dim]
    z = (x @ W[p + "in_proj_z.weight"].T).reshape(T, cfg.nv, cfg.dv)
    b = x @ W[p + "in_proj_b.weight"].T                          # [T, nv]
    a = x @ W[p + "in_proj_a.weight"].T                          # [T, nv]
    if conv_state is None:
        conv_state = np.zeros((K - 1, qkv.shape[1]))
    xp = np.concatenate([conv_state, qkv], axis=0)               # [K-1+T, C]
    w = W[p + "conv1d.weight"][:, 0, :]                          # [C, K]; w[:, K-1] multiplies the current input
    conv = sum(w[:, j] * xp[j:j + T] for j in range(K))          # out[t] = sum_j w[:, j] * in[t - (K-1) + j]
    conv = silu(conv)
    new_state = xp[-(K - 1):]
    q = conv[:, :key_dim].reshape(T, cfg.nk, cfg.dk)
    k = conv[:, key_dim:2 * key_dim].reshape(T, cfg.nk, cfg.dk)
    v = conv[:, 2 * key_dim:].reshape(T, cfg.nv, cfg.dv)
    beta = sigmoid(b)
    g = -np.exp(W[p + "A_log"]) * softplus(a + W[p + "dt_bias"])  # log of the per-step decay, <= 0
    q = l2norm(q) * cfg.dk ** -0.5
    k = l2norm(k)
    r = cfg.nv // cfg.nk                                         # value head h reads key head h // r
    q = np.repeat(q, r, axis=1)
    k = np.repeat(k, r, axis=1)
    return q, k, v, z, beta, g, new_state


def delta_rule_recurrent(q, k, v, beta, g, S=None):
    """Token by token. S: [nv, dk, dv] (rows indexed by key dims), zeros at start.
    S_t = exp(g_t) S_{t-1};  S_t += k_t (beta_t (v_t - S_t^T k_t))^T;  o_t = S_t^T q_t."""
    T, nv, dk = k.shape
    dv = v.shape[-1]
    S = np.zeros((nv, dk, dv)) if S is None else S.copy()
    o = np.zeros((T, nv, dv))
    for t in range(T):
        S = S * np.exp(g[t])[:, None, None]
        kv_mem = np.einsum("hkv,hk->hv", S, k[t])
        delta = beta[t][:, None] * (v[t] - kv_mem)
        S = S + np.einsum("hk,hv->hkv", k[t], delta)
        o[t] = np.einsum("hkv,hk->hv", S, q[t])
    return o, S


def delta_rule_chunked(q, k, v, beta, g, S=None, C=64):
    """transformers' torch_chunk_gated_delta_rule (the WY/UT form) in f64, per head. Same result as
    delta_rule_recurrent up to rounding; see docs/qwen35.md for the derivation."""
    T, nv, dk = k.shape
    dv = v.shape[-1]
    S = np.zeros((nv, dk, dv)) if S is None else S.copy()
    pad = (-T) % C
    P = lambda x: np.concatenate([x, np.zeros((pad,) + x.shape[1:])], axis=0)
    q, k, v, beta, g = P(q), P(k), P(v), P(beta), P(g)
    o = np.zeros((T + pad, nv, dv))
    tri_strict = np.tril(np.ones((C, C)), -1)
    tri = np.tril(np.ones((C, C)))
    for h in range(nv):
        for c0 in range(0, T + pad, C):
            sl = slice(c0, c0 + C)
            qc, kc, vc, bc = q[sl, h], k[sl, h], v[sl, h], beta[sl, h]
            G = np.cumsum(g[sl, h])                               # G_i = sum_{j<=i} g_j within the chunk
            D = np.exp(np.where(tri > 0, G[:, None] - G[None, :], -np.inf))  # D_ij = exp(G_i - G_j), i >= j
            A = (bc[:, None] * kc @ kc.T) * D * tri_strict        # strictly lower: beta_i k_i.k_j decayed
            M = np.eye(C) + A                                     # unit lower triangular
            U = np.linalg.solve(M, bc[:, None] * vc)              # "new values" u
            W_ = np.linalg.solve(M, bc[:, None] * np.exp(G)[:, None] * kc)  # decayed k_beta
            Vn = U - W_ @ S[h]                                    # v_new: what the old state does not predict
            intra = (qc @ kc.T) * D                               # lower incl. diagonal
            o[sl, h] = (qc * np.exp(G)[:, None]) @ S[h] + intra @ Vn
            S[h] = S[h] * np.exp(G[-1]) + (kc * np.exp(G[-1] - G)[:, None]).T @ Vn
    return o[:T], S


def gdn_layer(x, W, p, cfg, state=None, chunked=False):
    """One linear_attn block (input already normed). state: (conv_state, S) or None.
    Returns output [T, hidden] and the new state."""
    conv_state, S = state if state is not None else (None, None)
    q, k, v, z, beta, g, conv_state = gdn_project(x, W, p, cfg, conv_state)
    if chunked:
        o, S = delta_rule_chunked(q, k, v, beta, g, S)
    else:
        o, S = delta_rule_recurrent(q, k, v, beta, g, S)
    o = rmsnorm_gated(o, z, W[p + "norm.weight"], cfg.eps)       # per value head, over dv
    o = o.reshape(x.shape[0], cfg.nv * cfg.dv)
    return o @ W[p + "out_proj.weight"].T, (conv_state, S)


# ---- gated full attention (full_attention layers) ----

def rope_cos_sin(cfg, positions):
    """Partial NeoX RoPE over the first `rot` dims of each head (text positions: mrope's T/H/W are equal)."""
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.rot, 2) / cfg.rot)   # [rot/2]
    ang = np.asarray(positions, dtype=np.float64)[:, None] * inv[None]  # [T, rot/2]
    ang = np.concatenate([ang, ang], axis=-1)                            # [T, rot]
    return np.cos(ang), np.sin(ang)


def apply_rope(x, cos, sin, rot):
    """x [T, heads, head_dim]: dims [0, rot) rotated in pairs (i, i + rot/2); dims [rot, head_dim) untouched."""
    xr, xp = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = np.concatenate([-xr[..., half:], xr[..., :half]], axis=-1)
    xr = xr * cos[:, None] + rotated * sin[:, None]
    return np.concatenate([xr, xp], axis=-1)


def attention_layer(x, W, p, cfg, positions, kv=None):
    """One self_attn block (input already normed). kv: (K, V) of earlier positions [T0, n_kv, hd] or None.
    Returns output [T, hidden] and the new (K, V)."""
    T, hd, nh, nkv = x.shape[0], cfg.head_dim, cfg.n_heads, cfg.n_kv
    qg = (x @ W[p + "q_proj.weight"].T).reshape(T, nh, 2 * hd)   # per head: [query | gate], interleaved by head
    q, gate = qg[..., :hd], qg[..., hd:].reshape(T, nh * hd)
    k = (x @ W[p + "k_proj.weight"].T).reshape(T, nkv, hd)
    v = (x @ W[p + "v_proj.weight"].T).reshape(T, nkv, hd)
    q = rmsnorm_1p(q, W[p + "q_norm.weight"], cfg.eps)
    k = rmsnorm_1p(k, W[p + "k_norm.weight"], cfg.eps)
    cos, sin = rope_cos_sin(cfg, positions)
    q, k = apply_rope(q, cos, sin, cfg.rot), apply_rope(k, cos, sin, cfg.rot)
    if kv is not None:
        k, v = np.concatenate([kv[0], k]), np.concatenate([kv[1], v])
    T0 = k.shape[0] - T
    out = np.zeros((T, nh, hd))
    for h in range(nh):
        kh, vh = k[:, h // (nh // nkv)], v[:, h // (nh // nkv)]
        s = q[:, h] @ kh.T * hd ** -0.5                            # [T, T0 + T]
        s = np.where(np.arange(T0 + T)[None] <= (T0 + np.arange(T))[:, None], s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        out[:, h] = (s / s.sum(-1, keepdims=True)) @ vh
    out = out.reshape(T, nh * hd) * sigmoid(gate)               # output gate, before o_proj
    return out @ W[p + "o_proj.weight"].T, (k, v)


# ---- the model ----

def forward(ids, W, cfg, cache=None, chunked=False):
    """Logits [T, vocab] for ids continuing `cache` (a list per layer, or None). Returns (logits, cache)."""
    T0 = cache[0]["pos"] if cache else 0
    cache = cache or [{"pos": 0, "state": None} for _ in cfg.layer_types]
    h = W["model.embed_tokens.weight"][ids]
    positions = np.arange(T0, T0 + len(ids))
    for i, kind in enumerate(cfg.layer_types):
        p = f"model.layers.{i}."
        x = rmsnorm_1p(h, W[p + "input_layernorm.weight"], cfg.eps)
        if kind == "linear_attention":
            y, cache[i]["state"] = gdn_layer(x, W, p + "linear_attn.", cfg, cache[i]["state"], chunked)
        else:
            y, cache[i]["state"] = attention_layer(x, W, p + "self_attn.", cfg, positions, cache[i]["state"])
        cache[i]["pos"] = T0 + len(ids)
        h = h + y
        x = rmsnorm_1p(h, W[p + "post_attention_layernorm.weight"], cfg.eps)
        m = silu(x @ W[p + "mlp.gate_proj.weight"].T) * (x @ W[p + "mlp.up_proj.weight"].T)
        h = h + m @ W[p + "mlp.down_proj.weight"].T
    h = rmsnorm_1p(h, W["model.norm.weight"], cfg.eps)
    head = W["model.embed_tokens.weight"] if cfg.tied else W["lm_head.weight"]
    return h @ head.T, cache
