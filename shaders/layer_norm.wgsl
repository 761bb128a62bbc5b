// LayerNorm (BERT's post-LN `LayerNorm(x + sublayer(x))`): with y = x[r] (+ residual[r]),
// out[r, i] = (y[i] - mean(y)) / sqrt(var(y) + eps) * w[i] + b[i], var biased (divided by dim) as
// torch.nn.LayerNorm.
// Each invocation holds its elements i = tid + c * WG (c < VPT) of the row in `v` (registers), so the
// row is read from memory once and the statistics are two passes over registers: the mean, then
// the sums of d = y - mean and d² (the corrected two-pass algorithm of Chan, Golub & LeVeque 1983,
// eq. 1.7: Σd cancels the rounding of the f32 mean, so rows with mean ≫ std lose nothing; never
// E[y²] - E[y]²).
// In place (`*_inplace`, out holds x): every element is read into `v` before the first barrier and
// each invocation writes only its own elements after the last one, so no write precedes a read.
// Dispatch: one workgroup of WG invocations per row; rows folded into (x, y) by Context::grid.

const WG: u32 = 256u;
const VPT: u32 = 32u;              // row elements per invocation
const MAX_DIM: u32 = 8192u;        // = WG * VPT

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;            // [dim]
@group(0) @binding(2) var<storage, read> b: array<f32>;            // [dim]
@group(0) @binding(3) var<storage, read> x: array<f32>;            // [rows, dim]
@group(0) @binding(4) var<storage, read> residual: array<f32>;     // [rows, dim]; *_add only
@group(0) @binding(5) var<storage, read_write> out: array<f32>;    // [rows, dim]; in place: x itself

var<private> v: array<f32, VPT>; // this invocation's elements of the row; 0 past dim

// Normalize `v` in place: statistics over the workgroup's row, then the affine map.
fn normalize(tid: u32) {
    let n = f32(p.dim);
    var s = 0.0;
    for (var c = 0u; c < VPT; c++) { s += v[c]; } // elements past dim are 0
    let mean = wg_sum(s, tid) / n;
    var s1 = 0.0;
    var s2 = 0.0;
    for (var c = 0u; c < VPT; c++) {
        if (tid + c * WG < p.dim) {
            let d = v[c] - mean;
            s1 += d;
            s2 += d * d;
        }
    }
    let corr = wg_sum(s1, tid) / n;  // the f32 mean's error: the exact mean is mean + corr
    let variance = max(wg_sum(s2, tid) / n - corr * corr, 0.0);
    let r = inverseSqrt(variance + p.eps);
    for (var c = 0u; c < VPT; c++) {
        let i = tid + c * WG;
        if (i < p.dim) { v[c] = ((v[c] - mean) - corr) * r * w[i] + b[i]; }
    }
}

fn store(base: u32, tid: u32) {
    for (var c = 0u; c < VPT; c++) {
        let i = tid + c * WG;
        if (i < p.dim) { out[base + i] = v[c]; }
    }
}

@compute @workgroup_size(WG)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; } // whole workgroup leaves together
    let base = row * p.dim;
    for (var c = 0u; c < VPT; c++) {
        let i = tid + c * WG;
        if (i < p.dim) { v[c] = x[base + i]; }
    }
    normalize(tid);
    store(base, tid);
}

@compute @workgroup_size(WG)
fn layer_norm_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.dim;
    for (var c = 0u; c < VPT; c++) {
        let i = tid + c * WG;
        if (i < p.dim) { v[c] = x[base + i] + residual[base + i]; }
    }
    normalize(tid);
    store(base, tid);
}

@compute @workgroup_size(WG)
fn layer_norm_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.dim;
    for (var c = 0u; c < VPT; c++) {
        let i = tid + c * WG;
        if (i < p.dim) { v[c] = out[base + i]; }
    }
    normalize(tid);
    store(base, tid);
}

@compute @workgroup_size(WG)
fn layer_norm_add_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.dim;
    for (var c = 0u; c < VPT; c++) {
        let i = tid + c * WG;
        if (i < p.dim) { v[c] = out[base + i] + residual[base + i]; }
    }
    normalize(tid);
    store(base, tid);
}
