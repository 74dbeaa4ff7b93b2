//! The fuzz targets: one per parser of untrusted input. Each takes the
//! parts of an input and returns what became of it (a short text: "ok" or
//! the error, which steers the corpus), or `Err` when a property that must
//! hold for any input does not (a converted model that does not load again,
//! a link that does not reopen the same view).
//!
//! Seeds: the repository's own files (golden checkpoints, bundled models,
//! circuits, tours) plus tests/fuzz/corpus/<target>/, small files made for
//! fuzzing (tiny models, a Hugging Face tokenizer, odd links).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use circuitscope::circuits::{collect_examples, parse_samples, ready, AblationKind, Bucket, CircuitFile, Examples, Node, Shown, ViewLink};
use circuitscope::convert::{convert, convert_torch_by_ranges, Converted, ConvertError, SafetensorsFile, TorchFile};
use circuitscope::model::{Config, Model, Tokenizer, TopkSite};

use crate::input::{self, Input};
use crate::mutate::Kind;
use crate::run::untimed;

pub struct Target {
    pub name: &'static str,
    /// What each part is, and how often a mutation picks it.
    pub parts: &'static [(Kind, usize)],
    /// The most bytes an input may grow to.
    pub max_len: usize,
    /// The folder under tests/fuzz/corpus/ with its own seeds.
    pub corpus: &'static str,
    /// Seeds from the repository's other files.
    pub seeds: fn() -> Vec<Input>,
    /// Loads what every input shares (the bundled model), before any is timed.
    pub setup: fn(),
    pub run: fn(&Input) -> Result<String, String>,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "torch",
        parts: &[(Kind::Json, 1), (Kind::Torch, 4)],
        max_len: 2 << 20,
        corpus: "torch",
        seeds: torch_seeds,
        setup: nothing,
        run: torch,
    },
    Target {
        name: "torch_ranges",
        parts: &[(Kind::Json, 1), (Kind::Torch, 4)],
        max_len: 2 << 20,
        corpus: "torch",
        seeds: torch_seeds,
        setup: nothing,
        run: torch_ranges,
    },
    Target {
        name: "safetensors",
        parts: &[(Kind::Json, 1), (Kind::Safetensors, 3)],
        max_len: 2 << 20,
        corpus: "safetensors",
        seeds: dense_seeds,
        setup: nothing,
        run: safetensors,
    },
    Target {
        name: "model",
        parts: &[(Kind::Json, 1), (Kind::Safetensors, 2)],
        max_len: 2 << 20,
        corpus: "model",
        seeds: model_seeds,
        setup: nothing,
        run: model,
    },
    Target {
        name: "config",
        parts: &[(Kind::Json, 1)],
        max_len: 64 << 10,
        corpus: "config",
        seeds: config_seeds,
        setup: nothing,
        run: config,
    },
    Target {
        name: "tokenizer",
        parts: &[(Kind::Json, 1), (Kind::Merges, 1), (Kind::Text, 3)],
        max_len: 256 << 10,
        corpus: "tokenizer",
        seeds: tokenizer_seeds,
        setup: nothing,
        run: tokenizer,
    },
    Target {
        name: "tokenizer_hf",
        parts: &[(Kind::Json, 2), (Kind::Text, 3)],
        max_len: 256 << 10,
        corpus: "tokenizer_hf",
        seeds: no_seeds,
        setup: nothing,
        run: tokenizer_hf,
    },
    Target {
        name: "circuit",
        parts: &[(Kind::Json, 1)],
        max_len: 256 << 10,
        corpus: "circuit",
        seeds: circuit_seeds,
        setup: bundled_setup,
        run: circuit,
    },
    Target {
        name: "viz",
        parts: &[(Kind::Torch, 1)],
        max_len: 1 << 20,
        corpus: "viz",
        seeds: viz_seeds,
        setup: bundled_setup,
        run: viz,
    },
    Target {
        name: "link",
        parts: &[(Kind::Link, 1)],
        max_len: 48 << 10,
        corpus: "link",
        seeds: link_seeds,
        setup: bundled_setup,
        run: link,
    },
    Target {
        name: "samples",
        parts: &[(Kind::Json, 1)],
        max_len: 256 << 10,
        corpus: "samples",
        seeds: samples_seeds,
        setup: bundled_setup,
        run: samples,
    },
    Target {
        name: "examples",
        parts: &[(Kind::Safetensors, 1)],
        max_len: 1 << 20,
        corpus: "examples",
        seeds: examples_seeds,
        setup: examples_setup,
        run: examples,
    },
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = root().join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fuzz seed {}: {e}", path.display()))
}

