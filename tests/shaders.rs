//! Every composed shader is valid WGSL for naga (the native path) with and without subgroups, and
//! stays inside WebGPU's *default* limits, so it also runs on devices that grant nothing extra:
//! ≤ 16 KiB workgroup memory, ≤ 8 storage buffers and ≤ 256 invocations per entry point.

use webgpu_llm::gpu::{shaders, Capabilities, Shader};
use wgpu::naga;

const MAX_WORKGROUP_BYTES: u32 = 16 * 1024;
const MAX_STORAGE_BUFFERS: usize = 8;
const MAX_INVOCATIONS: u32 = 256;

fn validate(shader: Shader, subgroups: bool, f16: bool) -> Result<(), String> {
    let caps = Capabilities { subgroups, shader_f16: f16, f16_gemm: f16, ..Default::default() };
    let src = shaders::compose(shader, &caps, false);
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src))?;
    // pack2x16float/unpack2x16float are core WGSL; naga gates them behind this capability, which
    // wgpu grants on every WebGPU-class device.
    let mut flags = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if subgroups {
        flags |= naga::valid::Capabilities::SUBGROUP;
    }
    if f16 {
        flags |= naga::valid::Capabilities::SHADER_FLOAT16;
    }
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), flags)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(&src))?;
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).map_err(|e| e.to_string())?;
    for (i, ep) in module.entry_points.iter().enumerate() {
        let fi = info.get_entry_point(i);
        let mut wg_bytes = 0;
        let mut storage = 0;
        for (h, var) in module.global_variables.iter() {
            if fi[h].is_empty() {
                continue;
            }
            match var.space {
                naga::AddressSpace::WorkGroup => wg_bytes += layouter[var.ty].size,
                naga::AddressSpace::Storage { .. } => storage += 1,
                _ => {}
            }
        }
        let name = format!("{}::{}", shader.name(), ep.name);
        let invocations: u32 = ep.workgroup_size.iter().product();
        if wg_bytes > MAX_WORKGROUP_BYTES {
            return Err(format!("{name}: {wg_bytes} bytes of workgroup memory > {MAX_WORKGROUP_BYTES}"));
        }
        if storage > MAX_STORAGE_BUFFERS {
            return Err(format!("{name}: {storage} storage buffers > {MAX_STORAGE_BUFFERS}"));
        }
        if invocations > MAX_INVOCATIONS {
            return Err(format!("{name}: {invocations} invocations > {MAX_INVOCATIONS}"));
        }
    }
    Ok(())
}

