//! The CPU reference forward pass against the original PyTorch outputs in
//! tests/golden (a copy of shared/golden): every case, every recorded site.

mod common;

use std::collections::{BTreeMap, HashMap};

use circuitscope::model::{forward, gradients, Model, Recording};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use common::{assert_close, golden_cases, read_expected, read_objective, read_safetensors, read_tokens};

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

/// The backward pass against the reference's autograd: the gradient of
/// `logit(target) - logit(contrast)` (objective.json) at every recorded site.
#[test]
fn every_golden_case_has_the_reference_gradient_at_every_site() {
    for dir in golden_cases() {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::load_dir(&dir).unwrap();
        let tokens = read_tokens(&dir);
        let (objective, value) = read_objective(&dir);
        let ours = gradients(&model, &tokens, &objective).unwrap();
        assert!((ours.value - value).abs() <= 1e-4 * value.abs().max(1.0), "{case}: objective {} but the reference's is {value}", ours.value);

        let expected = read_safetensors(&dir.join("grads.safetensors"));
        let mut our_names: Vec<String> = ours.gradients.iter().map(|(s, _)| s.to_string()).collect();
        let mut their_names: Vec<String> = expected.keys().cloned().collect();
        our_names.sort();
        their_names.sort();
        assert_eq!(our_names, their_names, "{case}: sites with gradients differ from the reference's");
        for (site, gradient) in &ours.gradients {
            assert_close(&format!("{case} d/d {site}"), gradient, &expected[&site.to_string()]);
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

/// The compact form (nonzeros only) reads back as the same model, and is
/// smaller than the dense file.
#[test]
fn models_round_trip_through_the_compact_form() {
    for dir in golden_cases() {
        let model = Model::load_dir(&dir).unwrap();
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let compact = model.to_compact_safetensors();
        let again = Model::from_bytes(&config, &compact).unwrap();
        assert!(again == model, "{}", dir.display());
        assert!(compact.len() < model.to_safetensors().len(), "{}", dir.display());
        // One model, one file: byte for byte, whatever order hash maps take.
        assert!(compact == model.to_compact_safetensors() && compact == again.to_compact_safetensors(), "{}", dir.display());
        // The weights' identity does not depend on the file's form, and changes with any weight.
        assert_eq!(again.weights_sha256(), model.weights_sha256());
        let mut changed = model.clone();
        changed.params.final_logits_bias[0] += 1.0;
        assert_ne!(changed.weights_sha256(), model.weights_sha256());
    }
}

/// A compact file edited by `edit` (tensors by name: dtype, shape, bytes;
/// and the metadata), as bytes.
fn edited_compact(model: &Model, edit: impl FnOnce(&mut BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>, &mut HashMap<String, String>)) -> Vec<u8> {
    let bytes = model.to_compact_safetensors();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut metadata = SafeTensors::read_metadata(&bytes).unwrap().1.metadata().clone().unwrap();
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> =
        file.tensors().into_iter().map(|(name, view)| (name, (view.dtype(), view.shape().to_vec(), view.data().to_vec()))).collect();
    edit(&mut tensors, &mut metadata);
    let views = tensors.iter().map(|(name, (dtype, shape, data))| (name.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap()));
    safetensors::serialize(views, Some(metadata)).unwrap()
}

#[test]
fn bad_compact_tensors_are_errors_that_name_them() {
    let dir = golden_cases().into_iter().next().unwrap();
    let model = Model::load_dir(&dir).unwrap();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let name = "transformer.h.0.mlp.c_fc.weight";
    let index = format!("{name}.nz_index");
    let error = |bytes: Vec<u8>| Model::from_bytes(&config, &bytes).unwrap_err().to_string();
    let set_index = |positions: &[u32]| {
        let positions = positions.to_vec();
        edited_compact(&model, |t, _| {
            let (_, shape, data) = t.get_mut(&index).unwrap();
            assert!(shape[0] >= positions.len());
            data[..4 * positions.len()].copy_from_slice(bytemuck::cast_slice(&positions));
        })
    };
    let message = error(set_index(&[5, 3]));
    assert!(message.contains(name) && message.contains("must ascend"), "{message}");
    let message = error(set_index(&[u32::MAX - 1]));
    assert!(message.contains(name), "{message}");
    let message = error(edited_compact(&model, |_, m| {
        m.remove(name);
    }));
    assert!(message.contains(name) && message.contains("metadata"), "{message}");
    let message = error(edited_compact(&model, |_, m| {
        m.insert(name.into(), "[3, 3]".into());
    }));
    assert!(message.contains(name) && message.contains("[3, 3]"), "{message}");
    let message = error(edited_compact(&model, |t, _| {
        let (_, shape, data) = t.get_mut(&format!("{name}.nz_value")).unwrap();
        shape[0] -= 1;
        data.truncate(data.len() - 4);
    }));
    assert!(message.contains(name) && message.contains("same length"), "{message}");
    let message = error(edited_compact(&model, |t, _| {
        t.get_mut(&index).unwrap().0 = Dtype::F32;
    }));
    assert!(message.contains(name) && message.contains("U32"), "{message}");
    // A NaN among the nonzeros.
    let message = error(edited_compact(&model, |t, _| {
        t.get_mut(&format!("{name}.nz_value")).unwrap().2[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    }));
    assert!(message.contains(name) && message.contains("holds NaN at entry 0"), "{message}");
    // The same tensor dense as well: the compact copy silently won.
    let message = error(edited_compact(&model, |t, _| {
        let dense = model.dense_tensors().into_iter().find(|(n, _, _)| n == name).unwrap();
        t.insert(name.into(), (Dtype::F32, dense.1, bytemuck::cast_slice(&dense.2).to_vec()));
    }));
    assert!(message.contains(name) && message.contains("stored both dense and by its nonzeros"), "{message}");
}

/// The config's list of parameters, which memory is checked by before a
/// file is read, is the model's own, name by name and shape by shape.
#[test]
fn a_configs_parameters_are_its_models() {
    for dir in golden_cases() {
        let model = Model::load_dir(&dir).unwrap();
        let spec: Vec<(String, Vec<usize>)> = model.config.parameters().into_iter().map(|p| (p.name, p.shape)).collect();
        let stats: Vec<(String, Vec<usize>)> = model.weight_stats().into_iter().map(|s| (s.name, s.shape)).collect();
        assert_eq!(spec, stats, "{}", dir.display());
        // Sparse parameters are the ones the model keeps by their nonzeros.
        let sparse: Vec<String> = model.config.parameters().into_iter().filter(|p| p.sparse).map(|p| p.name).collect();
        assert!(sparse.iter().all(|n| n.ends_with("wte.weight") || n.ends_with("wpe.weight") || n == "lm_head.weight" || n.contains(".c_")));
    }
}

/// Runs are refused when their activations would not fit in memory; the
/// released 0.4B shape still runs its whole block of 1024 tokens.
#[test]
fn a_run_too_large_for_memory_is_refused_and_the_released_shape_fits() {
    use circuitscope::model::{check_tokens, Config, ModelError, MAX_RUN_BYTES};
    let released = Config::from_json(include_str!("../src/cli/released_shape.json")).unwrap();
    assert!(released.run_bytes(released.block_size) < MAX_RUN_BYTES, "{}", released.run_bytes(released.block_size));
    let wide = Config::from_json(r#"{"n_layer": 64, "d_model": 16384, "n_head": 64, "d_head": 256, "d_mlp": 65536, "vocab_size": 4096, "block_size": 4096}"#).unwrap();
    let e = check_tokens(&wide, &vec![1; 1024]).unwrap_err();
    assert!(matches!(e, ModelError::RunTooLarge { tokens: 1024, .. }), "{e}");
    assert!(e.to_string().contains("give fewer tokens"), "{e}");
    check_tokens(&wide, &[1]).unwrap();
}
