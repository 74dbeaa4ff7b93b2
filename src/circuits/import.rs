//! OpenAI's circuits as circuitscope's: the kept channels of a `viz_data.pt`
//! become a circuit's nodes, checked against the model they were found on;
//! the faithfulness figures are computed here, as for every other circuit,
//! so the two can be compared side by side.

use crate::convert::{NodeSamples, VizData};
use crate::model::{Config, Site};
use crate::release::VizEntry;

use super::{Method, Node};

/// The method name imported circuits carry in their files.
pub const IMPORTED_METHOD: &str = "openai-viz-data";

/// The nodes of `viz` on a model of `config`, most important first: by the
/// task loss the file says each channel's ablation gives, where it says so,
/// else in the file's order.
pub fn imported_nodes(viz: &VizData, config: &Config) -> Result<Vec<Node>, String> {
    check_config(viz, config)?;
    let mut ranked: Vec<(f64, Node)> = Vec::new();
    for (site_name, channels) in &viz.circuit {
        let site = Site::parse(site_name).filter(|&s| Node::is_node_site(s)).ok_or_else(|| {
            format!("the circuit keeps channels of {site_name:?}, which is not a node site of this model")
        })?;
        if let Site::Layer(layer, _) = site {
            if layer >= config.n_layer {
                return Err(format!("the circuit keeps channels of {site_name}, but the model has {} layers", config.n_layer));
            }
        }
        let width = config.site_width(site);
        let losses = viz.channel_losses.iter().find(|(s, _)| s == site_name).map(|(_, l)| l).filter(|l| l.len() == channels.len());
        for (i, &channel) in channels.iter().enumerate() {
            if channel >= width {
                return Err(format!("the circuit keeps {site_name}[{channel}], but the site has {width} channels"));
            }
            // Unranked channels go last, in the file's order (a stable sort).
            let loss = losses.map_or(f64::NEG_INFINITY, |l| if l[i].is_finite() { l[i] } else { f64::NEG_INFINITY });
            ranked.push((loss, Node { site, channel }));
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut nodes: Vec<Node> = ranked.into_iter().map(|(_, n)| n).collect();
    let before = nodes.len();
    let mut seen = std::collections::HashSet::new();
    nodes.retain(|n| seen.insert(*n));
    if nodes.len() != before {
        return Err(format!("the circuit names {} channels more than once", before - nodes.len()));
    }
    Ok(nodes)
}

/// The figures of a model's config a `viz_data.pt` states
/// (`beeg_model_config`), by OpenAI's names.
pub fn viz_config(config: &Config) -> Vec<(String, i64)> {
    [
        ("n_layer", config.n_layer),
        ("d_model", config.d_model),
        ("n_head", config.n_head),
        ("d_head", config.d_head),
        ("d_mlp", config.d_mlp),
        ("vocab_size", config.vocab_size),
        ("block_size", config.block_size),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value as i64))
    .collect()
}

/// The file's model config must be the model's where both say a figure.
fn check_config(viz: &VizData, config: &Config) -> Result<(), String> {
    for (key, value) in viz_config(config) {
        if let Some((_, theirs)) = viz.config.iter().find(|(k, _)| *k == key) {
            if *theirs != value {
                return Err(format!("the circuit was found on a model with {key} {theirs}, and this model's is {value}: open the model it belongs to"));
            }
        }
    }
    Ok(())
}

/// How an imported circuit was found, for its file: where from, and
/// OpenAI's own figures (task losses as the viewer shows them).
pub fn imported_method(viz: &VizData, entry: Option<&VizEntry>, source: &str) -> Method {
    let settings = serde_json::json!({
        "source": source,
        "model": entry.map(|e| e.model.clone()),
        "dataset": entry.map(|e| e.dataset.clone()),
        "sweep": entry.map(|e| e.sweep.clone()),
        "k": entry.map(|e| e.k.clone()),
        "nodes": viz.nodes(),
        "openai_loss": viz.loss,
        "openai_circuit_loss": viz.circuit_loss,
    });
    Method { name: IMPORTED_METHOD.into(), settings, seconds: 0.0 }
}

/// The pretraining documents `viz` has for `node`.
pub fn documents_of<'a>(samples: &'a [NodeSamples], node: &Node) -> Option<&'a NodeSamples> {
    let site = node.site.to_string();
    samples.iter().find(|s| s.site == site && s.channel == node.channel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SiteKind;

    fn viz(circuit: Vec<(&str, Vec<usize>)>) -> VizData {
        VizData {
            circuit: circuit.into_iter().map(|(s, c)| (s.to_string(), c)).collect(),
            channel_losses: Vec::new(),
            loss: None,
            circuit_loss: None,
            config: Vec::new(),
            samples: Vec::new(),
        }
    }

    fn config() -> Config {
        Config::from_json(r#"{"n_layer": 2, "d_model": 8, "n_head": 2, "d_head": 2, "d_mlp": 16, "vocab_size": 10, "block_size": 8}"#).unwrap()
    }

    #[test]
    fn the_kept_channels_become_nodes_ranked_by_their_ablation_loss() {
        let mut v = viz(vec![("0.attn.q", vec![1, 3]), ("1.mlp.post_act", vec![15])]);
        v.channel_losses = vec![("0.attn.q".into(), vec![0.1, 0.9])];
        let nodes = imported_nodes(&v, &config()).unwrap();
        assert_eq!(nodes, [Node::new(0, SiteKind::AttnQ, 3), Node::new(0, SiteKind::AttnQ, 1), Node::new(1, SiteKind::MlpPostAct, 15)]);
    }

    #[test]
    fn circuits_of_another_model_are_refused_by_name() {
        let refused = |v: VizData| imported_nodes(&v, &config()).unwrap_err();
        assert!(refused(viz(vec![("0.attn.q", vec![4])])).contains("0.attn.q[4], but the site has 4 channels"));
        assert!(refused(viz(vec![("2.mlp.act_in", vec![0])])).contains("the model has 2 layers"));
        assert!(refused(viz(vec![("0.attn.y", vec![0])])).contains("not a node site"));
        assert!(refused(viz(vec![("wte", vec![0])])).contains("not a node site"));
        assert!(refused(viz(vec![("0.mlp.act_in", vec![1, 1])])).contains("more than once"));
        let mut other = viz(vec![("0.mlp.act_in", vec![1])]);
        other.config = vec![("d_model".into(), 2048)];
        assert!(refused(other).contains("d_model 2048"));
    }
}