/// Every file of a folder of the repository, sorted.
fn files(dir: impl AsRef<Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// The seeds of `target`: the repository's files, then its corpus folder.
pub fn seeds(target: &Target) -> Vec<Input> {
    let mut seeds = (target.seeds)();
    for path in files(Path::new("tests/fuzz/corpus").join(target.corpus)) {
        let parts = input::decode(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(parts.len(), target.parts.len(), "{}: parts", path.display());
        seeds.push(parts);
    }
    seeds
}

fn no_seeds() -> Vec<Input> {
    Vec::new()
}

fn nothing() {}

fn golden_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(root().join("tests/golden")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("config.json").exists()).collect();
    cases.sort();
    cases
}

fn torch_seeds() -> Vec<Input> {
    let mut seeds: Vec<Input> = golden_cases().iter().map(|d| vec![read(d.join("config.json")), read(d.join("model.pt"))]).collect();
    let gelu = read("tests/golden/gpt2_ln_gelu/config.json");
    for path in files("tests/fixtures").into_iter().filter(|p| p.extension().is_some_and(|e| e == "pt")) {
        seeds.push(vec![gelu.clone(), read(path)]);
    }
    seeds
}

fn dense_seeds() -> Vec<Input> {
    golden_cases().iter().map(|d| vec![read(d.join("config.json")), read(d.join("model.safetensors"))]).collect()
}

fn model_seeds() -> Vec<Input> {
    let bundled = Path::new("www/models/python_tasks");
    let mut seeds = dense_seeds();
    seeds.push(vec![read(bundled.join("config.json")), read(bundled.join("model.safetensors"))]);
    seeds
}

fn config_seeds() -> Vec<Input> {
    let mut seeds: Vec<Input> = golden_cases().iter().map(|d| vec![read(d.join("config.json"))]).collect();
    seeds.push(vec![read("www/models/python_tasks/config.json")]);
    seeds.push(vec![read("src/cli/released_shape.json")]);
    seeds
}

fn tokenizer_seeds() -> Vec<Input> {
    let text = b"def load(self, items):\n    return {'a': [1, 2]}  # <|endoftext|> caf\xc3\xa9\n".to_vec();
    ["tests/tokenizer", "www/models/python_tasks"]
        .iter()
        .map(|dir| vec![read(Path::new(dir).join("encoder.json")), read(Path::new(dir).join("vocab.bpe")), text.clone()])
        .collect()
}

fn circuit_seeds() -> Vec<Input> {
    files("www/models/python_tasks/circuits").into_iter().map(|p| vec![read(p)]).collect()
}

/// The bundled circuits as OpenAI's `viz_data.pt`, with a document each.
fn viz_seeds() -> Vec<Input> {
    use circuitscope::convert::{write::write_viz_data, NodeSamples, SampleBucket, SampleDoc, VizData};
    files("www/models/python_tasks/circuits")
        .into_iter()
        .map(|path| {
            let json: serde_json::Value = serde_json::from_slice(&read(path)).unwrap();
            let mut circuit: Vec<(String, Vec<usize>)> = Vec::new();
            for node in json["nodes"].as_array().unwrap().iter().filter_map(|n| Node::parse(n.as_str()?)) {
                match circuit.iter_mut().find(|(s, _)| *s == node.site.to_string()) {
                    Some((_, channels)) => channels.push(node.channel),
                    None => circuit.push((node.site.to_string(), vec![node.channel])),
                }
            }
            let doc = SampleDoc { tokens: vec![5, 6, 7, 8], values: vec![0.5, -1.0, 2.0, 0.25], position: 2 };
            let bucket = SampleBucket { fraction: 0.01, bottom: vec![doc.clone()], top: vec![doc] };
            let samples = vec![NodeSamples { site: circuit[0].0.clone(), channel: circuit[0].1[0], buckets: vec![bucket] }];
            let losses = circuit.iter().map(|(s, c)| (s.clone(), c.iter().map(|&c| c as f64 / 8.0).collect())).collect();
            let viz = VizData { circuit, channel_losses: losses, loss: Some(0.125), circuit_loss: Some(0.25), config: vec![("n_layer".into(), 2)], samples };
            vec![write_viz_data(&viz).unwrap()]
        })
        .collect()
}

/// OpenAI's `viz_data.pt`, read, written again as OpenAI stores it and read
/// back the same; its nodes checked against the bundled model.
fn viz(input: &Input) -> Result<String, String> {
    use circuitscope::convert::{write::write_viz_data, VizData};
    let viz = match VizData::from_bytes(&input[0]) {
        Ok(viz) => viz,
        Err(e) => return Ok(format!("error: {e}")),
    };
    let again = untimed(|| write_viz_data(&viz)).map_err(|e| format!("cannot write what was read: {e}"))?;
    match VizData::from_bytes(&again) {
        // Compared as printed: a NaN loss is read back as NaN, which `==` calls another.
        Ok(read) if format!("{read:?}") == format!("{viz:?}") => {}
        Ok(read) => return Err(format!("written again and read back, it is another viz_data: {:?} against {:?}", first_difference(&format!("{read:?}"), &format!("{viz:?}")), viz.nodes())),
        Err(e) => return Err(format!("written again, it does not read: {e}")),
    }
    Ok(match circuitscope::circuits::imported_nodes(&viz, &bundled().model.config) {
        Ok(nodes) => format!("ok: {} nodes", nodes.len()),
        Err(e) => format!("refused: {e}"),
    })
}

/// Where two texts part, with a little of each.
fn first_difference(a: &str, b: &str) -> (String, String) {
    let at = a.bytes().zip(b.bytes()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let near = |s: &str| s.get(at.saturating_sub(40)..(at + 40).min(s.len())).unwrap_or("").to_string();
    (near(a), near(b))
}

/// Every view of the bundled tours: links as the page writes them.
fn link_seeds() -> Vec<Input> {
    let tours: serde_json::Value = serde_json::from_slice(&read("www/models/python_tasks/tours.json")).unwrap();
    let mut views = Vec::new();
    for tour in tours["tours"].as_array().into_iter().flatten() {
        for step in tour["steps"].as_array().into_iter().flatten() {
            if let Some(view) = step["view"].as_str() {
                views.push(vec![view.as_bytes().to_vec()]);
            }
        }
    }
    views
}

fn samples_seeds() -> Vec<Input> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("www/models")).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs.iter().filter(|d| d.join("samples.json").exists()).map(|d| vec![read(d.join("samples.json"))]).collect()
}

