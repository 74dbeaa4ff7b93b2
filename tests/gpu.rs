//! The GPU engine (wgpu; lavapipe in CI) against the reference outputs and
//! the CPU forward pass: every golden case at every site, streaming order,
//! and interventions alone and batched.
#![cfg(feature = "gpu")]

mod common;

use circuitscope::gpu::{Engine, GpuContext, Record, StageOutput};
use circuitscope::model::{
    forward, gated_gradients, gradients, ColumnSummary, Ablation, Gate, GateGradients, Intervention, Model, Objective, Recording, Site,
    SiteKind, GATEABLE,
};
use common::{assert_close, assert_golden_run, assert_same_run, golden_cases, read_expected, read_objective, read_safetensors, read_tokens, reference_run, VARIANTS};

fn engine(model: &Model) -> Engine {
    pollster::block_on(async {
        let ctx = GpuContext::new().await.expect("a GPU adapter (lavapipe in CI)");
        Engine::new(ctx, model).expect("upload")
    })
}

/// The engine with the kernels meant for a GPU, which a CPU adapter (as in
/// CI) would otherwise not run.
fn engine_with_gpu_kernels(model: &Model) -> Engine {
    pollster::block_on(async {
        let ctx = GpuContext::new().await.expect("a GPU adapter (lavapipe in CI)").with_gpu_kernels();
        Engine::new(ctx, model).expect("upload")
    })
}

#[test]
fn every_golden_case_matches_at_every_site_on_the_gpu() {
    for dir in golden_cases() {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::load_dir(&dir).unwrap();
        let tokens = read_tokens(&dir);
        // The kernels this adapter picks, and those a GPU would.
        for (kernels, mut gpu) in [("own", engine(&model)), ("a GPU's", engine_with_gpu_kernels(&model))] {
            let (logits, recording) = pollster::block_on(gpu.forward(&tokens, &Record::All)).unwrap();
            assert_golden_run(&format!("GPU, {kernels} kernels"), &dir, &logits, &recording);
            // And the CPU reference agrees with the GPU.
            assert_same_run(&format!("{case} CPU vs GPU, {kernels} kernels"), &(logits, recording), &reference_run(&model, &tokens, &[]));
        }
    }
}

/// The backward pass in WGSL against the reference's autograd gradients
/// (objective.json's logit difference) at every site of every case, and
/// against the CPU's backward pass.
#[test]
fn every_golden_case_has_the_reference_gradient_at_every_site_on_the_gpu() {
    for dir in golden_cases() {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::load_dir(&dir).unwrap();
        let tokens = read_tokens(&dir);
        let (objective, _) = read_objective(&dir);
        let mut gpu = engine(&model);
        let ours = pollster::block_on(gpu.gradients(&tokens, &objective)).unwrap();
        let expected = read_safetensors(&dir.join("grads.safetensors"));
        assert_eq!(ours.gradients.len(), expected.len(), "{case}: sites with gradients");
        for (site, gradient) in &ours.gradients {
            assert_close(&format!("{case} d/d {site} (GPU)"), gradient, &expected[&site.to_string()]);
        }
        let cpu = gradients(&model, &tokens, &objective).unwrap();
        assert!((cpu.value - ours.value).abs() < 1e-4, "{case}: objective {} on the CPU, {} on the GPU", cpu.value, ours.value);
        for ((site, g), (_, c)) in ours.gradients.iter().zip(&cpu.gradients) {
            assert_close(&format!("{case} d/d {site} CPU vs GPU"), g, c);
        }
    }
}

