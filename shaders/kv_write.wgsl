// KV-cache write: rows i < t of k_new / v_new (already RoPE'd) go to cache position pos0 + i of
// every kv head: cache[h, (pos0 + i) mod capacity, :] = new[i, h * head_dim : (h + 1) * head_dim]
// (the mod is the identity for a linear cache, and wraps a ring; see src/ops/kv_write.rs).
// Cache layout [n_kv_heads, capacity, head_dim] in u32 words: one f32 per word, or with KV_F16 two
// f16 per word (pack2x16float, even dim in the low half), so no `enable f16;` is needed.
// Dispatch: one invocation per cache word to write (t * n_kv_heads * row_words), K and V together;
// workgroups of WG folded into (x, y) by Context::grid.

const WG: u32 = 256u;

override KV_F16: bool = false;

struct Params {
    t: u32,
    n_kv_heads: u32,
    head_dim: u32,
    capacity: u32,
    row_words: u32, // head_dim, or head_dim / 2 with KV_F16
    n_words: u32,   // t * n_kv_heads * row_words
    _pad0: u32,
    _pad1: u32,
}

// The model's per-step values (src/ops/mod.rs StepParams), written once per step.
struct Step {
    pos0: u32,      // cache position of row 0
    _s0: u32,
    _s1: u32,
    _s2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k_new: array<f32>;          // [t, n_kv_heads * head_dim]
@group(0) @binding(2) var<storage, read> v_new: array<f32>;          // [t, n_kv_heads * head_dim]
@group(0) @binding(3) var<storage, read_write> cache_k: array<u32>;  // [n_kv_heads, capacity, row_words]
@group(0) @binding(4) var<storage, read_write> cache_v: array<u32>;  // [n_kv_heads, capacity, row_words]
@group(0) @binding(5) var<uniform> step: Step;

@compute @workgroup_size(WG)
fn kv_write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let g = (wid.x + wid.y * nwg.x) * WG + lid;
    if (g >= p.n_words) { return; }
    let w = g % p.row_words;
    let h = (g / p.row_words) % p.n_kv_heads;
    let i = g / (p.row_words * p.n_kv_heads);
    let dst = (h * p.capacity + (step.pos0 + i) % p.capacity) * p.row_words + w;
    let src = i * p.n_kv_heads * p.head_dim + h * p.head_dim;
    if (KV_F16) {
        let d = src + 2u * w;
        cache_k[dst] = pack2x16float(vec2<f32>(k_new[d], k_new[d + 1u]));
        cache_v[dst] = pack2x16float(vec2<f32>(v_new[d], v_new[d + 1u]));
    } else {
        cache_k[dst] = bitcast<u32>(k_new[src + w]);
        cache_v[dst] = bitcast<u32>(v_new[src + w]);
    }
}
