//! The GPU engine (wgpu; lavapipe in CI) against the reference outputs and
//! the CPU forward pass: every golden case at every site, streaming order,
//! and interventions alone and batched.
#![cfg(feature = "gpu")]

mod common;

use circuitscope::gpu::{Engine, GpuContext, Record, StageOutput};
use circuitscope::model::{
    forward, forward_with_interventions, Ablation, Intervention, Model, Recording, Site, SiteKind, Tensor,
};
use common::{assert_close, golden_cases, read_expected, read_tokens};

fn engine(model: &Model) -> Engine {
    pollster::block_on(async {
        let ctx = GpuContext::new().await.expect("a GPU adapter (lavapipe in CI)");
        Engine::new(ctx, model).expect("upload")
    })
}

fn cpu(model: &Model, tokens: &[u32], interventions: &[Intervention]) -> (Tensor, Recording) {
    let mut recording = Recording::new();
    let logits =
        forward_with_interventions(model, tokens, interventions, &mut |site, acts| recording.push((site, acts.clone())))
            .unwrap();
    (logits, recording)
}

#[test]
fn every_golden_case_matches_at_every_site_on_the_gpu() {
    for dir in golden_cases() {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::load_dir(&dir).unwrap();
        let tokens = read_tokens(&dir);
        let mut gpu = engine(&model);
        let (logits, recording) = pollster::block_on(gpu.forward(&tokens, &Record::All)).unwrap();
        let expected = read_expected(&dir);
        assert_eq!(recording.len() + 1, expected.len(), "{case}: number of sites");
        assert_close(&format!("{case} logits"), &logits, &expected["logits"]);
        for (site, tensor) in &recording {
            assert_close(&format!("{case} {site} (GPU)"), tensor, &expected[&site.to_string()]);
        }
        // And the CPU reference agrees with the GPU.
        let (cpu_logits, cpu_recording) = cpu(&model, &tokens, &[]);
        assert_close(&format!("{case} logits CPU vs GPU"), &logits, &cpu_logits);
        for ((site, g), (_, c)) in recording.iter().zip(&cpu_recording) {
            assert_close(&format!("{case} {site} CPU vs GPU"), g, c);
        }
    }
}

#[test]
fn layers_stream_in_order_before_the_last_layer_is_computed() {
    let dir = common::golden_dir().join("paper_rms_topk_sink"); // 3 layers
    let model = Model::load_dir(&dir).unwrap();
    let tokens = read_tokens(&dir);
    let mut gpu = engine(&model);
    let mut stages: Vec<StageOutput> = Vec::new();
    pollster::block_on(gpu.run(&tokens, &[], &Record::All, &mut |stage| stages.push(stage))).unwrap();
    let layers: Vec<Option<usize>> = stages.iter().map(|s| s.layer).collect();
    assert_eq!(layers, vec![Some(0), Some(1), Some(2), None]);
    // Layer 0 was handed over when only layers 0 and 1 had been submitted:
    // the last layer had not even been encoded, let alone computed.
    assert_eq!(stages[0].stages_submitted, 2);
    assert!(stages[0].stages_submitted < model.config.n_layer);
    let expected = read_expected(&dir);
    for (site, tensor) in &stages[0].sites[0] {
        assert!(matches!(site, Site::Layer(0, _)));
        assert_close(&site.to_string(), tensor, &expected[&site.to_string()]);
    }
}

#[test]
fn recording_is_selectable() {
    let dir = common::golden_dir().join("gpt2_ln_gelu");
    let model = Model::load_dir(&dir).unwrap();
    let tokens = read_tokens(&dir);
    let mut gpu = engine(&model);
    let mut calls = 0;
    let logits = pollster::block_on(gpu.run(&tokens, &[], &Record::LogitsOnly, &mut |_| calls += 1)).unwrap();
    assert_eq!(calls, 0, "logits only: no stage is read back");
    assert_close("logits", &logits[0], &read_expected(&dir)["logits"]);
    let wanted = vec![Site::Layer(1, SiteKind::AttnQ), Site::FinalResid];
    let (_, recording) = pollster::block_on(gpu.forward(&tokens, &Record::Sites(wanted.clone()))).unwrap();
    assert_eq!(recording.iter().map(|(s, _)| *s).collect::<Vec<_>>(), wanted);
}

