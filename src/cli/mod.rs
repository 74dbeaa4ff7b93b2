//! The native command line: `circuitscope info | convert | fetch-release | write-release | forward | attribute | graph | inspect | eval | examples | train | prune | circuit-eval | circuit-import | tours | tokenizer | tokenize | synthetic | bench`.

mod attribute;
#[cfg(feature = "gpu")]
mod bench;
mod circuit;
mod convert;
mod eval;
mod examples;
mod forward;
mod graph;
mod info;
mod inspect;
mod release;
mod synthetic;
mod tokenizer;
mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::model::{check_tokenizer, parse_token_list, Model, Tokenizer};

#[derive(Parser)]
#[command(name = "circuitscope", version, about = "Look inside weight-sparse transformers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the config, parameter count, nonzeros and density per matrix, and bytes in memory.
    Info {
        /// Model folder with config.json and model.safetensors.
        #[arg(long)]
        model: PathBuf,
    },
    /// Convert a released checkpoint (PyTorch .pt or dense safetensors, with its config) to a compact model folder.
    Convert(convert::ConvertArgs),
    /// Run the model on token ids; write the logits and every recorded site.
    Forward(forward::ForwardArgs),
    /// Every node's attribution: its effect on an output estimated from one forward and one backward pass.
    Attribute(attribute::AttributeArgs),
    /// The circuit graph of a run at one token: the most active channels per site and the nonzero weights between them.
    Graph(graph::GraphArgs),
    /// One node of a run: activation per position, attention pattern, embedding, weights in and out.
    Inspect(inspect::InspectArgs),
    /// Every node's dataset examples: its top and bottom activating contexts per quantile bucket over a corpus.
    Examples(examples::ExamplesArgs),
    /// Accuracy and mean logit difference of a model on the tasks (held-out examples).
    Eval(eval::EvalArgs),
    /// Train a weight-sparse model on the generated corpus (and its tokenizer), showing progress.
    Train(train::TrainArgs),
    /// Find a task's circuit as the paper does: learned node masks, then bisection on the node budget.
    Prune(circuit::PruneArgs),
    /// Faithfulness of a circuit file: task loss with only the circuit kept, with it removed, and against k.
    CircuitEval(circuit::CircuitEvalArgs),
    /// Import one of OpenAI's circuits (a viz_data.pt file or URL) as a circuit file, with its faithfulness computed here.
    CircuitImport(circuit::CircuitImportArgs),
    /// Write a classroom tour per task (tours.json): its prompt, its circuit, its first node, an ablation that breaks it.
    Tours(circuit::ToursArgs),
    /// Train a byte-level BPE tokenizer in the release's format on the generated corpus.
    Tokenizer(tokenizer::TokenizerArgs),
    /// Print the token ids of a text (encoder.json + vocab.bpe, or a Hugging Face tokenizer.json).
    Tokenize(tokenizer::TokenizeArgs),
    /// Fetch a released model and its tokenizer by HTTP byte ranges, converting as it reads, into a compact model folder.
    FetchRelease(release::FetchReleaseArgs),
    /// Write a model folder in the release's layout (final_model.pt, tokenizer, circuits as viz_data.pt, index.json): a mirror.
    WriteRelease(release::WriteReleaseArgs),
    /// Write a random weight-sparse model of a given shape (for benchmarks and tests).
    Synthetic(synthetic::SyntheticArgs),
    /// Time the GPU engine and the CPU reference on a synthetic model of the released 0.4B shape.
    #[cfg(feature = "gpu")]
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// On the CPU: the fast path (`cpu::run`), natively on every core.
    Cpu,
    /// WGSL compute shaders through wgpu.
    Gpu,
}

/// A runner for `model` on `backend`: the GPU one must be there. A GPU
/// lost on the way is said on stderr, and the work goes on on the CPU.
fn runner(model: std::sync::Arc<crate::model::Model>, backend: Backend) -> Result<crate::runner::Runner, String> {
    use crate::runner::{Runner, Want};
    let want = match backend {
        Backend::Cpu => Want::Cpu,
        Backend::Gpu => Want::Gpu,
    };
    let on_backend = Box::new(|b: &crate::runner::Backend| {
        if let crate::runner::Backend::Cpu(why) = b {
            eprintln!("note: going on on the CPU: {why}");
        }
    });
    block_on(Runner::new(model, want, on_backend))
}