#[test]
fn every_shader_is_valid_on_both_paths() {
    let mut failures = Vec::new();
    for &shader in Shader::ALL {
        for (subgroups, f16) in [(false, false), (true, false), (false, true), (true, true)] {
            if let Err(e) = validate(shader, subgroups, f16) {
                failures.push(format!("{} (subgroups={subgroups}, f16={f16}):\n{e}", shader.name()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn shaders_need_no_f16_and_browser_dialect_enables_subgroups() {
    for &shader in Shader::ALL {
        let enables_f16 = shader.source().lines().any(|l| l.trim_start().starts_with("enable f16"));
        assert!(!enables_f16, "{}: Chrome here has no shader-f16", shader.name());
        let caps = Capabilities { subgroups: true, ..Default::default() };
        let web = shaders::compose(shader, &caps, true);
        assert_eq!(
            web.starts_with("enable subgroups;"),
            shader.uses_reduce(),
            "{}: Chrome requires `enable subgroups;` exactly when subgroup builtins are used",
            shader.name()
        );
        // f16 only in the tiled GEMM, and only where the device has it
        let caps = Capabilities { subgroups: true, shader_f16: true, f16_gemm: true, ..Default::default() };
        let web = shaders::compose(shader, &caps, true);
        assert_eq!(web.lines().any(|l| l.trim() == "enable f16;"), shader == Shader::Matmul, "{}", shader.name());
    }
}

/// The value of `const NAME: u32` in a shader, read through naga.
fn shader_const(shader: Shader, name: &str) -> u32 {
    let src = shaders::compose(shader, &Capabilities::default(), false);
    let module = naga::front::wgsl::parse_str(&src).expect("valid WGSL");
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{} has no const {name}", shader.name()));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref other => panic!("{}::{name} is not a u32 literal: {other:?}", shader.name()),
    }
}

/// Dispatch geometry is computed in Rust from constants the shaders also define: they must agree.
#[test]
fn rust_geometry_constants_match_the_shaders() {
    use webgpu_llm::ops;
    let pairs: &[(Shader, &str, u32)] = &[
        (Shader::Add, "WG", ops::add::WG),
        (Shader::Argmax, "CHUNK", ops::argmax::CHUNK),
        (Shader::Attention, "WG", ops::attention::WG),
        (Shader::Attention, "MAX_HEAD_DIM", ops::attention::MAX_HEAD_DIM),
        (Shader::Attention, "RWG", ops::attention::ROW_WG),
        (Shader::Copy, "WG", ops::copy::WG),
        (Shader::Embedding, "WG", ops::embedding::WG),
        (Shader::Matmul, "GEMV_ROWS", ops::matmul::GEMV_ROWS),
        (Shader::Matmul, "TM", ops::matmul::TM),
        (Shader::Matmul, "TN", ops::matmul::TN),
        (Shader::Matmul, "WG", ops::matmul::GEMV_ROW_WG),
        (Shader::Matmul, "MB", ops::matmul::GEMM_ROW_M),
        (Shader::Matmul, "NORM_MAX_K", ops::matmul::NORM_MAX_K),
        (Shader::KvWrite, "WG", ops::kv_write::WG),
        (Shader::Rope, "WG", ops::rope::WG),
        (Shader::Rope, "MAX_HEAD_DIM", ops::rope::MAX_HEAD_DIM),
        (Shader::SwiGlu, "WG", ops::swiglu::WG),
        (Shader::Softcap, "WG", ops::softcap::WG),
        (Shader::DeltaNet, "WG", ops::delta_net::WG),
        (Shader::DeltaNet, "MAX_DK", ops::delta_net::MAX_DK),
        (Shader::DeltaNet, "MAX_K", ops::delta_net::MAX_K),
        (Shader::DeltaNet, "CHUNK", ops::delta_net::CHUNK),
        (Shader::LayerNorm, "WG", ops::layer_norm::WG),
        (Shader::LayerNorm, "MAX_DIM", ops::layer_norm::MAX_DIM),
        (Shader::Gelu, "WG", ops::gelu::WG),
        (Shader::EncoderAttention, "WG", ops::encoder_attention::WG),
        (Shader::EncoderAttention, "MAX_HEAD_DIM", ops::encoder_attention::MAX_HEAD_DIM),
        (Shader::Pool, "WG", ops::pool::WG),
        (Shader::Pool, "MAX_PER", ops::pool::MAX_PER),
    ];
    for &(shader, name, rust) in pairs {
        assert_eq!(shader_const(shader, name), rust, "{}::{name} differs between WGSL and Rust", shader.name());
    }
}

/// The ALU counter behind `bench-kernels --json`'s alu_per_byte, on shaders whose count is known
/// by hand: per-component arithmetic, calls, branches folded by override constants, data-dependent
/// branches at their larger arm, literal-bound and row loops.
#[test]
fn main_loop_alu_counts_by_hand() {
    use webgpu_llm::gpu::shader_stats::main_loop_cost;
    let src = r#"
override WIDE: bool = false;
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
fn mad4(x: vec4<f32>, y: vec4<f32>) -> vec4<f32> { return x * y + y; }   // 8
fn wide() -> bool { return WIDE; }
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) tid: u32) {
    var acc = vec4<f32>(0.0);
    for (var i = tid; i < 1024u; i += 64u) {                 // i < 1024 (1), i += 64 (1)
        let v = a[i];
        acc += mad4(v, v);                                    // 8 + 4
        if (WIDE) { acc += v * 2.0; }                         // 8 when WIDE
        if (wide()) { acc += v; }                             // 4 when WIDE
        if (v.x > 0.0) { acc += v; } else { acc -= v * v; }   // 1 + max(4, 8)
        for (var r = 0u; r < 3u; r++) { acc.x += f32(r); }    // 3 × (1 + 1 + 1 + 1)
        acc.y += dot(v, v);                                   // 4 + 1
    }
    out[tid] = acc.x + acc.y;
}
"#;
    let narrow = main_loop_cost(src, "main", &[], 2).unwrap();
    let wide = main_loop_cost(src, "main", &[("WIDE", 1.0)], 2).unwrap();
    assert_eq!(narrow.alu, 2 + 12 + 9 + 12 + 5, "{narrow:?}");
    assert_eq!(wide.alu, narrow.alu + 8 + 4, "{wide:?}");
    assert_eq!(narrow.loads, 1, "a[i]; locals are not memory");
    // the real GEMVs: every format's main loop is found and costs something
    let caps = Capabilities::default();
    let matmul = shaders::compose(Shader::Matmul, &caps, false);
    for (entry, fmt) in [("gemv_q", 3.0), ("gemv_q", 6.0), ("gemv_row_q", 3.0), ("gemv", 1.0), ("gemv_row", 1.0)] {
        let c = main_loop_cost(&matmul, entry, &[("FORMAT", fmt)], 2).unwrap();
        assert!(c.alu > 0 && c.loads > 0, "{entry} FORMAT={fmt}: {c:?}");
    }
    // format branches are resolved (Q4 skips the K-quant dequantization) and SWIGLU's second row
    // counts (a function returning the constant decides it)
    use webgpu_llm::ops::matmul::gemv_loop_bytes;
    use webgpu_llm::quant::WeightFormat;
    let cost = |fmt: WeightFormat, swiglu: f64| {
        let consts = [("FORMAT", fmt.shader_code() as f64), ("SWIGLU", swiglu)];
        main_loop_cost(&matmul, "gemv_row_q", &consts, 1).unwrap()
    };
    let per_byte = |fmt: WeightFormat| cost(fmt, 0.0).alu as f64 / gemv_loop_bytes("gemv_row_q", fmt).unwrap().0 as f64;
    assert!(per_byte(WeightFormat::Q6K) > 2.0 * per_byte(WeightFormat::Q4), "Q4 vs Q6K per byte");
    let (q4, q4_swiglu) = (cost(WeightFormat::Q4, 0.0), cost(WeightFormat::Q4, 1.0));
    assert!(q4_swiglu.alu > q4.alu + 30 && q4_swiglu.alu < 2 * q4.alu, "{q4_swiglu:?} vs {q4:?}");
}