/// The bundled default model, its config and tokenizer: what circuit
/// files, links and samples are checked against.
struct Bundled {
    model: Model,
    tokenizer: Tokenizer,
}

fn bundled() -> &'static Bundled {
    static BUNDLED: OnceLock<Bundled> = OnceLock::new();
    BUNDLED.get_or_init(|| {
        let dir = root().join("www/models/python_tasks");
        Bundled { model: Model::load_dir(&dir).unwrap(), tokenizer: Tokenizer::load_dir(&dir).unwrap().unwrap() }
    })
}

fn bundled_setup() {
    bundled();
}

/// The small golden model dataset examples files are checked against (the
/// bundled model's are 4.5 MB, too large to mutate quickly).
fn examples_model() -> &'static std::sync::Arc<Model> {
    static MODEL: OnceLock<std::sync::Arc<Model>> = OnceLock::new();
    MODEL.get_or_init(|| std::sync::Arc::new(Model::load_dir(&root().join("www/models/paper_rms_topk_sink")).unwrap()))
}

fn examples_setup() {
    examples_model();
}

/// Examples of the small model over 256 made-up tokens, in windows of 16.
fn examples_seeds() -> Vec<Input> {
    use circuitscope::runner::{Runner, Want};
    let model = examples_model();
    let vocab = model.config.vocab_size as u32;
    let corpus: Vec<u32> = (0..256u32).map(|i| (i * 7 + i / 3) % vocab).collect();
    let runner = Runner::at_once(model.clone(), Want::Cpu, Box::new(|_| {}));
    let examples = ready(collect_examples(&runner, corpus, 16, 1, &mut |_| true)).unwrap();
    vec![vec![examples.to_bytes()]]
}

/// An examples file: one that reads answers every query about every node
/// (each example inside its window), and is written again byte for byte.
fn examples(input: &Input) -> Result<String, String> {
    let examples = match Examples::from_bytes(&input[0]) {
        Ok(examples) => examples,
        Err(e) => return Ok(format!("error: {e}")),
    };
    let model = examples_model();
    let shares = examples.token_shares(model.config.vocab_size);
    for &(site, width) in &examples.sites {
        for channel in [0, width / 2, width.saturating_sub(1), width] {
            let node = Node { site, channel };
            for bucket in Bucket::ALL {
                for e in examples.of(node, bucket) {
                    let (window, at) = examples.window_of(e.offset);
                    if at >= window.len() {
                        return Err(format!("example at {} lies outside its window", e.offset));
                    }
                }
            }
            let _ = (examples.label(node, &shares), examples.density(node), examples.top_1_percent(node));
        }
    }
    let bytes = examples.to_bytes();
    match Examples::from_bytes(&bytes) {
        Ok(again) if again.to_bytes() == bytes => {}
        _ => return Err("the examples written again read back otherwise".into()),
    }
    Ok(match examples.check_fits(&model.config) {
        Ok(()) => "ok".into(),
        Err(e) => format!("ok, but {e}"),
    })
}

