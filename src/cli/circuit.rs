//! `circuitscope prune`: find a task's circuit as the paper does (learned
//! node masks, then bisection on the node budget k), and write it as a
//! circuit file. `circuitscope circuit-eval`: how faithful a circuit file
//! is (task loss with only the circuit kept, with it removed, against k).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::forward::sample_means;
use super::Backend;
use crate::circuits::{
    block_deltas, curve_points, prune_task, MaskSettings, PruneProgress, PruneSetup, ablation_search, keep_only, CpuEval, RunnerEval, SearchProgress, SearchSettings, loss_at, remove, task_loss, Choice, CircuitFile, Faithfulness, Method, Node,
    SiteMeans, TaskLoss, task_tour, difference_without, Tours, CLEAR_MARGIN, HELD_OUT_SEED, SEARCH_SEED, CircuitOrigin, Finding, LoadedCircuit,
};
use crate::convert::VizData;
use crate::circuits::{imported_method, imported_nodes};
use crate::model::{Model, Tokenizer};
use crate::release::VizEntry;
use crate::tasks::{Task, TaskChoice};

/// Seed of the generated prompts a tour may fall back on.
const TOUR_SEED: u64 = 4_000_037;

#[derive(Args)]
pub struct PruneArgs {
    /// Model folder with config.json, model.safetensors, a tokenizer and samples.json (the mean-ablation prompts).
    #[arg(long)]
    model: PathBuf,
    /// The task, e.g. single_double_quote.
    #[arg(long)]
    task: String,
    /// The circuit is the smallest that meets this task loss (nats, binary cross-entropy).
    #[arg(long, default_value_t = crate::circuits::DEFAULT_TARGET_LOSS)]
    target_loss: f64,
    /// The circuit file to write. Default: circuits/TASK.json in the model folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Examples the search runs on. Default: 256 for `mask`, 64 for `ablation` (each of its ablations runs every example).
    #[arg(long)]
    examples: Option<usize>,
    /// Held-out examples the circuit's faithfulness is reported on.
    #[arg(long, default_value_t = 200)]
    held_out: usize,
    #[arg(long, default_value_t = MaskSettings::default().steps)]
    steps: usize,
    /// Loss per kept node (the paper's k_coef).
    #[arg(long, default_value_t = MaskSettings::default().node_cost)]
    node_cost: f64,
    #[arg(long, default_value_t = MaskSettings::default().learning_rate)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `mask`: the paper's learned node masks (gated forward and backward
    /// passes). `ablation`: the page's search, forward passes only
    /// (group-tested ablation scores, bisection, pruning).
    #[arg(long, value_enum, default_value_t = PruneMethod::Mask)]
    method: PruneMethod,
    /// Channels of a site the ablation search removes together at first (halving every round).
    #[arg(long, default_value_t = SearchSettings::default().block)]
    block: usize,
    /// Where the masks' gated passes, or the ablation search's forward
    /// passes, run (the bisection on k runs on the CPU).
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PruneMethod {
    Mask,
    Ablation,
}

#[derive(Args)]
pub struct CircuitEvalArgs {
    /// The model folder the circuit was found on.
    #[arg(long)]
    model: PathBuf,
    /// A circuit file.
    #[arg(long)]
    circuit: PathBuf,
    /// Held-out examples.
    #[arg(long, default_value_t = 200)]
    examples: usize,
    /// Print JSON instead of text: the faithfulness, the curve and each block's delta.
    #[arg(long)]
    json: bool,
}

/// A model folder's model, tokenizer and mean activations.
struct Loaded {
    model: Arc<Model>,
    tokenizer: Tokenizer,
    means: SiteMeans,
}

fn load(dir: &Path) -> Result<Loaded, String> {
    let (model, tokenizer) = super::load_model_dir(dir)?;
    let tokenizer = tokenizer
        .ok_or_else(|| format!("{} has no tokenizer (encoder.json + vocab.bpe): tasks are text", dir.display()))?;
    let means = sample_means(&model, Some(&tokenizer), &dir.join("samples.json"))?;
    Ok(Loaded { model: Arc::new(model), tokenizer, means })
}

fn parse_task(name: &str) -> Result<Task, String> {
    Task::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
        format!("unknown task {name:?}: the tasks are {}", names.join(", "))
    })
}

