//! The circuit file: a task circuit as JSON, for the page and the CLI.
//!
//! ```json
//! {
//!   "format": "circuitscope.circuit", "version": 1,
//!   "model": {"name": "python_tasks", "weights_sha256": "9f2c…"},
//!   "task": "single_double_quote",
//!   "nodes": ["0.attn.act_in[17]", "1.attn.k[40]", …],
//!   "edges": [[0, 1], …],
//!   "mean_ablation": {"source": "samples.json", "prompts": 32, "positions": 3120, "values": [0.0, 0.41, …]},
//!   "faithfulness": {"target_loss": 0.15, "examples": 200, "full": {"loss": 0.02, "accuracy": 1.0},
//!                    "circuit": {…}, "without_circuit": {…}},
//!   "curve": [[1, {"loss": 0.69, "accuracy": 0.5}], …],
//!   "method": {"name": "learned-mask", "settings": {…}, "seconds": 41.2}
//! }
//! ```
//!
//! - `model.weights_sha256` is [`Model::weights_sha256`]: a circuit opens
//!   only on the weights it was found on.
//! - `nodes` are `site[channel]`, most important first (the order the
//!   search ranked them in); their number is the circuit's node budget k.
//! - `edges` are the pairs of indices into `nodes` that a nonzero weight or
//!   the residual stream connects ([`edges_between`]), as found when the
//!   file was written.
//! - `mean_ablation.values` are each node's mean activation, the value it
//!   is set to when removed; every node outside the circuit is set to its
//!   mean over the same prompts.
//! - `faithfulness` holds the task loss (binary cross-entropy between the
//!   right and the wrong token, see `faithful`) and accuracy of the full
//!   model, of the circuit alone and of the model without the circuit, on
//!   held-out examples; `curve` the loss with the first k nodes kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{edges_between, Node, TaskLoss};
use crate::model::{Model, Site};

pub const FORMAT: &str = "circuitscope.circuit";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitFile {
    pub format: String,
    pub version: u32,
    pub model: ModelRef,
    pub task: String,
    pub nodes: Vec<String>,
    pub edges: Vec<[usize; 2]>,
    pub mean_ablation: MeanAblation,
    pub faithfulness: Faithfulness,
    pub curve: Vec<(usize, TaskLoss)>,
    pub method: Method,
    /// Labels a user gave the circuit's nodes, by node (`site[channel]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub weights_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanAblation {
    /// Where the means come from, e.g. `samples.json`.
    pub source: String,
    pub prompts: usize,
    pub positions: usize,
    /// Each node's mean, in the order of `nodes`.
    pub values: Vec<f32>,
}

