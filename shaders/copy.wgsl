// Plain copy dst[i] = src[i] in vec4 units: the bandwidth yardstick the kernel benchmark divides by
// (a kernel's GB/s over this one's GB/s holds across devices), and a utility for moving activations.
// Dispatch: one invocation per vec4, WG per workgroup, workgroups folded into (x, y) by Context::grid.

const WG: u32 = 256u;

struct Params {
    n_vec4: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;        // [n_vec4]
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;  // [n_vec4]

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + tid;
    if (i < p.n_vec4) {
        dst[i] = src[i];
    }
}
