//! Kernel benchmark at Llama-3.2-3B shapes: time per call, GB/s of weights read (GEMV, M = 1) and
//! GFLOP/s (GEMM, M = 128), plus each GEMV's bandwidth as a fraction of a plain copy kernel's
//! measured in the same run (the number that carries over between devices).
//! Then attention, and one Gated DeltaNet layer's mixer at Qwen3.5-9B's sizes in both forms of its
//! recurrence (token by token, chunked), each kernel also timed alone.
//! Timing uses GPU timestamps when the device has `timestamp-query`, wall clock otherwise.
//!
//! `cargo run --release --bin bench-kernels -- [--formats q4,q8,...|all] [--m 1,128] [--shapes NAME,..]
//!  [--quick] [--portable] [--json]`
//!
//! Quantized GEMVs run twice: with f32 x, and with x as int8 blocks (`variant: "int8"`: the
//! act_q8 kernel and the integer-dot GEMV, timed together); `chosen` (`*` in the table) marks the
//! variant the engine uses on this adapter.
//!
//! `--json` prints one object per line per (format, shape, M, variant): `format`, `n`, `k`, `m`,
//! `entry`, `variant`, `chosen`, `ms`, `gb_s`, `copy_gb_s`, `ratio` (gb_s / copy_gb_s) and, for GEMVs, `alu_per_byte` and
//! `loads_per_byte`: ALU instructions and loads per weight byte in the kernel's main loop,
//! counted from the WGSL the pipeline compiles (naga IR, override constants applied; rules in
//! `gpu::shader_stats`). Lavapipe is ALU-bound, so fewer instructions per byte show as a higher
//! ratio there.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    native::main()
}