impl MeanAblation {
    /// The means over a model folder's `samples.json` of `nodes`, in order.
    pub fn of(means: &super::SiteMeans, nodes: &[Node]) -> MeanAblation {
        MeanAblation {
            source: "samples.json".into(),
            prompts: means.prompts(),
            positions: means.positions(),
            values: nodes.iter().map(|n| means.of(n.site).map_or(0.0, |m| m[n.channel])).collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Faithfulness {
    pub target_loss: f64,
    /// Held-out examples the losses are over.
    pub examples: usize,
    pub full: TaskLoss,
    pub circuit: TaskLoss,
    pub without_circuit: TaskLoss,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Method {
    /// `learned-mask` (the paper's pruning, native) or `ablation-search` (forward passes only, the page's).
    pub name: String,
    pub settings: serde_json::Value,
    pub seconds: f64,
}

/// What a circuit search found: the parts of a circuit file that are not
/// read off the model.
pub struct Finding<'a> {
    pub task: crate::tasks::Task,
    /// Most important first.
    pub nodes: &'a [Node],
    pub faithfulness: Faithfulness,
    pub curve: Vec<(usize, TaskLoss)>,
    pub method: Method,
}

/// Why a circuit file cannot be used with a model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CircuitError {
    #[error("not a circuit file: {0}")]
    Json(String),
    #[error("not a circuit file (format {0:?}, expected {FORMAT:?})")]
    Format(String),
    #[error("circuit file version {0} is newer than this circuitscope reads ({VERSION})")]
    Version(u32),
    #[error("the circuit was found on other weights (model {name:?}, weights {found}…, this model's are {expected}…)")]
    WrongModel { name: String, found: String, expected: String },
    #[error("node {index} {text:?}: {problem}")]
    Node { index: usize, text: String, problem: String },
    #[error("edge {index} [{from}, {to}]: only {nodes} nodes")]
    Edge { index: usize, from: usize, to: usize, nodes: usize },
    #[error("mean_ablation has {values} values for {nodes} nodes")]
    Means { values: usize, nodes: usize },
    #[error("mean_ablation value {index} is {value}, not a finite number")]
    NotFinite { index: usize, value: f32 },
    #[error("the label of {node:?}: {problem}")]
    Label { node: String, problem: String },
}

impl CircuitFile {
    /// The file for what was `found` on `model` (named `model_name`): the
    /// nodes' edges and mean-ablation values are taken from the model and
    /// `means`.
    pub fn new(model: &Model, model_name: String, means: &super::SiteMeans, found: Finding) -> CircuitFile {
        let Finding { task, nodes, faithfulness, curve, method } = found;
        CircuitFile {
            format: FORMAT.into(),
            version: VERSION,
            model: ModelRef { name: model_name, weights_sha256: model.weights_sha256() },
            task: task.name().into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            edges: CircuitFile::edges_of(model, nodes),
            mean_ablation: MeanAblation::of(means, nodes),
            faithfulness,
            curve,
            method,
            labels: BTreeMap::new(),
        }
    }

    /// Parses and checks a circuit file against `model`; returns it with its nodes.
    pub fn parse(json: &str, model: &Model) -> Result<(CircuitFile, Vec<Node>), CircuitError> {
        // The format and version first, so a future file gets the version message, not a field error.
        let header: serde_json::Value = serde_json::from_str(json).map_err(|e| CircuitError::Json(e.to_string()))?;
        let format = header.get("format").and_then(|f| f.as_str()).unwrap_or_default();
        if format != FORMAT {
            return Err(CircuitError::Format(format.to_string()));
        }
        match header.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v > u64::from(VERSION) => return Err(CircuitError::Version(v.min(u64::from(u32::MAX)) as u32)),
            _ => {}
        }
        let file: CircuitFile = serde_json::from_value(header).map_err(|e| CircuitError::Json(e.to_string()))?;
        let expected = model.weights_sha256();
        if file.model.weights_sha256 != expected {
            return Err(CircuitError::WrongModel {
                name: file.model.name.clone(),
                found: file.model.weights_sha256.chars().take(12).collect(),
                expected: expected.chars().take(12).collect(),
            });
        }
        let nodes = file.check_nodes(model)?;
        for (index, &[from, to]) in file.edges.iter().enumerate() {
            if from >= nodes.len() || to >= nodes.len() {
                return Err(CircuitError::Edge { index, from, to, nodes: nodes.len() });
            }
        }
        if file.mean_ablation.values.len() != nodes.len() {
            return Err(CircuitError::Means { values: file.mean_ablation.values.len(), nodes: nodes.len() });
        }
        // A value past f32's range reads as infinity, which an ablation would
        // carry through the forward pass and the file could not write again.
        if let Some((index, &value)) = file.mean_ablation.values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CircuitError::NotFinite { index, value });
        }
        for (node, text) in &file.labels {
            let problem = if file.nodes.contains(node) { super::view::check_label(text).err() } else { Some("not a node of the circuit".into()) };
            if let Some(problem) = problem {
                return Err(CircuitError::Label { node: node.chars().take(64).collect(), problem });
            }
        }
        Ok((file, nodes))
    }

    fn check_nodes(&self, model: &Model) -> Result<Vec<Node>, CircuitError> {
        let c = &model.config;
        let mut seen = std::collections::HashSet::new();
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let bad = |problem: String| CircuitError::Node { index, text: text.clone(), problem };
                let (site_text, _) = text.split_once('[').ok_or_else(|| bad("not of the form site[channel]".into()))?;
                let site = Site::parse(site_text).ok_or_else(|| bad(format!("unknown site {site_text:?}")))?;
                let node = Node::parse(text).ok_or_else(|| {
                    bad(if Node::is_node_site(site) { "not of the form site[channel]".into() } else { format!("{site} holds no nodes") })
                })?;
                if let Site::Layer(layer, _) = site {
                    if layer >= c.n_layer {
                        return Err(bad(format!("the model has {} layers", c.n_layer)));
                    }
                }
                let width = c.site_width(site);
                if node.channel >= width {
                    return Err(bad(format!("channel {} is out of range: {site} has {width}", node.channel)));
                }
                if !seen.insert(node) {
                    return Err(bad("listed twice".into()));
                }
                Ok(node)
            })
            .collect()
    }

    /// The edges among `nodes` as index pairs, for a new file.
    pub fn edges_of(model: &Model, nodes: &[Node]) -> Vec<[usize; 2]> {
        edges_between(model, nodes).iter().map(|e| [e.from, e.to]).collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a circuit file serializes")
    }
}

