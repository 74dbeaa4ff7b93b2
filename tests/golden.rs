//! The CPU reference forward pass against the original PyTorch outputs in
//! tests/golden (a copy of shared/golden): every case, every recorded site.

mod common;

use circuitscope::model::{forward, Model, Recording};
use common::{assert_close, golden_cases, read_expected, read_tokens};

#[test]
fn every_golden_case_matches_at_every_site() {
    let cases = golden_cases();
    assert!(cases.len() >= 4, "expected the four golden cases, found {}", cases.len());
    for dir in cases {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::load_dir(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        let tokens = read_tokens(&dir);
        let mut recording = Recording::new();
        let logits = forward(&model, &tokens, &mut |site, acts| recording.push((site, acts.clone()))).unwrap();

        let expected = read_expected(&dir);
        let mut ours: Vec<(String, _)> = recording.into_iter().map(|(s, t)| (s.to_string(), t)).collect();
        ours.push(("logits".into(), logits));
        let mut our_names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
        let mut their_names: Vec<&str> = expected.keys().map(String::as_str).collect();
        our_names.sort();
        their_names.sort();
        assert_eq!(our_names, their_names, "{case}: recorded sites differ from the reference's");
        for (name, tensor) in &ours {
            assert_close(&format!("{case} {name}"), tensor, &expected[name]);
        }
    }
}

/// Writing a model out in the release's format and reading it back gives
/// the same model.
#[test]
fn models_round_trip_through_safetensors() {
    for dir in golden_cases() {
        let model = Model::load_dir(&dir).unwrap();
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let again = Model::from_bytes(&config, &model.to_safetensors()).unwrap();
        assert!(again == model, "{}", dir.display());
    }
}
