//! Decoder embedders (Qwen3-Embedding's layout) on the tiny random Qwen3 fixture (tests/fixtures/qwen3,
//! checked against transformers by tests/model_hf.rs), written as Qwen3-Embedding saves a checkpoint:
//! no `model.` prefix, no lm_head, sentence-transformers files asking for last-token pooling and
//! normalisation; an f16 package (the fixture's weights are f16 values, so exactly them). Without an lm_head there are no logits to compare, but pooling is linear and the
//! embedding is tied, so the reference still holds: the last-token vector h (not normalised) gives
//! h·E[id] = transformers' logit of `id` at the prompt's last position, and the mean of the hidden rows
//! gives the mean of the prompt's logit rows, for the 40 top and 128 probe ids of each row (float32
//! transformers). 1e-2 absolute: the embedder keeps K and V in f16 (half the memory of a pass over
//! thousands of tokens), which moves these logits (|x| ≤ 13) by up to 3e-3 here; with an f32 cache
//! they agree within tests/model_hf.rs's 1e-3. A wrong row, pooling or norm is off by whole units.
//! Also: the package's settings (last, normalised), a batch equals one input at a time, the
//! tokenizer's post-processor (Qwen3-Embedding's appends <|endoftext|>) is applied, typed errors.
//! And against sentence-transformers itself (tests/fixtures/qwen3/embedding.json from
//! tests/reference/make_decoder_embed_fixture.py): ids equal, cosine ≥ 0.9999 (measured 1 − 9e-8).

mod common;
use common::fixture::{json_floats as floats, json_ids, Fixture};
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use webgpu_llm::embed::{decoder_state_options, embedder_state_bytes, open_embedder, EmbedOptions, Embedder, Pooling};
use webgpu_llm::engine::EngineError;
use webgpu_llm::loader::convert::{convert, ConvertOptions};
use webgpu_llm::loader::manifest::Quant;

const ATOL: f64 = 1e-2;

/// The fixture as a Qwen3-Embedding-style checkpoint, converted to an f16 package; `end_token`: a
/// tokenizer.json whose post-processor appends <|endoftext|>, as Qwen3-Embedding's does.
fn package(name: &str, end_token: bool) -> PathBuf {
    let f = Fixture::load("qwen3");
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let hf = root.join("hf");
    let _ = std::fs::remove_dir_all(&root);
    f.write_embedding_dir(&hf, 64);
    if end_token {
        let path = hf.join("tokenizer.json");
        let mut tok: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        tok["post_processor"] = json!({
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}}],
            "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [151643], "tokens": ["<|endoftext|>"]}}
        });
        std::fs::write(&path, serde_json::to_string(&tok).unwrap()).unwrap();
    }
    let out = root.join("pkg");
    convert(&hf, &out, ConvertOptions { quant: Quant::F16, shard_mb: 32 }).unwrap();
    out
}

fn open(dir: &Path) -> Embedder {
    open_embedder(ctx(), dir, 256).unwrap()
}

/// `h`·E[id] for the row's top and probe ids, against transformers' logits (`want` per id).
fn check_logits(what: &str, h: &[f32], embed: &[half::f16], hidden: usize, ids: &[u32], want: &[f64]) {
    let got: Vec<f32> = ids
        .iter()
        .map(|&id| {
            let row = &embed[id as usize * hidden..(id as usize + 1) * hidden];
            h.iter().zip(row).map(|(a, b)| *a as f64 * b.to_f64()).sum::<f64>() as f32
        })
        .collect();
    assert_close(what, &got, want, ATOL, 0.0);
}

