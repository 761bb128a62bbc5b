// Argmax over each row of logits [rows, n] -> ids[rows] (greedy decoding with no readback of the
// logits). Ties go to the lowest index; NaN never wins; a row of only NaN gives 0xFFFFFFFF.
// Values are compared as order-preserving u32 keys, so the result does not depend on how a
// driver treats NaN in float comparisons (WGSL lets it assume there are none).
// Dispatch: argmax_partial: one workgroup per (row, chunk of CHUNK elements) -> partial[row, chunk];
// argmax_combine: one workgroup per row over its n_chunks partials -> ids[row];
// argmax_direct (n_chunks = 1): one workgroup per row -> ids[row]. Workgroups folded by Context::grid.

const WG: u32 = 256u;
const CHUNK: u32 = 2048u; // elements per partial workgroup (8 per invocation)
const NONE: u32 = 0xFFFFFFFFu; // index of "no candidate yet"

struct Params {
    rows: u32,
    n: u32,
    n_chunks: u32, // ceil(n / CHUNK)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;                   // [rows, n]
@group(0) @binding(2) var<storage, read_write> partial: array<vec2<u32>>;      // [rows, n_chunks] (key, index)
@group(0) @binding(3) var<storage, read> partial_in: array<vec2<u32>>;         // [rows, n_chunks] (key, index)
@group(0) @binding(4) var<storage, read_write> ids: array<u32>;                // [rows]

var<workgroup> red_key: array<u32, WG>;
var<workgroup> red_idx: array<u32, WG>;

// Monotone map f32 -> u32 (-inf -> 0x007FFFFF ... +inf -> 0xFF800000); -0 counts as +0 so that
// they tie as in a float comparison. NaN -> 0, below every number (-inf included).
fn key_of(v: f32) -> u32 {
    var b = bitcast<u32>(v);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) { return 0u; }
    if (b == 0x80000000u) { b = 0u; }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Is (k, i) better than (bk, bi)? Larger key, or the same key at a lower index.
fn better(k: u32, i: u32, bk: u32, bi: u32) -> bool {
    return k > bk || (k == bk && i < bi);
}

// Best (key, index) of the workgroup, returned to every invocation.
fn wg_best(k: u32, i: u32, tid: u32) -> vec2<u32> {
    red_key[tid] = k;
    red_idx[tid] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (tid < s && better(red_key[tid + s], red_idx[tid + s], red_key[tid], red_idx[tid])) {
            red_key[tid] = red_key[tid + s];
            red_idx[tid] = red_idx[tid + s];
        }
        workgroupBarrier();
    }
    return vec2<u32>(red_key[0], red_idx[0]);
}

// Best of logits[row, start..end), indices relative to the row.
fn scan(row: u32, start: u32, end: u32, tid: u32) -> vec2<u32> {
    var bk = 0u;
    var bi = NONE;
    let base = row * p.n;
    // Each invocation walks upward, so a strict > keeps its lowest index among equals; NaN's
    // key 0 never passes it.
    for (var i = start + tid; i < end; i += WG) {
        let k = key_of(logits[base + i]);
        if (k > bk) { bk = k; bi = i; }
    }
    return wg_best(bk, bi, tid);
}

@compute @workgroup_size(WG)
fn argmax_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) tid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= p.rows * p.n_chunks) { return; } // whole workgroup leaves together
    let row = w / p.n_chunks;
    let start = (w % p.n_chunks) * CHUNK;
    let best = scan(row, start, min(start + CHUNK, p.n), tid);
    if (tid == 0u) { partial[w] = best; }
}

@compute @workgroup_size(WG)
fn argmax_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    var bk = 0u;
    var bi = NONE;
    for (var c = tid; c < p.n_chunks; c += WG) {
        let q = partial_in[row * p.n_chunks + c];
        if (better(q.x, q.y, bk, bi)) { bk = q.x; bi = q.y; }
    }
    let best = wg_best(bk, bi, tid);
    if (tid == 0u) { ids[row] = best.y; }
}

@compute @workgroup_size(WG)
fn argmax_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let best = scan(row, 0u, p.n, tid);
    if (tid == 0u) { ids[row] = best.y; }
}
