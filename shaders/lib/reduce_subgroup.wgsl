// Workgroup-wide sum with subgroup builtins: one subgroupAdd, then one value per subgroup through
// workgroup memory (2 barriers instead of log2(WG)). Same contract as reduce_shared.wgsl.
// Subgroups of a 1-D workgroup are taken to be contiguous runs of local_invocation_index, as on
// every Vulkan/Metal/D3D driver we know; the shared-memory path is the fallback.

var<workgroup> wg_red: array<f32, WG>;

fn wg_sum(v: f32, tid: u32) -> f32 {
    let part = subgroupAdd(v);
    let sg = subgroupAdd(1u);
    if (tid % sg == 0u) {
        wg_red[tid / sg] = part;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < WG / sg; i++) {
        total += wg_red[i];
    }
    workgroupBarrier(); // wg_red is reused by the next call
    return total;
}
