//! The native command line: `circuitscope info | convert | forward | graph | inspect | eval | train | prune | circuit-eval | tours | tokenizer | tokenize | synthetic | bench`.

#[cfg(feature = "gpu")]
mod bench;
mod circuit;
mod convert;
mod eval;
mod forward;
mod graph;
mod info;
mod inspect;
mod synthetic;
mod tokenizer;
mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// The circuit graph of a run at one token: the most active channels per site and the nonzero weights between them.
    Graph(graph::GraphArgs),
    /// One node of a run: activation per position, attention pattern, embedding, weights in and out.
    Inspect(inspect::InspectArgs),
    /// Accuracy and mean logit difference of a model on the tasks (held-out examples).
    Eval(eval::EvalArgs),
    /// Train a weight-sparse model on the generated corpus (and its tokenizer), showing progress.
    Train(train::TrainArgs),
    /// Find a task's circuit as the paper does: learned node masks, then bisection on the node budget.
    Prune(circuit::PruneArgs),
    /// Faithfulness of a circuit file: task loss with only the circuit kept, with it removed, and against k.
    CircuitEval(circuit::CircuitEvalArgs),
    /// Write a classroom tour per task (tours.json): its prompt, its circuit, its first node, an ablation that breaks it.
    Tours(circuit::ToursArgs),
    /// Train a byte-level BPE tokenizer in the release's format on the generated corpus.
    Tokenizer(tokenizer::TokenizerArgs),
    /// Print the token ids of a text (encoder.json + vocab.bpe, or a Hugging Face tokenizer.json).
    Tokenize(tokenizer::TokenizeArgs),
    /// Write a random weight-sparse model of a given shape (for benchmarks and tests).
    Synthetic(synthetic::SyntheticArgs),
    /// Time the GPU engine and the CPU reference on a synthetic model of the released 0.4B shape.
    #[cfg(feature = "gpu")]
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The reference forward pass on the CPU.
    Cpu,
    /// WGSL compute shaders through wgpu.
    Gpu,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { model } => info::run(&model),
        Command::Convert(args) => convert::run(&args),
        Command::Forward(args) => forward::run(&args),
        Command::Graph(args) => graph::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Synthetic(args) => synthetic::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Tokenizer(args) => tokenizer::run(&args),
        Command::Tokenize(args) => tokenizer::tokenize(&args),
        Command::Train(args) => train::run(&args),
        Command::Prune(args) => circuit::run_prune(&args),
        Command::CircuitEval(args) => circuit::run_eval(&args),
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

/// Writes `files` (name, contents) into the folder `dir`, creating it.
fn write_folder(dir: &Path, files: &[(&str, &[u8])]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