/// Interventions of every kind, each checked against the CPU, then all of
/// them as one batch: each variant must equal its separate run.
#[test]
fn interventions_match_the_cpu_alone_and_batched() {
    let dir = common::golden_dir().join("paper_rms_topk_sink");
    let model = Model::load_dir(&dir).unwrap();
    let tokens = read_tokens(&dir);
    let other: Vec<u32> = tokens.iter().rev().copied().collect();
    let (_, other_run) = cpu(&model, &other, &[]);
    let patch_source = other_run.iter().find(|(s, _)| *s == Site::Layer(1, SiteKind::MlpPostAct)).unwrap().1.clone();
    let width = model.config.d_mlp;
    let variants = vec![
        vec![],
        vec![Intervention {
            site: Site::Layer(0, SiteKind::AttnV),
            positions: vec![],
            channels: vec![0, 5, 17, 40],
            ablation: Ablation::Zero,
        }],
        vec![Intervention {
            site: Site::Layer(1, SiteKind::MlpPostAct),
            positions: vec![3, 10, 28],
            channels: vec![],
            ablation: Ablation::Mean((0..width).map(|c| c as f32 * 0.01).collect()),
        }],
        vec![Intervention {
            site: Site::Layer(1, SiteKind::MlpPostAct),
            positions: vec![],
            channels: (0..width).step_by(3).collect(),
            ablation: Ablation::Patch(patch_source),
        }],
        vec![
            Intervention {
                site: Site::Layer(2, SiteKind::ResidIn),
                positions: vec![28],
                channels: vec![],
                ablation: Ablation::Zero,
            },
            Intervention { site: Site::FinalResid, positions: vec![0], channels: vec![1], ablation: Ablation::Zero },
        ],
    ];
    let mut gpu = engine(&model);
    let clean = cpu(&model, &tokens, &[]).0;
    let mut separate = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        let (cpu_logits, _) = cpu(&model, &tokens, variant);
        if i > 0 {
            assert_ne!(cpu_logits, clean, "variant {i} must change something");
        }
        let gpu_logits = pollster::block_on(gpu.run(&tokens, &[variant.clone()], &Record::LogitsOnly, &mut |_| {}))
            .unwrap()
            .remove(0);
        assert_close(&format!("variant {i} CPU vs GPU"), &gpu_logits, &cpu_logits);
        separate.push(gpu_logits);
    }
    let mut per_variant_sites: Vec<Recording> = vec![Recording::new(); variants.len()];
    let batched = pollster::block_on(gpu.run(&tokens, &variants, &Record::All, &mut |stage| {
        for (v, sites) in stage.sites.into_iter().enumerate() {
            per_variant_sites[v].extend(sites);
        }
    }))
    .unwrap();
    assert_eq!(batched.len(), variants.len());
    for (i, (b, s)) in batched.iter().zip(&separate).enumerate() {
        assert_close(&format!("variant {i} batched vs separate"), b, s);
        let (_, cpu_sites) = cpu(&model, &tokens, &variants[i]);
        for ((site, g), (_, c)) in per_variant_sites[i].iter().zip(&cpu_sites) {
            assert_close(&format!("variant {i} {site} batched GPU vs CPU"), g, c);
        }
    }
}

#[test]
fn bad_interventions_and_tokens_are_errors() {
    let dir = common::golden_dir().join("gpt2_ln_gelu");
    let model = Model::load_dir(&dir).unwrap();
    let mut gpu = engine(&model);
    let bad = Intervention { site: Site::Layer(0, SiteKind::AttnQ), positions: vec![], channels: vec![999], ablation: Ablation::Zero };
    let e = pollster::block_on(gpu.run(&[1, 2], &[vec![bad]], &Record::LogitsOnly, &mut |_| {})).unwrap_err().to_string();
    assert!(e.contains("channel 999") && e.contains("0.attn.q"), "{e}");
    let e = pollster::block_on(gpu.forward(&[1, 2, 61], &Record::All)).unwrap_err().to_string();
    assert!(e.contains("token id 61"), "{e}");
    // The engine still works afterwards.
    let (logits, _) = pollster::block_on(gpu.forward(&[1, 2], &Record::LogitsOnly)).unwrap();
    assert_close("after errors", &logits, &forward(&model, &[1, 2], &mut |_, _| {}).unwrap());
}
