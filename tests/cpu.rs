//! The fast CPU path (`cpu::Engine`) against the original PyTorch outputs
//! and the reference forward pass: every golden case at every site, random
//! models of every config variant, and interventions.

mod common;

use circuitscope::cpu;
use circuitscope::model::{Ablation, Config, Intervention, Model, Record, Recording, Site, SiteKind, Tensor};
use common::{assert_golden_run, assert_same_run, golden_cases, read_tokens, reference_run, VARIANTS};

fn run(model: &Model, tokens: &[u32], interventions: &[Intervention]) -> (Tensor, Recording) {
    cpu::run(model, tokens, interventions, &Record::All).unwrap()
}

#[test]
fn every_golden_case_matches_at_every_site_on_the_fast_path() {
    for dir in golden_cases() {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::load_dir(&dir).unwrap();
        let tokens = read_tokens(&dir);
        let fast = run(&model, &tokens, &[]);
        assert_golden_run("fast path", &dir, &fast.0, &fast.1);
        assert_same_run(&format!("{case} fast vs reference"), &fast, &reference_run(&model, &tokens, &[]));
    }
}

/// A shape wide and long enough that the fast path splits the tokens over
/// threads.
const WIDE: &str = r#"{"n_layer": 2, "d_model": 256, "n_head": 16, "d_head": 16, "d_mlp": 1024, "vocab_size": 300, "block_size": 200,
    "rms_norm": true, "bias": false, "afrac": 0.25, "enable_bigram_table": true, "sink": true}"#;

#[test]
fn random_models_of_every_variant_agree_with_the_reference() {
    for (i, json) in VARIANTS.iter().chain([&WIDE]).enumerate() {
        let config = Config::from_json(json).unwrap();
        for density in [0.02, 0.3] {
            let model = Model::synthetic(config.clone(), density, 11 + i as u64);
            let c = &model.config;
            let t = c.block_size - 3;
            let tokens: Vec<u32> = (0..t as u32).map(|j| (j * 31 + 5) % c.vocab_size as u32).collect();
                let what = format!("config {i} density {density}");
            let every_site = run(&model, &tokens, &[]);
            assert_same_run(&what, &every_site, &reference_run(&model, &tokens, &[]));
            // Recording fewer sites skips making them, and changes nothing else.
            let (logits, none) = cpu::run(&model, &tokens, &[], &Record::LogitsOnly).unwrap();
            assert!(none.is_empty() && logits == every_site.0, "{what}: logits only");
            let wanted = vec![Site::Layer(0, SiteKind::AttnQ), Site::Layer(c.n_layer - 1, SiteKind::MlpPostAct)];
            let (logits, some) = cpu::run(&model, &tokens, &[], &Record::Sites(wanted.clone())).unwrap();
            assert_eq!(some.iter().map(|(s, _)| *s).collect::<Vec<_>>(), wanted, "{what}: the sites asked for");
            assert!(some.iter().all(|(s, acts)| every_site.1.iter().any(|(e, all)| e == s && all == acts)) && logits == every_site.0, "{what}: some sites");
            // A prompt of one token, and one of two.
            for n in [1, 2] {
                assert_same_run(&format!("{what}, {n} tokens"), &run(&model, &tokens[..n], &[]), &reference_run(&model, &tokens[..n], &[]));
            }
        }
    }
}

#[test]
fn interventions_change_the_fast_path_as_they_change_the_reference() {
    let config = Config::from_json(WIDE).unwrap();
    let model = Model::synthetic(config, 0.05, 5);
    let tokens: Vec<u32> = (0..90u32).map(|j| (j * 17 + 3) % 300).collect();
    let clean = run(&model, &tokens, &[]);
    let variants = [
        vec![Intervention { site: Site::Layer(0, SiteKind::MlpPostAct), positions: vec![], channels: (0..1024).step_by(5).collect(), ablation: Ablation::Zero }],
        vec![Intervention {
            site: Site::Layer(1, SiteKind::AttnQ),
            positions: vec![4, 40, 89],
            channels: vec![],
            ablation: Ablation::Mean((0..256).map(|c| c as f32 * 0.01).collect()),
        }],
        vec![
            Intervention { site: Site::Layer(1, SiteKind::ResidIn), positions: vec![0, 1], channels: vec![], ablation: Ablation::Zero },
            Intervention { site: Site::FinalResid, positions: vec![89], channels: vec![1, 7], ablation: Ablation::Patch(clean.1[0].1.clone()) },
        ],
    ];
    for (i, variant) in variants.iter().enumerate() {
        let ours = run(&model, &tokens, variant);
        assert_ne!(ours.0, clean.0, "variant {i} must change the logits");
        assert_same_run(&format!("variant {i}"), &ours, &reference_run(&model, &tokens, variant));
    }
    let bad = [Intervention { site: Site::Layer(9, SiteKind::ResidIn), positions: vec![], channels: vec![], ablation: Ablation::Zero }];
    let err = cpu::run(&model, &tokens, &bad, &Record::LogitsOnly).unwrap_err();
    assert!(err.to_string().contains("layers"), "{err}");
    assert!(cpu::run(&model, &[], &[], &Record::LogitsOnly).is_err(), "no tokens is an error");
    assert!(cpu::run(&model, &[300], &[], &Record::LogitsOnly).is_err(), "a token beyond the vocabulary is an error");
}