#[test]
fn qwen3_embedding_layout_pools_transformers_hidden_states() {
    let f = Fixture::load("qwen3");
    let hidden = f.config["hidden_size"].as_u64().unwrap() as usize;
    let weights = f.weights();
    let embed = &weights.iter().find(|(n, _, _)| n == "model.embed_tokens.weight").unwrap().2;
    let probe = json_ids(&f.expected["probe_ids"]);
    let e = open(&package("qwen3-embedding", false));
    assert_eq!((e.settings.pooling, e.settings.normalize, e.max_tokens()), (Pooling::Last, true, 64));
    assert_eq!((e.shape.architecture.as_str(), e.shape.hidden), ("qwen3", hidden as u32));

    let prompts: Vec<&Value> =
        f.expected["prompts"].as_array().unwrap().iter().filter(|p| p["messages"].is_null()).collect();
    let texts: Vec<String> = prompts.iter().map(|p| p["text"].as_str().unwrap().to_string()).collect();
    let raw = |pooling| EmbedOptions { pooling: Some(pooling), normalize: Some(false), ..Default::default() };
    let last = pollster::block_on(e.embed(ctx(), &texts, &raw(Pooling::Last))).unwrap();
    let mean = pollster::block_on(e.embed(ctx(), &texts, &raw(Pooling::Mean))).unwrap();
    assert_eq!(last.passes, texts.len(), "one input per pass");
    for (i, p) in prompts.iter().enumerate() {
        let ids = json_ids(&p["ids"]);
        assert_eq!(last.ids[i], ids, "{}: token ids", p["name"]);
        let n = ids.len();
        let row = |r: usize| -> (Vec<u32>, Vec<f64>) {
            let mut sel = json_ids(&p["top_ids"][r]);
            sel.extend(&probe);
            let mut want = floats(&p["top_logits"][r]);
            want.extend(floats(&p["probe_logits"][r]));
            (sel, want)
        };
        let (sel, want) = row(n - 1);
        check_logits(&format!("{} last", p["name"]), &last.embeddings[i], embed, hidden, &sel, &want);
        // mean pooling: the mean of the rows' logits (probe ids, which every row has)
        let mut want = vec![0.0; probe.len()];
        for r in 0..n {
            for (w, x) in want.iter_mut().zip(floats(&p["probe_logits"][r])) {
                *w += x / n as f64;
            }
        }
        check_logits(&format!("{} mean", p["name"]), &mean.embeddings[i], embed, hidden, &probe, &want);
    }

    // The package's own settings: last token, normalised, each input alone = in a request of several.
    let norm = pollster::block_on(e.embed(ctx(), &texts, &EmbedOptions::default())).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let len = last.embeddings[i].iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        for (a, b) in norm.embeddings[i].iter().zip(&last.embeddings[i]) {
            assert!((*a as f64 - *b as f64 / len).abs() < 1e-5, "normalised = last / |last|");
        }
        let one = pollster::block_on(e.embed(ctx(), std::slice::from_ref(text), &EmbedOptions::default())).unwrap();
        assert_eq!(one.embeddings[0], norm.embeddings[i], "{text:?}: alone vs in a request");
    }

    // Typed errors, and the embedder still works.
    let err = |inputs: &[&str]| {
        let v: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        pollster::block_on(e.embed(ctx(), &v, &EmbedOptions::default())).unwrap_err()
    };
    assert!(matches!(err(&[]), EngineError::EmptyInput { index: None }));
    assert!(matches!(err(&["a", ""]), EngineError::EmptyInput { index: Some(1) }));
    let long = "word ".repeat(100);
    assert!(matches!(err(&["ok", &long]), EngineError::InputTooLong { index: 1, max: 64, .. }));
    let cut =
        pollster::block_on(e.embed(ctx(), &[long], &EmbedOptions { truncate: true, ..Default::default() })).unwrap();
    assert_eq!(cut.ids[0].len(), 64);
    let again = pollster::block_on(e.embed(ctx(), &texts, &EmbedOptions::default())).unwrap();
    assert_eq!(again.embeddings, norm.embeddings);
}

