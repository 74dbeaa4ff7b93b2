//! `circuitscope inspect`: what the page's node inspector shows for one node.

use std::path::PathBuf;

use clap::Args;

use crate::circuits::{inspect, task_distributions, Bucket, CircuitFile, Examples, Node, TaskDistribution, TaskExamples, HELD_OUT_SEED};
use crate::tasks::Task;
use crate::model::{forward, parse_token_list, Model, Recording, Tensor, Tokenizer};

#[derive(Args)]
pub struct InspectArgs {
    /// Model folder with config.json and model.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Token ids, e.g. 3,1,4.
    #[arg(long)]
    tokens: String,
    /// The node, e.g. `0.attn.q[28]` or `1.mlp.post_act[17]`.
    #[arg(long)]
    node: String,
    /// Also the node over a task's held-out examples (e.g.
    /// `single_double_quote`): its value at each prompt's last token, by
    /// right answer.
    #[arg(long)]
    task: Option<String>,
    /// A circuit file: the attention of a q, k or v node is also shown
    /// restricted to the circuit's q and k channels of its head.
    #[arg(long, conflicts_with = "nodes")]
    circuit: Option<PathBuf>,
    /// Or the nodes to restrict it to, e.g. `0.attn.q[3],0.attn.k[5]` (the page's graph).
    #[arg(long)]
    nodes: Option<String>,
    /// How many of the task's examples.
    #[arg(long, default_value_t = crate::circuits::DISTRIBUTION_EXAMPLES)]
    task_examples: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &InspectArgs) -> Result<(), String> {
    let model = std::sync::Arc::new(Model::load_dir(&args.model).map_err(|e| e.to_string())?);
    let tokens = parse_token_list(&args.tokens).map_err(|e| e.to_string())?;
    let node = Node::parse(&args.node)
        .ok_or_else(|| format!("`{}` is not a node: expected a node site and channel such as 0.attn.q[3]", args.node))?;
    if let crate::model::Site::Layer(l, _) = node.site {
        if l >= model.config.n_layer {
            return Err(format!("{}: the model has {} layers", args.node, model.config.n_layer));
        }
    }
    let width = model.config.site_width(node.site);
    if node.channel >= width {
        return Err(format!("channel {} is beyond the width {width} of {}", node.channel, node.site));
    }
    let mut recording = Recording::new();
    forward(&model, &tokens, &mut |site, acts| recording.push((site, acts.clone()))).map_err(|e| e.to_string())?;
    let circuit = match &args.circuit {
        Some(path) => {
            let json = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            CircuitFile::parse(&json, &model).map_err(|e| format!("{}: {e}", path.display()))?.1
        }
        None => match &args.nodes {
            Some(list) => list.split(',').map(|text| Node::parse(text.trim()).ok_or_else(|| format!("--nodes: `{text}` is not a node such as 0.attn.q[3]"))).collect::<Result<_, _>>()?,
            None => Vec::new(),
        },
    };
    let details = inspect(&model, &recording, node, &circuit).ok_or_else(|| format!("{} was not recorded", node.site))?;
    let label = |n: &Node| n.label(&model.config);
    let weights = |list: &[(Node, f32)]| -> Vec<serde_json::Value> {
        list.iter().map(|(n, w)| serde_json::json!({ "label": label(n), "weight": w })).collect()
    };
    // Its label and largest examples, from the folder's examples file if it has one.
    let examples = match std::fs::read(args.model.join("examples.safetensors")) {
        Ok(bytes) => Some(Examples::from_bytes(&bytes).and_then(|e| e.check_fits(&model.config).map(|()| e)).map_err(|e| e.to_string())?),
        Err(_) => None,
    };
    let tokenizer = Tokenizer::load_dir(&args.model).map_err(|e| e.to_string())?;
    let distribution = match &args.task {
        Some(name) => Some(distribution(&model, tokenizer.as_ref(), name, args.task_examples, node)?),
        None => None,
    };
    let fires = examples.as_ref().and_then(|e| e.label_text(node, &e.token_shares(model.config.vocab_size), tokenizer.as_ref()));
    if args.json {
        let rows = |pattern: &Tensor| pattern.rows_iter().map(<[f32]>::to_vec).collect::<Vec<_>>();
        let attention = details.attention.as_ref().map(|a| {
            serde_json::json!({ "head": a.head, "pattern": rows(&a.pattern), "circuit_pattern": a.circuit.as_ref().map(rows), "channel_pattern": a.channel.as_ref().map(rows) })
        });
        let tokens = |list: &[(u32, f32)]| list.iter().map(|(t, v)| serde_json::json!({ "token": t, "value": v })).collect::<Vec<_>>();
        let embedding = details.embedding.as_ref().map(|e| {
            serde_json::json!({ "top": tokens(&e.top), "bottom": tokens(&e.bottom), "nonzero_tokens": e.token_values.len(), "zero_tokens": e.zero_tokens, "positions": e.positions })
        });
        let out = serde_json::json!({
            "label": label(&node), "activations": details.activations, "attention": attention, "embedding": embedding,
            "incoming": weights(&details.incoming), "outgoing": weights(&details.outgoing), "fires": fires,
            "task": distribution.as_ref().map(|(task, d)| distribution_json(task, d)),
        });
        println!("{out}");
        return Ok(());
    }
    println!("{}", label(&node));
    if let Some(fires) = &fires {
        println!("fires {fires} (from its dataset examples)");
    }
    if let Some(examples) = &examples {
        for e in examples.of(node, Bucket::Max) {
            let (window, at) = examples.window_of(e.offset);
            let text = |ids: &[u32]| tokenizer.as_ref().map_or_else(|| format!("{ids:?}"), |t| format!("{:?}", t.decode(ids)));
            println!("  {:+.3}  {} [{}]", e.value, text(&window[at.saturating_sub(12)..at]), text(&window[at..at + 1]));
        }
    }
    if let Some((_, d)) = &distribution {
        for class in &d.classes {
            println!("{}: mean {:+.4} at the last token, over {} examples", class.name, class.mean(), class.values.len());
        }
        let separation = d.separation().map(|s| format!("; the first is the larger in {:.1}% of pairs", 100.0 * s)).unwrap_or_default();
        println!("difference of means {:+.4}{separation}", d.difference());
    }
    let acts: Vec<String> = details.activations.iter().map(|a| format!("{a:.3}")).collect();
    println!("activation per position: {}", acts.join(" "));
    if let Some(attention) = &details.attention {
        let most = |pattern: &Tensor| {
            let last = pattern.row(pattern.rows - 1);
            let mut order: Vec<usize> = (0..last.len()).collect();
            order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
            order.iter().take(5).map(|&j| format!("{j} ({:.3})", last[j])).collect::<Vec<_>>().join(", ")
        };
        println!("head {}: the last position attends most to positions {}", attention.head, most(&attention.pattern));
        if let Some(pattern) = &attention.circuit {
            println!("  with only the circuit's q and k channels: {}", most(pattern));
        }
        if let Some(pattern) = &attention.channel {
            println!("  with only this channel: {}", most(pattern));
        }
    }
    if let Some(embedding) = &details.embedding {
        let list = |l: &[(u32, f32)]| l.iter().map(|(t, v)| format!("{t} ({v:+.3})")).collect::<Vec<_>>().join(", ");
        if !embedding.top.is_empty() || !embedding.bottom.is_empty() {
            println!("tokens whose embedding writes to it most: {}; most negatively: {}", list(&embedding.top), list(&embedding.bottom));
            println!("{} tokens write to it, {} do not", embedding.token_values.len(), embedding.zero_tokens);
        }
        if let Some(positions) = &embedding.positions {
            let strongest = positions.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).map_or(0, |(p, _)| p);
            println!("position embedding: strongest at position {strongest} ({:+.3})", positions.get(strongest).copied().unwrap_or(0.0));
        }
    }
    for (name, list) in [("incoming", &details.incoming), ("outgoing", &details.outgoing)] {
        println!("{} {name} weights:", list.len());
        for (n, w) in list.iter().take(10) {
            println!("  {:<32} {w:>9.4}", label(n));
        }
    }
    Ok(())
}

