//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use circuitscope::model::{forward_with_interventions, Intervention, Model, Objective, Recording, Tensor};
use safetensors::SafeTensors;

/// The reference outputs' tolerance: absolute, or relative above 1.
pub const TOLERANCE: f32 = 1e-4;

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every golden case folder, sorted.
pub fn golden_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.safetensors").exists())
        .collect();
    cases.sort();
    cases
}

pub fn read_tokens(dir: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(dir.join("tokens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every tensor of a safetensors file, as f32 `[rows, cols]`.
pub fn read_safetensors(path: &Path) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_safetensors(&bytes)
}

pub fn parse_safetensors(bytes: &[u8]) -> BTreeMap<String, Tensor> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = view.shape();
            assert_eq!(shape.len(), 2, "{name} is not [T, width]");
            let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (name, Tensor::from_vec(shape[0], shape[1], data))
        })
        .collect()
}

pub fn read_expected(dir: &Path) -> BTreeMap<String, Tensor> {
    read_safetensors(&dir.join("expected.safetensors"))
}

/// Asserts `ours` equals `theirs` to TOLERANCE (absolute, or relative above 1)
/// at every entry, naming the worst entry if not.
pub fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!((ours.rows, ours.cols), (theirs.rows, theirs.cols), "{what}: shape");
    let worst = ours
        .data
        .iter()
        .zip(&theirs.data)
        .enumerate()
        .map(|(i, (a, b))| (i, (a - b).abs() / b.abs().max(1.0)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap_or((0, 0.0));
    let (i, err) = worst;
    assert!(
        err <= TOLERANCE,
        "{what}: entry [{}, {}] is {} but the reference has {} (error {err:e})",
        i / ours.cols.max(1),
        i % ours.cols.max(1),
        ours.data[i],
        theirs.data[i]
    );
}

/// A golden case's `objective.json`: logit(target) - logit(contrast) at a
/// position, and the reference's value of it.
pub fn parse_objective(json: &str) -> (Objective, f64) {
    let json: serde_json::Value = serde_json::from_str(json).expect("objective.json");
    let number = |key: &str| json[key].as_u64().unwrap_or_else(|| panic!("objective.json: {key}"));
    let objective = Objective::LogitDifference {
        position: number("position") as usize,
        target: number("target") as u32,
        contrast: Some(number("contrast") as u32),
    };
    (objective, json["value"].as_f64().expect("objective.json: value"))
}

/// [`parse_objective`] of `dir/objective.json`.
pub fn read_objective(dir: &Path) -> (Objective, f64) {
    parse_objective(&std::fs::read_to_string(dir.join("objective.json")).expect("objective.json"))
}

/// Asserts a run of golden case `dir` (its logits and every site) equals the
/// reference's outputs there, site by site.
pub fn assert_golden_run(backend: &str, dir: &Path, logits: &Tensor, recording: &Recording) {
    let case = dir.file_name().unwrap().to_string_lossy().to_string();
    let expected = read_expected(dir);
    assert_eq!(recording.len() + 1, expected.len(), "{case}: number of sites");
    assert_close(&format!("{case} logits ({backend})"), logits, &expected["logits"]);
    for (site, tensor) in recording {
        assert_close(&format!("{case} {site} ({backend})"), tensor, &expected[&site.to_string()]);
    }
}

/// Asserts two runs of one prompt (logits and sites) agree, site by site.
pub fn assert_same_run(what: &str, (logits, recording): &(Tensor, Recording), (other_logits, other_recording): &(Tensor, Recording)) {
    assert_close(&format!("{what} logits"), logits, other_logits);
    assert_eq!(recording.len(), other_recording.len(), "{what}: number of sites");
    for ((site, ours), (other_site, theirs)) in recording.iter().zip(other_recording) {
        assert_eq!(site, other_site, "{what}: site order");
        assert_close(&format!("{what} {site}"), ours, theirs);
    }
}

/// The CPU reference's run of `tokens` with `interventions`: the logits and
/// every site.
pub fn reference_run(model: &Model, tokens: &[u32], interventions: &[Intervention]) -> (Tensor, Recording) {
    let mut recording = Recording::new();
    let logits = forward_with_interventions(model, tokens, interventions, &mut |site, acts| recording.push((site, acts.clone()))).unwrap();
    (logits, recording)
}

/// Shapes that turn every option on somewhere: LayerNorm and RMSNorm, GELU
/// and ReLU, the residual relu, AbsTopK at every site, sinks, untied and
/// concatenated position embeddings, the bigram table, odd head sizes.
pub const VARIANTS: [&str; 4] = [
    r#"{"n_layer": 2, "d_model": 32, "n_head": 4, "d_head": 8, "d_mlp": 64, "vocab_size": 40, "block_size": 140}"#,
    r#"{"n_layer": 2, "d_model": 48, "n_head": 2, "d_head": 32, "d_mlp": 96, "vocab_size": 50, "block_size": 24,
        "rms_norm": true, "activation_type": "relu", "residual_activation_type": "relu", "tied_unembed": false,
        "sink": true, "bias": false, "afrac": 0.3,
        "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out,attn_q,attn_k,attn_v,mlp_neuron,resid_post_attn,resid_post_mlp"}"#,
    r#"{"n_layer": 3, "d_model": 64, "n_head": 2, "d_head": 64, "d_mlp": 128, "vocab_size": 70, "block_size": 20,
        "rms_norm": true, "bias": false, "afrac": 0.25, "d_pos_emb": 12, "enable_bigram_table": true, "sink": true}"#,
    r#"{"n_layer": 1, "d_model": 50, "n_head": 3, "d_head": 12, "d_mlp": 70, "vocab_size": 33, "block_size": 40,
        "ln_bias": false, "afrac": 0.5, "afrac_loctypes": "mlp_neuron,attn_k"}"#,
];