/// A part as text, as the page and the CLI read it (they refuse what is not
/// UTF-8 before any parser sees it; lossy keeps a mutated byte from being
/// only that).
fn text(part: &[u8]) -> String {
    String::from_utf8_lossy(part).into_owned()
}

/// Whether two models are the same: their configs, and their weights bit
/// for bit (`==` on the models compares floats, and a NaN weight, which a
/// checkpoint may hold, is not equal to itself).
fn same(a: &Model, b: &Model) -> bool {
    untimed(|| a.config == b.config && a.weights_sha256() == b.weights_sha256())
}

/// What became of a conversion; a model converted must load again from its
/// compact file, the same.
fn converted(config: &str, result: Result<Converted, ConvertError>) -> Result<String, String> {
    match result {
        Ok(c) => match untimed(|| Model::from_bytes(config, &c.compact())) {
            Ok(again) if same(&again, &c.model) => Ok(format!("ok: {} dropped", c.dropped.len())),
            Ok(_) => Err("the converted model loads from its compact file as another model".into()),
            Err(e) => Err(format!("the converted model's compact file does not load: {e}")),
        },
        Err(e) => Ok(format!("error: {e}")),
    }
}

fn torch(input: &Input) -> Result<String, String> {
    let config = text(&input[0]);
    let result = TorchFile::open(Cursor::new(&input[1][..])).and_then(|mut file| convert(&config, &mut file, &mut |_, _, _| {}));
    converted(&config, result)
}

/// By ranges, as the page reads a dropped file, with chunks from 256 bytes
/// (most reads miss, as in tests/convert.rs) to the page's 1 MiB, chosen by
/// the input so that it replays the same; what it converts is what the
/// whole file gives.
fn torch_ranges(input: &Input) -> Result<String, String> {
    let config = text(&input[0]);
    let bytes = &input[1];
    let chunk = [256, 4096, 1 << 20][input::hash(bytes) as usize % 3];
    let load = async |at: u64, count: u64| -> Result<Vec<u8>, String> {
        let start = usize::try_from(at).map_err(|e| e.to_string())?;
        let end = start.saturating_add(usize::try_from(count).map_err(|e| e.to_string())?);
        bytes.get(start..end).map(<[u8]>::to_vec).ok_or_else(|| format!("{count} bytes at {at} are past the end"))
    };
    let result = pollster::block_on(convert_torch_by_ranges(&config, bytes.len() as u64, chunk, load, &mut |_, _, _| {}));
    let whole = untimed(|| TorchFile::open(Cursor::new(&bytes[..])).and_then(|mut file| convert(&config, &mut file, &mut |_, _, _| {})));
    match (&result, &whole) {
        (Ok(a), Ok(b)) if !same(&a.model, &b.model) => return Err("by ranges gives another model than the whole file".into()),
        (Ok(_), Err(e)) => return Err(format!("by ranges converts, the whole file does not: {e}")),
        (Err(e), Ok(_)) => return Err(format!("the whole file converts, by ranges (chunk {chunk}) does not: {e}")),
        _ => {}
    }
    converted(&config, result)
}

fn safetensors(input: &Input) -> Result<String, String> {
    let config = text(&input[0]);
    let result = SafetensorsFile::open(Cursor::new(&input[1][..])).and_then(|mut file| convert(&config, &mut file, &mut |_, _, _| {}));
    converted(&config, result)
}

/// A model file, compact or dense; one that loads is written compact and
/// loads again the same.
fn model(input: &Input) -> Result<String, String> {
    let config = text(&input[0]);
    match Model::from_bytes(&config, &input[1]) {
        Ok(model) => match untimed(|| Model::from_bytes(&config, &model.to_compact_safetensors())) {
            Ok(again) if same(&again, &model) => Ok("ok".into()),
            Ok(_) => Err("the model written compact loads as another model".into()),
            Err(e) => Err(format!("the model written compact does not load: {e}")),
        },
        Err(e) => Ok(format!("error: {e}")),
    }
}

