// RMSNorm (Llama, Qwen, Phi-3): y[r, i] = x[r, i] / sqrt(mean(x[r, :]^2) + eps) * w[i].
// Also the per-head q/k norm of Qwen3: rows = tokens * heads, dim = head_dim.
// With ACCUMULATE: y[r, i] += the same (Gemma's norms after attention and the MLP, into the residual).
// Dispatch: one workgroup of WG invocations per row; rows folded into (x, y) by Context::grid.

const WG: u32 = 256u;

override ACCUMULATE: bool = false;

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;          // [dim]
@group(0) @binding(2) var<storage, read> x: array<f32>;          // [rows, dim]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;    // [rows, dim]; in place: x itself

fn inv_rms(sum_sq: f32, tid: u32) -> f32 {
    return inverseSqrt(wg_sum(sum_sq, tid) / f32(p.dim) + p.eps);
}

@compute @workgroup_size(WG)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; } // whole workgroup leaves together
    let base = row * p.dim;
    var ss = 0.0;
    for (var i = tid; i < p.dim; i += WG) { ss += x[base + i] * x[base + i]; }
    let r = inv_rms(ss, tid);
    for (var i = tid; i < p.dim; i += WG) {
        var out = x[base + i] * r * w[i];
        if (ACCUMULATE) { out += y[base + i]; }
        y[base + i] = out;
    }
}

@compute @workgroup_size(WG)
fn rmsnorm_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.dim;
    var ss = 0.0;
    for (var i = tid; i < p.dim; i += WG) { ss += y[base + i] * y[base + i]; }
    let r = inv_rms(ss, tid);
    for (var i = tid; i < p.dim; i += WG) {
        y[base + i] = y[base + i] * r * w[i];
    }
}
