//! Dataset examples (`circuits::collect_examples`) on the bundled model,
//! checked against an independent count: every node's values over the
//! whole corpus, sorted. (The values come from the same backend, the CPU
//! path: whether a GELU's tail counts as zero is decided at 2^-24, and the
//! reference and the fast path may land on either side of it.)

use std::path::PathBuf;
use std::sync::Arc;

use circuitscope::circuits::{all_nodes, bin_of, collect_examples, default_corpus, example_rows, ready, Bucket, Examples, ExamplesError, Node, Quantile, BINS, HEAVY, ZERO_BELOW};
use circuitscope::model::{Model, Record, Tokenizer};
use circuitscope::runner::{Runner, Want};

const WINDOW: usize = 32;
const TOKENS: usize = 4096;

fn bundled() -> (Arc<Model>, Tokenizer) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models/python_tasks");
    (Arc::new(Model::load_dir(&dir).unwrap()), Tokenizer::load_dir(&dir).unwrap().unwrap())
}

fn collect(model: &Arc<Model>, corpus: &[u32], seed: u64) -> Examples {
    let runner = Runner::at_once(model.clone(), Want::Cpu, Box::new(|_| {}));
    ready(collect_examples(&runner, corpus.to_vec(), WINDOW, seed, &mut |_| true)).unwrap()
}

/// Every node's value at every corpus token, from a run of each window on
/// the CPU: `[nodes][tokens]`.
fn all_values(model: &Arc<Model>, corpus: &[u32]) -> Vec<Vec<f32>> {
    let nodes = all_nodes(&model.config);
    let runner = Runner::at_once(model.clone(), Want::Cpu, Box::new(|_| {}));
    let mut values = vec![Vec::with_capacity(corpus.len()); nodes.len()];
    for window in corpus.chunks_exact(WINDOW) {
        let (_, recording) = ready(runner.record(window, &Record::All)).unwrap();
        for (i, node) in nodes.iter().enumerate() {
            let acts = &recording.iter().find(|(s, _)| *s == node.site).unwrap().1;
            values[i].extend((0..WINDOW).map(|t| acts.row(t)[node.channel]));
        }
    }
    values
}

#[test]
fn every_nodes_examples_are_its_extremes_and_lie_in_their_quantile_buckets() {
    let (model, tokenizer) = bundled();
    let corpus = default_corpus(&tokenizer, TOKENS);
    assert_eq!(corpus.len(), TOKENS);
    let examples = collect(&model, &corpus, 7);
    let reference = all_values(&model, &corpus);
    let nodes = all_nodes(&model.config);
    assert_eq!(examples.nodes(), nodes.len());
    let mut filled = 0;
    for (node, values) in nodes.iter().zip(&reference) {
        let n = values.len() as f64;
        let nonzero: Vec<f32> = values.iter().copied().filter(|&v| v.abs() >= ZERO_BELOW).collect();
        assert_eq!(examples.density(*node), nonzero.len() as f64 / n, "{node:?}");
        // Each example's value is the node's value at its token.
        for bucket in Bucket::ALL {
            for e in examples.of(*node, bucket) {
                assert!((values[e.offset as usize] - e.value).abs() <= 1e-4 * (1.0 + e.value.abs()), "{node:?} {bucket:?} {e:?}");
                assert!(e.value.abs() >= ZERO_BELOW, "a zero is no example");
            }
        }
        // The extremes are the largest and smallest nonzero values.
        let mut sorted = nonzero.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let largest: Vec<f32> = examples.of(*node, Bucket::Max).iter().map(|e| e.value).collect();
        let smallest: Vec<f32> = examples.of(*node, Bucket::Min).iter().map(|e| e.value).collect();
        let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()));
        assert!(close(&largest, &sorted[..largest.len()]), "{node:?}: {largest:?} vs {:?}", &sorted[..largest.len()]);
        let tail: Vec<f32> = sorted.iter().rev().take(smallest.len()).copied().collect();
        assert!(close(&smallest, &tail), "{node:?}: {smallest:?} vs {tail:?}");
        assert_eq!(largest.len(), nonzero.len().min(circuitscope::circuits::SAMPLES));
        // A quantile bucket's examples: the values in bins at its rank.
        let mut seen = 0;
        for bucket in Bucket::ALL.into_iter().filter(|b| !matches!(b, Bucket::Max | Bucket::Min)) {
            seen += examples.seen(*node, bucket);
            for e in examples.of(*node, bucket) {
                let bin = bin_of(e.value);
                let above = values.iter().filter(|&&v| bin_of(v) > bin).count() as f64 / n;
                let below = values.iter().filter(|&&v| bin_of(v) < bin).count() as f64 / n;
                let expected = if above < 0.5 { Bucket::Top(rank_quantile(above)) } else { Bucket::Bottom(rank_quantile(below)) };
                assert_eq!(bucket, expected, "{node:?} {e:?}: {above} above, {below} below");
                filled += 1;
            }
        }
        assert_eq!(seen as usize, nonzero.len(), "{node:?}: every nonzero value falls in one quantile bucket");
        // The label's counters: the tokens at and before the top 1% of values.
        let mut per_bin = vec![0usize; BINS];
        values.iter().for_each(|&v| per_bin[bin_of(v)] += 1);
        let above = |bin: usize| per_bin[bin + 1..].iter().sum::<usize>() as f64;
        let top: Vec<usize> = (0..values.len()).filter(|&i| values[i].abs() >= ZERO_BELOW && above(bin_of(values[i])) < 0.01 * n).collect();
        assert_eq!(top.len() as u32, examples.top_1_percent(*node), "{node:?}");
        let (at, before) = examples.heavy_tokens(*node);
        for (counters, tokens) in [(at, top.iter().map(|&i| corpus[i]).collect::<Vec<_>>()), (before, top.iter().filter(|&&i| i % WINDOW > 0).map(|&i| corpus[i - 1]).collect())] {
            let slack = tokens.len() as u32 / (HEAVY as u32 + 1);
            let count = |t: u32| tokens.iter().filter(|&&x| x == t).count() as u32;
            for &(token, counted) in counters.iter().filter(|c| c.1 > 0) {
                assert!(counted <= count(token) && counted + slack >= count(token), "{node:?}: token {token} counted {counted} of {}", count(token));
            }
            for &t in &tokens {
                assert!(count(t) <= slack || counters.iter().any(|c| c.0 == t && c.1 > 0), "{node:?}: token {t} ({} of {}) is not counted", count(t), tokens.len());
            }
        }
    }
    assert!(filled > nodes.len(), "the buckets hold examples ({filled})");
}

