//! The page's default model is a trained one that does the tasks: evaluated
//! here on held-out examples (a seed no training run or page uses), not read
//! from stored numbers.

use std::path::Path;

use circuitscope::model::{Model, Tokenizer};
use circuitscope::tasks::{evaluate, Task};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/models");
// The CLI's default, so `circuitscope eval` prints the figures checked here.
const HELD_OUT_SEED: u64 = 1_000_003;
const EXAMPLES: usize = 200;

/// The default model's folder, from the page's index.
fn default_dir() -> std::path::PathBuf {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(Path::new(MODELS).join("index.json")).unwrap()).unwrap();
    Path::new(MODELS).join(index["models"][0]["id"].as_str().unwrap())
}

/// A model folder's model, tokenizer and mean activations over its samples.
fn load(dir: &Path) -> (Model, Tokenizer, circuitscope::circuits::SiteMeans) {
    use circuitscope::model::{forward, Recording};
    let model = Model::load_dir(dir).unwrap();
    let tokenizer = Tokenizer::load_dir(dir).unwrap().unwrap();
    let mut means = circuitscope::circuits::SiteMeans::default();
    let samples = std::fs::read_to_string(dir.join("samples.json")).unwrap();
    for tokens in circuitscope::circuits::parse_samples(&samples, &model.config, Some(&tokenizer)).unwrap() {
        let mut recording = Recording::new();
        forward(&model, &tokens, &mut |site, acts| recording.push((site, acts.clone()))).unwrap();
        means.add(&recording);
    }
    (model, tokenizer, means)
}

#[test]
fn the_default_model_is_trained_sparse_small_and_does_its_tasks() {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(Path::new(MODELS).join("index.json")).unwrap()).unwrap();
    let default = &index["models"][0];
    let dir = Path::new(MODELS).join(default["id"].as_str().unwrap());
    assert_eq!(default["tokenizer"], true, "the default model reads text");
    assert_eq!(default["tasks"], true, "the default model lists its task prompts");

    let bytes = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();
    assert!(bytes <= 2_000_000, "model.safetensors is {bytes} bytes");

    let model = Model::load_dir(&dir).unwrap();
    let (nnz, total) = model.weight_density();
    assert!(nnz as f64 <= 0.02 * total as f64, "{nnz} of {total} weights nonzero");

    // Attention is not uniform: every layer kept some q and k weights.
    for (l, layer) in model.params.layers.iter().enumerate() {
        let d_attn = model.config.d_attn();
        let rows = |r: std::ops::Range<usize>| r.map(|r| layer.c_attn.weight.row(r).0.len()).sum::<usize>();
        assert!(rows(0..d_attn) > 0 && rows(d_attn..2 * d_attn) > 0, "layer {l} has no q or no k weights");
    }

    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let tokenizer = Tokenizer::from_files(&read("encoder.json"), &read("vocab.bpe")).unwrap();
    for task in Task::ALL {
        let score = evaluate(&model, &tokenizer, &task.examples(HELD_OUT_SEED, EXAMPLES)).unwrap();
        eprintln!("{}: {:.1}% of {EXAMPLES}", task.name(), 100.0 * score.accuracy);
        assert!(score.accuracy >= 0.95, "{}: {:.1}% of {EXAMPLES}", task.name(), 100.0 * score.accuracy);
    }
}

