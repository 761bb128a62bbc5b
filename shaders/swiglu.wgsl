// Gated MLP activation: out[r, i] = act(gate[r, i]) * up[r, i]. act is silu(g) = g / (1 + exp(-g))
// (SwiGLU: Llama, Qwen, Phi-3), the tanh-approximated GELU (GeGLU: Gemma), or sigmoid(g) (a plain
// gate: Qwen3.5's attention output).
// swiglu*: gate and up in separate [rows, f] buffers, taken as flat arrays of n = rows * f.
// swiglu_fused*: Phi-3's gate_up_proj output [rows, 2f], gate = first half of a row, up = second.
// The *4 entries move vec4s (host picks them when n, resp. f, is a multiple of 4).
// Dispatch: one invocation per output element (vec4 in *4), WG per workgroup, workgroups folded
// into (x, y) by Context::grid.

const WG: u32 = 256u;

override ACT: u32 = 0u; // 0: silu, 1: tanh-GELU, 2: sigmoid (a plain gate)

struct Params {
    n: u32,     // output elements (vec4s in the *4 entries)
    f: u32,     // row length of out (vec4s in swiglu_fused4)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;              // [rows, f]
@group(0) @binding(2) var<storage, read> up: array<f32>;                // [rows, f]
@group(0) @binding(3) var<storage, read> gate_up: array<f32>;           // [rows, 2f]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;         // [rows, f]
@group(0) @binding(5) var<storage, read> gate4: array<vec4<f32>>;       // [rows, f / 4]
@group(0) @binding(6) var<storage, read> up4: array<vec4<f32>>;         // [rows, f / 4]
@group(0) @binding(7) var<storage, read> gate_up4: array<vec4<f32>>;    // [rows, 2f / 4]
@group(0) @binding(8) var<storage, read_write> out4: array<vec4<f32>>;  // [rows, f / 4]

// g * sigmoid(g) with exp of -|g| only, so no exp overflows: g = ±100 gives 0 and 100, never NaN.
// gelu_tanh(g) = 0.5 g (1 + tanh(z)) = g * sigmoid(2z), z = sqrt(2/pi) (g + 0.044715 g^3): the same
// overflow-free sigmoid as silu, so no tanh of a huge argument (some backends build tanh from exp).
fn act(g: f32) -> f32 {
    var a = g;
    var f = g;
    if (ACT == 1u) { a = 1.5957691216057308 * (g + 0.044715 * g * g * g); }
    if (ACT == 2u) { f = 1.0; }
    let e = exp(-abs(a));
    return f * select(e, 1.0, a >= 0.0) / (1.0 + e);
}

fn act4(g: vec4<f32>) -> vec4<f32> {
    var a = g;
    var f = g;
    if (ACT == 1u) { a = 1.5957691216057308 * (g + 0.044715 * g * g * g); }
    if (ACT == 2u) { f = vec4<f32>(1.0); }
    let e = exp(-abs(a));
    return f * select(e, vec4<f32>(1.0), a >= vec4<f32>(0.0)) / (1.0 + e);
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, tid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + tid;
}

@compute @workgroup_size(WG)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let i = index(wid, nwg, tid);
    if (i < p.n) { out[i] = act(gate[i]) * up[i]; }
}

@compute @workgroup_size(WG)
fn swiglu4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let i = index(wid, nwg, tid);
    if (i < p.n) { out4[i] = act4(gate4[i]) * up4[i]; }
}

@compute @workgroup_size(WG)
fn swiglu_fused(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
    let i = index(wid, nwg, tid);
    if (i >= p.n) { return; }
    let g = i + (i / p.f) * p.f; // row * 2f + col
    out[i] = act(gate_up[g]) * gate_up[g + p.f];
}

@compute @workgroup_size(WG)
fn swiglu_fused4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
    let i = index(wid, nwg, tid);
    if (i >= p.n) { return; }
    let g = i + (i / p.f) * p.f;
    out4[i] = act4(gate_up4[g]) * gate_up4[g + p.f];
}
