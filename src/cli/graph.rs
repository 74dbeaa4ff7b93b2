use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::circuits::{candidates, measure_effects, EdgeKind, GraphView, Objective};
use crate::model::{forward, parse_token_list, sites_at, top_predictions, Model, Recording};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rank {
    /// By the measured effect on the chosen output of zero-ablating the node at every position.
    Effect,
    /// By |activation| at the position.
    Activation,
}

#[derive(Args)]
pub struct GraphArgs {
    /// Model folder with config.json and model.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Token ids, e.g. 3,1,4.
    #[arg(long)]
    tokens: String,
    /// Token position whose activations pick and colour the nodes (default: the last).
    #[arg(long)]
    position: Option<usize>,
    /// Nodes shown per site, the first by rank.
    #[arg(long, default_value_t = 8)]
    per_site: usize,
    /// How nodes are ranked.
    #[arg(long, value_enum, default_value_t = Rank::Effect)]
    rank: Rank,
    /// The output effects are measured on: this token's logit at the position (default: the top prediction).
    #[arg(long)]
    target: Option<u32>,
    /// Measure on logit(target) - logit(contrast) instead.
    #[arg(long)]
    contrast: Option<u32>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The circuit graph the page draws for the same run, as text or JSON.
pub fn run(args: &GraphArgs) -> Result<(), String> {
    let model = Model::load_dir(&args.model).map_err(|e| e.to_string())?;
    let tokens = parse_token_list(&args.tokens).map_err(|e| e.to_string())?;
    let mut recording = Recording::new();
    let logits =
        forward(&model, &tokens, &mut |site, acts| recording.push((site, acts.clone()))).map_err(|e| e.to_string())?;
    let position = args.position.unwrap_or(tokens.len() - 1);
    if position >= tokens.len() {
        return Err(format!("position {position} is beyond the {} tokens", tokens.len()));
    }
    let target = args.target.unwrap_or_else(|| top_predictions(logits.row(position), 1)[0].token);
    let objective = Objective { position, target, contrast: args.contrast };
    objective.check(tokens.len(), model.config.vocab_size)?;
    let mut effects = Vec::new();
    let at = sites_at(&recording, position);
    let view = match args.rank {
        Rank::Activation => GraphView::top_activations(&model, &at, position, args.per_site),
        Rank::Effect => {
            let nodes = candidates(&recording, position);
            let measured = measure_effects(&model, &tokens, &nodes, &objective).map_err(|e| e.to_string())?;
            effects = nodes.into_iter().zip(measured).collect();
            GraphView::top_effects(&model, &at, position, args.per_site, &effects)
        }
    };
    if args.json {
        let nodes: Vec<serde_json::Value> = view
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "label": n.label, "activation": n.activation, "effect": n.effect, "column": n.column, "row": n.row,
                })
            })
            .collect();
        let edges: Vec<serde_json::Value> = view
            .edges
            .iter()
            .map(|e| {
                serde_json::json!({
                    "from": e.from, "to": e.to, "weight": e.weight,
                    "residual": e.kind == EdgeKind::Residual, "strength": view.edge_strength(e),
                })
            })
            .collect();
        let objective = serde_json::json!({ "target": target, "contrast": args.contrast });
        // Every candidate's effect, not only the shown nodes'.
        let effects: Vec<serde_json::Value> = effects
            .iter()
            .map(|(node, effect)| serde_json::json!({ "label": node.label(&model.config), "effect": effect }))
            .collect();
        let graph = serde_json::json!({
            "position": position, "objective": objective, "nodes": nodes, "edges": edges, "effects": effects,
        });
        println!("{graph}");
    } else {
        let contrast = args.contrast.map(|c| format!(" - logit({c})")).unwrap_or_default();
        println!("{} nodes, {} edges at position {position}", view.nodes.len(), view.edges.len());
        if args.rank == Rank::Effect {
            println!("ranked by the effect of zero-ablating each node on logit({target}){contrast}:");
            let mut ranked: Vec<_> = view.nodes.iter().collect();
            ranked.sort_by(|a, b| b.effect.unwrap_or(0.0).abs().total_cmp(&a.effect.unwrap_or(0.0).abs()));
            for n in ranked.iter().take(20) {
                println!("  {:<32} effect {:>9.4}  activation {:>9.4}", n.label, n.effect.unwrap_or(0.0), n.activation);
            }
        }
        let mut edges = view.edges.clone();
        edges.sort_by(|a, b| view.edge_strength(b).total_cmp(&view.edge_strength(a)));
        for e in edges.iter().take(20) {
            println!(
                "  {:<32} -> {:<32} weight {:>8.4}  strength {:.4}",
                view.nodes[e.from].label,
                view.nodes[e.to].label,
                e.weight,
                view.edge_strength(e)
            );
        }
    }
    Ok(())
}
