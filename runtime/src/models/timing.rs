//! Where the time of a batched forward pass goes (issue 9, items 5–6): `Encoder::forward` timed
//! in-process for batches of 1, 4, 16 and 32 rows, all of one length or of mixed lengths, on
//! the tiny `bert-seqcls` fixture and on a BERT-base-sized model with random weights. Ignored
//! (it measures, it checks nothing the conformance tests do not); run it with
//! `cargo test -p sagebrush -p guest-sdk-macros --lib timing -- --ignored --nocapture`.
//! The figures it printed are in `docs/candle-cpu.md`.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::tests::fixture;
use super::*;

/// A BERT-base-sized sequence classifier (12 × 768, 12 heads, 3072) with random weights.
fn bert_base() -> Encoder {
    let (h, inter, layers, vocab, positions) = (768, 3072, 12, 30522, 512);
    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, shape: &[usize]| {
        let x = Tensor::randn(0f32, 0.02, shape, &dev).expect("randn");
        t.insert(name, x);
    };
    put("bert.embeddings.word_embeddings.weight".into(), &[vocab, h]);
    put(
        "bert.embeddings.position_embeddings.weight".into(),
        &[positions, h],
    );
    put(
        "bert.embeddings.token_type_embeddings.weight".into(),
        &[2, h],
    );
    put("bert.embeddings.LayerNorm.weight".into(), &[h]);
    put("bert.embeddings.LayerNorm.bias".into(), &[h]);
    put("bert.pooler.dense.weight".into(), &[h, h]);
    put("bert.pooler.dense.bias".into(), &[h]);
    put("classifier.weight".into(), &[2, h]);
    put("classifier.bias".into(), &[2]);
    for i in 0..layers {
        let p = format!("bert.encoder.layer.{i}");
        for (n, o, i_) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", inter, h),
            ("output.dense", h, inter),
        ] {
            put(format!("{p}.{n}.weight"), &[o, i_]);
            put(format!("{p}.{n}.bias"), &[o]);
        }
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            put(format!("{p}.{n}.weight"), &[h]);
            put(format!("{p}.{n}.bias"), &[h]);
        }
    }
    let config = ModelConfig::from_value(serde_json::json!({
        "model_type": "bert", "architectures": ["BertForSequenceClassification"],
        "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": 12, "vocab_size": vocab, "max_position_embeddings": positions,
        "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}
    }))
    .expect("config");
    let vb = candle_nn::VarBuilder::from_tensors(t, DType::F32, &dev);
    Encoder::from_var_builder(&vb, &config, Head::SequenceClassification).expect("encoder")
}

/// A padded batch of rows with these real lengths (ids 1000 + position, padded to the longest).
fn batch(lengths: &[usize]) -> EncoderBatch {
    let len = lengths.iter().copied().max().unwrap_or(1);
    let mut b = EncoderBatch::default();
    for &n in lengths {
        b.input_ids.push(
            (0..len)
                .map(|i| if i < n { 1000 + i as u32 % 900 } else { 0 })
                .collect(),
        );
        b.type_ids.push(vec![0; len]);
        b.attention_mask
            .push((0..len).map(|i| u32::from(i < n)).collect());
    }
    b
}

fn median_ms(encoder: &Encoder, b: &EncoderBatch, iters: usize) -> f64 {
    encoder.forward(b).expect("warm-up");
    let mut v: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            encoder
                .forward(b)
                .expect("forward")
                .to_vec2::<f32>()
                .expect("out");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(name: &str, encoder: &Encoder, max_len: usize, iters: usize) {
    println!("{name}: rows | lengths | p50 ms | ms a row");
    for rows in [1usize, 4, 16, 32] {
        let equal = vec![max_len; rows];
        // Mixed: lengths spread evenly from max_len/8 to max_len, as one padded batch.
        let mixed: Vec<usize> = (0..rows)
            .map(|r| max_len / 8 + (max_len - max_len / 8) * (r + 1) / rows)
            .collect();
        for (kind, lengths) in [("equal", equal), ("mixed", mixed)] {
            if rows == 1 && kind == "mixed" {
                continue;
            }
            let ms = median_ms(encoder, &batch(&lengths), iters);
            println!(
                "{name}: {rows:>2} | {kind} {max_len} | {ms:8.2} | {:7.2}",
                ms / rows as f64
            );
        }
    }
}

#[test]
#[ignore = "measures; run by hand with --ignored --nocapture"]
fn forward_time_by_batch_size() {
    println!(
        "CANDLE_BARRIER_POOL_SPIN_LIMIT={:?}",
        std::env::var("CANDLE_BARRIER_POOL_SPIN_LIMIT").ok()
    );
    let dir = fixture("bert-seqcls");
    let config = ModelConfig::from_dir(&dir).expect("config");
    let tiny = Encoder::load(
        &dir,
        &config,
        Head::SequenceClassification,
        WeightDtype::F32,
    )
    .expect("encoder");
    report("tiny bert-seqcls", &tiny, 16, 21);
    let base = bert_base();
    let iters = std::env::var("TIMING_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    report("bert-base", &base, 128, iters);
}