/// The benchmark drives a native GPU process; in the browser, the npm package is the way in.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::time::Instant;

    use webgpu_llm::gpu::shader_stats::{main_loop_cost, LoopCost};
    use webgpu_llm::gpu::shaders;
    use webgpu_llm::gpu::{Context, ContextOptions, Kernel, Result};
    use webgpu_llm::ops::act_q8::{act_q8, ActQ8};
    use webgpu_llm::ops::attention::{attention, AttentionScratch, AttentionShape, KvCacheShape, KvDtype};
    use webgpu_llm::ops::copy::copy;
    use webgpu_llm::ops::delta_net::{delta_net_form, DeltaNetShape, DeltaState, DeltaWeights, Form};
    use webgpu_llm::ops::matmul::{gemv_loop_bytes, matmul, matmul_q8, q8_format, Epilogue, QuantMatrix};
    use webgpu_llm::quant::{PackedMatrix, WeightFormat};

    /// Llama-3.2-3B's matrices as (name, n = outputs, k = inputs).
    const SHAPES: &[(&str, u32, u32)] = &[
        ("q_proj/o_proj", 3072, 3072),
        ("k_proj/v_proj", 1024, 3072),
        ("gate/up_proj", 8192, 3072),
        ("down_proj", 3072, 8192),
        ("lm_head", 128256, 3072),
    ];

    struct Args {
        formats: Vec<WeightFormat>,
        ms: Vec<u32>,
        shapes: Vec<String>,
        quick: bool,
        portable: bool,
        json: bool,
    }

    fn parse_args() -> std::result::Result<Args, String> {
        let mut args = Args {
            formats: vec![WeightFormat::Q4],
            ms: vec![1, 128],
            shapes: Vec::new(),
            quick: false,
            portable: false,
            json: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
            match a.as_str() {
                "--formats" => {
                    let v = value()?;
                    args.formats = if v == "all" {
                        vec![
                            WeightFormat::Q4,
                            WeightFormat::Q4Asym,
                            WeightFormat::Q8,
                            WeightFormat::Q8Asym,
                            WeightFormat::Q4K,
                            WeightFormat::Q5K,
                            WeightFormat::Q6K,
                            WeightFormat::F16,
                            WeightFormat::F32,
                        ]
                    } else {
                        v.split(',').map(parse_format).collect::<std::result::Result<_, _>>()?
                    };
                }
                "--m" => {
                    args.ms = value()?
                        .split(',')
                        .map(|s| s.parse().map_err(|_| format!("bad M `{s}`")))
                        .collect::<std::result::Result<_, _>>()?
                }
                "--shapes" => args.shapes = value()?.split(',').map(String::from).collect(),
                "--quick" => args.quick = true,
                "--portable" => args.portable = true,
                "--json" => args.json = true,
                "-h" | "--help" => {
                    println!(
                    "bench-kernels [--formats q4,q4asym,q8,q8asym,q4k,q5k,q6k,f16,f32|all] [--m 1,128] [--shapes {}] [--quick] [--portable] [--json]\n\
                     --quick: fewer repetitions; --portable: ignore subgroups/shader-f16/timestamps;\n\
                     --json: one object per (format, shape, M) on stdout, with alu_per_byte (the table goes to stderr)",
                    SHAPES.iter().map(|s| s.0).collect::<Vec<_>>().join(",")
                );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument `{other}` (try --help)")),
            }
        }
        Ok(args)
    }

    fn parse_format(s: &str) -> std::result::Result<WeightFormat, String> {
        Ok(match s {
            "q4" => WeightFormat::Q4,
            "q4asym" | "q4_1" => WeightFormat::Q4Asym,
            "q8" => WeightFormat::Q8,
            "q8asym" => WeightFormat::Q8Asym,
            "q4k" | "q4_k" => WeightFormat::Q4K,
            "q5k" | "q5_k" => WeightFormat::Q5K,
            "q6k" | "q6_k" => WeightFormat::Q6K,
            "f16" => WeightFormat::F16,
            "f32" => WeightFormat::F32,
            _ => return Err(format!("unknown format `{s}` (q4, q4asym, q8, q8asym, q4k, q5k, q6k, f16, f32)")),
        })
    }

    /// Times a list of kernels recorded `iters` times in one compute pass.
    struct Timer {
        query: Option<(wgpu::QuerySet, wgpu::Buffer)>,
        target_seconds: f64,
    }

    impl Timer {
        fn new(ctx: &Context, quick: bool) -> Self {
            let query = ctx.caps.timestamp_query.then(|| {
                let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("bench"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench.resolve"),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                (set, resolve)
            });
            Self { query, target_seconds: if quick { 0.05 } else { 0.3 } }
        }

        fn run_once(&self, ctx: &Context, kernels: &[Kernel], iters: u32) -> Result<f64> {
            let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("bench") });
            {
                let timestamp_writes = self.query.as_ref().map(|(set, _)| wgpu::ComputePassTimestampWrites {
                    query_set: set,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                });
                let mut pass =
                    enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("bench"), timestamp_writes });
                for _ in 0..iters {
                    for k in kernels {
                        k.record(&mut pass);
                    }
                }
            }
            if let Some((set, resolve)) = &self.query {
                enc.resolve_query_set(set, 0..2, resolve, 0);
            }
            let start = Instant::now();
            ctx.queue.submit([enc.finish()]);
            ctx.wait()?;
            let wall = start.elapsed().as_secs_f64();
            match &self.query {
                Some((_, resolve)) => {
                    let ticks = pollster::block_on(ctx.read_bytes(resolve, 0, 16))?;
                    let t: &[u64] = bytemuck::cast_slice(&ticks);
                    let ns = t[1].saturating_sub(t[0]) as f64 * ctx.queue.get_timestamp_period() as f64;
                    // Some drivers report zeros; fall back to the wall clock then.
                    Ok(if ns > 0.0 { ns * 1e-9 } else { wall })
                }
                None => Ok(wall),
            }
        }

        /// Seconds per iteration: one warm-up, one probe, then enough iterations to fill the target time.
        fn seconds_per_call(&self, ctx: &Context, kernels: &[Kernel]) -> Result<f64> {
            self.run_once(ctx, kernels, 1)?;
            let probe = self.run_once(ctx, kernels, 1)?;
            let iters = ((self.target_seconds / probe.max(1e-7)) as u32).clamp(1, 1000);
            if iters == 1 {
                return Ok(probe);
            }
            Ok(self.run_once(ctx, kernels, iters)? / iters as f64)
        }
    }

    /// A matrix of random quantized codes and scales in the GPU layout (no need to quantize floats).
    fn random_matrix(format: WeightFormat, n: u32, k: u32, seed: &mut u64) -> PackedMatrix {
        let (n, k) = (n as usize, k as usize);
        let words = n * format.weight_row_bytes(k) as usize / 4;
        let scale_words = (format.scale_bytes(n, k) / 4) as usize;
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u32
        };
        let weights: Vec<u32> = match format {
            // small finite values so f16/f32 weights are not NaN/Inf
            WeightFormat::F16 => (0..words).map(|_| 0x2c00_2c00 ^ (next() & 0x03ff_03ff)).collect(),
            WeightFormat::F32 => (0..words).map(|_| (0.01f32 + (next() & 0xffff) as f32 * 1e-7).to_bits()).collect(),
            _ => (0..words).map(|_| next()).collect(),
        };
        let scales = (0..scale_words).map(|_| 0x2000_2000 ^ (next() & 0x00ff_00ff)).collect();
        PackedMatrix { format, n, k, weights, scales }
    }

    pub fn main() {
        if let Err(e) = run() {
            eprintln!("bench-kernels: {e}");
            std::process::exit(1);
        }
    }

    /// The main-loop cost of a GEMV kernel and the weight bytes one iteration reads; `None` for GEMMs.
    fn loop_cost(
        ctx: &Context,
        k: &Kernel,
        format: WeightFormat,
    ) -> std::result::Result<Option<(LoopCost, u64)>, String> {
        let key = k.key();
        let Some((bytes, nested)) = gemv_loop_bytes(key.entry, format) else { return Ok(None) };
        let wgsl = shaders::compose(key.shader, &ctx.caps, false);
        let cost = main_loop_cost(&wgsl, key.entry, &key.constant_values(), nested)?;
        Ok(Some((cost, bytes)))
    }

    fn run() -> std::result::Result<(), String> {
        let args = parse_args()?;
        // With --json, stdout carries only the JSON lines; the table goes to stderr.
        let json = args.json;
        let say = |line: String| if json { eprintln!("{line}") } else { println!("{line}") };
        let ctx = Context::new_blocking(ContextOptions { portable_only: args.portable, ..Default::default() })
            .map_err(|e| e.to_string())?;
        say(format!("device: {}", ctx.describe()));
        // Where prompts' matmuls use f16 tiles, a second context with f32 tiles times the other
        // choice (Capabilities::f16_gemm), with its own copy of each matrix.
        let ctx_f32_tiles = if ctx.caps.f16_gemm && !ctx.caps.row_gemv && args.ms.iter().any(|&m| m > 1) {
            let opts = ContextOptions { portable_only: args.portable, f16_gemm: Some(false), ..Default::default() };
            Some(Context::new_blocking(opts).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let timer = Timer::new(&ctx, args.quick);
        let timer_f32_tiles = ctx_f32_tiles.as_ref().map(|c| Timer::new(c, args.quick));
        say(format!(
            "timing: {}",
            if timer.query.is_some() { "GPU timestamps" } else { "wall clock (submit to done)" }
        ));
        let err = |e: webgpu_llm::GpuError| e.to_string();

        // The yardstick: a vec4 copy of 64 MiB (under every device's binding limit), read + write.
        let copy_elems: u32 = 16 << 20;
        let src = ctx.storage("bench.copy.src", copy_elems as u64 * 4).map_err(err)?;
        let dst = ctx.storage("bench.copy.dst", copy_elems as u64 * 4).map_err(err)?;
        let k = copy(&ctx, &src, &dst, copy_elems).map_err(err)?;
        let t = timer.seconds_per_call(&ctx, &[k]).map_err(err)?;
        let copy_gbs = 2.0 * copy_elems as f64 * 4.0 / t / 1e9;
        say(format!(
            "\ncopy 64 MiB: {:.3} ms, {:.1} GB/s (read + write) — the bandwidth yardstick\n",
            t * 1e3,
            copy_gbs
        ));

        say(format!(
            "{:<8} {:<14} {:>17} {:>5} {:>8} {:>10} {:>9} {:>9} {:>9} {}",
            "format", "matrix", "N×K (out×in)", "M", "chunks", "time", "GB/s", "GFLOP/s", "ALU/byte", "entry"
        ));
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for &format in &args.formats {
            for &(name, n, kk) in SHAPES {
                if !args.shapes.is_empty() && !args.shapes.iter().any(|s| name.contains(s.as_str())) {
                    continue;
                }
                let packed = random_matrix(format, n, kk, &mut seed);
                let w = QuantMatrix::upload(&ctx, name, &packed).map_err(err)?;
                let weight_bytes = (packed.weights.len() + packed.scales.len()) as f64 * 4.0;
                drop(packed);
                let mut w_f32_tiles = None;
                for &m in &args.ms {
                    // GEMVs of the formats with integer-dot kernels run both ways: f32 x, and int8
                    // x (the act_q8 kernel that makes it is timed with the GEMV); GEMMs with f16 and
                    // f32 tiles where the device has both.
                    let mut variants: Vec<(&Context, bool)> = vec![(&ctx, false)];
                    if m == 1 && q8_format(format) {
                        variants.push((&ctx, true));
                    }
                    if let (true, Some(c)) = (m > 1, &ctx_f32_tiles) {
                        variants.push((c, false));
                    }
                    for (vctx, int8) in variants {
                        let other = !std::ptr::eq(vctx, &ctx);
                        let w = if other {
                            if w_f32_tiles.is_none() {
                                let packed = random_matrix(format, n, kk, &mut seed.clone());
                                w_f32_tiles = Some(QuantMatrix::upload(vctx, name, &packed).map_err(err)?);
                            }
                            w_f32_tiles.as_ref().unwrap()
                        } else {
                            &w
                        };
                        let x = vctx.storage("bench.x", m as u64 * kk as u64 * 4).map_err(err)?;
                        let y = vctx.storage("bench.y", m as u64 * n as u64 * 4).map_err(err)?;
                        let kernels = if int8 {
                            let xq = ActQ8::new(vctx, "bench.xq", 1, kk).map_err(err)?;
                            let mut k = vec![act_q8(vctx, &x, &xq, 1, 0, None).map_err(err)?];
                            k.extend(matmul_q8(vctx, &xq, w, &y, Epilogue::default()).map_err(err)?);
                            k
                        } else {
                            matmul(vctx, &x, w, &y, m, Epilogue::default()).map_err(err)?
                        };
                        let vtimer = if other { timer_f32_tiles.as_ref().unwrap() } else { &timer };
                        let t = vtimer.seconds_per_call(vctx, &kernels).map_err(err)?;
                        let gemv = &kernels[int8 as usize];
                        let gbs = weight_bytes / t / 1e9;
                        let gflops = 2.0 * m as f64 * n as f64 * kk as f64 / t / 1e9;
                        let bw = if m == 1 {
                            format!("{gbs:.1} ({:.0}%)", 100.0 * gbs / copy_gbs)
                        } else {
                            format!("{gbs:.1}")
                        };
                        let cost = loop_cost(vctx, gemv, format)?;
                        let per_byte =
                            cost.map(|(c, bytes)| (c.alu as f64 / bytes as f64, c.loads as f64 / bytes as f64));
                        // the variant the engine uses on this adapter (Capabilities::int8_dot, f16_gemm)
                        let chosen = !other && (!q8_format(format) || m > 1 || int8 == ctx.caps.int8_dot);
                        let variant = match (m, int8) {
                            (1, true) => "int8",
                            (1, false) => "f32",
                            _ => vctx.variants().gemm,
                        };
                        say(format!(
                            "{:<8} {:<14} {:>17} {:>5} {:>8} {:>8.3}ms {:>9} {:>9.1} {:>9} {} ({variant}){}",
                            format!("{format:?}"),
                            name,
                            format!("{n}×{kk}"),
                            m,
                            w.chunks.len(),
                            t * 1e3,
                            bw,
                            gflops,
                            per_byte.map_or("-".into(), |(a, _)| format!("{a:.2}")),
                            gemv.key().entry,
                            if chosen { " *" } else { "" }
                        ));
                        if json {
                            let line = serde_json::json!({
                                "format": format!("{format:?}"),
                                "shape": name,
                                "n": n,
                                "k": kk,
                                "m": m,
                                "entry": gemv.key().entry,
                                "variant": variant,
                                "chosen": chosen,
                                "ms": t * 1e3,
                                "gb_s": gbs,
                                "copy_gb_s": copy_gbs,
                                "ratio": gbs / copy_gbs,
                                "gflop_s": gflops,
                                "alu_per_byte": per_byte.map(|p| p.0),
                                "loads_per_byte": per_byte.map(|p| p.1),
                            });
                            println!("{line}");
                        }
                    }
                }
            }
        }

        // Attention at Llama-3.2-3B's shape (24 heads, 8 KV heads, head_dim 128), f16 KV cache.
        say(format!("\n{:<32} {:>10} {:>12}", "attention (24/8 heads, d=128, f16 KV)", "time", "KV GB/s"));
        let kv = KvCacheShape { n_kv_heads: 8, head_dim: 128, capacity: 4096, dtype: KvDtype::F16, ring: false };
        let shape = AttentionShape::new(24, kv);
        let cache_k = ctx.storage("bench.k", kv.bytes()).map_err(err)?;
        let cache_v = ctx.storage("bench.v", kv.bytes()).map_err(err)?;
        for &(label, t_rows, pos0) in &[("decode, 4096 cached", 1u32, 4095u32), ("prefill 128 tokens", 128, 0)] {
            let q = ctx.storage("bench.q", t_rows as u64 * 24 * 128 * 4).map_err(err)?;
            let out = ctx.storage("bench.o", t_rows as u64 * 24 * 128 * 4).map_err(err)?;
            let scratch = AttentionScratch::new(&ctx, t_rows, 24, 128, 32).map_err(err)?;
            let kernels =
                attention(&ctx, &q, &cache_k, &cache_v, &out, &shape, pos0, t_rows, &scratch, None).map_err(err)?;
            let t = timer.seconds_per_call(&ctx, &kernels).map_err(err)?;
            let keys = (pos0 + t_rows) as f64;
            let kv_bytes = 2.0 * keys * 8.0 * 128.0 * 2.0;
            say(format!("{:<32} {:>8.3}ms {:>12.1}", label, t * 1e3, kv_bytes / t / 1e9));
        }

        // One Gated DeltaNet layer's mixer (conv, recurrence, gated norm; no projections) at
        // Qwen3.5-9B's sizes, continuing from a carried state (pos0 > 0), in both forms.
        let dn = DeltaNetShape { nk: 16, nv: 32, dk: 128, dv: 128, conv_k: 4, tiled: false };
        say(format!("\n{:<40} {:>10} {:>12}", "delta_net (nk 16, nv 32, dk = dv = 128)", "time", "per token"));
        let state = DeltaState::new(&ctx, "bench.dn", &dn).map_err(err)?;
        let f32s = |label: &str, n: u32| ctx.storage(label, n as u64 * 4).map_err(err);
        let (conv, a_log, dt_bias, norm) =
            (f32s("conv", dn.conv_dim() * 4)?, f32s("a", 32)?, f32s("dt", 32)?, f32s("n", 128)?);
        let w = DeltaWeights { conv: &conv, a_log: &a_log, dt_bias: &dt_bias, norm: &norm, eps: 1e-6 };
        for &(t_rows, form) in &[
            (1u32, Form::Tokens),
            (8, Form::Tokens),
            (8, Form::Chunked),
            (16, Form::Tokens),
            (16, Form::Chunked),
            (128, Form::Tokens),
            (128, Form::Chunked),
        ] {
            let proj = f32s("bench.dn.proj", t_rows * dn.in_width())?;
            let c = f32s("bench.dn.c", t_rows * dn.conv_dim())?;
            let out = f32s("bench.dn.out", t_rows * dn.value_dim())?;
            let scratch = ctx.storage("bench.dn.scratch", dn.scratch_bytes(t_rows)).map_err(err)?;
            let kernels =
                delta_net_form(&ctx, &dn, &proj, &w, &state, &c, &out, &scratch, t_rows, 128, form).map_err(err)?;
            let t = timer.seconds_per_call(&ctx, &kernels).map_err(err)?;
            let label = format!("{t_rows} rows, {form:?} ({} dispatches)", kernels.len());
            say(format!("{:<40} {:>8.3}ms {:>10.3}ms", label, t * 1e3, t * 1e3 / t_rows as f64));
            for k in kernels.chunks(1) {
                let t = timer.seconds_per_call(&ctx, k).map_err(err)?;
                say(format!("  {:<38} {:>8.3}ms", k[0].key().entry, t * 1e3));
            }
        }
        Ok(())
    }
}
