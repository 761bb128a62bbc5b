// copy: dst[i] = src[i] in vec4 units: the bandwidth yardstick the kernel benchmark divides by
// (a kernel's GB/s over this one's GB/s holds across devices).
// copy_cols: a column block of a row-major matrix, dst[r, dst_col + c] = src[r, src_col + c] for
// c < width (e.g. q, k and v out of a fused qkv projection).
// Dispatch: one invocation per vec4 (copy) or element (copy_cols), WG per workgroup, folded into
// (x, y) by Context::grid.

const WG: u32 = 256u;

struct Params {
    n_vec4: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct ColsParams {
    rows: u32,
    width: u32,
    src_stride: u32, // elements per src row
    src_col: u32,
    dst_stride: u32,
    dst_col: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;        // [n_vec4]
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;  // [n_vec4]
@group(0) @binding(3) var<uniform> pc: ColsParams;
@group(0) @binding(4) var<storage, read> src_cols: array<u32>;         // [rows, src_stride]
@group(0) @binding(5) var<storage, read_write> dst_cols: array<u32>;   // [rows, dst_stride]

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + tid;
    if (i < p.n_vec4) {
        dst[i] = src[i];
    }
}

@compute @workgroup_size(WG)
fn copy_cols(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + tid;
    if (i >= pc.rows * pc.width) { return; }
    let r = i / pc.width;
    let c = i % pc.width;
    dst_cols[r * pc.dst_stride + pc.dst_col + c] = src_cols[r * pc.src_stride + pc.src_col + c];
}
