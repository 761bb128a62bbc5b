//! Time each kernel of one forward step of a GGUF model (wall clock per kernel, device idle
//! between): `cargo run --release --example profile_forward -- MODEL.gguf [tokens]`.
use std::collections::BTreeMap;
use std::time::Instant;

use webgpu_llm::engine::{open_gguf, OpenOptions};
use webgpu_llm::model::{forward, Choose, Input, Logits};
use webgpu_llm::{Context, ContextOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ctx = Context::new_blocking(ContextOptions::default()).unwrap();
    eprintln!("{}", ctx.describe());
    let engine =
        open_gguf(&ctx, std::path::Path::new(&args[1]), OpenOptions { context: Some(256), ..Default::default() })
            .unwrap();
    let m = &engine.model;
    for &t in &[args.get(2).map_or(42, |s| s.parse().unwrap()), 1] {
        let tokens: Vec<u32> = (0..t).map(|i| 100 + i).collect();
        let pos0 = if t == 1 { 50 } else { 0 };
        m.state.write_ids(&ctx, &tokens, m.config.vocab).unwrap();
        m.state.set_pos(&ctx, pos0);
        let kernels =
            forward(&ctx, &m.config, &m.weights, &m.state, Input::Ids(t), pos0, Logits::Last, Choose::Argmax).unwrap();
        ctx.run(&kernels.iter().collect::<Vec<_>>()); // warm up pipelines
        ctx.wait().unwrap();
        // The whole step as one submission (what decode does), best of 5.
        let mut whole = f64::MAX;
        for _ in 0..5 {
            let s = Instant::now();
            ctx.run(&kernels.iter().collect::<Vec<_>>());
            ctx.wait().unwrap();
            whole = whole.min(s.elapsed().as_secs_f64() * 1e3);
        }
        println!("t = {t}: one submission {whole:.1} ms");
        let mut by: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        let t0 = Instant::now();
        for k in &kernels {
            let s = Instant::now();
            ctx.run(&[k]);
            ctx.wait().unwrap();
            let e = by.entry(k.label.split('.').next().unwrap_or("").to_string()).or_default();
            e.0 += s.elapsed().as_secs_f64() * 1e3;
            e.1 += 1;
        }
        let total = t0.elapsed().as_secs_f64() * 1e3;
        println!("t = {t}: {total:.0} ms total, {} kernels", kernels.len());
        let mut v: Vec<_> = by.into_iter().collect();
        v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        for (name, (ms, n)) in v {
            println!("  {name:30} {ms:8.1} ms  ({n} kernels)");
        }
    }
}