/// Runs a runner's future to its end: natively nothing else runs meanwhile.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    #[cfg(feature = "gpu")]
    return pollster::block_on(future);
    #[cfg(not(feature = "gpu"))]
    return crate::circuits::ready(future);
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { model } => info::run(&model),
        Command::Convert(args) => convert::run(&args),
        Command::Forward(args) => forward::run(&args),
        Command::Attribute(args) => attribute::run(&args),
        Command::Graph(args) => graph::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Synthetic(args) => synthetic::run(&args),
        Command::FetchRelease(args) => release::fetch(&args),
        Command::WriteRelease(args) => release::write(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Examples(args) => examples::run(&args),
        Command::Tokenizer(args) => tokenizer::run(&args),
        Command::Tokenize(args) => tokenizer::tokenize(&args),
        Command::Train(args) => train::run(&args),
        Command::Prune(args) => circuit::run_prune(&args),
        Command::CircuitEval(args) => circuit::run_eval(&args),
        Command::CircuitImport(args) => circuit::run_import(&args),
        Command::Tours(args) => circuit::run_tours(&args),
        #[cfg(feature = "gpu")]
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A model folder's model and its tokenizer (if it has one), checked to
/// belong together.
fn load_model_dir(dir: &Path) -> Result<(Model, Option<Tokenizer>), String> {
    let model = Model::load_dir(dir).map_err(|e| e.to_string())?;
    let tokenizer = Tokenizer::load_dir(dir).map_err(|e| e.to_string())?;
    if let Some(tokenizer) = &tokenizer {
        check_tokenizer(&model.config, tokenizer).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok((model, tokenizer))
}

/// The tokens a command runs on: `--tokens` ids, or `--prompt` text encoded
/// with the tokenizer of the model folder `dir` (clap requires one of them).
fn input_tokens(ids: Option<&str>, prompt: Option<&str>, tokenizer: Option<&Tokenizer>, dir: &Path) -> Result<Vec<u32>, String> {
    match (ids, prompt, tokenizer) {
        (Some(ids), ..) => parse_token_list(ids).map_err(|e| e.to_string()),
        (None, Some(prompt), Some(tokenizer)) => Ok(tokenizer.encode(prompt)),
        (None, Some(_), None) => Err(format!("{} has no tokenizer (encoder.json + vocab.bpe): use --tokens", dir.display())),
        (None, None, _) => Err("give --tokens or --prompt".into()),
    }
}

/// Writes `bytes` to `path` whole or not at all: to a temporary name
/// beside it, then renamed over it, so a failed write (a full disk, a
/// missing folder) leaves no partial file and keeps what was there.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_folder_files(&[(path.to_path_buf(), bytes)])
}

/// Writes `files` (name, contents) into the folder `dir`, creating it, whole
/// or not at all: every file goes to a temporary name first and is renamed
/// only once all are written.
fn write_folder(dir: &Path, files: &[(&str, &[u8])]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let files: Vec<(PathBuf, &[u8])> = files.iter().map(|(name, bytes)| (dir.join(name), *bytes)).collect();
    write_folder_files(&files)
}

/// The temporary name `path` is written under before it is renamed.
fn partial_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.partial"))
}

fn write_folder_files(files: &[(PathBuf, &[u8])]) -> Result<(), String> {
    // The one failure a rename meets that writing the temporary files does not.
    if let Some((path, _)) = files.iter().find(|(path, _)| path.is_dir()) {
        return Err(format!("cannot write {}: a folder of that name is in the way", path.display()));
    }
    let written: Result<(), String> = files.iter().try_for_each(|(path, bytes)| {
        std::fs::write(partial_path(path), bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    });
    let renamed = written.and_then(|()| {
        files.iter().try_for_each(|(path, _)| {
            std::fs::rename(partial_path(path), path).map_err(|e| format!("cannot write {}: {e}", path.display()))
        })
    });
    if renamed.is_err() {
        for (path, _) in files {
            let _ = std::fs::remove_file(partial_path(path));
        }
    }
    renamed
}