/// Qwen3-Embedding's tokenizer appends <|endoftext|>: that token is fed and pooled (last), and a
/// truncated input keeps it.
#[test]
fn the_post_processors_end_token_is_fed_and_kept_when_cut() {
    let e = open(&package("qwen3-embedding-eot", true));
    let r = pollster::block_on(e.embed(ctx(), &["The capital of France is".to_string()], &EmbedOptions::default()))
        .unwrap();
    assert_eq!(*r.ids[0].last().unwrap(), 151643);
    assert_eq!(r.ids[0].len(), 6);
    let long = vec!["word ".repeat(100)];
    let cut =
        pollster::block_on(e.embed(ctx(), &long, &EmbedOptions { truncate: true, ..Default::default() })).unwrap();
    assert_eq!((cut.ids[0].len(), *cut.ids[0].last().unwrap()), (64, 151643));
}

/// Cosine ≥ 0.9999 and the same length within 1e-3 relative (the vectors not normalised).
fn check_vector(what: &str, got: &[f32], want: &[f64], worst: &mut f64) {
    let cos = cosine(got, want);
    *worst = worst.max(1.0 - cos);
    assert!(cos >= 0.9999, "{what}: cosine {cos}");
    let (ng, nw) =
        (got.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt(), want.iter().map(|y| y * y).sum::<f64>().sqrt());
    assert!((ng / nw - 1.0).abs() < 1e-3, "{what}: length {ng} vs {nw}");
}

/// Against sentence-transformers itself (tests/fixtures/qwen3/embedding.json, float32, from
/// tests/reference/make_decoder_embed_fixture.py on the same checkpoint, end token included): the
/// f16 package (exactly the fixture's f16 weights; K/V in f16) gives the same ids, and cosine ≥ 0.9999
/// for the model's own output (last token, normalised), the raw last-token state and mean pooling.
/// A batch with a much longer neighbour equals each input alone, bit for bit. A plain causal
/// package of the same weights (`model.` names, a tokenizer that appends nothing, no
/// sentence-transformers files) embeds by mean pooling, normalised: causal attention makes its rows
/// sentence-transformers' rows before the end token.
#[test]
fn qwen3_embedding_matches_sentence_transformers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3/embedding.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases = r["cases"].as_array().unwrap();
    let texts: Vec<String> = cases.iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
    let e = open(&package("qwen3-embedding-st", true));
    assert_eq!((e.settings.pooling, e.settings.normalize), (Pooling::Last, true));
    assert_eq!(e.max_tokens() as u64, r["max_seq_length"].as_u64().unwrap());
    assert_eq!(e.dims() as u64, r["dims"].as_u64().unwrap());

    // The long case is cut at max_seq_length by sentence-transformers: ask for the same.
    let opts = |pooling, normalize| EmbedOptions { pooling, normalize, truncate: true, ..Default::default() };
    let own = pollster::block_on(e.embed(ctx(), &texts, &opts(None, None))).unwrap();
    let last = pollster::block_on(e.embed(ctx(), &texts, &opts(Some(Pooling::Last), Some(false)))).unwrap();
    let mean = pollster::block_on(e.embed(ctx(), &texts, &opts(Some(Pooling::Mean), Some(false)))).unwrap();
    let mut worst = 0.0f64;
    for (i, c) in cases.iter().enumerate() {
        let text = &texts[i];
        assert_eq!(own.ids[i], json_ids(&c["ids"]), "{text:?}: token ids");
        check_vector(&format!("{text:?} embedding"), &own.embeddings[i], &floats(&c["embedding"]), &mut worst);
        check_vector(&format!("{text:?} last"), &last.embeddings[i], &floats(&c["last"]), &mut worst);
        check_vector(&format!("{text:?} mean"), &mean.embeddings[i], &floats(&c["mean"]), &mut worst);
        let alone = pollster::block_on(e.embed(ctx(), std::slice::from_ref(text), &opts(None, None))).unwrap();
        assert_eq!(alone.embeddings[0], own.embeddings[i], "{text:?}: alone vs beside a 64-token input");
    }
    eprintln!("sentence-transformers: worst 1 - cosine {worst:.2e}");

    let f = Fixture::load("qwen3");
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qwen3-causal-embed");
    let _ = std::fs::remove_dir_all(&root);
    f.write_hf_dir(&root.join("hf"));
    convert(&root.join("hf"), &root.join("pkg"), ConvertOptions { quant: Quant::F16, shard_mb: 32 }).unwrap();
    let plain = open(&root.join("pkg"));
    assert_eq!((plain.settings.pooling, plain.settings.normalize), (Pooling::Mean, true));
    let got = pollster::block_on(plain.embed(ctx(), &texts[..texts.len() - 1], &EmbedOptions::default())).unwrap();
    for (i, c) in cases[..texts.len() - 1].iter().enumerate() {
        let ids = json_ids(&c["ids"]);
        assert_eq!(got.ids[i], ids[..ids.len() - 1], "{:?}: no end token", texts[i]);
        check_vector(
            &format!("{:?} plain mean", texts[i]),
            &got.embeddings[i],
            &unit(&floats(&c["prefix_mean"])),
            &mut 0.0,
        );
    }
}