/// Task loss of the full model, of `circuit` alone and of the model without it.
fn faithfulness(loaded: &Loaded, choices: &[Choice], circuit: &[Node], target_loss: f64) -> Result<Faithfulness, String> {
    let config = &loaded.model.config;
    let run = |interventions: Vec<_>| task_loss(&loaded.model, choices, &interventions).map_err(|e| e.to_string());
    Ok(Faithfulness {
        target_loss,
        examples: choices.len(),
        full: run(Vec::new())?,
        circuit: run(keep_only(config, &loaded.means, circuit)?)?,
        without_circuit: run(remove(config, &loaded.means, circuit)?)?,
    })
}

fn print_faithfulness(f: &Faithfulness) {
    println!("task loss (nats) and accuracy on {} held-out examples:", f.examples);
    for (what, loss) in [("full model", f.full), ("circuit only", f.circuit), ("circuit removed", f.without_circuit)] {
        println!("  {what:<16} loss {:.4}  accuracy {:.1}%", loss.loss, 100.0 * loss.accuracy);
    }
}

pub fn run_prune(args: &PruneArgs) -> Result<(), String> {
    let started = Instant::now();
    let task = parse_task(&args.task)?;
    let loaded = load(&args.model)?;
    let examples = args.examples.unwrap_or(match args.method {
        PruneMethod::Mask => 256,
        PruneMethod::Ablation => 64,
    });
    let search = Choice::of_task(task, &loaded.tokenizer, SEARCH_SEED, examples)?;
    let held_out = Choice::of_task(task, &loaded.tokenizer, HELD_OUT_SEED, args.held_out)?;
    let (nodes, curve, method) = match args.method {
        PruneMethod::Mask => learned_mask(args, &loaded, &search, started)?,
        PruneMethod::Ablation => ablation(args, &loaded, &search)?,
    };
    let nodes = &nodes[..];
    let seconds = started.elapsed().as_secs_f64();
    let faithfulness = faithfulness(&loaded, &held_out, nodes, args.target_loss)?;
    let method = Method { name: method.0.into(), settings: method.1, seconds };
    let found = Finding { task, nodes, faithfulness, curve, method };
    let file = CircuitFile::new(&loaded.model, folder_name(&args.model), &loaded.means, found);
    let out = args.out.clone().unwrap_or_else(|| args.model.join("circuits").join(format!("{}.json", task.name())));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    super::write_file(&out, file.to_json().as_bytes())?;
    println!("{}: {} nodes, {} edges ({}, {} search examples), {:.0} s", task.name(), nodes.len(), file.edges.len(), file.method.name, search.len(), seconds);
    print_faithfulness(&file.faithfulness);
    println!("wrote {}", out.display());
    Ok(())
}

