use std::path::PathBuf;

use clap::Args;

use crate::circuits::{EdgeKind, GraphView};
use crate::model::{forward, parse_token_list, Model, Recording};

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
    /// Nodes shown per site: the channels of largest |activation|.
    #[arg(long, default_value_t = 8)]
    per_site: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The circuit graph the page draws for the same run, as text or JSON.
pub fn run(args: &GraphArgs) -> Result<(), String> {
    let model = Model::load_dir(&args.model).map_err(|e| e.to_string())?;
    let tokens = parse_token_list(&args.tokens).map_err(|e| e.to_string())?;
    let mut recording = Recording::new();
    forward(&model, &tokens, &mut |site, acts| recording.push((site, acts.clone()))).map_err(|e| e.to_string())?;
    let position = args.position.unwrap_or(tokens.len() - 1);
    if position >= tokens.len() {
        return Err(format!("position {position} is beyond the {} tokens", tokens.len()));
    }
    let view = GraphView::top_activations(&model, &recording, position, args.per_site);
    if args.json {
        let nodes: Vec<serde_json::Value> = view
            .nodes
            .iter()
            .map(|n| serde_json::json!({ "label": n.label, "activation": n.activation, "column": n.column, "row": n.row }))
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
        println!("{}", serde_json::json!({ "position": position, "nodes": nodes, "edges": edges }));
    } else {
        println!("{} nodes, {} edges at position {position}", view.nodes.len(), view.edges.len());
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