/// Where a circuit listed in the page came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitOrigin {
    /// A circuit file bundled with the model.
    Bundled,
    /// A circuit file the user opened.
    Opened,
    /// Found in the page by the forward-pass search.
    Found,
    /// One of OpenAI's, imported from the release's `viz_data.pt`.
    Imported,
}

/// A circuit file checked against the model shown, with its nodes: plain data.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedCircuit {
    pub file: CircuitFile,
    pub nodes: Vec<Node>,
    pub origin: CircuitOrigin,
    /// Pretraining documents per node, where the circuit came with them
    /// (OpenAI's `viz_data.pt` has them).
    pub documents: Vec<crate::convert::NodeSamples>,
}

impl LoadedCircuit {
    pub fn parse(json: &str, model: &Model, origin: CircuitOrigin) -> Result<LoadedCircuit, String> {
        let (file, nodes) = CircuitFile::parse(json, model).map_err(|e| e.to_string())?;
        Ok(LoadedCircuit { file, nodes, origin, documents: Vec::new() })
    }

    /// The labels the file gives its nodes (checked when it was parsed).
    pub fn labels(&self) -> impl Iterator<Item = (Node, &str)> {
        self.file.labels.iter().filter_map(|(name, text)| Some((*self.nodes.get(self.file.nodes.iter().position(|n| n == name)?)?, text.as_str())))
    }

    /// The file with `labels` given to those of its nodes they name (and
    /// its own labels for the rest), to save.
    pub fn with_labels(&self, labels: &[(Node, String)]) -> CircuitFile {
        let mut file = self.file.clone();
        for (node, text) in labels {
            if let Some(i) = self.nodes.iter().position(|n| n == node) {
                file.labels.insert(file.nodes[i].clone(), text.clone());
            }
        }
        file
    }

