//! The native CLI over the same kernels the browser runs:
//! `webgpu-llm convert | run | bench` (see `webgpu-llm --help`).

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = cli::main(args) {
        eprintln!("webgpu-llm: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use webgpu_llm::chat::Message;
    use webgpu_llm::engine::{open_gguf, open_package, Engine, Event, Finish, GenerateOptions, OpenOptions};
    use webgpu_llm::guide::Constraint;
    use webgpu_llm::loader::convert::{convert, ConvertOptions};
    use webgpu_llm::loader::gguf::gguf_to_package;
    use webgpu_llm::loader::manifest::Quant;
    use webgpu_llm::ops::attention::KvDtype;
    use webgpu_llm::sampling::SamplingParams;
    use webgpu_llm::{Context, ContextOptions};

    type Error = Box<dyn std::error::Error>;

    const HELP: &str = "\
webgpu-llm — run LLMs on WebGPU (native: Vulkan/Metal/DX12)

USAGE
  webgpu-llm convert --from <HF dir | model.gguf> --out <dir> [--quant q4|q8|f16] [--shard-mb 32]
  webgpu-llm run --model <dir | model.gguf> (--prompt TEXT | --chat TEXT) [options]
  webgpu-llm bench --model <dir | model.gguf> [--prompt-tokens 128] [--gen-tokens 64] [--context N]
                   [--json] [run's sampling and --json-schema/--regex/--grammar options]
  webgpu-llm embed --model <dir | model.gguf> --text T [--text T …] [--pooling cls|mean|last] [--no-normalize]
                   [--dimensions N] [--truncate] [--max-rows 4096] [--json]
  webgpu-llm embed --model <dir> --bench [--bench-tokens 128] [--json]

A GGUF keeps its own quantization (--quant is ignored for it).

RUN OPTIONS
  --system TEXT        system message for --chat
  --max-tokens N       tokens to generate (default 128)
  --temperature T      0 = greedy (default 0)
  --top-k K  --top-p P  --min-p P
  --repeat-penalty R  --presence-penalty P  --frequency-penalty P
  --logit-bias ID=B    add B to token ID's logit (repeatable; -100 all but bans it)
  --seed S             sampling seed (same seed, same tokens)
  --stop TEXT          stop string (repeatable)
  --json-schema FILE   the output is JSON valid under this JSON Schema (ends after the value)
  --regex PATTERN      the output matches this regex
  --grammar FILE       the output matches this grammar (llguidance's Lark syntax)
  --tools FILE         an OpenAI `tools` array (JSON) for --chat: the template shows them, calls are parsed
  --tool-choice C      auto (default) | required | none | a function's name: required and a name
                       constrain the reply to valid calls, auto constrains a call once the model opens one
  --template-arg K=V   a chat template variable, V as JSON else text (repeatable), e.g.
                       enable_thinking=false (Qwen3, Qwen3.5: no thinking block)
  --context N          KV cache length (default: the model's, capped at 4096)
  --kv f16|f32         KV cache precision (default f16)
  --json               one JSON object per line: prompt ids, each token, a summary

EMBED
  Sentence embeddings from a converted package of a BERT-family encoder (all-MiniLM-L6-v2, bge, e5)
  or a decoder (Qwen3-Embedding; any supported causal model with --pooling mean), or a BERT GGUF
  from llama.cpp's converter: pooling, normalisation and length as the checkpoint's
  sentence-transformers files (a GGUF: bert.pooling_type) say, overridable. An encoder takes many
  inputs per GPU pass, a decoder one; --max-rows bounds the token rows of a pass (and an input).
  --truncate cuts inputs longer than max_seq_length at the end (else they are an error). --json
  prints {dims, pooling, ids, embeddings} as one JSON object (ids: each input's tokens as fed to the model).
  --bench times inputs of --bench-tokens tokens in batches of 1 and 32: texts/s and tokens/s (median
  of 5 after a warm-up), GPU passes, peak GPU bytes.

BENCH
  Prints load, prefill and decode speed and, per decoded token in steady state, dispatches,
  submits, GPU objects created, bytes read back and CPU encode time, with the bandwidth of a
  plain copy kernel and the roofline ratio; --json prints them as one object (BENCHMARKS.md).
";

    struct Args(Vec<String>);

    impl Args {
        fn take(&mut self, name: &str) -> Result<Option<String>, Error> {
            match self.0.iter().position(|a| a == name) {
                None => Ok(None),
                Some(i) if i + 1 < self.0.len() => {
                    let v = self.0.remove(i + 1);
                    self.0.remove(i);
                    Ok(Some(v))
                }
                Some(_) => Err(format!("{name} needs a value").into()),
            }
        }
        fn take_all(&mut self, name: &str) -> Result<Vec<String>, Error> {
            let mut out = Vec::new();
            while let Some(v) = self.take(name)? {
                out.push(v);
            }
            Ok(out)
        }
        fn flag(&mut self, name: &str) -> bool {
            match self.0.iter().position(|a| a == name) {
                Some(i) => {
                    self.0.remove(i);
                    true
                }
                None => false,
            }
        }
        fn parse<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, Error> {
            match self.take(name)? {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| format!("{name}: cannot parse `{v}`").into()),
            }
        }
        fn finish(self) -> Result<(), Error> {
            match self.0.first() {
                Some(a) => Err(format!("unexpected argument `{a}` (see --help)").into()),
                None => Ok(()),
            }
        }
    }

    pub fn main(args: Vec<String>) -> Result<(), Error> {
        let mut args = Args(args);
        if args.0.is_empty() || args.flag("--help") || args.flag("-h") {
            print!("{HELP}");
            return Ok(());
        }
        let cmd = args.0.remove(0);
        match cmd.as_str() {
            "convert" => cmd_convert(args),
            "run" => cmd_run(args),
            "bench" => cmd_bench(args),
            "embed" => cmd_embed(args),
            other => Err(format!("unknown command `{other}` (convert, run, bench, embed; see --help)").into()),
        }
    }

    fn cmd_convert(mut args: Args) -> Result<(), Error> {
        let from: PathBuf = args.take("--from")?.ok_or("convert needs --from <HF dir>")?.into();
        let out: PathBuf = args.take("--out")?.ok_or("convert needs --out <dir>")?.into();
        let quant = match args.take("--quant")?.as_deref() {
            None | Some("q4") => Quant::Q4,
            Some("q8") => Quant::Q8,
            Some("f16") => Quant::F16,
            Some(q) => return Err(format!("--quant `{q}`: use q4, q8 or f16").into()),
        };
        let shard_mb = args.parse("--shard-mb")?.unwrap_or(32);
        args.finish()?;
        if is_gguf(&from) {
            // A GGUF keeps its own quantization: repacked into our layout, values unchanged.
            let manifest = gguf_to_package(&from, &out, shard_mb)?;
            println!(
                "{}: {} tensors in {} shards, {} bytes",
                out.display(),
                manifest.tensors.len(),
                manifest.shards.len(),
                manifest.total_bytes()
            );
            return Ok(());
        }
        let report = convert(&from, &out, ConvertOptions { quant, shard_mb })?;
        println!("{report}");
        Ok(())
    }

    struct Loaded {
        ctx: Context,
        engine: Engine,
        load_seconds: f64,
    }

    fn load(dir: &Path, context: Option<u32>, kv_dtype: KvDtype, max_batch: u32) -> Result<Loaded, Error> {
        check_model_path(dir)?;
        let start = Instant::now();
        let ctx = Context::new_blocking(ContextOptions::default())?;
        let opts = OpenOptions { context, kv_dtype, max_batch };
        let engine = if is_gguf(dir) { open_gguf(&ctx, dir, opts)? } else { open_package(&ctx, dir, opts)? };
        Ok(Loaded { ctx, engine, load_seconds: start.elapsed().as_secs_f64() })
    }

    /// What `--model` names must exist and be a .gguf file or a package directory: said before any
    /// GPU work, in those words (not as a missing `manifest.json` under a path that is not there).
    fn check_model_path(path: &Path) -> Result<(), Error> {
        let what = "give a .gguf file or a package directory (with manifest.json)";
        let problem = if !path.exists() {
            "no such file or directory"
        } else if path.is_file() && !is_gguf(path) {
            "a file without the .gguf extension"
        } else if path.is_dir() && !path.join("manifest.json").is_file() {
            "a directory without manifest.json"
        } else {
            return Ok(());
        };
        Err(format!("--model {}: {problem}; {what}", path.display()).into())
    }

    /// A GGUF file (or one part of a split GGUF) rather than a package directory.
    fn is_gguf(path: &Path) -> bool {
        path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    }

    fn kv_arg(args: &mut Args) -> Result<KvDtype, Error> {
        match args.take("--kv")?.as_deref() {
            None | Some("f16") => Ok(KvDtype::F16),
            Some("f32") => Ok(KvDtype::F32),
            Some(k) => Err(format!("--kv `{k}`: use f16 or f32").into()),
        }
    }

    fn json_str(s: &str) -> String {
        serde_json::Value::String(s.to_string()).to_string()
    }

    /// `run`'s and `bench`'s sampling options.
    /// `--json-schema FILE | --regex PATTERN | --grammar FILE`, at most one.
    fn constraint_args(args: &mut Args) -> Result<Option<Constraint>, Error> {
        let read = |flag: &str, path: String| {
            std::fs::read_to_string(&path).map_err(|e| Error::from(format!("{flag} {path}: {e}")))
        };
        let mut found = Vec::new();
        if let Some(path) = args.take("--json-schema")? {
            let text = read("--json-schema", path.clone())?;
            let schema = serde_json::from_str(&text).map_err(|e| format!("--json-schema {path}: not JSON: {e}"))?;
            found.push(Constraint::JsonSchema(schema));
        }
        if let Some(rx) = args.take("--regex")? {
            found.push(Constraint::Regex(rx));
        }
        if let Some(path) = args.take("--grammar")? {
            found.push(Constraint::Grammar(read("--grammar", path)?));
        }
        if found.len() > 1 {
            return Err("give at most one of --json-schema, --regex and --grammar".into());
        }
        Ok(found.pop())
    }

    fn sampling_args(args: &mut Args) -> Result<SamplingParams, Error> {
        let sampling = SamplingParams {
            temperature: args.parse("--temperature")?.unwrap_or(0.0),
            top_k: args.parse("--top-k")?.unwrap_or(0),
            top_p: args.parse("--top-p")?.unwrap_or(1.0),
            min_p: args.parse("--min-p")?.unwrap_or(0.0),
            repetition_penalty: args.parse("--repeat-penalty")?.unwrap_or(1.0),
            presence_penalty: args.parse("--presence-penalty")?.unwrap_or(0.0),
            frequency_penalty: args.parse("--frequency-penalty")?.unwrap_or(0.0),
            seed: args.parse("--seed")?,
            logit_bias: args
                .take_all("--logit-bias")?
                .iter()
                .map(|v| {
                    let bad = || format!("--logit-bias `{v}`: use TOKEN_ID=BIAS, e.g. 28=-100");
                    let (id, bias) = v.split_once('=').ok_or_else(bad)?;
                    Ok((id.trim().parse().map_err(|_| bad())?, bias.trim().parse().map_err(|_| bad())?))
                })
                .collect::<Result<_, String>>()?,
            ..SamplingParams::default()
        };
        sampling.validate()?;
        Ok(sampling)
    }

    /// Seconds since the first call: the engine's clock for encode timings.
    fn now() -> f64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    }

    fn cmd_run(mut args: Args) -> Result<(), Error> {
        let dir: PathBuf = args.take("--model")?.ok_or("run needs --model <dir>")?.into();
        let prompt = args.take("--prompt")?;
        let chat = args.take("--chat")?;
        let system = args.take("--system")?;
        let json = args.flag("--json");
        let sampling = sampling_args(&mut args)?;
        let mut opts = GenerateOptions {
            max_tokens: args.parse("--max-tokens")?.unwrap_or(128),
            sampling,
            stop: args.take_all("--stop")?,
            constraint: constraint_args(&mut args)?,
            lazy: None,
        };
        let tools = match args.take("--tools")? {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| format!("--tools {path}: {e}"))?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("--tools {path}: not JSON: {e}"))?;
                Some(v)
            }
            None => None,
        };
        let tool_choice = args.take("--tool-choice")?;
        // --template-arg KEY=VALUE: a chat template variable (VALUE as JSON, else a string), e.g.
        // enable_thinking=false
        let mut kwargs = serde_json::Map::new();
        for kv in args.take_all("--template-arg")? {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("--template-arg {kv}: expected KEY=VALUE"))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
            kwargs.insert(k.to_string(), value);
        }
        let context = args.parse("--context")?;
        let kv = kv_arg(&mut args)?;
        args.finish()?;
        if !kwargs.is_empty() && chat.is_none() {
            return Err("--template-arg needs --chat TEXT".into());
        }
        if tools.is_none() && tool_choice.is_some() {
            return Err("--tool-choice needs --tools FILE".into());
        }
        if tools.is_some() && chat.is_none() {
            return Err("--tools needs --chat TEXT (tools go through the chat template)".into());
        }
        // auto | required | none, or a function's name.
        let choice = tool_choice.map(|c| match c.as_str() {
            "auto" | "required" | "none" => serde_json::Value::String(c),
            name => serde_json::json!({"type": "function", "function": {"name": name}}),
        });

        let Loaded { ctx, mut engine, load_seconds } = load(&dir, context, kv, 128)?;
        engine.model.clock = now;
        let request = match &tools {
            Some(t) => Some(engine.tool_request(t, choice.as_ref())?),
            None => None,
        };
        if let Some(r) = &request {
            r.apply(&mut opts)?;
        }
        let ids = match (prompt, chat) {
            (Some(p), None) => engine.encode(&p, true)?,
            (None, Some(c)) => {
                let mut messages = Vec::new();
                if let Some(s) = system {
                    messages.push(Message::system(s));
                }
                messages.push(Message::user(c));
                let tools = request.as_ref().and_then(|r| r.template_tools());
                engine.encode_chat_with(&messages, tools.as_deref(), &kwargs)?
            }
            _ => return Err("run needs exactly one of --prompt TEXT or --chat TEXT".into()),
        };
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{{\"prompt_ids\":{}}}", serde_json::to_string(&ids)?)?;
        }
        let start = Instant::now();
        let mut prefill_seconds = 0.0;
        let mut io_error = None;
        let summary = pollster::block_on(engine.generate(&ctx, &ids, &opts, &mut |ev| {
            let r = match ev {
                Event::Prefilled { .. } => {
                    prefill_seconds = start.elapsed().as_secs_f64();
                    Ok(())
                }
                Event::Token { id, text } if json => writeln!(out, "{{\"id\":{id},\"text\":{}}}", json_str(text)),
                Event::Token { text, .. } => write!(out, "{text}").and_then(|_| out.flush()),
                Event::Triggered => Ok(()),
            };
            match r {
                Ok(()) => true,
                Err(e) => {
                    io_error = Some(e); // e.g. a closed pipe: stop generating
                    false
                }
            }
        }))?;
        if let Some(e) = io_error {
            return Err(e.into());
        }
        let total = start.elapsed().as_secs_f64();
        let decoded = summary.generated.len().saturating_sub(1);
        let prefill_tps = (summary.prompt_tokens - summary.reused_tokens) as f64 / prefill_seconds.max(1e-9);
        let decode_tps = decoded as f64 / (total - prefill_seconds).max(1e-9);
        let parsed = request.as_ref().map(|r| r.parse(&summary.text));
        let called = parsed.as_ref().is_some_and(|p| !p.calls.is_empty());
        let finish = match summary.finish {
            Finish::Stop if called => "tool_calls",
            Finish::Stop => "stop",
            Finish::StopString => "stop_string",
            Finish::Length => "length",
            Finish::Aborted => "aborted",
        };
        if json {
            // With tools: the reply's text outside calls and the calls, in OpenAI's shape.
            let tool_fields = match &parsed {
                Some(p) => {
                    format!(",\"content\":{},\"tool_calls\":{}", json_str(&p.content), serde_json::to_string(&p.calls)?)
                }
                None => String::new(),
            };
            writeln!(
                out,
                "{{\"prompt_tokens\":{},\"generated_tokens\":{},\"finish_reason\":\"{finish}\"{tool_fields},\"load_s\":{load_seconds:.3},\"prefill_tok_s\":{prefill_tps:.2},\"decode_tok_s\":{decode_tps:.2}}}",
                summary.prompt_tokens,
                summary.generated.len()
            )?;
        } else {
            writeln!(out)?;
            for c in parsed.iter().flat_map(|p| &p.calls) {
                writeln!(out, "[tool call {}: {}({})]", c.id, c.function.name, c.function.arguments)?;
            }
            out.flush()?;
            eprintln!(
                "[{} prompt tokens, prefill {prefill_tps:.1} tok/s; {} generated, decode {decode_tps:.1} tok/s; finish: {finish}; load {load_seconds:.1} s]",
                summary.prompt_tokens,
                summary.generated.len()
            );
        }
        Ok(())
    }

    fn cmd_embed(mut args: Args) -> Result<(), Error> {
        use webgpu_llm::embed::{open_embedder, EmbedOptions, Pooling, DEFAULT_MAX_ROWS};
        let dir: PathBuf = args.take("--model")?.ok_or("embed needs --model <dir | model.gguf>")?.into();
        let texts = args.take_all("--text")?;
        if texts.is_empty() && !args.0.iter().any(|a| a == "--bench") {
            return Err("embed needs at least one --text (or --bench)".into());
        }
        let pooling = match args.take("--pooling")?.as_deref() {
            None => None,
            Some("cls") => Some(Pooling::Cls),
            Some("mean") => Some(Pooling::Mean),
            Some("last") => Some(Pooling::Last),
            Some(other) => return Err(format!("--pooling: `{other}` is not cls, mean or last").into()),
        };
        let normalize = if args.flag("--no-normalize") { Some(false) } else { None };
        let dimensions = args.parse("--dimensions")?;
        let truncate = args.flag("--truncate");
        let max_rows = args.parse("--max-rows")?.unwrap_or(DEFAULT_MAX_ROWS);
        let json = args.flag("--json");
        let bench = args.flag("--bench");
        let bench_tokens: usize = args.parse("--bench-tokens")?.unwrap_or(128);
        args.finish()?;
        if bench {
            return embed_bench(&dir, max_rows, bench_tokens, json);
        }
        check_model_path(&dir)?;
        let ctx = Context::new_blocking(ContextOptions::default())?;
        let embedder = open_embedder(&ctx, &dir, max_rows)?;
        let opts = EmbedOptions { dimensions, truncate, pooling, normalize };
        let out = pollster::block_on(embedder.embed(&ctx, &texts, &opts))?;
        if json {
            let doc = serde_json::json!({
                "dims": out.dims, "pooling": out.pooling.name(), "ids": out.ids, "embeddings": out.embeddings,
            });
            println!("{doc}");
            return Ok(());
        }
        for (i, v) in out.embeddings.iter().enumerate() {
            let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.5}")).collect();
            println!("{i}: {} tokens, [{}, …] ({} dims)", out.ids[i].len(), head.join(", "), out.dims);
        }
        let norm = if out.normalize { "normalised" } else { "not normalised" };
        eprintln!("{} pooling, {norm}; {} tokens in {} GPU pass(es)", out.pooling.name(), out.tokens, out.passes);
        Ok(())
    }

    /// Embedding throughput on inputs of exactly `tokens` tokens ("the" repeated: one token each in
    /// WordPiece and BPE vocabularies), batches of 1 and 32.
    fn embed_bench(dir: &Path, max_rows: u32, tokens: usize, json: bool) -> Result<(), Error> {
        use webgpu_llm::embed::{open_embedder, EmbedOptions};
        check_model_path(dir)?;
        let ctx = Context::new_blocking(ContextOptions::default())?;
        let embedder = open_embedder(&ctx, dir, max_rows)?;
        let mut words = 1;
        let text = loop {
            let t = vec!["the"; words].join(" ");
            let n = embedder.tokenize(std::slice::from_ref(&t), false)?[0].len();
            if n >= tokens || words > 4 * tokens {
                if n != tokens {
                    return Err(format!("cannot make an input of exactly {tokens} tokens (got {n})").into());
                }
                break t;
            }
            words += 1;
        };
        let mut rows = Vec::new();
        for batch in [1usize, 32] {
            let inputs = vec![text.clone(); batch];
            let run = || -> Result<(f64, usize), Error> {
                let start = Instant::now();
                let out = pollster::block_on(embedder.embed(&ctx, &inputs, &EmbedOptions::default()))?;
                Ok((start.elapsed().as_secs_f64(), out.passes))
            };
            run()?; // warm-up: pipelines
            let mut times = Vec::new();
            let mut passes = 0;
            for _ in 0..5 {
                let (t, p) = run()?;
                times.push(t);
                passes = p;
            }
            times.sort_by(f64::total_cmp);
            let median = times[2];
            rows.push(serde_json::json!({
                "batch": batch, "tokens_per_input": tokens, "seconds": median, "passes": passes,
                "texts_per_s": batch as f64 / median, "tokens_per_s": (batch * tokens) as f64 / median,
            }));
        }
        let peak = ctx.counters().peak_buffer_bytes;
        if json {
            println!("{}", serde_json::json!({ "adapter": ctx.describe(), "peak_gpu_bytes": peak, "runs": rows }));
        } else {
            for r in &rows {
                println!(
                    "batch {:>2} × {} tokens: {:.3} s, {:.1} texts/s, {:.0} tokens/s ({} pass(es))",
                    r["batch"],
                    r["tokens_per_input"],
                    r["seconds"].as_f64().unwrap_or(0.0),
                    r["texts_per_s"].as_f64().unwrap_or(0.0),
                    r["tokens_per_s"].as_f64().unwrap_or(0.0),
                    r["passes"]
                );
            }
            println!("peak GPU bytes: {peak}");
        }
        Ok(())
    }

    fn cmd_bench(mut args: Args) -> Result<(), Error> {
        let dir: PathBuf = args.take("--model")?.ok_or("bench needs --model <dir>")?.into();
        let prompt_tokens: u32 = args.parse("--prompt-tokens")?.unwrap_or(128);
        let gen_tokens: u32 = args.parse("--gen-tokens")?.unwrap_or(64);
        let context = args.parse::<u32>("--context")?.unwrap_or(prompt_tokens + gen_tokens + 1);
        let kv = kv_arg(&mut args)?;
        let json = args.flag("--json");
        let sampling = sampling_args(&mut args)?;
        let constraint = constraint_args(&mut args)?;
        args.finish()?;
        if prompt_tokens == 0 || gen_tokens < 4 {
            return Err(
                "bench needs --prompt-tokens ≥ 1 and --gen-tokens ≥ 4 (steady state is measured after 2)".into()
            );
        }
        let file_bytes = path_bytes(&dir)?;
        let Loaded { ctx, mut engine, load_seconds } = load(&dir, Some(context), kv, prompt_tokens.clamp(1, 512))?;
        engine.model.clock = now;
        // Fixed pseudo-random prompt ids, away from special tokens at the ends of the vocabulary.
        let vocab = engine.model.config.vocab;
        let ids: Vec<u32> = (0..prompt_tokens).map(|i| 1000.min(vocab / 2) + (i * 7919) % (vocab / 4).max(1)).collect();
        let opts = GenerateOptions { max_tokens: gen_tokens, sampling, constraint, ..GenerateOptions::default() };
        if opts.constraint.is_some() {
            engine.guidance()?; // built with the stop ids (a grammar's end allows them), not timed
        }
        engine.stop_ids.clear(); // generate exactly gen_tokens (unless a constraint ends first)
        let start = Instant::now();
        let mut ttft = 0.0;
        let summary = pollster::block_on(engine.generate(&ctx, &ids, &opts, &mut |ev| {
            if let Event::Prefilled { .. } = ev {
                ttft = start.elapsed().as_secs_f64();
            }
            true
        }))?;
        let total = start.elapsed().as_secs_f64();
        let peak_gpu_bytes = ctx.counters().peak_buffer_bytes;
        let decoded = summary.generated.len().saturating_sub(1) as f64;
        let decode_tok_s = decoded / (total - ttft).max(1e-9);
        let prefill_tok_s = prompt_tokens as f64 / ttft.max(1e-9);
        let w = &engine.model.weights;
        let (weight_bytes, per_token) = (w.bytes(), engine.model.bytes_per_token());
        let per = summary.steady.ok_or("no steady state: too few tokens")?.per_token();
        let copy_gb_s = copy_bandwidth(&ctx)?;
        let roofline = decode_tok_s * per_token as f64 / 1e9 / copy_gb_s;
        let mut report = serde_json::json!({
            "adapter": ctx.describe(),
            "model": dir.display().to_string(),
            "weight_bytes": weight_bytes,
            "weight_bytes_per_token": per_token,
            "load_s": load_seconds,
            "load_mb_s": file_bytes as f64 / 1e6 / load_seconds.max(1e-9),
            "ttft_ms": ttft * 1e3,
            "prompt_tokens": prompt_tokens,
            "prefill_tok_s": prefill_tok_s,
            "gen_tokens": summary.generated.len(),
            "decode_tok_s": decode_tok_s,
            "temperature": opts.sampling.temperature,
            "peak_gpu_bytes": peak_gpu_bytes,
            "copy_gb_s": copy_gb_s,
            "roofline": roofline,
            "kernels": ctx.variants(),
        });
        // dispatches, submits, buffers_created, … readback_bytes, encode_us: per decoded token
        if let (Some(r), serde_json::Value::Object(p)) = (report.as_object_mut(), serde_json::to_value(per)?) {
            r.extend(p);
        }
        if let Some(g) = summary.guide {
            report["constraint"] = serde_json::json!({
                "compile_ms": g.compile_seconds * 1e3,
                "masks": g.masks,
                "mask_us_mean": 1e6 * g.mask_seconds / g.masks.max(1) as f64,
                "mask_us_max": 1e6 * g.mask_max_seconds,
            });
            if summary.generated.len() < gen_tokens as usize {
                eprintln!(
                    "bench: the constraint ended after {} of {gen_tokens} tokens (give one that allows more)",
                    summary.generated.len()
                );
            }
        }
        if json {
            println!("{report}");
            return Ok(());
        }
        println!("device: {}", ctx.describe());
        println!("load: {load_seconds:.2} s ({:.1} MB/s)", report["load_mb_s"].as_f64().unwrap_or(0.0));
        println!("prefill: {prompt_tokens} tokens in {ttft:.3} s = {prefill_tok_s:.1} tok/s");
        println!("decode: {decoded} tokens in {:.3} s = {decode_tok_s:.1} tok/s", total - ttft);
        println!(
            "per decoded token: {} dispatches, {} submits, {} buffers, {} bind groups, {} B read back, {:.0} µs encoding",
            per.dispatches, per.submits, per.buffers_created, per.bind_groups_created, per.readback_bytes, per.encode_us
        );
        if let Some(c) = report.get("constraint") {
            println!(
                "constraint: {} masks, {:.0} µs mean, {:.0} µs largest",
                c["masks"],
                c["mask_us_mean"].as_f64().unwrap_or(0.0),
                c["mask_us_max"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "weights: {:.1} MB, {:.1} MB read per token; copy {copy_gb_s:.1} GB/s; roofline {:.1} %",
            weight_bytes as f64 / 1e6,
            per_token as f64 / 1e6,
            100.0 * roofline
        );
        Ok(())
    }

    /// Bytes of a file, or of every file in a package directory.
    fn path_bytes(path: &Path) -> Result<u64, Error> {
        if path.is_file() {
            return Ok(std::fs::metadata(path)?.len());
        }
        let mut total = 0;
        for e in std::fs::read_dir(path)? {
            total += e?.metadata()?.len();
        }
        Ok(total)
    }

    /// GB/s (read + write) of a plain 64 MiB vec4 copy kernel: the yardstick decode is compared to.
    fn copy_bandwidth(ctx: &Context) -> Result<f64, Error> {
        let elems: u32 = 16 << 20;
        let src = ctx.storage("bench.copy.src", elems as u64 * 4)?;
        let dst = ctx.storage("bench.copy.dst", elems as u64 * 4)?;
        let k = webgpu_llm::ops::copy::copy(ctx, &src, &dst, elems)?;
        ctx.run(&[&k]);
        ctx.wait()?;
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            ctx.run(&[&k, &k, &k, &k]);
            ctx.wait()?;
            best = best.min(t.elapsed().as_secs_f64() / 4.0);
        }
        Ok(2.0 * elems as f64 * 4.0 / best / 1e9)
    }
}
