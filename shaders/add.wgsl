// Residual add: out[i] = a[i] + b[i] (add*), or a[i] += b[i] (add_inplace*), over n f32;
// add_scalar: a[i] += c (at load: Gemma's (1 + w) norm weights).
// The *4 entries move vec4s (host picks them when n is a multiple of 4, as for every hidden size).
// Dispatch: one invocation per element (vec4 in *4), WG per workgroup, workgroups folded into
// (x, y) by Context::grid.

const WG: u32 = 256u;

struct Params {
    n: u32, // elements (vec4s in the *4 entries)
    c: f32, // add_scalar's constant
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;                // [n]
@group(0) @binding(2) var<storage, read> b: array<f32>;                // [n]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;        // [n]; in place: a itself
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;         // [n / 4]
@group(0) @binding(5) var<storage, read> b4: array<vec4<f32>>;         // [n / 4]
@group(0) @binding(6) var<storage, read_write> out4: array<vec4<f32>>; // [n / 4]; in place: a

fn index(wid: vec3<u32>, nwg: vec3<u32>, tid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + tid;
}

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) tid: u32) {
    let i = index(wid, nwg, tid);
    if (i < p.n) { out[i] = a[i] + b[i]; }
}

@compute @workgroup_size(WG)
fn add4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let i = index(wid, nwg, tid);
    if (i < p.n) { out4[i] = a4[i] + b4[i]; }
}

@compute @workgroup_size(WG)
fn add_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
    let i = index(wid, nwg, tid);
    if (i < p.n) { out[i] += b[i]; }
}

@compute @workgroup_size(WG)
fn add_inplace4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
    let i = index(wid, nwg, tid);
    if (i < p.n) { out4[i] += b4[i]; }
}

@compute @workgroup_size(WG)
fn add_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
    let i = index(wid, nwg, tid);
    if (i < p.n) { out[i] += p.c; }
}
