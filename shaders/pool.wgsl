// Sentence embeddings from an encoder's (or decoder's) last hidden states: per sequence b of a padded
// batch (rows b * seq .. b * seq + lens[b] of x), the CLS row (0), the mean of its real rows, or its
// last real row; then the first `dims` values (Matryoshka truncation), L2-normalised when NORMALIZE
// (v / max(|v|, 1e-12), torch's F.normalize). Padded rows are never read.
// Dispatch: one workgroup of WG invocations per sequence, folded into (x, y) by Context::grid; each
// invocation keeps dims tid, tid + WG, … (at most MAX_PER values) in registers.

const WG: u32 = 256u;
const MAX_PER: u32 = 32u; // dims up to WG * MAX_PER = 8192

override MODE: u32 = 0u;       // 0 = CLS, 1 = mean, 2 = last
override NORMALIZE: bool = true;

struct Params {
    batch: u32,
    seq: u32,    // padded rows per sequence
    dim: u32,    // x's row width (hidden size)
    dims: u32,   // output width, ≤ dim
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [batch * seq, dim]
@group(0) @binding(2) var<storage, read> lens: array<u32>;       // [batch], 1 ≤ lens[b] ≤ seq
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [batch, dims]

@compute @workgroup_size(WG)
fn pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= p.batch) { return; } // whole workgroup leaves together
    let len = max(min(lens[b], p.seq), 1u);
    var v = array<f32, MAX_PER>();
    var ss = 0.0;
    for (var c = 0u; c < MAX_PER; c++) {
        let i = tid + c * WG;
        if (i >= p.dims) { break; }
        var acc = 0.0;
        if (MODE == 1u) {
            for (var r = 0u; r < len; r++) { acc += x[(b * p.seq + r) * p.dim + i]; }
            acc /= f32(len);
        } else {
            let r = select(0u, len - 1u, MODE == 2u);
            acc = x[(b * p.seq + r) * p.dim + i];
        }
        v[c] = acc;
        ss += acc * acc;
    }
    var scale = 1.0;
    if (NORMALIZE) { scale = 1.0 / max(sqrt(wg_sum(ss, tid)), 1e-12); }
    for (var c = 0u; c < MAX_PER; c++) {
        let i = tid + c * WG;
        if (i >= p.dims) { break; }
        out[b * p.dims + i] = v[c] * scale;
    }
}