fn rank_quantile(rank: f64) -> Quantile {
    [Quantile::Q0_1, Quantile::Q1, Quantile::Q10].into_iter().find(|q| rank < q.fraction()).unwrap_or(Quantile::Q50)
}

#[test]
fn examples_depend_on_the_seed_only_in_their_samples_and_survive_their_file() {
    let (model, tokenizer) = bundled();
    let corpus = default_corpus(&tokenizer, 1024);
    let examples = collect(&model, &corpus, 7);
    assert_eq!(collect(&model, &corpus, 7), examples, "the same settings give the same examples");
    let other = collect(&model, &corpus, 8);
    let node = Node::new(0, circuitscope::model::SiteKind::MlpPostAct, 0);
    assert_eq!(other.of(node, Bucket::Max), examples.of(node, Bucket::Max), "the extremes do not depend on the seed");
    let bytes = examples.to_bytes();
    assert_eq!(Examples::from_bytes(&bytes).unwrap(), examples);
    assert_eq!(examples.to_bytes(), bytes, "the same examples make the same file");
    examples.check_fits(&model.config).unwrap();
    // A file cut short, another safetensors file and a model of another shape are refused by name.
    assert!(matches!(Examples::from_bytes(&bytes[..bytes.len() / 2]), Err(ExamplesError::NotSafetensors(_))));
    let model_file = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models/python_tasks/model.safetensors")).unwrap();
    assert_eq!(Examples::from_bytes(&model_file), Err(ExamplesError::NotExamples));
    let other_model = Model::load_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models/gpt2_ln_gelu")).unwrap();
    assert!(matches!(examples.check_fits(&other_model.config), Err(ExamplesError::OtherModel(_))));
    // A window shows the example's token at its position.
    let e = examples.of(node, Bucket::Max)[0];
    let (window, at) = examples.window_of(e.offset);
    assert_eq!(window.len(), WINDOW);
    assert_eq!(window[at], corpus[e.offset as usize]);
    // The inspector's rows: context around each example, its own value at its token.
    let runner = Runner::at_once(model.clone(), Want::Cpu, Box::new(|_| {}));
    let rows = ready(example_rows(&runner, &examples, node, 6, 2)).unwrap();
    assert_eq!(rows[0].0, Bucket::Max);
    for (bucket, rows) in &rows {
        assert_eq!(rows.len(), examples.of(node, *bucket).len());
        for row in rows {
            assert!(row.tokens.len() <= 9 && row.tokens.len() == row.values.len());
            assert_eq!(row.tokens[row.at], corpus[row.example.offset as usize]);
            assert_eq!(row.values[row.at], row.example.value);
        }
    }
}

