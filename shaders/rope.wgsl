// Rotary position embedding (RoPE), in place on q or k: for each row r (position pos0 + r), head h
// and pair i < rotary_dim / 2, rotate the pair by angle (pos0 + r) * inv_freq[i]; dims past
// rotary_dim are left as they are (partial rotary). Pairs: rope_half = Hugging Face rotate_half
// (i, i + rotary_dim/2); rope_interleaved = GGUF/Meta (2i, 2i + 1).
// Dispatch: one invocation per rotated pair, WG per workgroup, workgroups folded into (x, y) by
// Context::grid.

const WG: u32 = 64u;

// 2π split into C1 + C2 + C3 (Cody & Waite): C1 and C2 have 8 significant bits, so k * C1 and
// k * C2 are exact for |k| < 65536 and the reduction is exact to ~1e-8 up to |angle| ≈ 4e5.
const INV_TWO_PI: f32 = 0.15915494309189535f;
const C1: f32 = 6.28125f;
const C2: f32 = 0.00193023681640625f;        // 253 * 2^-17
const C3: f32 = 5.0703631802269253e-6f;      // 2π - C1 - C2, rounded to f32

struct Params {
    pairs: u32,     // t * n_heads * half
    n_heads: u32,
    head_dim: u32,
    half: u32,      // rotary_dim / 2
    pos0: u32,      // position of row 0 (the KV-cache length before this call)
    mscale: f32,    // cos/sin multiplier (LongRoPE's attention factor, else 1)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;   // [half]
@group(0) @binding(2) var<storage, read_write> x: array<f32>;    // [t, n_heads * head_dim]

// (cos, sin) of r in [-π, π], to about 1 ulp on every device: WGSL only promises 2^-11 absolute
// for the builtins there, and SwiftShader (Chrome without a GPU) is off by 2e-4. Quadrant
// reduction by π/2 = PIO2_HI + PIO2_LO, then Cephes' sinf/cosf minimax polynomials on [-π/4, π/4].
fn cos_sin_reduced(r: f32) -> vec2<f32> {
    let q = round(r * 0.63661977236758134f);
    let y = (r - q * 1.5707963705062866f) - q * -4.3711390001862412e-8f;
    let z = y * y;
    let s = y + y * z * (-1.6666654611e-1f + z * (8.3321608736e-3f + z * -1.9515295891e-4f));
    let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2f + z * (-1.388731625493765e-3f + z * 2.443315711809948e-5f));
    switch (i32(q) & 3) { // q is -2..2; & 3 maps -1 to 3 and -2 to 2
        case 0: { return vec2<f32>(c, s); }
        case 1: { return vec2<f32>(-s, c); }
        case 2: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

// (cos, sin) * mscale of angle f32(pos) * inv_freq[i]: the f32 product, as Hugging Face computes
// it, then reduced to [-π, π] (angles reach 1e5 and more).
fn cos_sin(pos: u32, i: u32) -> vec2<f32> {
    let a = f32(pos) * inv_freq[i];
    let k = round(a * INV_TWO_PI);
    let r = ((a - k * C1) - k * C2) - k * C3;
    return cos_sin_reduced(r) * p.mscale;
}

// The pair this invocation owns: (row, offset of its head in x, i), or none past the end.
fn pair_of(wid: vec3<u32>, nwg: vec3<u32>, tid: u32) -> vec3<u32> {
    let j = (wid.x + wid.y * nwg.x) * WG + tid;
    let i = j % p.half;
    let rh = j / p.half; // row * n_heads + head
    return vec3<u32>(rh / p.n_heads, rh * p.head_dim, i);
}

@compute @workgroup_size(WG)
fn rope_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    if ((wid.x + wid.y * nwg.x) * WG + tid >= p.pairs) { return; }
    let q = pair_of(wid, nwg, tid);
    let cs = cos_sin(p.pos0 + q.x, q.z);
    let a = q.y + q.z;
    let b = a + p.half;
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[b] = x1 * cs.x + x0 * cs.y;
}

@compute @workgroup_size(WG)
fn rope_interleaved(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) tid: u32) {
    if ((wid.x + wid.y * nwg.x) * WG + tid >= p.pairs) { return; }
    let q = pair_of(wid, nwg, tid);
    let cs = cos_sin(p.pos0 + q.x, q.z);
    let a = q.y + 2u * q.z;
    let x0 = x[a];
    let x1 = x[a + 1u];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[a + 1u] = x1 * cs.x + x0 * cs.y;
}
