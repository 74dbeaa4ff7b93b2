//! `circuitscope eval`: accuracy and mean logit difference per task, on
//! held-out examples (a seed the corpus and training do not use).

use std::path::PathBuf;

use clap::Args;

use crate::tasks::{logit_diff, Score, Task};

#[derive(Args)]
pub struct EvalArgs {
    /// Model folder with config.json, model.safetensors, encoder.json and vocab.bpe.
    #[arg(long)]
    model: PathBuf,
    /// A task name, or `all`.
    #[arg(long, default_value = "all")]
    task: String,
    /// Examples per task.
    #[arg(long, default_value_t = 200)]
    examples: usize,
    /// Seed of the examples.
    #[arg(long, default_value_t = crate::circuits::HELD_OUT_SEED)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also print up to this many wrongly answered examples per task.
    #[arg(long, default_value_t = 0)]
    failures: usize,
}

pub fn run(args: &EvalArgs) -> Result<(), String> {
    let tasks: Vec<Task> = match args.task.as_str() {
        "all" => Task::ALL.to_vec(),
        name => vec![Task::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
            format!("unknown task {name:?}: the tasks are {}, or all", names.join(", "))
        })?],
    };
    let (model, tokenizer) = super::load_model_dir(&args.model)?;
    let tokenizer = tokenizer
        .ok_or_else(|| format!("{} has no tokenizer (encoder.json + vocab.bpe): tasks are text", args.model.display()))?;
    // Per task: its examples, each one's logit(right) - logit(wrong), and their score.
    let mut rows = Vec::new();
    for task in tasks {
        let examples = task.examples(args.seed, args.examples);
        let diffs = examples
            .iter()
            .map(|e| logit_diff(&model, &tokenizer, e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", task.name()))?;
        rows.push((task, Score::of(&diffs), examples, diffs));
    }
    if args.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(t, s, _, _)| {
                serde_json::json!({ "task": t.name(), "examples": s.examples, "accuracy": s.accuracy, "mean_logit_diff": s.mean_logit_diff })
            })
            .collect();
        println!("{}", serde_json::Value::Array(out));
    } else {
        println!("{:<22} {:>8} {:>9} {:>16}", "task", "examples", "accuracy", "mean logit diff");
        for (task, s, _, _) in &rows {
            println!("{:<22} {:>8} {:>8.1}% {:>16.3}", task.name(), s.examples, 100.0 * s.accuracy, s.mean_logit_diff);
        }
    }
    for (task, _, examples, diffs) in &rows {
        let wrong = examples.iter().zip(diffs).filter(|(_, &diff)| diff <= 0.0).take(args.failures);
        for (example, diff) in wrong {
            println!("\n{} wrong by {:.3}: {:?} + {:?} (not {:?})", task.name(), -diff, example.prompt, example.correct, example.wrong);
        }
    }
    Ok(())
}
