//! The `circuitscope` command line: outputs against the golden data, and a
//! clear error (non-zero exit, no panic, no partial output) for bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_close, golden_cases, read_expected, read_objective, read_safetensors, read_tokens};
use circuitscope::model::Objective;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

const CASE: &str = "paper_rms_topk_sink";

fn circuitscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_circuitscope")).args(args).output().expect("run circuitscope")
}

fn tokens_arg(dir: &Path) -> String {
    read_tokens(dir).iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn case_dir() -> PathBuf {
    common::golden_dir().join(CASE)
}

/// Runs `forward` expecting failure; returns stderr after checking there was
/// no panic and no output file.
fn expect_failure(model: &Path, tokens: &str) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("acts.safetensors");
    let stderr = expect_failure_with(&["forward", "--model", model.to_str().unwrap(), "--tokens", tokens, "--out", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0, "left a file behind");
    stderr
}

/// A copy of the golden case with `model.safetensors` replaced by `bytes`.
fn model_with(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(case_dir().join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    dir
}

/// The golden weights re-serialized after `edit` changes the list of
/// (name, dtype, shape, bytes).
fn edited_weights(edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) -> Vec<u8> {
    let bytes = std::fs::read(case_dir().join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, v)| (name, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| (name.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap()));
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn forward_writes_every_site_matching_the_reference() {
    for dir in golden_cases() {
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("acts.safetensors");
        let result = circuitscope(&[
            "forward", "--model", dir.to_str().unwrap(), "--tokens", &tokens_arg(&dir), "--out", out.to_str().unwrap(),
        ]);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert_eq!(stdout.lines().filter(|l| l.starts_with("  token")).count(), 5, "top-5 table: {stdout}");
        let ours = read_safetensors(&out);
        let expected = read_expected(&dir);
        assert_eq!(ours.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        for (name, tensor) in &expected {
            assert_close(name, &ours[name], tensor);
        }
    }
}

/// `attribute --out` writes the reference's gradients (objective.json's
/// logit difference) at every site; `--check` measures the top nodes'
/// effects and says how well attribution agreed.
#[test]
fn attribute_writes_the_reference_gradients_and_checks_its_top_nodes() {
    for dir in golden_cases() {
        let (objective, reference_value) = read_objective(&dir);
        let Objective::LogitDifference { position, target, contrast: Some(contrast) } = objective else { unreachable!() };
        let [position, target, contrast] = [position.to_string(), target.to_string(), contrast.to_string()];
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("grads.safetensors");
        let result = circuitscope(&[
            "attribute", "--model", dir.to_str().unwrap(), "--tokens", &tokens_arg(&dir), "--position", &position,
            "--target", &target, "--contrast", &contrast, "--check", "12", "--json", "--out", out.to_str().unwrap(),
        ]);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let ours = read_safetensors(&out);
        let expected = read_safetensors(&dir.join("grads.safetensors"));
        assert_eq!(ours.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        for (name, tensor) in &expected {
            assert_close(name, &ours[name], tensor);
        }
        let json: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
        let value = json["objective"]["value"].as_f64().unwrap();
        assert!((value - reference_value).abs() < 1e-4, "{value}");
        let nodes = json["nodes"].as_array().unwrap();
        let scores: Vec<f64> = nodes.iter().map(|n| n["attribution"].as_f64().unwrap().abs()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked by |attribution|");
        assert_eq!(nodes.iter().filter(|n| n.get("effect").is_some()).count(), 12.min(nodes.len()));
        let spearman = json["agreement"]["spearman"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&spearman), "{spearman}");

        // The same gradients from the GPU's backward pass.
        let on_gpu = out_dir.path().join("grads-gpu.safetensors");
        let result = circuitscope(&[
            "attribute", "--model", dir.to_str().unwrap(), "--tokens", &tokens_arg(&dir), "--position", &position,
            "--target", &target, "--contrast", &contrast, "--backend", "gpu", "--json", "--out", on_gpu.to_str().unwrap(),
        ]);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let ours = read_safetensors(&on_gpu);
        for (name, tensor) in &expected {
            assert_close(&format!("{name} (GPU)"), &ours[name], tensor);
        }
    }
}

#[test]
fn attribute_refuses_a_position_or_token_the_run_does_not_have() {
    let dir = case_dir();
    let model = dir.to_str().unwrap();
    let tokens = tokens_arg(&dir);
    let beyond = expect_failure_with(&["attribute", "--model", model, "--tokens", &tokens, "--position", "999"]);
    assert!(beyond.contains("position 999"), "{beyond}");
    let vocab = expect_failure_with(&["attribute", "--model", model, "--tokens", &tokens, "--target", "100000"]);
    assert!(vocab.contains("100000"), "{vocab}");
    let mean = expect_failure_with(&["attribute", "--model", model, "--tokens", &tokens, "--ablation", "mean"]);
    assert!(mean.contains("samples.json"), "{mean}");
}

#[test]
fn forward_json_ranks_the_reference_logits() {
    let dir = case_dir();
    let result = circuitscope(&["forward", "--model", dir.to_str().unwrap(), "--tokens", &tokens_arg(&dir), "--json"]);
    assert!(result.status.success());
    let json: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let ids: Vec<u64> = json["predictions"].as_array().unwrap().iter().map(|p| p["token"].as_u64().unwrap()).collect();
    let logits = &read_expected(&dir)["logits"];
    let last = logits.row(logits.rows - 1);
    let mut order: Vec<usize> = (0..last.len()).collect();
    order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
    assert_eq!(ids, order[..5].iter().map(|&i| i as u64).collect::<Vec<_>>());
}

#[test]
fn info_reports_nonzeros_and_memory() {
    let result = circuitscope(&["info", "--model", case_dir().to_str().unwrap()]);
    assert!(result.status.success());
    let stdout = String::from_utf8_lossy(&result.stdout);
    // 737 nonzeros of 192x48 in this golden model's first c_attn.
    assert!(stdout.contains("transformer.h.0.attn.c_attn.weight") && stdout.contains(" 737 "), "{stdout}");
    assert!(stdout.contains("nonzeros") && stdout.contains("memory"), "{stdout}");
}

#[test]
fn truncated_file_is_named() {
    let bytes = std::fs::read(case_dir().join("model.safetensors")).unwrap();
    let dir = model_with(&bytes[..bytes.len() - 100]);
    let e = expect_failure(dir.path(), "1,2");
    assert!(e.contains("model.safetensors") && e.contains("truncated"), "{e}");
    let dir = model_with(&bytes[..5]);
    assert!(expect_failure(dir.path(), "1,2").contains("truncated"));
}

#[test]
fn header_length_beyond_the_file_is_named() {
    let mut bytes = std::fs::read(case_dir().join("model.safetensors")).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let dir = model_with(&bytes);
    let e = expect_failure(dir.path(), "1,2");
    assert!(e.contains("header length") && e.contains("beyond the end"), "{e}");
}

#[test]
fn garbage_header_is_named() {
    let mut bytes = 20u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\": not json here}");
    let dir = model_with(&bytes);
    let e = expect_failure(dir.path(), "1,2");
    assert!(e.contains("not a valid safetensors file"), "{e}");
}

#[test]
fn wrong_dtype_is_named() {
    let bytes = edited_weights(|tensors| {
        let t = tensors.iter_mut().find(|t| t.0 == "transformer.h.1.mlp.c_fc.weight").unwrap();
        t.1 = Dtype::I32;
    });
    let e = expect_failure(model_with(&bytes).path(), "1,2");
    assert!(e.contains("transformer.h.1.mlp.c_fc.weight") && e.contains("I32") && e.contains("F32"), "{e}");
}

#[test]
fn shape_contradicting_the_config_is_named() {
    let bytes = edited_weights(|tensors| {
        let t = tensors.iter_mut().find(|t| t.0 == "transformer.h.0.attn.c_proj.weight").unwrap();
        t.2 = vec![64, 48]; // the config implies [48, 64]
    });
    let e = expect_failure(model_with(&bytes).path(), "1,2");
    assert!(e.contains("transformer.h.0.attn.c_proj.weight") && e.contains("[64, 48]") && e.contains("[48, 64]"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let bytes = edited_weights(|tensors| tensors.retain(|t| t.0 != "transformer.h.2.attn.attn_imp.sink_logit"));
    let e = expect_failure(model_with(&bytes).path(), "1,2");
    assert!(e.contains("transformer.h.2.attn.attn_imp.sink_logit") && e.contains("missing"), "{e}");
}

#[test]
fn bad_config_is_named() {
    let dir = model_with(&std::fs::read(case_dir().join("model.safetensors")).unwrap());
    std::fs::write(dir.path().join("config.json"), "{\"n_layer\": 3,").unwrap();
    let e = expect_failure(dir.path(), "1,2");
    assert!(e.contains("config.json"), "{e}");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = expect_failure(dir.path(), "1,2");
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn token_out_of_range_is_named() {
    let e = expect_failure(&case_dir(), "1,2,97");
    assert!(e.contains("token id 97") && e.contains("position 2") && e.contains("vocab_size is 97"), "{e}");
    let e = expect_failure(&case_dir(), "1,x");
    assert!(e.contains("`x`"), "{e}");
}

#[test]
fn too_many_tokens_are_named() {
    let tokens = vec!["1"; 33].join(",");
    let e = expect_failure(&case_dir(), &tokens);
    assert!(e.contains("33 tokens") && e.contains("block_size of 32"), "{e}");
}

/// `--backend gpu` writes the same file as `--backend cpu`, for every golden case.
#[test]
fn gpu_and_cpu_backends_write_the_same_activations() {
    for dir in golden_cases() {
        let out_dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for backend in ["cpu", "gpu"] {
            let out = out_dir.path().join(format!("{backend}.safetensors"));
            let result = circuitscope(&[
                "forward", "--model", dir.to_str().unwrap(), "--tokens", &tokens_arg(&dir), "--out",
                out.to_str().unwrap(), "--backend", backend,
            ]);
            assert!(result.status.success(), "{backend}: {}", String::from_utf8_lossy(&result.stderr));
            files.push(read_safetensors(&out));
        }
        assert_eq!(files[0].keys().collect::<Vec<_>>(), files[1].keys().collect::<Vec<_>>());
        for (name, cpu) in &files[0] {
            assert_close(&format!("{} {name} cpu vs gpu", dir.display()), &files[1][name], cpu);
        }
    }
}

/// A model folder with the tokenizer files takes `--prompt` and shows the
/// predicted tokens' text; without them `--prompt` is a clear error.
#[test]
fn prompt_uses_the_folders_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    // A model over the tokenizer's 2048 ids, from the golden case's config.
    let config = r#"{"block_size": 16, "vocab_size": 2048, "n_layer": 1, "n_head": 2, "d_model": 8, "d_mlp": 16}"#;
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let model = circuitscope::model::Model::synthetic(circuitscope::model::Config::from_json(config).unwrap(), 0.5, 3);
    std::fs::write(dir.path().join("model.safetensors"), model.to_safetensors()).unwrap();
    let result = circuitscope(&["forward", "--model", dir.path().to_str().unwrap(), "--prompt", "x = 1"]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("no tokenizer") && stderr.contains("--tokens"), "{stderr}");

    let tokenizer = common::golden_dir().join("../tokenizer");
    for name in ["encoder.json", "vocab.bpe"] {
        std::fs::copy(tokenizer.join(name), dir.path().join(name)).unwrap();
    }
    let result = circuitscope(&["forward", "--model", dir.path().to_str().unwrap(), "--prompt", "x = 1", "--json"]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let json: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert!(json["predictions"][0]["text"].is_string(), "{json}");
    // The same as giving the ids the tokenizer makes.
    let read = |name: &str| std::fs::read_to_string(tokenizer.join(name)).unwrap();
    let ids = circuitscope::model::Tokenizer::from_files(&read("encoder.json"), &read("vocab.bpe")).unwrap().encode("x = 1");
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    let by_ids = circuitscope(&["forward", "--model", dir.path().to_str().unwrap(), "--tokens", &ids.join(","), "--json"]);
    assert_eq!(by_ids.stdout, result.stdout);
}

#[test]
fn graph_lists_the_most_active_channels_and_their_edges() {
    let dir = case_dir();
    let args = ["graph", "--model", dir.to_str().unwrap(), "--tokens", &tokens_arg(&dir), "--per-site", "4", "--json"];
    let result = circuitscope(&[&args[..], &["--rank", "activation"]].concat());
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let json: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let nodes = json["nodes"].as_array().unwrap();
    // 3 layers x 8 node sites x at most 4 channels each.
    assert!(!nodes.is_empty() && nodes.len() <= 3 * 8 * 4, "{}", nodes.len());
    assert!(nodes.iter().all(|n| n["row"].as_u64().unwrap() < 4 && n["activation"].as_f64().unwrap() != 0.0));
    for edge in json["edges"].as_array().unwrap() {
        assert!(edge["from"].as_u64().unwrap() < nodes.len() as u64 && edge["to"].as_u64().unwrap() < nodes.len() as u64);
    }
    let e = expect_failure_with(&["graph", "--model", dir.to_str().unwrap(), "--tokens", "1,2", "--position", "5"]);
    assert!(e.contains("position 5"), "{e}");
}

/// By default nodes are ranked by the measured effect of ablating them on
/// the top prediction: each shown node's effect is the drop of that logit
/// under `forward --zero`, and no unshown node of its site has a larger one.
#[test]
fn graph_ranks_by_measured_effect() {
    let dir = case_dir();
    let tokens = tokens_arg(&dir);
    let model = dir.to_str().unwrap();
    let result = circuitscope(&["graph", "--model", model, "--tokens", &tokens, "--per-site", "2", "--contrast", "3", "--json"]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let json: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let target = json["objective"]["target"].as_u64().unwrap() as usize;
    let effects = json["effects"].as_array().unwrap();
    let nodes = json["nodes"].as_array().unwrap();
    assert!(!nodes.is_empty());
    let difference = |extra: &[&str]| {
        let out = circuitscope(&[&["forward", "--model", model, "--tokens", &tokens, "--out"][..], extra].concat());
        assert!(out.status.success());
        let logits = &read_safetensors(Path::new(extra[0]))["logits"];
        let row = logits.row(logits.rows - 1);
        row[target] - row[3]
    };
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("acts.safetensors");
    let clean = difference(&[out.to_str().unwrap()]);
    for node in nodes.iter().take(6) {
        let label = node["label"].as_str().unwrap();
        let name = label.split(' ').next().unwrap();
        let ablated = difference(&[out.to_str().unwrap(), "--zero", name]);
        let effect = node["effect"].as_f64().unwrap() as f32;
        assert!((clean - ablated - effect).abs() < 1e-4, "{label}: {clean} - {ablated} vs {effect}");
        let site = name.split('[').next().unwrap();
        let larger = effects
            .iter()
            .filter(|e| e["label"].as_str().unwrap().starts_with(&format!("{site}[")))
            .filter(|e| e["effect"].as_f64().unwrap().abs() > f64::from(effect.abs()))
            .count();
        assert!(larger < 2, "{label}: {larger} nodes of its site have a larger effect");
    }
    let e = expect_failure_with(&["graph", "--model", model, "--tokens", "1,2", "--target", "500"]);
    assert!(e.contains("token 500"), "{e}");
}

/// Runs `circuitscope args` expecting a clear failure: non-zero exit, no
/// panic, a message that starts with `error: `. Returns stderr.
fn expect_failure_with(args: &[&str]) -> String {
    let result = circuitscope(args);
    let stderr = String::from_utf8_lossy(&result.stderr).to_string();
    assert!(!result.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(stderr.starts_with("error: "), "no clear error: {stderr}");
    stderr
}

#[test]
fn synthetic_writes_a_loadable_model_with_its_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let shape = dir.path().join("shape.json");
    std::fs::write(&shape, r#"{"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 2048, "block_size": 16}"#).unwrap();
    let out = dir.path().join("model");
    let tokenizer = common::golden_dir().join("../tokenizer");
    let (shape, out_s, tokenizer) = (shape.to_str().unwrap(), out.to_str().unwrap(), tokenizer.to_str().unwrap());
    let args = ["synthetic", "--config", shape, "--density", "0.1", "--tokenizer", tokenizer, "--out", out_s];
    assert!(circuitscope(&args).status.success());
    let run = circuitscope(&["forward", "--model", out_s, "--prompt", "x = 'a'", "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    assert!(expect_failure_with(&["synthetic", "--config", shape, "--density", "0", "--out", out_s]).contains("--density"));
    let small = dir.path().join("small.json");
    std::fs::write(&small, r#"{"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 100, "block_size": 16}"#).unwrap();
    let args = ["synthetic", "--config", small.to_str().unwrap(), "--tokenizer", tokenizer, "--out", out_s];
    assert!(expect_failure_with(&args).contains("the tokenizer has 2048 ids but the config's vocab_size is 100"));
}

#[test]
fn inspect_names_a_bad_node() {
    let dir = case_dir();
    let (model, tokens) = (dir.to_str().unwrap(), tokens_arg(&dir));
    let ok = circuitscope(&["inspect", "--model", model, "--tokens", &tokens, "--node", "1.mlp.post_act[3]", "--json"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let json: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(json["activations"].as_array().unwrap().len(), read_tokens(&dir).len());
    assert!(json["attention"].is_null() && !json["incoming"].as_array().unwrap().is_empty());
    for (node, message) in [("1.mlp.post_act[999]", "channel 999 is beyond"), ("1.attn.y[0]", "is not a node"), ("9.mlp.act_in[0]", "the model has 3 layers")] {
        let e = expect_failure_with(&["inspect", "--model", model, "--tokens", &tokens, "--node", node]);
        assert!(e.contains(message), "{node}: {e}");
    }
}

/// `--mean` sets a node to its mean over the folder's samples.json; without
/// one it says what is missing.
#[test]
fn mean_ablation_uses_the_sample_prompts() {
    let case = case_dir();
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(case.join(name), dir.path().join(name)).unwrap();
    }
    let model = dir.path().to_str().unwrap();
    let tokens = tokens_arg(&case);
    let e = expect_failure_with(&["forward", "--model", model, "--tokens", &tokens, "--mean", "0.mlp.post_act[3]"]);
    assert!(e.contains("samples.json"), "{e}");
    std::fs::write(dir.path().join("samples.json"), r#"["1, 2, 3", "4, 5"]"#).unwrap();
    let out = circuitscope(&["forward", "--model", model, "--tokens", &tokens, "--mean", "0.mlp.post_act[3]", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.path().join("samples.json"), r#"["1, 2, 999"]"#).unwrap();
    let e = expect_failure_with(&["forward", "--model", model, "--tokens", &tokens, "--mean", "0.mlp.post_act[3]"]);
    assert!(e.contains("samples.json, prompt 0") && e.contains("999"), "{e}");
}

/// `tokenizer` trains a tokenizer the CLI then uses; `eval` scores every task
/// on a model with it (a random model: about chance) and names what is wrong.
#[test]
fn tokenizer_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    let out = circuitscope(&["tokenizer", "--vocab", "400", "--corpus-bytes", "200000", "--out", tok.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shape = dir.path().join("shape.json");
    std::fs::write(&shape, r#"{"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 400, "block_size": 128}"#).unwrap();
    let model = dir.path().join("model");
    let (model_s, tok_s) = (model.to_str().unwrap(), tok.to_str().unwrap());
    let made = circuitscope(&["synthetic", "--config", shape.to_str().unwrap(), "--tokenizer", tok_s, "--out", model_s]);
    assert!(made.status.success());
    let eval = circuitscope(&["eval", "--model", model_s, "--examples", "30", "--json"]);
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let scores: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let names: Vec<&str> = scores.as_array().unwrap().iter().map(|s| s["task"].as_str().unwrap()).collect();
    assert_eq!(names, ["single_double_quote", "bracket_counting", "set_or_string", "bracket_type", "self_or_cls"]);
    for s in scores.as_array().unwrap() {
        let accuracy = s["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy) && s["examples"] == 30);
    }
    assert!(expect_failure_with(&["eval", "--model", model_s, "--task", "nope"]).contains("unknown task"));
    let bare = case_dir();
    assert!(expect_failure_with(&["eval", "--model", bare.to_str().unwrap()]).contains("no tokenizer"));
}

/// `train` writes a model folder the other commands load: a few steps of a
/// tiny model, with progress on stderr.
#[test]
fn train_writes_a_loadable_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let shape = dir.path().join("shape.json");
    std::fs::write(
        &shape,
        r#"{"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 400, "block_size": 128,
            "bias": false, "rms_norm": true, "afrac": 0.25, "sink": true}"#,
    )
    .unwrap();
    let out = dir.path().join("model");
    let args = [
        "train", "--out", out.to_str().unwrap(), "--config", shape.to_str().unwrap(), "--vocab", "400", "--corpus-bytes",
        "200000", "--steps", "4", "--batch", "2", "--seq-len", "16", "--density", "0.2", "--log-every", "2",
    ];
    let run = circuitscope(&args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("step      2/4") && stderr.contains("nonzero (") && stderr.contains("self_or_cls"), "{stderr}");
    for name in ["config.json", "model.safetensors", "encoder.json", "vocab.bpe", "samples.json", "tasks.json"] {
        assert!(out.join(name).exists(), "{name}");
    }
    // The weights are written compact: nonzeros only.
    let weights = std::fs::read(out.join("model.safetensors")).unwrap();
    let names: Vec<String> = SafeTensors::deserialize(&weights).unwrap().names().into_iter().map(String::from).collect();
    assert!(names.contains(&"transformer.h.0.mlp.c_fc.weight.nz_index".to_string()), "{names:?}");
    let eval = circuitscope(&["eval", "--model", out.to_str().unwrap(), "--examples", "5", "--failures", "1"]);
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    // A 4-step model gets some of its 25 answers wrong (deterministically), and shows them.
    assert!(String::from_utf8_lossy(&eval.stdout).contains(" wrong by "), "{}", String::from_utf8_lossy(&eval.stdout));
    let info = circuitscope(&["info", "--model", out.to_str().unwrap()]);
    assert!(info.status.success());
    let bad = expect_failure_with(&[&args[..3], &["--config", shape.to_str().unwrap(), "--vocab", "400", "--seq-len", "500"]].concat());
    assert!(bad.contains("seq_len 500"), "{bad}");

    // Both circuit searches write circuit files that `circuit-eval` reads. A
    // 4-step model is poor at the task, hence the lenient target.
    let model = out.to_str().unwrap();
    for method in ["mask", "ablation"] {
        let file = dir.path().join(format!("{method}.json"));
        let prune = circuitscope(&[
            "prune", "--model", model, "--task", "bracket_type", "--method", method, "--steps", "6", "--examples", "6", "--held-out",
            "6", "--target-loss", "5", "--out", file.to_str().unwrap(),
        ]);
        assert!(prune.status.success(), "{method}: {}", String::from_utf8_lossy(&prune.stderr));
        let circuit: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(circuit["method"]["name"], if method == "mask" { "learned-mask" } else { "ablation-search" });
        let eval = circuitscope(&["circuit-eval", "--model", model, "--circuit", file.to_str().unwrap(), "--examples", "6"]);
        let stdout = String::from_utf8_lossy(&eval.stdout);
        assert!(eval.status.success() && stdout.contains("circuit only") && stdout.contains("circuit removed"), "{stdout}");
    }
    // A circuit file with a node beyond its site, or of another model, is refused by name.
    let mut circuit: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("mask.json")).unwrap()).unwrap();
    circuit["nodes"] = serde_json::json!(["0.mlp.post_act[99]"]);
    circuit["mean_ablation"]["values"] = serde_json::json!([0.0]);
    circuit["edges"] = serde_json::json!([]);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, circuit.to_string()).unwrap();
    let message = expect_failure_with(&["circuit-eval", "--model", model, "--circuit", bad.to_str().unwrap()]);
    assert!(message.contains("channel 99 is out of range: 0.mlp.post_act has 32"), "{message}");
    circuit["model"]["weights_sha256"] = "ab".repeat(32).into();
    std::fs::write(&bad, circuit.to_string()).unwrap();
    let message = expect_failure_with(&["circuit-eval", "--model", model, "--circuit", bad.to_str().unwrap()]);
    assert!(message.contains("found on other weights"), "{message}");
}

#[test]
fn tokenize_prints_the_reference_ids() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for case in &cases[..3] {
        let out = circuitscope(&["tokenize", "--tokenizer", dir.to_str().unwrap(), "--text", case["text"].as_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ids: Vec<u64> = String::from_utf8(out.stdout).unwrap().trim().split(',').map(|id| id.parse().unwrap()).collect();
        let expected: Vec<u64> = case["ids"].as_array().unwrap().iter().map(|id| id.as_u64().unwrap()).collect();
        assert_eq!(ids, expected);
    }
    let out = circuitscope(&["tokenize", "--tokenizer", "/no/such/tokenizer.json", "--text", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /no/such/tokenizer.json"));
}

/// `convert` turns a torch-written checkpoint into a folder `forward` runs
/// to the reference logits, and reports sizes; a dense safetensors file with
/// the tokenizer becomes a folder that runs prompts; a tokenizer too large
/// for the model, or a hostile pickle, is an error and writes nothing.
#[test]
fn convert_writes_a_folder_that_runs_and_refuses_hostile_pickles() {
    let case = case_dir();
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("converted");
    let pt = case.join("model.pt");
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let e = expect_failure_with(&["convert", "--in", pt.to_str().unwrap(), "--tokenizer", tokenizer.to_str().unwrap(), "--out", folder.to_str().unwrap()]);
    assert!(e.contains("2048 ids but the model's vocab_size is 97") && !folder.exists(), "{e}");
    let run = circuitscope(&["convert", "--in", pt.to_str().unwrap(), "--out", folder.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("% of dense f32") && stdout.contains("nonzero weights"), "{stdout}");
    let forward = circuitscope(&["forward", "--model", folder.to_str().unwrap(), "--tokens", &tokens_arg(&case), "--json"]);
    let original = circuitscope(&["forward", "--model", case.to_str().unwrap(), "--tokens", &tokens_arg(&case), "--json"]);
    assert!(forward.status.success());
    // The same predictions and logits.
    let top = |out: &[u8]| -> Vec<(u64, String)> {
        let json: serde_json::Value = serde_json::from_slice(out).unwrap();
        json["predictions"].as_array().unwrap().iter().map(|p| (p["token"].as_u64().unwrap(), p["logit"].to_string())).collect()
    };
    assert_eq!(top(&forward.stdout), top(&original.stdout));

    // A dense model of the tokenizer's vocabulary, converted with it.
    let shape = out.path().join("shape.json");
    std::fs::write(&shape, r#"{"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 2048, "block_size": 16}"#).unwrap();
    let dense = out.path().join("dense");
    assert!(circuitscope(&["synthetic", "--config", shape.to_str().unwrap(), "--out", dense.to_str().unwrap()]).status.success());
    let with_tokenizer = out.path().join("with_tokenizer");
    let input = dense.join("model.safetensors");
    let run = circuitscope(&["convert", "--in", input.to_str().unwrap(), "--tokenizer", tokenizer.to_str().unwrap(), "--out", with_tokenizer.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for name in ["config.json", "model.safetensors", "encoder.json", "vocab.bpe"] {
        assert!(with_tokenizer.join(name).exists(), "{name}");
    }
    let run = circuitscope(&["forward", "--model", with_tokenizer.to_str().unwrap(), "--prompt", "x = 'a'", "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let hostile = out.path().join("hostile.pt");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&hostile).unwrap());
    zip.start_file("model/data.pkl", zip::write::SimpleFileOptions::default()).unwrap();
    std::io::Write::write_all(&mut zip, b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00ls\x85R.").unwrap();
    zip.finish().unwrap();
    let refused_out = out.path().join("refused");
    let config = case.join("config.json");
    let run = circuitscope(&["convert", "--in", hostile.to_str().unwrap(), "--config", config.to_str().unwrap(), "--out", refused_out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("`posix.system`") && stderr.contains("hostile.pt"), "{stderr}");
    assert!(!refused_out.exists());
}

/// Output piped into a reader that stops early (`| head`) ends the command
/// quietly, as other command-line tools do, instead of a panic.
#[test]
fn a_closed_output_pipe_is_not_a_panic() {
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let text = "x = [1, 2, 3]\n".repeat(8000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_circuitscope"))
        .args(["tokenize", "--tokenizer", tokenizer.to_str().unwrap(), "--text", &text])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before anything is printed
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// NaN and infinite weights are refused with the tensor's name (a forward
/// pass over them printed NaN probabilities and exited 0).
#[test]
fn non_finite_weights_are_refused_by_name() {
    for (what, bad) in [("NaN", f32::NAN), ("inf", f32::INFINITY), ("-inf", f32::NEG_INFINITY)] {
        let bytes = edited_weights(|tensors| {
            let t = tensors.iter_mut().find(|t| t.0 == "transformer.h.1.ln_2.weight").unwrap();
            t.3[4..8].copy_from_slice(&bad.to_le_bytes());
        });
        let e = expect_failure(model_with(&bytes).path(), "1,2");
        assert!(e.contains("transformer.h.1.ln_2.weight") && e.contains(&format!("holds {what} at entry 1")), "{e}");
    }
}

/// Bytes after a file's tensor data are named as such, not as a truncation.
#[test]
fn trailing_bytes_are_named() {
    let mut bytes = std::fs::read(case_dir().join("model.safetensors")).unwrap();
    bytes.extend_from_slice(b"junk");
    let e = expect_failure(model_with(&bytes).path(), "1,2");
    assert!(e.contains("4 bytes follow the end of its tensor data") && !e.contains("truncated"), "{e}");
}

/// A config whose dimensions promise far more memory than its file can hold
/// is refused before anything is allocated: a few KB of compact tensors, all
/// empty, under a config of d_model 2^24 or a 2^24-token bigram table.
#[test]
fn a_config_that_promises_more_than_its_file_holds_is_refused() {
    for (config, needs) in [
        (r#"{"n_layer": 1, "d_model": 16777216, "n_head": 1, "d_head": 8, "d_mlp": 8, "vocab_size": 8, "block_size": 8}"#, "d_model"),
        (r#"{"n_layer": 1, "d_model": 8, "n_head": 1, "d_head": 8, "d_mlp": 8, "vocab_size": 16777216, "block_size": 8, "enable_bigram_table": true}"#, "bigram"),
    ] {
        let params = circuitscope::model::Config::from_json(config).unwrap().parameters();
        let (index, value): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
        let views = params.iter().flat_map(|p| {
            [
                (format!("{}.nz_index", p.name), TensorView::new(Dtype::U32, vec![0], &index).unwrap()),
                (format!("{}.nz_value", p.name), TensorView::new(Dtype::F32, vec![0], &value).unwrap()),
            ]
        });
        let metadata = params.iter().map(|p| (p.name.clone(), format!("{:?}", p.shape))).collect();
        let bytes = safetensors::serialize(views, Some(metadata)).unwrap();
        assert!(bytes.len() < 8_000, "{needs}: {} bytes", bytes.len());
        let dir = model_with(&bytes);
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let e = expect_failure(dir.path(), "1,2");
        assert!(e.contains("config.json: its dimensions need") && e.contains("the config does not belong to this file"), "{needs}: {e}");
    }
}

/// A model folder whose tokenizer has more ids than the model's vocabulary is
/// named at load (eval indexed the logits with an answer token past them).
#[test]
fn a_tokenizer_larger_than_the_model_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let shape = dir.path().join("shape.json");
    std::fs::write(&shape, r#"{"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 100, "block_size": 64}"#).unwrap();
    let out = dir.path().join("model");
    let out_s = out.to_str().unwrap();
    assert!(circuitscope(&["synthetic", "--config", shape.to_str().unwrap(), "--out", out_s]).status.success());
    for name in ["encoder.json", "vocab.bpe"] {
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer").join(name), out.join(name)).unwrap();
    }
    for args in [
        vec!["eval", "--model", out_s, "--examples", "2"],
        vec!["forward", "--model", out_s, "--prompt", "x = 1"],
        vec!["circuit-eval", "--model", out_s, "--circuit", "none.json"],
    ] {
        let e = expect_failure_with(&args);
        assert!(e.contains("tokenizer: it has 2048 ids but the model's vocab_size is 100"), "{args:?}: {e}");
    }
}

/// A write that fails part-way leaves nothing: `convert` into a folder whose
/// `model.safetensors` cannot be written leaves no `config.json` either.
#[test]
fn a_failed_write_leaves_no_partial_output() {
    let case = case_dir();
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("converted");
    std::fs::create_dir_all(folder.join("model.safetensors")).unwrap(); // a folder where the file goes
    let pt = case.join("model.pt");
    let e = expect_failure_with(&["convert", "--in", pt.to_str().unwrap(), "--out", folder.to_str().unwrap()]);
    assert!(e.contains("model.safetensors"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["model.safetensors"], "only the folder that was there");

    let tokenizer_out = out.path().join("tokenizer");
    std::fs::create_dir_all(tokenizer_out.join("vocab.bpe")).unwrap();
    let e = expect_failure_with(&["tokenizer", "--vocab", "300", "--corpus-bytes", "20000", "--out", tokenizer_out.to_str().unwrap()]);
    assert!(e.contains("vocab.bpe"), "{e}");
    assert!(!tokenizer_out.join("encoder.json").exists());
}

/// `inspect --task`: the node's value on each of a task's held-out examples
/// is what `forward --prompt` records at that prompt's last token, and the
/// examples are split by their right answer.
#[test]
fn the_task_distribution_is_the_nodes_value_at_the_last_token_of_a_forward_run_of_each_example() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models/python_tasks");
    let model = dir.to_str().unwrap();
    let (node, site, channel) = ("0.mlp.resid_delta[21]", "0.mlp.resid_delta", 21);
    let result = circuitscope(&["inspect", "--model", model, "--tokens", "1", "--node", node, "--task", "single_double_quote", "--task-examples", "12", "--json"]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let json: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let classes = json["task"]["classes"].as_array().unwrap();
    assert_eq!(classes.iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(), ["closes with \"", "closes with '"]);
    let mut means = Vec::new();
    let mut examples = 0;
    for class in classes {
        let closing = if class["name"].as_str().unwrap().ends_with('"') { '"' } else { '\'' };
        let values: Vec<f64> = class["examples"].as_array().unwrap().iter().map(|e| e["value"].as_f64().unwrap()).collect();
        for example in class["examples"].as_array().unwrap() {
            let prompt = example["prompt"].as_str().unwrap();
            assert_eq!(prompt.rfind(['"', '\'']).map(|i| prompt[i..].chars().next().unwrap()), Some(closing), "{prompt:?} is in its class");
            let out = tempfile::NamedTempFile::new().unwrap();
            let run = circuitscope(&["forward", "--model", model, "--prompt", prompt, "--out", out.path().to_str().unwrap()]);
            assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
            let acts = &read_safetensors(out.path())[site];
            let last = acts.row(acts.rows - 1)[channel];
            assert!((f64::from(last) - example["value"].as_f64().unwrap()).abs() < 1e-5, "{prompt:?}: forward {last}, inspect {}", example["value"]);
            examples += 1;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((mean - class["mean"].as_f64().unwrap()).abs() < 1e-5);
        means.push(mean);
    }
    assert_eq!(examples, 12);
    assert!((json["task"]["difference"].as_f64().unwrap() - (means[0] - means[1])).abs() < 1e-5);
    let bad = expect_failure_with(&["inspect", "--model", model, "--tokens", "1", "--node", node, "--task", "quotes"]);
    assert!(bad.contains("\"quotes\" is not a task") && bad.contains("single_double_quote"), "{bad}");
}
