use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::Backend;
use crate::circuits::{agreement, AblationKind, Agreement, Attribution, Node, Objective, SiteMeans};
use crate::model::{f32_safetensors, top_predictions, Intervention, Model, Tokenizer};
use crate::runner::Runner;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ablation {
    /// Set the node to zero at every position.
    Zero,
    /// Set it to its mean over the prompts of the model folder's samples.json.
    Mean,
}

#[derive(Args)]
pub struct AttributeArgs {
    /// Model folder with config.json and model.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Token ids, e.g. 3,1,4.
    #[arg(long, required_unless_present_any = ["prompt", "tasks"], conflicts_with_all = ["prompt", "tasks"])]
    tokens: Option<String>,
    /// Text, encoded with the model folder's tokenizer.
    #[arg(long, conflicts_with = "tasks")]
    prompt: Option<String>,
    /// Instead of one prompt: every prompt of the folder's tasks.json, on
    /// logit(right answer) - logit(wrong answer), each candidate node also
    /// ablated; prints how well attribution agreed, per prompt and task.
    #[arg(long, conflicts_with_all = ["position", "target", "contrast", "check", "out"])]
    tasks: bool,
    /// The position whose output is attributed (default: the last).
    #[arg(long)]
    position: Option<usize>,
    /// The objective is this token's logit at the position (default: the top prediction there).
    #[arg(long)]
    target: Option<u32>,
    /// Attribute logit(target) - logit(contrast) instead.
    #[arg(long)]
    contrast: Option<u32>,
    /// What a node is ablated to.
    #[arg(long, value_enum, default_value_t = Ablation::Zero)]
    ablation: Ablation,
    /// Also ablate the N nodes of largest attribution, one at a time, and
    /// report how well attribution agreed with their measured effects.
    #[arg(long, default_value_t = 0)]
    check: usize,
    /// How many nodes to print (all with --json).
    #[arg(long, default_value_t = 30)]
    top: usize,
    /// Write the gradient at every site, f32 [T, width] under the site's name (safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the forward and backward pass run (the checks' ablations too).
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Every candidate node's attribution: its effect on the objective,
/// estimated from one forward and one backward pass.
pub fn run(args: &AttributeArgs) -> Result<(), String> {
    let (model, tokenizer) = super::load_model_dir(&args.model)?;
    if args.tasks {
        return run_tasks(args, &model, tokenizer.as_ref());
    }
    let tokens = super::input_tokens(args.tokens.as_deref(), args.prompt.as_deref(), tokenizer.as_ref(), &args.model)?;
    if tokens.is_empty() {
        return Err("no tokens to run: give at least one token id".into());
    }
    let position = args.position.unwrap_or(tokens.len() - 1);
    let (kind, means) = ablation_of(args, &model, tokenizer.as_ref())?;
    let target = match args.target {
        Some(target) => target,
        None => {
            let logits = crate::model::forward(&model, &tokens, &mut |_, _| {}).map_err(|e| e.to_string())?;
            if position >= logits.rows {
                return Err(format!("position {position} is beyond the {} tokens", tokens.len()));
            }
            top_predictions(logits.row(position), 1)[0].token
        }
    };
    let objective = Objective { position, target, contrast: args.contrast };
    objective.check(tokens.len(), model.config.vocab_size)?;
    let model = std::sync::Arc::new(model);
    let runner = super::runner(model.clone(), args.backend)?;
    let run = super::block_on(runner.gradients(&tokens, &objective.differentiated()))?;
    let attribution = Attribution::of(run, &objective, kind, means.as_ref()).map_err(|e| e.to_string())?;
    if let Some(out) = &args.out {
        let named = attribution.run.gradients.iter().map(|(site, g)| (site.to_string(), vec![g.rows, g.cols], g.data.as_slice()));
        super::write_file(out, &f32_safetensors(named))?;
    }
    let ranked = attribution.ranked();
    let checked: Vec<_> = ranked.iter().take(args.check).copied().collect();
    let checked_nodes: Vec<_> = checked.iter().map(|(node, _)| *node).collect();
    let effects = measured(&runner, &tokens, &checked_nodes, &objective, means.as_ref())?;
    let scores: Vec<f32> = checked.iter().map(|(_, score)| *score).collect();
    let agreed = (!checked.is_empty()).then(|| agreement(&scores, &effects, 20.min(checked.len().div_ceil(2))));

    let name = |token: u32| tokenizer.as_ref().map(|t| format!(" {:?}", t.decode(&[token]))).unwrap_or_default();
    if args.json {
        let nodes: Vec<serde_json::Value> = ranked
            .iter()
            .enumerate()
            .map(|(i, (node, score))| {
                let mut row = serde_json::json!({ "node": node.to_string(), "label": node.label(&model.config), "attribution": score });
                if let Some(effect) = effects.get(i) {
                    row["effect"] = serde_json::json!(effect);
                }
                row
            })
            .collect();
        let agreement = agreed.map(|a| serde_json::json!({ "checked": checked.len(), "spearman": a.spearman, "top": a.top, "top_overlap": a.top_overlap }));
        let objective = serde_json::json!({ "position": position, "target": target, "contrast": args.contrast, "value": attribution.run.value });
        let ablation = format!("{:?}", args.ablation).to_lowercase();
        println!("{}", serde_json::json!({ "objective": objective, "ablation": ablation, "nodes": nodes, "agreement": agreement }));
        return Ok(());
    }
    let contrast = args.contrast.map(|c| format!(" - logit({c}{})", name(c))).unwrap_or_default();
    println!(
        "attribution of logit({target}{}){contrast} at position {position} (value {:.4}) to {} nodes, {} ablation:",
        name(target),
        attribution.run.value,
        ranked.len(),
        format!("{:?}", args.ablation).to_lowercase()
    );
    for (i, (node, score)) in ranked.iter().enumerate().take(args.top.max(checked.len())) {
        let effect = effects.get(i).map(|e| format!("  measured {e:>9.4}")).unwrap_or_default();
        println!("  {:<36} attribution {score:>9.4}{effect}", node.label(&model.config));
    }
    if let Some(a) = agreed {
        println!(
            "over the {} nodes checked: Spearman {:.3} between |attribution| and |measured effect|; {} of the {} largest measured are among the {} largest attributed",
            checked.len(),
            a.spearman,
            (a.top_overlap * a.top as f64).round() as usize,
            a.top,
            a.top
        );
    }
    Ok(())
}

/// The ablation `--ablation` names, and the means it needs.
fn ablation_of(args: &AttributeArgs, model: &Model, tokenizer: Option<&Tokenizer>) -> Result<(AblationKind, Option<SiteMeans>), String> {
    Ok(match args.ablation {
        Ablation::Zero => (AblationKind::Zero, None),
        Ablation::Mean => {
            let samples = args.model.join("samples.json");
            (AblationKind::Mean, Some(super::forward::sample_means(model, tokenizer, &samples)?))
        }
    })
}

/// The measured effects of `nodes`, each ablated alone (to its mean with
/// `means`), batched through the runner.
fn measured(runner: &Runner, tokens: &[u32], nodes: &[Node], objective: &Objective, means: Option<&SiteMeans>) -> Result<Vec<f32>, String> {
    let ablation = |node: Node| match means {
        Some(means) => means.ablation(node).ok_or_else(|| format!("no mean of {node}")),
        None => Ok(node.zero_ablation()),
    };
    let variants: Vec<Vec<Intervention>> = nodes.iter().map(|&n| ablation(n).map(|a| vec![a])).collect::<Result<_, _>>()?;
    let logits = super::block_on(runner.logits(tokens, &[Vec::new()]))?;
    let clean = objective.of(&logits[0]);
    let ablated = super::block_on(runner.logits(tokens, &variants))?;
    Ok(ablated.iter().map(|l| clean - objective.of(l)).collect())
}

/// `--tasks`: attribution against every candidate's measured effect on
/// each prompt of tasks.json.
fn run_tasks(args: &AttributeArgs, model: &Model, tokenizer: Option<&Tokenizer>) -> Result<(), String> {
    let tokenizer = tokenizer.ok_or_else(|| format!("{} has no tokenizer (encoder.json + vocab.bpe), which tasks.json needs", args.model.display()))?;
    let path = args.model.join("tasks.json");
    let json = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let prompts = crate::tasks::parse_task_prompts(&json, tokenizer)?;
    let (kind, means) = ablation_of(args, model, Some(tokenizer))?;
    let runner = super::runner(std::sync::Arc::new(model.clone()), args.backend)?;
    let objectives: Vec<Objective> = prompts
        .iter()
        .map(|prompt| Objective { position: prompt.tokens.len() - 1, target: prompt.right, contrast: Some(prompt.wrong) })
        .collect();
    // Every prompt's gradients in one batch (one pass, on the GPU).
    let examples: Vec<_> = prompts.iter().zip(&objectives).map(|(prompt, objective)| (prompt.tokens.clone(), objective.differentiated())).collect();
    let runs = super::block_on(runner.gradients_batch(&examples))?;
    let mut rows = Vec::new();
    for ((prompt, objective), run) in prompts.iter().zip(&objectives).zip(runs) {
        let attribution = Attribution::of(run, objective, kind, means.as_ref()).map_err(|e| e.to_string())?;
        let effects = measured(&runner, &prompt.tokens, &attribution.nodes, objective, means.as_ref())?;
        let agreed = agreement(&attribution.scores, &effects, 20);
        // The node whose attribution is furthest from its measured effect.
        let worst = (attribution.nodes.iter().zip(&attribution.scores).zip(&effects))
            .max_by(|a, b| (a.0 .1 - a.1).abs().total_cmp(&(b.0 .1 - b.1).abs()))
            .map(|((node, score), effect)| (node.label(&model.config), *score, *effect));
        rows.push((prompt, attribution.nodes.len(), agreed, worst));
    }
    if args.json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|(p, candidates, a, worst)| {
                serde_json::json!({
                    "task": p.task, "prompt": p.prompt, "candidates": candidates, "spearman": a.spearman, "top": a.top,
                    "top_overlap": a.top_overlap,
                    "worst": worst.as_ref().map(|(node, score, effect)| serde_json::json!({ "node": node, "attribution": score, "effect": effect })),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "ablation": format!("{:?}", args.ablation).to_lowercase(), "prompts": rows }));
        return Ok(());
    }
    println!("{:<22} {:>10} {:>9} {:>12}  furthest off (attribution vs measured)", "task", "candidates", "Spearman", "top-20 kept");
    for (p, candidates, a, worst) in &rows {
        let worst = worst.as_ref().map(|(node, score, effect)| format!("{node}: {score:.3} vs {effect:.3}")).unwrap_or_default();
        println!("{:<22} {candidates:>10} {:>9.3} {:>12.2}  {worst}", p.task, a.spearman, a.top_overlap);
    }
    let mut tasks: Vec<&str> = rows.iter().map(|(p, ..)| p.task.as_str()).collect();
    tasks.dedup();
    println!("medians per task:");
    for task in tasks {
        let median = |f: &dyn Fn(&Agreement) -> f64| {
            let mut v: Vec<f64> = rows.iter().filter(|(p, ..)| p.task == task).map(|(_, _, a, _)| f(a)).collect();
            v.sort_by(f64::total_cmp);
            (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
        };
        println!("  {task:<22} Spearman {:.3}  top-20 overlap {:.2}", median(&|a| a.spearman), median(&|a| a.top_overlap));
    }
    Ok(())
}