/// Prompts of different lengths, each with its own objective (a logit, the
/// golden logit difference, a task loss), in one forward and one backward
/// pass: each has its own run's gradients, the golden one the reference's.
#[test]
fn a_batch_of_prompts_has_each_prompts_own_gradients_on_the_gpu() {
    for dir in golden_cases() {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::load_dir(&dir).unwrap();
        let tokens = read_tokens(&dir);
        let (objective, _) = read_objective(&dir);
        let half = tokens.len() / 2;
        let examples = vec![
            (tokens[..half].to_vec(), Objective::LogitDifference { position: half - 1, target: 3, contrast: None }),
            (tokens.clone(), objective),
            (tokens.iter().rev().copied().collect(), Objective::TaskLoss { position: tokens.len() - 2, right: 1, wrong: 2, scale: 0.5 }),
        ];
        let batch = pollster::block_on(engine(&model).gradients_batch(&examples)).unwrap();
        let expected = read_safetensors(&dir.join("grads.safetensors"));
        for (site, gradient) in &batch[1].gradients {
            assert_close(&format!("{case} d/d {site} (GPU, in a batch)"), gradient, &expected[&site.to_string()]);
        }
        for (b, ((tokens, objective), ours)) in examples.iter().zip(&batch).enumerate() {
            let cpu = gradients(&model, tokens, objective).unwrap();
            assert!((cpu.value - ours.value).abs() < 1e-4, "{case} prompt {b}: objective {} on the CPU, {} on the GPU", cpu.value, ours.value);
            assert_close(&format!("{case} prompt {b} logits"), &ours.logits, &cpu.logits);
            assert_eq!(ours.gradients.len(), cpu.gradients.len());
            for ((site, g), (_, c)) in ours.gradients.iter().zip(&cpu.gradients) {
                assert_close(&format!("{case} prompt {b} d/d {site} CPU vs GPU batch"), g, c);
            }
        }
    }
}

