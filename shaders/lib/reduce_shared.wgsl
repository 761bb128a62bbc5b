// Workgroup-wide sum through workgroup memory (portable path). Appended to ops that call wg_sum;
// the op declares `const WG: u32` (a power of two) and calls wg_sum from uniform control flow.
// Every invocation receives the total.

var<workgroup> wg_red: array<f32, WG>;

fn wg_sum(v: f32, tid: u32) -> f32 {
    wg_red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (tid < s) {
            wg_red[tid] += wg_red[tid + s];
        }
        workgroupBarrier();
    }
    let total = wg_red[0];
    workgroupBarrier(); // wg_red is reused by the next call
    return total;
}