    /// A short name for buttons and tests: `bundled`, `opened`, `found` or `imported`.
    pub fn origin_name(&self) -> &'static str {
        match self.origin {
            CircuitOrigin::Bundled => "bundled",
            CircuitOrigin::Opened => "opened",
            CircuitOrigin::Found => "found",
            CircuitOrigin::Imported => "imported",
        }
    }

    /// A circuit of `nodes` for `task` with made-up figures, for tests.
    #[cfg(test)]
    pub(crate) fn for_test(model: &Model, task: &str, nodes: Vec<Node>, origin: CircuitOrigin) -> LoadedCircuit {
        let loss = TaskLoss { loss: 0.1, accuracy: 1.0 };
        let faithfulness = Faithfulness { target_loss: 0.15, examples: 1, full: loss, circuit: loss, without_circuit: loss };
        let method = Method { name: "test".into(), settings: serde_json::Value::Null, seconds: 0.0 };
        let task = crate::tasks::Task::parse(task).expect("a task name");
        let found = Finding { task, nodes: &nodes, faithfulness, curve: Vec::new(), method };
        let file = CircuitFile::new(model, "test".into(), &super::SiteMeans::default(), found);
        LoadedCircuit { file, nodes, origin, documents: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Config, SiteKind};

    fn model(seed: u64) -> Model {
        let config = Config::from_json(r#"{"n_layer": 2, "d_model": 8, "n_head": 2, "d_head": 4, "d_mlp": 12, "vocab_size": 10, "block_size": 6}"#)
            .unwrap();
        Model::synthetic(config, 0.5, seed)
    }

    fn circuit(model: &Model) -> CircuitFile {
        let nodes = [Node::new(0, SiteKind::AttnActIn, 3), Node::new(0, SiteKind::AttnQ, 5), Node::new(1, SiteKind::MlpPostAct, 11)];
        let loss = TaskLoss { loss: 0.1, accuracy: 0.95 };
        CircuitFile {
            format: FORMAT.into(),
            version: VERSION,
            model: ModelRef { name: "test".into(), weights_sha256: model.weights_sha256() },
            task: "single_double_quote".into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            edges: CircuitFile::edges_of(model, &nodes),
            mean_ablation: MeanAblation { source: "samples.json".into(), prompts: 2, positions: 9, values: vec![0.5, -0.25, 1.0] },
            faithfulness: Faithfulness { target_loss: 0.15, examples: 20, full: loss, circuit: loss, without_circuit: loss },
            curve: vec![(0, TaskLoss { loss: 0.7, accuracy: 0.5 }), (3, loss)],
            method: Method { name: "learned-mask".into(), settings: serde_json::json!({"steps": 3}), seconds: 1.5 },
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn circuit_files_round_trip() {
        let m = model(1);
        let file = circuit(&m);
        let (again, nodes) = CircuitFile::parse(&file.to_json(), &m).unwrap();
        assert_eq!(again, file);
        assert_eq!(nodes[1], Node::new(0, SiteKind::AttnQ, 5));
        assert!(!file.to_json().contains("labels"), "a file without labels is written as before");
    }

    #[test]
    fn labels_given_in_the_page_are_saved_with_the_circuit_and_read_back_for_its_nodes() {
        let m = model(1);
        let (file, nodes) = CircuitFile::parse(&circuit(&m).to_json(), &m).unwrap();
        let loaded = LoadedCircuit { file, nodes: nodes.clone(), origin: CircuitOrigin::Opened, documents: Vec::new() };
        let other = Node::new(1, SiteKind::AttnV, 0);
        let saved = loaded.with_labels(&[(nodes[2], "fires on quotes".into()), (other, "not in the circuit".into())]);
        assert_eq!(saved.labels.len(), 1);
        let again = LoadedCircuit::parse(&saved.to_json(), &m, CircuitOrigin::Opened).unwrap();
        assert_eq!(again.labels().collect::<Vec<_>>(), [(nodes[2], "fires on quotes")]);
    }

    #[test]
    fn bad_circuit_files_say_what_is_wrong() {
        let m = model(1);
        let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut json = serde_json::to_value(circuit(&m)).unwrap();
            edit(&mut json);
            CircuitFile::parse(&json.to_string(), &m).unwrap_err().to_string()
        };
        let node = |text: &'static str| move |j: &mut serde_json::Value| j["nodes"][1] = text.into();
        assert!(edited(&node("0.attn.zz[1]")).contains("node 1 \"0.attn.zz[1]\": unknown site \"0.attn.zz\""));
        assert!(edited(&node("0.attn.q[8]")).contains("channel 8 is out of range: 0.attn.q has 8"));
        assert!(edited(&node("5.attn.q[1]")).contains("the model has 2 layers"));
        assert!(edited(&node("0.resid_mid[1]")).contains("holds no nodes"));
        assert!(edited(&node("0.attn.q[x]")).contains("not of the form site[channel]"));
        assert!(edited(&node("0.attn.act_in[3]")).contains("listed twice"));
        assert!(edited(&|j| j["edges"] = serde_json::json!([[0, 7]])).contains("edge 0 [0, 7]: only 3 nodes"));
        assert!(edited(&|j| j["mean_ablation"]["values"] = serde_json::json!([1.0])).contains("1 values for 3 nodes"));
        assert!(edited(&|j| j["mean_ablation"]["values"] = serde_json::json!([0.5, 1e39, 1.0])).contains("value 1 is inf, not a finite number"));
        assert!(edited(&|j| j["format"] = "something".into()).contains("not a circuit file"));
        assert!(edited(&|j| j["version"] = 7.into()).contains("version 7 is newer"));
        assert!(edited(&|j| j["nodes"] = 3.into()).contains("not a circuit file"));
        assert!(edited(&|j| j["labels"] = serde_json::json!({"0.attn.v[1]": "x"})).contains("the label of \"0.attn.v[1]\": not a node of the circuit"));
        assert!(edited(&|j| j["labels"] = serde_json::json!({"0.attn.q[5]": "a\u{7}"})).contains("control character"));
        let other = model(2);
        let err = CircuitFile::parse(&circuit(&m).to_json(), &other).unwrap_err();
        assert!(matches!(err, CircuitError::WrongModel { .. }), "{err}");
        assert!(err.to_string().contains("found on other weights"));
        assert!(CircuitFile::parse("{", &m).unwrap_err().to_string().starts_with("not a circuit file"));
    }
}
