// Exact (erf) GELU in place, as torch's nn.GELU() and HF's "gelu": x[i] = x · ½ (1 + erf(x / √2))
// over n f32. WGSL has no erf; written as ½ x · erfc(−x / √2) with erfc from Numerical Recipes in C
// (2nd ed., §6.2, `erfcc`: a Chebyshev fit, fractional error < 1.2e-7 for every argument), so the
// negative tail keeps its relative accuracy (no 1 + erf cancellation) and erf's absolute error is
// below 1.2e-7. Arguments from 10 on give erfc = 0 (erfc(10) ≈ 2e-45 is below every f32) and exp
// only ever sees an argument in [−101, 0]: no overflow for any |x|.
// Dispatch: one invocation per element, WG per workgroup, workgroups folded into (x, y) by
// Context::grid.

const WG: u32 = 256u;
const FRAC_1_SQRT_2: f32 = 0.70710678118654752;

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>; // [n]

// erfc(z) for z ≥ 0 (Numerical Recipes' erfcc).
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(poly - z * z);
}

@compute @workgroup_size(WG)
fn gelu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + tid;
    if (i >= p.n) { return; }
    let v = x[i];
    // h = ½ erfc(|v| / √2); GELU = v·h below 0 and v − v·h = v·(1 − h) = v·½ erfc(−v/√2) above.
    // From z = 10 on erfc(z) < 2e-45, below every f32: h = 0 exactly (GELU(−1e30) = −0, not −1e-15).
    let z = abs(v) * FRAC_1_SQRT_2;
    let h = select(0.5 * erfc_pos(min(z, 10.0)), 0.0, z >= 10.0);
    x[i] = select(v * h, v - v * h, v >= 0.0);
}