/// What a search found: the circuit's nodes (most important first), its
/// loss-vs-k curve, and the method's name and settings.
type Found = (Vec<Node>, Vec<(usize, TaskLoss)>, (&'static str, serde_json::Value));

/// The paper's method: learned masks rank the nodes, bisection picks k
/// (`circuits::prune_task`, as the page runs it; the bisection's task
/// losses on the CPU reference).
fn learned_mask(args: &PruneArgs, loaded: &Loaded, search: &[Choice], started: Instant) -> Result<Found, String> {
    let settings = MaskSettings { steps: args.steps, node_cost: args.node_cost, learning_rate: args.lr, seed: args.seed, ..MaskSettings::default() };
    eprintln!("learning node masks: {} steps of {} examples", settings.steps, settings.batch);
    let log_every = (settings.steps / 10).max(1);
    let runner = super::runner(loaded.model.clone(), args.backend)?;
    let mut eval = CpuEval { model: &loaded.model, choices: search };
    let mut log = |p: PruneProgress| match p {
        PruneProgress::Masks { progress: p, steps } if p.step % log_every == 0 => {
            eprintln!("  step {:>5}/{steps}  task loss {:.4}  nodes kept {}  {:.0} s", p.step, p.task_loss, p.kept, started.elapsed().as_secs_f64());
        }
        PruneProgress::Masks { .. } => {}
        PruneProgress::Bisecting { k, loss } => eprintln!("  k {k:>6}  loss {:.4}  accuracy {:.1}%", loss.loss, 100.0 * loss.accuracy),
    };
    let setup = PruneSetup { choices: search, means: &loaded.means, settings: &settings, target_loss: args.target_loss };
    let pruned = super::block_on(prune_task(&runner, &mut eval, &setup, &mut log, &|| false))?
        .ok_or("the pruning was cancelled")?;
    eprintln!("the masks kept {} nodes; the circuit is the first {} (target task loss {})", pruned.kept_by_masks, pruned.nodes.len(), args.target_loss);
    let backend = format!("{:?}", args.backend).to_lowercase();
    Ok((pruned.nodes, pruned.curve, ("learned-mask", settings.method_settings(&backend, args.target_loss, search.len()))))
}

/// The page's method, natively: forward passes only.
fn ablation(args: &PruneArgs, loaded: &Loaded, search: &[Choice]) -> Result<Found, String> {
    let settings = SearchSettings { target_loss: args.target_loss, block: args.block, ..SearchSettings::default() };
    let mut last = None;
    let mut progress = |p: SearchProgress| {
        if last != Some((p.stage, p.nodes)) {
            eprintln!("  {:?}: {} nodes left, {} ablations so far", p.stage, p.nodes, p.variants);
            last = Some((p.stage, p.nodes));
        }
    };
    let runner = super::runner(loaded.model.clone(), args.backend)?;
    let mut eval = RunnerEval { runner: &runner, choices: search };
    let found = super::block_on(ablation_search(&mut eval, &loaded.model.config, &loaded.means, &settings, &mut progress, &|| false))?
        .ok_or("the search was cancelled")?;
    let json = serde_json::json!({ "search": settings, "backend": format!("{:?}", args.backend).to_lowercase(), "search_examples": search.len(), "search_seed": SEARCH_SEED, "variants": found.variants });
    Ok((found.nodes, found.curve, ("ablation-search", json)))
}

pub fn run_eval(args: &CircuitEvalArgs) -> Result<(), String> {
    let loaded = load(&args.model)?;
    let json = std::fs::read_to_string(&args.circuit).map_err(|e| format!("cannot read {}: {e}", args.circuit.display()))?;
    let (file, nodes) = CircuitFile::parse(&json, &loaded.model).map_err(|e| format!("{}: {e}", args.circuit.display()))?;
    let task = parse_task(&file.task)?;
    let held_out = Choice::of_task(task, &loaded.tokenizer, HELD_OUT_SEED, args.examples)?;
    let faithful = faithfulness(&loaded, &held_out, &nodes, file.faithfulness.target_loss)?;
    let curve = curve_points(nodes.len())
        .into_iter()
        .map(|k| loss_at(&loaded.model, &loaded.means, &held_out, &nodes, k).map(|loss| (k, loss)))
        .collect::<Result<Vec<_>, _>>()?;
    let runner = super::runner(loaded.model.clone(), super::Backend::Cpu)?;
    let blocks = super::block_on(block_deltas(&runner, &held_out, &loaded.means, &nodes, &mut |_, _| true))?.deltas;
    if args.json {
        let blocks: Vec<_> = blocks
            .iter()
            .map(|b| serde_json::json!({ "block": b.block.name(), "nodes": b.nodes, "loss": b.loss, "delta": b.delta }))
            .collect();
        println!("{}", serde_json::json!({ "faithfulness": faithful, "curve": curve, "blocks": blocks }));
        return Ok(());
    }
    println!("{} circuit of {}: {} nodes, {} edges, found by {} in {:.0} s", file.task, file.model.name, nodes.len(), file.edges.len(), file.method.name, file.method.seconds);
    print_faithfulness(&faithful);
    println!("task loss with the first k nodes kept (the rest mean-ablated):");
    for (k, TaskLoss { loss, accuracy }) in curve {
        println!("  k {k:>5}  loss {loss:.4}  accuracy {:.1}%", 100.0 * accuracy);
    }
    println!("task loss with one block's circuit nodes mean-ablated as well:");
    for b in &blocks {
        println!("  {:<8} {:>4} nodes  loss {:.4} ({:+.4})  accuracy {:.1}%", b.block.name(), b.nodes, b.loss.loss, b.delta, 100.0 * b.loss.accuracy);
    }
    Ok(())
}

#[derive(Args)]
pub struct CircuitImportArgs {
    /// The model folder the circuit was found on (e.g. as `fetch-release` wrote it).
    #[arg(long)]
    model: PathBuf,
    /// OpenAI's `viz_data.pt`: a file, or a URL in the release's layout (`…/viz/<model>/<task>/<sweep>/<k>/viz_data.pt`).
    #[arg(long)]
    viz: String,
    /// The task [default: read from the release path's dataset name].
    #[arg(long)]
    task: Option<String>,
    /// The circuit file to write [default: circuits/TASK.openai-k<K>.json in the model folder].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Held-out examples the faithfulness is computed on.
    #[arg(long, default_value_t = 200)]
    examples: usize,
}

/// `circuitscope circuit-import`: OpenAI's circuit as a circuit file, with
/// the same faithfulness figures computed here as for circuitscope's.
pub fn run_import(args: &CircuitImportArgs) -> Result<(), String> {
    let (model, tokenizer) = super::load_model_dir(&args.model)?;
    let remote = args.viz.starts_with("http://") || args.viz.starts_with("https://");
    let bytes = match remote {
        true => super::release::fetch_bytes(&args.viz)?,
        false => std::fs::read(&args.viz).map_err(|e| format!("cannot read {}: {e}", args.viz))?,
    };
    let viz = VizData::from_bytes(&bytes).map_err(|e| format!("{}: {e}", args.viz))?;
    // The release path's last six parts, wherever the layout starts.
    let path = args.viz.replace('\\', "/");
    let entry = path.match_indices("viz/").filter_map(|(i, _)| VizEntry::parse(&path[i..])).next();
    let task = match (&args.task, entry.as_ref().and_then(|e| e.task())) {
        (Some(name), _) => parse_task(name)?,
        (None, Some(task)) => task,
        (None, None) => return Err(format!("{}: name the task with --task (its path does not say one of circuitscope's)", args.viz)),
    };
    // Checked against the model before the means are computed.
    let nodes = imported_nodes(&viz, &model.config).map_err(|e| format!("{}: {e}", args.viz))?;
    let tokenizer = tokenizer.ok_or_else(|| format!("{} has no tokenizer (encoder.json + vocab.bpe): tasks are text", args.model.display()))?;
    let means = sample_means(&model, Some(&tokenizer), &args.model.join("samples.json"))?;
    let loaded = Loaded { model: Arc::new(model), tokenizer, means };
    let held_out = Choice::of_task(task, &loaded.tokenizer, HELD_OUT_SEED, args.examples)?;
    let target = crate::circuits::DEFAULT_TARGET_LOSS;
    let faithfulness = faithfulness(&loaded, &held_out, &nodes, target)?;
    let curve = curve_points(nodes.len())
        .into_iter()
        .map(|k| loss_at(&loaded.model, &loaded.means, &held_out, &nodes, k).map(|loss| (k, loss)))
        .collect::<Result<Vec<_>, _>>()?;
    let method = imported_method(&viz, entry.as_ref(), &args.viz);
    let found = Finding { task, nodes: &nodes, faithfulness, curve, method };
    let file = CircuitFile::new(&loaded.model, folder_name(&args.model), &loaded.means, found);
    let out = args.out.clone().unwrap_or_else(|| args.model.join("circuits").join(format!("{}.openai-k{}.json", task.name(), nodes.len())));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    super::write_file(&out, file.to_json().as_bytes())?;
    println!("{}: OpenAI's circuit of {} nodes, {} edges", task.name(), nodes.len(), file.edges.len());
    if let (Some(full), Some(circuit)) = (viz.loss, viz.circuit_loss) {
        println!("OpenAI's figures: task loss {full:.4} for the model, {circuit:.4} for the circuit");
    }
    print_faithfulness(&file.faithfulness);
    if !viz.samples.is_empty() {
        println!("{} of its nodes have pretraining documents (shown in the page's inspector)", viz.samples.len());
    }
    println!("wrote {}", out.display());
    Ok(())
}

#[derive(Args)]
pub struct ToursArgs {
    /// Model folder with tasks.json and circuits/TASK.json (as `prune` writes them).
    #[arg(long)]
    model: PathBuf,
    /// Where to write the tours. Default: tours.json in the model folder.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `circuitscope tours`: a classroom tour per task with a circuit file,
/// on the task's first prompt in tasks.json.
pub fn run_tours(args: &ToursArgs) -> Result<(), String> {
    let loaded = load(&args.model)?;
    let id = folder_name(&args.model);
    let read = |name: &str| {
        let path = args.model.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let prompts = crate::tasks::parse_task_prompts(&read("tasks.json")?, &loaded.tokenizer)?;
    let mut tours = Vec::new();
    for task in Task::ALL {
        let name = format!("circuits/{}.json", task.name());
        let Ok(json) = read(&name) else { continue };
        let circuit = LoadedCircuit::parse(&json, &loaded.model, CircuitOrigin::Bundled).map_err(|e| format!("{name}: {e}"))?;
        // The first of the task's prompts (tasks.json, then generated ones) that the model gets clearly right.
        let generated = Choice::of_task(task, &loaded.tokenizer, TOUR_SEED, 50)?.into_iter().map(|c| TaskChoice {
            task: task.name().into(),
            prompt: loaded.tokenizer.decode(&c.tokens),
            tokens: c.tokens,
            right: c.right,
            wrong: c.wrong,
        });
        let mut listed = prompts.iter().filter(|p| p.task == task.name()).cloned().chain(generated);
        let clear = |c: &TaskChoice| difference_without(&loaded.model, &loaded.means, c, &[]).is_ok_and(|d| d >= CLEAR_MARGIN);
        let Some(choice) = listed.find(clear) else {
            return Err(format!("the model gets none of its {} prompts clearly right", task.name()));
        };
        let tour = task_tour(&loaded.model, &id, &loaded.tokenizer, &loaded.means, &choice, &circuit)?;
        tours.push(tour);
    }
    if tours.is_empty() {
        return Err(format!("{} has no task with both a prompt in tasks.json and a circuit file", args.model.display()));
    }
    let out = args.out.clone().unwrap_or_else(|| args.model.join("tours.json"));
    let tours = Tours { tours };
    let json = serde_json::to_string_pretty(&tours).map_err(|e| e.to_string())? + "\n";
    // The file first: output piped to a reader that stops early must not lose it.
    super::write_file(&out, json.as_bytes())?;
    for tour in &tours.tours {
        println!("{}: {} steps; {}", tour.task, tour.steps.len(), tour.steps.last().map_or("", |s| s.text.as_str()));
    }
    println!("wrote {}", out.display());
    Ok(())
}

fn folder_name(dir: &Path) -> String {
    dir.canonicalize().ok().as_deref().unwrap_or(dir).file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}