/// A config, and the sizes every loader computes from it.
fn config(input: &Input) -> Result<String, String> {
    match Config::from_json(&text(&input[0])) {
        Ok(c) => {
            let (d_in, d_attn) = (c.d_in(), c.d_attn());
            for site in TopkSite::ALL {
                for width in [d_in, d_attn, c.d_mlp, c.d_model] {
                    if c.topk_k(site, width).is_some_and(|k| k > width) {
                        return Err(format!("AbsTopK keeps more than all {width} entries at {}", site.name()));
                    }
                }
            }
            Ok("ok".into())
        }
        Err(e) => Ok(format!("error: {e}")),
    }
}

/// A tokenizer that loads gives ids of its vocabulary, and they decode to the text.
fn tokenized(tokenizer: Result<Tokenizer, impl std::fmt::Display>, text: &str) -> Result<String, String> {
    let tokenizer = match tokenizer {
        Ok(t) => t,
        Err(e) => return Ok(format!("error: {e}")),
    };
    let ids = tokenizer.encode(text);
    if let Some(id) = ids.iter().find(|&&id| id as usize >= tokenizer.vocab_size()) {
        return Err(format!("id {id} is outside the vocabulary of {}", tokenizer.vocab_size()));
    }
    let decoded = tokenizer.decode(&ids);
    if decoded != text {
        let at = decoded.chars().zip(text.chars()).take_while(|(a, b)| a == b).count();
        return Err(format!("decode(encode(text)) differs from the text from character {at}"));
    }
    Ok("ok".into())
}

fn tokenizer(input: &Input) -> Result<String, String> {
    tokenized(Tokenizer::from_files(&text(&input[0]), &text(&input[1])), &text(&input[2]))
}

fn tokenizer_hf(input: &Input) -> Result<String, String> {
    tokenized(Tokenizer::from_hf_json(&text(&input[0])), &text(&input[1]))
}

/// A circuit file, checked against the bundled model; one that opens is
/// written again and opens the same.
fn circuit(input: &Input) -> Result<String, String> {
    let model = &bundled().model;
    match CircuitFile::parse(&text(&input[0]), model) {
        Ok((file, nodes)) => match untimed(|| CircuitFile::parse(&file.to_json(), model)) {
            Ok((_, again)) if again == nodes => Ok("ok".into()),
            Ok(_) => Err("the circuit written again opens with other nodes".into()),
            Err(e) => Err(format!("the circuit written again does not open: {e}")),
        },
        Err(e) => Ok(format!("error: {e}")),
    }
}

/// A link, checked against the bundled model; one that parses is written
/// again and parses the same (the view it reopens).
fn link(input: &Input) -> Result<String, String> {
    match ViewLink::parse(&text(&input[0])) {
        Ok(link) => {
            let fragment = link.to_fragment();
            let shown: String = fragment.chars().take(300).collect();
            match untimed(|| ViewLink::parse(&fragment)) {
                Ok(again) if as_sets(&again) == as_sets(&link) => {}
                Ok(_) => return Err(format!("the link written again ({shown:?}…) parses as another view")),
                Err(e) => return Err(format!("the link written again ({shown:?}…) does not parse: {e}")),
            }
            let seq_len = bundled().tokenizer.encode(&link.prompt).len();
            match link.check(&bundled().model, seq_len, &[]) {
                Ok(()) => Ok("ok".into()),
                Err(e) => Ok(format!("checked: {e}")),
            }
        }
        Err(e) => Ok(format!("error: {e}")),
    }
}

/// A link's view with its node sets as sets: a link writes each sorted, a
/// node once, so `0.attn.k:3-0` and `1.mlp.post_act:2,0.attn.k:3` read
/// again in another order are the same view.
fn as_sets(link: &ViewLink) -> ViewLink {
    let mut link = link.clone();
    if let Shown::Nodes(nodes) = &mut link.view.shown {
        nodes.sort();
        nodes.dedup();
    }
    link.view.ablations.sort_by_key(|&(node, kind)| (kind == AblationKind::Mean, node));
    link.view.ablations.dedup();
    link
}

/// A samples.json, read with the bundled tokenizer and as token ids.
fn samples(input: &Input) -> Result<String, String> {
    let (json, bundled) = (text(&input[0]), bundled());
    let with = parse_samples(&json, &bundled.model.config, Some(&bundled.tokenizer));
    let without = parse_samples(&json, &bundled.model.config, None);
    let said = |r: Result<Vec<Vec<u32>>, String>| r.map_or_else(|e| format!("error: {e}"), |_| "ok".to_string());
    Ok(format!("with the tokenizer, {}; as ids, {}", said(with), said(without)))
}