#[test]
fn the_bundled_model_ships_examples_of_every_node_over_a_million_tokens_within_5_mb() {
    let (model, _) = bundled();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models/python_tasks/examples.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() <= 5_000_000, "{} bytes", bytes.len());
    let examples = Examples::from_bytes(&bytes).unwrap();
    examples.check_fits(&model.config).unwrap();
    assert_eq!(examples.model, model.weights_sha256(), "made from these weights");
    assert!(examples.tokens >= 1 << 20, "{} tokens", examples.tokens);
    let nodes = all_nodes(&model.config);
    // A node that is zero on every token (453 of 5,632 here: channels a
    // weight-sparse model leaves unused) has no examples; every other has.
    let silent = nodes.iter().filter(|&&n| examples.density(n) == 0.0).count();
    assert!(silent * 5 < nodes.len(), "{silent} of {} nodes never fire", nodes.len());
    for &node in &nodes {
        assert_eq!(examples.of(node, Bucket::Max).is_empty(), examples.density(node) == 0.0, "{node:?}");
    }
    // Some examples again from a run of their windows (the file was made on the CPU path).
    let runner = Runner::at_once(model.clone(), Want::Cpu, Box::new(|_| {}));
    for &node in nodes.iter().step_by(97) {
        for e in examples.of(node, Bucket::Max).into_iter().chain(examples.of(node, Bucket::Top(Quantile::Q10))) {
            let (window, at) = examples.window_of(e.offset);
            let (_, recording) = ready(runner.record(window, &Record::Sites(vec![node.site]))).unwrap();
            let again = recording[0].1.row(at)[node.channel];
            assert!((again - e.value).abs() <= 1e-5 * (1.0 + again.abs()), "{node:?} {e:?}: {again}");
        }
    }
}

#[test]
fn most_nodes_of_the_bundled_circuits_get_a_token_label() {
    let (model, tokenizer) = bundled();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models/python_tasks");
    let examples = Examples::from_bytes(&std::fs::read(dir.join("examples.safetensors")).unwrap()).unwrap();
    let shares = examples.token_shares(model.config.vocab_size);
    let quoted = |t: u32| format!("{:?}", tokenizer.decode(&[t]));
    let (mut labelled, mut all) = (0, 0);
    for task in ["single_double_quote", "bracket_counting", "set_or_string", "bracket_type", "self_or_cls"] {
        let file: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(format!("circuits/{task}.json"))).unwrap()).unwrap();
        for name in file["nodes"].as_array().unwrap() {
            let node = Node::parse(name.as_str().unwrap()).unwrap();
            let label = examples.label(node, &shares);
            if std::env::var("SHOW_LABELS").is_ok() {
                println!("{task} {node:?}: {}", label.text(&quoted));
            }
            all += 1;
            labelled += usize::from(label != circuitscope::circuits::Label::Unclear);
        }
    }
    assert!(labelled * 2 > all, "{labelled} of {all} circuit nodes labelled");
}

/// The GPU's examples are the CPU's: the same extremes at the same tokens
/// (values to float rounding; a bin edge may move a rare sample).
#[cfg(feature = "gpu")]
#[test]
fn examples_collected_on_the_gpu_are_the_cpus() {
    let (model, tokenizer) = bundled();
    let corpus = default_corpus(&tokenizer, 2048);
    let on_cpu = collect(&model, &corpus, 7);
    let runner = pollster::block_on(Runner::new(model.clone(), Want::Gpu, Box::new(|_| {}))).unwrap();
    assert!(matches!(runner.backend(), circuitscope::runner::Backend::Gpu(_)), "{:?}", runner.backend());
    let on_gpu = pollster::block_on(collect_examples(&runner, corpus.clone(), WINDOW, 7, &mut |_| true)).unwrap();
    let nodes = all_nodes(&model.config);
    let same = nodes.iter().filter(|&&n| on_gpu.of(n, Bucket::Max).iter().map(|e| e.offset).eq(on_cpu.of(n, Bucket::Max).iter().map(|e| e.offset))).count();
    assert!(same * 100 >= nodes.len() * 99, "{same} of {} nodes have the same largest examples", nodes.len());
    for &node in &nodes {
        for (g, c) in on_gpu.of(node, Bucket::Max).iter().zip(on_cpu.of(node, Bucket::Max)) {
            assert!((g.value - c.value).abs() <= 1e-3 * (1.0 + c.value.abs()), "{node:?}: {g:?} vs {c:?}");
        }
    }
}