/// The circuit pruning's gated runs on the GPU equal the CPU reference's:
/// gates at random node sites with about half their channels ablated (one
/// site keeping all), a batch of two prompts, every site's gradient, the
/// values before the gates and each gate's derivative; and the pruner's
/// step, those derivatives summed over the batch on the GPU.
#[test]
fn gated_runs_on_the_gpu_equal_the_cpu_reference() {
    for dir in golden_cases() {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::load_dir(&dir).unwrap();
        let c = &model.config;
        let tokens = read_tokens(&dir);
        let mut rng = circuitscope::rng::SplitMix(17);
        let mut gates = Vec::new();
        for (i, site) in (0..c.n_layer).flat_map(|l| GATEABLE.map(|kind| Site::Layer(l, kind))).enumerate() {
            if rng.below(3) == 0 {
                continue;
            }
            let width = c.site_width(site);
            let kept = (0..width).map(|_| i == 1 || rng.below(2) == 0).collect();
            gates.push(Gate { site, kept, mean: (0..width).map(|_| 0.2 * rng.signed()).collect() });
        }
        let half = tokens.len() / 2;
        let examples = [
            (tokens.clone(), Objective::TaskLoss { position: tokens.len() - 1, right: 1, wrong: 2, scale: 0.5 }),
            (tokens[..half].to_vec(), Objective::TaskLoss { position: half - 1, right: 3, wrong: 4, scale: 0.5 }),
        ];
        let mut gpu_engine = engine(&model);
        let gpu = pollster::block_on(gpu_engine.gated_gradients_batch(&examples, &gates)).unwrap();
        // The pruner's step: the same runs reduced on the GPU, only the sums read back.
        let reduced = pollster::block_on(gpu_engine.gate_gradients(&examples, &gates)).unwrap();
        let mut expected = GateGradients::zero(&gates);
        for (b, ((tokens, objective), ours)) in examples.iter().zip(&gpu).enumerate() {
            let cpu = gated_gradients(&model, tokens, objective, &gates).unwrap();
            assert!((cpu.run.value - ours.run.value).abs() < 1e-4, "{case} prompt {b}: {} vs {}", cpu.run.value, ours.run.value);
            for ((site, g), (_, c)) in ours.run.gradients.iter().zip(&cpu.run.gradients) {
                assert_close(&format!("{case} prompt {b} gated d/d {site}"), g, c);
            }
            assert_eq!(ours.ungated.len(), cpu.ungated.len());
            for ((site, g), (_, c)) in ours.ungated.iter().zip(&cpu.ungated) {
                assert_close(&format!("{case} prompt {b} {site} before its gate"), g, c);
            }
            for gate in &gates {
                let (g, c) = (ours.gate_gradient(gate).unwrap(), cpu.gate_gradient(gate).unwrap());
                for (channel, (a, b)) in g.iter().zip(&c).enumerate() {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{case}: d/d gate {}[{channel}]: {a} on the GPU, {b} on the CPU", gate.site);
                }
            }
            expected.add_run(&cpu, &gates).unwrap();
        }
        assert!((reduced.value - expected.value).abs() < 1e-4, "{case}: objectives {} reduced on the GPU, {} on the CPU", reduced.value, expected.value);
        for (gate, (ours, cpu)) in gates.iter().zip(reduced.per_gate.iter().zip(&expected.per_gate)) {
            assert_eq!(ours.len(), cpu.len());
            for (channel, (a, b)) in ours.iter().zip(cpu).enumerate() {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{case}: d/d gate {}[{channel}] summed on the GPU {a}, on the CPU {b}", gate.site);
            }
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

/// `bench --kernels` times every dispatch with timestamps, each in a pass
/// of its own: each kernel is counted once per dispatch, and runs after it
/// give what they gave before.
#[test]
fn a_profiled_run_times_every_dispatch_and_changes_no_value() {
    let dir = common::golden_dir().join("paper_rms_topk_sink");
    let model = Model::load_dir(&dir).unwrap();
    let tokens = read_tokens(&dir);
    let mut gpu = engine(&model);
    if !gpu.can_profile() {
        eprintln!("skipped: this adapter has no timestamp queries");
        return;
    }
    let before = pollster::block_on(gpu.forward(&tokens, &Record::All)).unwrap();
    let profile = pollster::block_on(gpu.profile(&tokens, &Record::All)).unwrap();
    let dispatches = |name: &str| profile.kernels.iter().find(|k| k.kernel == name).map_or(0, |k| k.dispatches);
    let c = &model.config;
    // Per layer: q, k, v, the attention's and the MLP's projections and c_fc; then the unembedding.
    assert_eq!(dispatches("sparse_matmul"), 6 * c.n_layer + 1);
    assert_eq!(dispatches("attention"), c.n_layer);
    assert!(profile.kernels.iter().all(|k| k.gpu <= profile.span), "{profile:?}");
    assert!(profile.span > std::time::Duration::ZERO && profile.wall >= profile.span, "{profile:?}");
    let after = pollster::block_on(gpu.forward(&tokens, &Record::All)).unwrap();
    assert_eq!(after, before);
}

/// Every site kept on the GPU and read back afterwards is what a run that
/// reads every site back hands over, also when a second prompt of the same
/// length writes the first one's buffers again.
#[test]
fn a_run_kept_on_the_gpu_reads_back_what_a_recorded_run_hands_over() {
    let dir = common::golden_dir().join("paper_rms_topk_sink");
    let model = Model::load_dir(&dir).unwrap();
    let tokens = read_tokens(&dir);
    let other: Vec<u32> = tokens.iter().rev().copied().collect();
    let mut gpu = engine(&model);
    let mut kept = None;
    for prompt in [&tokens, &other] {
        let (logits, recording) = pollster::block_on(gpu.forward(prompt, &Record::All)).unwrap();
        let (kept_logits, run) = pollster::block_on(gpu.forward_kept(prompt, kept.take(), None)).unwrap();
        assert_eq!(kept_logits, logits);
        let read = pollster::block_on(gpu.read_kept(&run)).unwrap();
        assert_eq!(read.len(), recording.len());
        for (site, recorded) in &recording {
            let kept = &read.iter().find(|(s, _)| s == site).unwrap_or_else(|| panic!("{site} was not kept")).1;
            assert!(kept == recorded, "{site}: {:?} against {:?}", &kept.data[..8], &recorded.data[..8]);
        }
        kept = Some(run);
    }
}

/// A batch that is to give way stops before its next stage with
/// `GaveWay`, and the engine runs as before after it; not asked to, it is
/// the batch `run` makes.
#[test]
fn a_batch_giving_way_stops_and_leaves_the_engine_as_it_was() {
    let dir = common::golden_dir().join("paper_rms_topk_sink");
    let model = Model::load_dir(&dir).unwrap();
    let tokens = read_tokens(&dir);
    let mut gpu = engine(&model);
    let variants = vec![vec![], vec![Intervention { site: Site::Layer(1, SiteKind::MlpPostAct), positions: vec![], channels: vec![3], ablation: Ablation::Zero }]];
    let expected = pollster::block_on(gpu.run(&tokens, &variants, &Record::LogitsOnly, &mut |_| {})).unwrap();
    let give_way = std::cell::Cell::new(true);
    let stopped = pollster::block_on(gpu.run_giving_way(&tokens, &variants, &give_way));
    assert_eq!(stopped.unwrap_err(), circuitscope::gpu::GpuError::GaveWay);
    give_way.set(false);
    assert_eq!(pollster::block_on(gpu.run_giving_way(&tokens, &variants, &give_way)).unwrap(), expected);
    let (logits, recording) = pollster::block_on(gpu.forward(&tokens, &Record::All)).unwrap();
    assert_eq!(logits, expected[0]);
    // A kept run's backward pass, submitted a layer at a time, gives way between two.
    let objective = Objective::LogitDifference { position: tokens.len() - 1, target: 1, contrast: Some(2) };
    let (kept_logits, kept) = pollster::block_on(gpu.forward_kept(&tokens, None, None)).unwrap();
    give_way.set(true);
    let stopped = pollster::block_on(gpu.gradients_of_kept(&kept, kept_logits.clone(), &objective, &give_way));
    assert_eq!(stopped.unwrap_err(), circuitscope::gpu::GpuError::GaveWay);
    give_way.set(false);
    let kept_gradients = pollster::block_on(gpu.gradients_of_kept(&kept, kept_logits, &objective, &give_way)).unwrap();
    let expected = pollster::block_on(gpu.gradients_of_run(logits, recording, &objective)).unwrap();
    for (site, g) in &expected.gradients {
        assert_eq!(&kept_gradients.at(*site).unwrap().data, &g.data, "d/d {site}");
    }
}

/// Interventions of every kind, each checked against the CPU, then all of
/// them as one batch: each variant must equal its separate run.
#[test]
fn interventions_match_the_cpu_alone_and_batched() {
    let dir = common::golden_dir().join("paper_rms_topk_sink");
    let model = Model::load_dir(&dir).unwrap();
    let tokens = read_tokens(&dir);
    let other: Vec<u32> = tokens.iter().rev().copied().collect();
    let (_, other_run) = reference_run(&model, &other, &[]);
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
    let clean = reference_run(&model, &tokens, &[]).0;
    let mut separate = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        let (cpu_logits, _) = reference_run(&model, &tokens, variant);
        if i > 0 {
            assert_ne!(cpu_logits, clean, "variant {i} must change something");
        }
        let gpu_logits = pollster::block_on(gpu.run(&tokens, std::slice::from_ref(variant), &Record::LogitsOnly, &mut |_| {}))
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
        let (_, cpu_sites) = reference_run(&model, &tokens, &variants[i]);
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

/// Random weight-sparse models over the config space (norms, activations,
/// biases, sinks, concatenated positions, top-k everywhere, odd widths, large
/// heads): the GPU agrees with the CPU reference at every site, forward
/// and backward (a batch of two prompts, one past a 64-row tile of the
/// attention's backward pass).
#[test]
fn random_models_of_every_variant_agree_with_the_cpu() {
    for (i, json) in VARIANTS.iter().enumerate() {
        let config = circuitscope::model::Config::from_json(json).unwrap();
        let model = Model::synthetic(config, 0.15, 7 + i as u64);
        let c = &model.config;
        let t = c.block_size - 3;
        let tokens: Vec<u32> = (0..t as u32).map(|j| (j * 31 + 5) % c.vocab_size as u32).collect();
        let mut gpu = engine(&model);
        let (logits, recording) = pollster::block_on(gpu.forward(&tokens, &Record::All)).unwrap();
        let (cpu_logits, cpu_recording) = reference_run(&model, &tokens, &[]);
        assert_close(&format!("config {i} logits"), &logits, &cpu_logits);
        assert_eq!(recording.len(), cpu_recording.len());
        for ((site, g), (cpu_site, c)) in recording.iter().zip(&cpu_recording) {
            assert_eq!(site, cpu_site);
            assert_close(&format!("config {i} {site}"), g, c);
        }
        let v = c.vocab_size as u32;
        let examples = [
            (tokens[..t / 2].to_vec(), Objective::LogitDifference { position: t / 2 - 1, target: 1, contrast: Some(v - 1) }),
            (tokens.clone(), Objective::TaskLoss { position: t - 1, right: 2, wrong: 3, scale: 1.0 }),
        ];
        let batch = pollster::block_on(gpu.gradients_batch(&examples)).unwrap();
        for (b, ((tokens, objective), ours)) in examples.iter().zip(&batch).enumerate() {
            let cpu = gradients(&model, tokens, objective).unwrap();
            for ((site, g), (_, c)) in ours.gradients.iter().zip(&cpu.gradients) {
                assert_close(&format!("config {i} prompt {b} d/d {site}"), g, c);
            }
        }
    }
}

#[test]
fn abs_topk_ties_keep_the_lowest_indices_as_on_the_cpu() {
    // The residual stream patched with magnitudes 2, 1 and 0.5 (a third of
    // the channels each, both signs) and norms of weight 1: AbsTopK at the
    // attention's and the MLP's input (16 of 64) sees 22 entries tied at the
    // largest magnitude and keeps the first 16 of them.
    let json = r#"{"n_layer": 1, "d_model": 64, "n_head": 4, "d_head": 16, "d_mlp": 128, "vocab_size": 40, "block_size": 24,
        "rms_norm": true, "bias": false, "afrac": 0.25, "afrac_loctypes": "attn_in,mlp_in"}"#;
    let mut model = Model::synthetic(circuitscope::model::Config::from_json(json).unwrap(), 0.3, 4);
    for layer in &mut model.params.layers {
        layer.ln_1.weight.fill(1.0);
        layer.ln_2.weight.fill(1.0);
    }
    let tokens: Vec<u32> = (0..20u32).map(|j| (j * 7 + 3) % 40).collect();
    let tied: Vec<f32> = (0..64).map(|c| [2.0, -1.0, 0.5, -2.0, 1.0, -0.5][c % 6]).collect();
    let patch = circuitscope::model::Tensor::from_vec(20, 64, tied.repeat(20));
    let patched = [
        Intervention { site: Site::Layer(0, SiteKind::ResidIn), positions: vec![], channels: vec![], ablation: Ablation::Patch(patch.clone()) },
        Intervention { site: Site::Layer(0, SiteKind::ResidMid), positions: vec![2, 9], channels: vec![], ablation: Ablation::Patch(patch) },
    ];
    let (_, cpu_sites) = reference_run(&model, &tokens, &patched);
    let input = &cpu_sites.iter().find(|(s, _)| *s == Site::Layer(0, SiteKind::AttnActIn)).unwrap().1;
    let kept: Vec<usize> = (0..64).filter(|&c| input.row(0)[c] != 0.0).collect();
    assert_eq!(kept, (0..64).filter(|c| c % 3 == 0).take(16).collect::<Vec<_>>(), "the reference keeps the first tied entries");
    for (kernels, mut gpu) in [("own", engine(&model)), ("a GPU's", engine_with_gpu_kernels(&model))] {
        let mut sites = Recording::new();
        pollster::block_on(gpu.run(&tokens, std::slice::from_ref(&patched.to_vec()), &Record::All, &mut |stage| {
            sites.extend(stage.sites.into_iter().flatten())
        }))
        .unwrap();
        assert_eq!(sites.len(), cpu_sites.len());
        for ((site, g), (_, c)) in sites.iter().zip(&cpu_sites) {
            assert_close(&format!("{site} GPU vs CPU, {kernels} kernels"), g, c);
        }
    }
}

#[test]
fn a_tensor_beyond_a_binding_limit_is_refused_by_name() {
    let dir = common::golden_dir().join("paper_rms_topk_sink"); // bigram table 97 x 97 f32 = 37636 bytes
    let model = Model::load_dir(&dir).unwrap();
    let e = pollster::block_on(async {
        let ctx = GpuContext::with_limits(|l| l.max_storage_buffer_binding_size = 32 * 1024).await.unwrap();
        Engine::new(ctx, &model).err().expect("the bigram table is over the limit")
    })
    .to_string();
    assert!(e.contains("bigram_table") && e.contains("37636") && e.contains("max_storage_buffer_binding_size"), "{e}");

    // Activations too: 29 tokens x 8000 variants of [T, 160] MLP activations
    // (148 MB), over WebGPU's default 128 MiB (a real GPU's own limit is larger).
    let mut gpu = pollster::block_on(async {
        let ctx = GpuContext::with_limits(|l| l.max_storage_buffer_binding_size = 128 << 20).await.unwrap();
        Engine::new(ctx, &model).unwrap()
    });
    let tokens = read_tokens(&dir);
    let variants = vec![Vec::new(); 8000];
    // (Not `unwrap_err`: on a pass, the 8000 logits would fill the failure message.)
    let e = match pollster::block_on(gpu.run(&tokens, &variants, &Record::LogitsOnly, &mut |_| {})) {
        Ok(_) => panic!("8000 variants ran within 128 MiB bindings"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("activations") && e.contains("max_storage_buffer_binding_size"), "{e}");
}

/// A model of the released 0.4B shape (1 in 1000) fits a browser's WebGPU:
/// under the WebGPU default limits on buffer sizes, which every browser
/// grants, it uploads and runs 256 tokens with every site recorded, and
/// gives the CPU reference's logits.
#[test]
fn the_released_shape_runs_256_tokens_within_webgpu_default_limits() {
    let config = circuitscope::model::Config::from_json(include_str!("../src/cli/released_shape.json")).unwrap();
    let model = Model::synthetic(config, 0.001, 5);
    let tokens: Vec<u32> = (0..256).map(|i| (i * 131 + 7) % 2048).collect();
    let ((logits, recording), summaries, rows) = pollster::block_on(async {
        let ctx = GpuContext::with_limits(|l| {
            let web = wgpu::Limits::default();
            l.max_storage_buffer_binding_size = l.max_storage_buffer_binding_size.min(web.max_storage_buffer_binding_size);
            l.max_buffer_size = l.max_buffer_size.min(web.max_buffer_size);
        })
        .await
        .unwrap();
        let mut gpu = Engine::new(ctx, &model).expect("the weights fit the WebGPU default limits");
        let recorded = gpu.forward(&tokens, &Record::All).await.expect("256 tokens with every site fit them");
        // The page's run: kept on the GPU, summarised layer by layer, a position's rows read.
        let mut summaries = Vec::new();
        let (_, saved) = gpu.forward_kept(&tokens, None, Some(&mut |_, mut sites| summaries.append(&mut sites))).await.expect("kept within them too");
        let wanted: Vec<_> = summaries.iter().map(|(site, _)| (*site, 100..101)).collect();
        let rows = gpu.read_kept_rows(&saved, &wanted).await.unwrap();
        (recorded, summaries, rows)
    });
    let (expected, cpu_recording) = reference_run(&model, &tokens, &[]);
    assert_eq!(recording.len(), cpu_recording.len());
    assert_close("released shape logits", &logits, &expected);
    assert_eq!(summaries.len(), recording.len());
    for ((site, summary), ((_, acts), (_, row))) in summaries.iter().zip(recording.iter().zip(&rows)) {
        let host = ColumnSummary::of(acts);
        assert_eq!(summary.first_nonzero, host.first_nonzero, "{site}: first nonzero rows");
        let close = summary.sum_sq.iter().zip(&host.sum_sq).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()));
        assert!(close, "{site}: sums of squares");
        assert_eq!(row.data, acts.row(100), "{site}: row 100 read alone");
    }
}

/// Switching models on one engine: a model over the adapter's limits is
/// refused and the engine keeps running the one it had; a model that fits
/// replaces it.
#[test]
fn loading_another_model_replaces_it_or_keeps_the_old_one() {
    let small = Model::load_dir(&common::golden_dir().join("gpt2_ln_gelu")).unwrap();
    let big = Model::load_dir(&common::golden_dir().join("paper_rms_topk_sink")).unwrap();
    let other = Model::load_dir(&common::golden_dir().join("cat_pos_emb")).unwrap();
    let tokens = [3, 1, 4, 1, 5, 9, 2, 6];
    let cpu = |model: &Model| circuitscope::model::forward(model, &tokens, &mut |_, _| {}).unwrap();
    pollster::block_on(async {
        let ctx = GpuContext::with_limits(|l| l.max_storage_buffer_binding_size = 32 * 1024).await.unwrap();
        let mut gpu = Engine::new(ctx, &small).unwrap();
        let e = gpu.load(&big).expect_err("the bigram table is over the limit").to_string();
        assert!(e.contains("bigram_table"), "{e}");
        let (logits, _) = gpu.forward(&tokens, &Record::LogitsOnly).await.unwrap();
        assert_close("the old model after a refused load", &logits, &cpu(&small));
        gpu.load(&other).unwrap();
        let (logits, _) = gpu.forward(&tokens, &Record::LogitsOnly).await.unwrap();
        assert_close("the new model", &logits, &cpu(&other));
    });
}

#[test]
fn a_lost_device_is_an_error_not_a_panic() {
    let dir = common::golden_dir().join("gpt2_ln_gelu");
    let model = Model::load_dir(&dir).unwrap();
    let mut gpu = engine(&model);
    pollster::block_on(gpu.forward(&[1, 2, 3], &Record::LogitsOnly)).unwrap();
    gpu.context().device.destroy();
    let e = pollster::block_on(gpu.forward(&[1, 2, 3], &Record::All)).unwrap_err().to_string();
    assert!(e.contains("lost") || e.contains("destroyed") || e.contains("invalid"), "{e}");
    // And it stays an error.
    assert!(pollster::block_on(gpu.forward(&[1, 2, 3], &Record::All)).is_err());
}

/// Variants that share their first layers (interventions only later, or
/// none) are computed once up to the first difference; each variant must
/// still equal its own CPU run, at every site.
#[test]
fn batches_sharing_a_prefix_equal_separate_runs() {
    for case in ["cat_pos_emb", "paper_rms_topk_sink"] {
        let dir = common::golden_dir().join(case);
        let model = Model::load_dir(&dir).unwrap();
        let tokens = read_tokens(&dir);
        let last_layer = model.config.n_layer - 1;
        let zero = |site, channels: Vec<usize>| Intervention { site, positions: vec![], channels, ablation: Ablation::Zero };
        let batches = [
            vec![
                vec![zero(Site::Layer(last_layer, SiteKind::MlpPostAct), vec![1, 2, 3])],
                vec![],
                vec![zero(Site::Layer(last_layer, SiteKind::AttnQ), vec![0, 9])],
            ],
            vec![vec![zero(Site::FinalResid, vec![4])], vec![zero(Site::FinalResid, vec![7, 8])]],
            vec![vec![], vec![]],
        ];
        let mut gpu = engine(&model);
        for (i, variants) in batches.iter().enumerate() {
            let mut sites: Vec<Recording> = vec![Recording::new(); variants.len()];
            let logits = pollster::block_on(gpu.run(&tokens, variants, &Record::All, &mut |stage| {
                for (v, s) in stage.sites.into_iter().enumerate() {
                    sites[v].extend(s);
                }
            }))
            .unwrap();
            for (v, variant) in variants.iter().enumerate() {
                let (cpu_logits, cpu_sites) = reference_run(&model, &tokens, variant);
                assert_close(&format!("{case} batch {i} variant {v} logits"), &logits[v], &cpu_logits);
                assert_eq!(sites[v].len(), cpu_sites.len());
                for ((site, g), (_, c)) in sites[v].iter().zip(&cpu_sites) {
                    assert_close(&format!("{case} batch {i} variant {v} {site}"), g, c);
                }
            }
        }
    }
}

/// The circuit search evaluates ablations through the runner (here forced
/// onto the GPU); the native pruner and `circuit-eval` on the CPU reference.
/// Both give the same task losses for the same ablations of the bundled
/// model on a real task, batched by prompt or by variant.
#[test]
fn circuit_search_losses_agree_on_the_gpu_and_the_cpu() {
    use circuitscope::circuits::{keep_only, parse_samples, ready, Choice, CpuEval, Evaluate, Node, RunnerEval, SiteMeans};
    use circuitscope::runner::{Backend, Runner, Want};
    use circuitscope::model::Tokenizer;
    use circuitscope::tasks::Task;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/python_tasks");
    let model = Model::load_dir(&dir).unwrap();
    let tokenizer = Tokenizer::load_dir(&dir).unwrap().unwrap();
    let samples = parse_samples(&std::fs::read_to_string(dir.join("samples.json")).unwrap(), &model.config, Some(&tokenizer)).unwrap();
    let mut means = SiteMeans::default();
    for tokens in samples.iter().take(4) {
        means.add(&reference_run(&model, tokens, &[]).1);
    }
    let choices = Choice::of_task(Task::SingleDoubleQuote, &tokenizer, 5, 3).unwrap();
    let mean_of = |site: Site, channels: Vec<usize>| Intervention { site, positions: vec![], channels, ablation: Ablation::Mean(means.of(site).unwrap()) };
    let circuit: Vec<Node> = (0..24).map(|c| Node { site: Site::Layer(c % 2, SiteKind::MlpPostAct), channel: 7 * c }).collect();
    let variants = vec![
        Vec::new(),
        vec![mean_of(Site::Layer(0, SiteKind::AttnActIn), (0..32).collect())],
        vec![mean_of(Site::Layer(1, SiteKind::AttnK), (32..64).collect())],
        vec![mean_of(Site::Layer(1, SiteKind::MlpPostAct), (0..512).collect())],
        keep_only(&model.config, &means, &circuit).unwrap(),
    ];
    let on_cpu = ready(CpuEval { model: &model, choices: &choices }.losses(&variants)).unwrap();
    let runner = pollster::block_on(Runner::new(std::sync::Arc::new(model.clone()), Want::Gpu, Box::new(|_| {}))).unwrap();
    let on_gpu = pollster::block_on(RunnerEval { runner: &runner, choices: &choices }.losses(&variants)).unwrap();
    assert!(matches!(runner.backend(), Backend::Gpu(_)));
    for (i, (c, g)) in on_cpu.iter().zip(&on_gpu).enumerate() {
        assert!((c.loss - g.loss).abs() < 1e-4 * (1.0 + c.loss), "variant {i}: {c:?} vs {g:?}");
        assert_eq!(c.accuracy, g.accuracy, "variant {i}");
    }
    assert!(on_cpu[4].loss != on_cpu[0].loss, "the ablations change the loss");
    // One variant over more prompts (a bisection's circuit): the prompts go
    // in one batch on the GPU, and one per core on the CPU.
    let circuit_only = &variants[4..];
    let batched = pollster::block_on(RunnerEval { runner: &runner, choices: &choices }.losses(circuit_only)).unwrap();
    assert!((batched[0].loss - on_cpu[4].loss).abs() < 1e-4 * (1.0 + on_cpu[4].loss), "{batched:?} vs {:?}", on_cpu[4]);
    assert_eq!(batched[0].accuracy, on_cpu[4].accuracy);
    let cpu_runner = Runner::at_once(std::sync::Arc::new(model.clone()), Want::Cpu, Box::new(|_| {}));
    let on_cores = pollster::block_on(RunnerEval { runner: &cpu_runner, choices: &choices }.losses(circuit_only)).unwrap();
    assert_eq!(on_cores[0], on_cpu[4], "the same reference passes, the same losses");
}