fn unit(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// `embedder_state_bytes` (the browser's out-of-memory probe) against what the allocations count,
/// on a context of its own (the shared one's counters move with the other tests): a decoder's
/// state within 64 KiB (uniforms, RoPE tables, argmax partials and one-row buffers are not counted)
/// at a small and a large batch, an encoder's exactly; a recurrent model is refused as `new` refuses it. The attention scratch holds only the rows
/// a step may split: Qwen3-Embedding-0.6B's shape at 4096 rows takes 0.8 GiB, not 1.8.
#[test]
fn state_bytes_match_the_allocations() {
    use webgpu_llm::gpu::{Context, ContextOptions};
    use webgpu_llm::model::encoder::{EncoderConfig, EncoderState};
    use webgpu_llm::model::{Config, State};
    let c = Context::new_blocking(ContextOptions::default()).unwrap();
    let created = |f: &dyn Fn()| {
        let before = c.counters().buffer_bytes_created;
        f();
        c.counters().buffer_bytes_created - before
    };
    // State::bytes on attention, sliding-window rings (gemma3) and Gated DeltaNet (qwen35) states
    for name in ["qwen3", "gemma3", "qwen35"] {
        let config = Config::from_hf(&Fixture::load(name).config).unwrap();
        for rows in [64, 512] {
            let opts = decoder_state_options(&config, rows);
            let got = created(&|| c.release_all(State::new(&c, &config, opts).unwrap().buffers()));
            let want = State::bytes(&config, &opts);
            eprintln!("{name}, {rows} rows: allocated {got}, estimated {want}");
            assert!(want <= got && got - want <= 64 << 10, "{name}, {rows} rows: allocated {got}, estimated {want}");
        }
    }
    let arch = Fixture::load("qwen3").config;
    let config = Config::from_hf(&arch).unwrap();
    let state = State::bytes(&config, &decoder_state_options(&config, 300));
    assert_eq!(embedder_state_bytes(&arch, 300).unwrap(), state + 4 + 4 * config.hidden as u64, "+ lens, out");
    let recurrent = embedder_state_bytes(&Fixture::load("qwen35").config, 300).unwrap_err();
    assert!(recurrent.to_string().contains("recurrent"), "{recurrent}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders/bert/config.json");
    let bert: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let enc = EncoderConfig::from_hf(&bert).unwrap();
    let got = created(&|| c.release_all(EncoderState::new(&c, &enc, 300).unwrap().buffers()));
    assert_eq!(embedder_state_bytes(&bert, 300).unwrap(), got, "encoder");

    // Qwen3-Embedding-0.6B's config.json (the fields the engine reads)
    let qwen3_06b = json!({"model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 28,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072,
        "vocab_size": 151669, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": true});
    let bytes = embedder_state_bytes(&qwen3_06b, 4096).unwrap();
    eprintln!("Qwen3-Embedding-0.6B at 4096 rows: {:.1} MiB", bytes as f64 / 1048576.0);
    assert!(bytes < 1 << 30, "{bytes}");
}