/// `node` over `examples` of the task `name` drawn from the held-out seed,
/// as the page's inspector shows it.
fn distribution(model: &std::sync::Arc<Model>, tokenizer: Option<&Tokenizer>, name: &str, examples: usize, node: Node) -> Result<(TaskExamples, TaskDistribution), String> {
    let task = Task::parse(name).ok_or_else(|| format!("--task {name:?} is not a task: {}", Task::ALL.map(Task::name).join(", ")))?;
    let tokenizer = tokenizer.ok_or("--task needs the model folder's tokenizer (encoder.json and vocab.bpe)")?;
    let examples = TaskExamples::new(task, tokenizer, HELD_OUT_SEED, examples)?;
    let runner = super::runner(model.clone(), super::Backend::Cpu)?;
    let mut found = super::block_on(task_distributions(&runner, &examples, &[node], &mut |_, _| true))?;
    Ok((examples, found.remove(0)))
}

fn distribution_json(task: &TaskExamples, d: &TaskDistribution) -> serde_json::Value {
    let classes: Vec<_> = d
        .classes
        .iter()
        .map(|c| {
            let examples: Vec<_> = c.examples.iter().zip(&c.values).map(|(&i, v)| serde_json::json!({ "prompt": task.prompts[i], "value": v })).collect();
            serde_json::json!({ "name": c.name, "mean": c.mean(), "examples": examples })
        })
        .collect();
    serde_json::json!({ "classes": classes, "difference": d.difference(), "separation": d.separation() })
}