/// Every bundled circuit opens on the default model, and its faithfulness
/// figures are what the model does: evaluated again here on the same
/// held-out examples, with the same mean ablation.
#[test]
fn the_bundled_circuits_are_small_and_as_faithful_as_their_files_say() {
    use circuitscope::circuits::{keep_only, remove, task_loss, Choice, CircuitFile};

    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(Path::new(MODELS).join("index.json")).unwrap()).unwrap();
    let default = &index["models"][0];
    let dir = Path::new(MODELS).join(default["id"].as_str().unwrap());
    let (model, tokenizer, means) = load(&dir);
    let tasks: Vec<&str> = default["circuits"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tasks.len(), Task::ALL.len(), "a circuit for every task");
    for name in tasks {
        let json = std::fs::read_to_string(dir.join("circuits").join(format!("{name}.json"))).unwrap();
        let (file, nodes) = CircuitFile::parse(&json, &model).unwrap();
        assert_eq!(file.task, name);
        assert_eq!(file.edges, CircuitFile::edges_of(&model, &nodes), "{name}: the edges among its nodes");
        let task = Task::parse(name).unwrap();
        let held_out = Choice::of_task(task, &tokenizer, HELD_OUT_SEED, file.faithfulness.examples).unwrap();
        let alone = task_loss(&model, &held_out, &keep_only(&model.config, &means, &nodes).unwrap()).unwrap();
        let removed = task_loss(&model, &held_out, &remove(&model.config, &means, &nodes).unwrap()).unwrap();
        let f = &file.faithfulness;
        eprintln!(
            "{name}: {} nodes, {} edges; alone {:.4} ({:.1}%), removed {:.4} ({:.1}%)",
            nodes.len(),
            file.edges.len(),
            alone.loss,
            100.0 * alone.accuracy,
            removed.loss,
            100.0 * removed.accuracy
        );
        assert!((alone.loss - f.circuit.loss).abs() < 1e-6 && alone.accuracy == f.circuit.accuracy, "{name}: {alone:?} vs {:?}", f.circuit);
        assert!((removed.loss - f.without_circuit.loss).abs() < 1e-6, "{name}: {removed:?} vs {:?}", f.without_circuit);
        // Small, and enough: at most 2% of the model's nodes do the task on
        // their own. (Without the circuit most tasks fail, but not every one:
        // the model does bracket_type in more than one way.)
        assert!(nodes.len() * 50 <= circuitscope::circuits::all_nodes(&model.config).len(), "{name}: {} nodes", nodes.len());
        assert!(alone.accuracy >= 0.9, "{name}: the circuit alone gets {:.1}% right", 100.0 * alone.accuracy);
    }
}

/// The classroom tours are what `circuitscope tours` writes today, and each
/// one's last step does break its task: checked by the reference forward
/// pass with the step's link applied, not by the tour code.
#[test]
fn the_bundled_tours_are_current_and_their_ablations_break_the_behaviour() {
    use circuitscope::circuits::{AblationKind, CircuitOrigin, LoadedCircuit, Tours, ViewLink};
    use circuitscope::model::forward_with_interventions;

    let dir = default_dir();
    let out = tempfile::tempdir().unwrap();
    let written = out.path().join("tours.json");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_circuitscope"))
        .args(["tours", "--model", dir.to_str().unwrap(), "--out", written.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let bundled = std::fs::read_to_string(dir.join("tours.json")).unwrap();
    assert_eq!(std::fs::read_to_string(&written).unwrap(), bundled, "tours.json is stale: run circuitscope tours --model {}", dir.display());

    let (model, tokenizer, means) = load(&dir);
    let tours: Tours = serde_json::from_str(&bundled).unwrap();
    assert_eq!(tours.tours.len(), Task::ALL.len(), "a tour for every task");
    for tour in &tours.tours {
        assert_eq!(tour.steps.len(), 4, "{}", tour.task);
        let difference = |link: &ViewLink| {
            let tokens = tokenizer.encode(&link.prompt);
            let ablations: Vec<_> = link.view.ablations.iter().map(|&(node, kind)| {
                assert_eq!(kind, AblationKind::Mean);
                means.ablation(node).unwrap()
            }).collect();
            let logits = forward_with_interventions(&model, &tokens, &ablations, &mut |_, _| {}).unwrap();
            let last = logits.row(tokens.len() - 1);
            last[link.view.target.unwrap() as usize] - last[link.view.contrast.unwrap() as usize]
        };
        let first = ViewLink::parse(&tour.steps[0].view).unwrap();
        let last = ViewLink::parse(&tour.steps[3].view).unwrap();
        // Every step fits the model with the circuits that come with it, as the page checks it.
        let json = std::fs::read_to_string(dir.join("circuits").join(format!("{}.json", tour.task))).unwrap();
        let circuits = [std::sync::Arc::new(LoadedCircuit::parse(&json, &model, CircuitOrigin::Bundled).unwrap())];
        for step in [&first, &last] {
            step.check(&model, tokenizer.encode(&step.prompt).len(), &circuits).unwrap();
        }
        assert!(first.view.ablations.is_empty() && !last.view.ablations.is_empty(), "{}", tour.task);
        let (before, after) = (difference(&first), difference(&last));
        eprintln!("{}: right - wrong {before:.2}, with {} nodes ablated {after:.2}", tour.task, last.view.ablations.len());
        assert!(before >= 1.0 && after < 0.0, "{}: {before} then {after}", tour.task);
    }
}
