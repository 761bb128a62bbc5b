// Embedding lookup: out[i, :] = scale * row ids[i] of a (vocab × dim) table in any weight format (FORMAT;
// layout: src/quant.rs), dequantized. One dispatch per row chunk [row0, row0 + rows) of the table:
// it writes only tokens whose id falls in its rows; the last chunk also writes zeros for ids ≥ vocab
// (the host cannot see ids on the GPU, so a bad id gives a zero row instead of a fault).
// Dispatch: one workgroup of WG invocations per (token, block of WG units), folded into (x, y) by
// Context::grid; an invocation writes one 16-byte unit: 4 (F32) to 32 (Q4) elements.

override FORMAT: u32 = 0u; // WeightFormat::shader_code


const WG: u32 = 64u;

struct Params {
    t: u32,      // tokens
    dim: u32,    // row length
    row0: u32,   // first table row of this chunk
    rows: u32,   // rows in this chunk
    units: u32,  // vec4<u32> units per row
    groups: u32, // quantization groups per row (0 for F16/F32)
    blocks: u32, // workgroups per token = ceil(units / WG)
    last: u32,   // 1 when this chunk ends the table
    scale: f32,  // multiplies every value (Gemma: sqrt(hidden))
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;           // [t]
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;       // [rows, units]
@group(0) @binding(3) var<storage, read> scales: array<u32>;        // Q4/Q8 [rows * groups] f16 pairs; Asym [rows, groups] (d, m); K: side data
@group(0) @binding(4) var<storage, read_write> out: array<f32>;     // [t, dim]



// Four values at elements e .. e + 3 of the output row at base; zeros for an invalid id, nothing
// past dim (ragged F16/F32 rows).
fn put4(base: u32, e: u32, v: vec4<f32>, valid: bool) {
    for (var c = 0u; c < 4u; c++) {
        if (e + c < p.dim) { out[base + e + c] = select(0.0, v[c] * p.scale, valid); }
    }
}

@compute @workgroup_size(WG)
fn embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    let lin = wid.x + wid.y * nwg.x;
    let token = lin / p.blocks;
    let u = (lin % p.blocks) * WG + tid;
    if (token >= p.t || u >= p.units) { return; }
    let id = ids[token];
    if (id < p.row0) { return; } // an earlier chunk's row
    let valid = id - p.row0 < p.rows;
    if (!valid && p.last == 0u) { return; } // a later chunk's row
    let r = select(0u, id - p.row0, valid); // an in-bounds row to read; its values are discarded
    let q = w[r * p.units + u];
    let base = token * p.dim;
    if (FORMAT == F32) {
        put4(base, 4u * u, bitcast<vec4<f32>>(q), valid);
    } else if (FORMAT == F16) {
        put4(base, 8u * u, vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), valid);
        put4(base, 8u * u + 4u, vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), valid);
    } else if (FORMAT == Q8 || FORMAT == Q8ASYM) {
        let i = r * p.groups + (u >> 1u);
        for (var j = 0u; j < 4u; j++) { put4(base, 16u * u + 4u * j, dequant8(q[j], i), valid); }
    } else {
        for (var j = 0u; j < 4u; j++) {
            let vals = dequant4(q[j], r * p.groups + u, j);
            put4(base, 32u * u + 4u * j, vals[0], valid);
            put4(base, 32u * u + 16u + 4u * j, vals[1], valid);
        }
    }
}
