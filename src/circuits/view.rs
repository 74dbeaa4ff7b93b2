//! The view of the page as plain data: everything a link holds besides the
//! model and the prompt (the token shown, the output ranked for, what the
//! graph draws, the ablations, the selected node, pan and zoom), and the
//! transitions the page makes on it. The page keeps one [`View`] in one
//! signal; a link is `(model, prompt, View)` ([`super::ViewLink`]), written
//! and read in one place. Everything here is tested without a browser.

use std::sync::Arc;

use super::{LoadedCircuit, Node};
use crate::model::{Model, Site};

/// Channels shown per site in the circuit graph, at first.
pub const NODES_PER_SITE: usize = 8;
/// The longest label a user may give a node, in characters, and the most
/// nodes a view labels (a link holds them all).
pub const MAX_LABEL_CHARS: usize = 80;
pub const MAX_LABELS: usize = 256;

/// Whether `text` may be a node's label as it comes (from a link or a
/// file): not empty, at most [`MAX_LABEL_CHARS`], no control characters.
pub fn check_label(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        Err("an empty label".into())
    } else if text.chars().count() > MAX_LABEL_CHARS {
        Err(format!("a label longer than {MAX_LABEL_CHARS} characters"))
    } else if text.chars().any(char::is_control) {
        Err("a label with a control character".into())
    } else {
        Ok(())
    }
}

/// How an ablated node is knocked out, at every position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AblationKind {
    Zero,
    /// Set to its mean over the model's sample prompts.
    Mean,
}

/// How the graph picks its nodes when no circuit is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranking {
    /// By attribution: each node's effect on the chosen output estimated from
    /// one backward pass, the shown nodes then measured.
    Attribution,
    /// By measured effect on the chosen output.
    Effect,
    /// By |activation|.
    Activation,
}

/// What the graph draws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shown {
    /// The top nodes per site by the view's ranking.
    Ranked,
    /// The circuit that came with the model for this task.
    Circuit(String),
    /// These nodes: a circuit found in the page or opened from a file, or a
    /// link's node set.
    Nodes(Vec<Node>),
}

/// Pan and zoom of the graph: canvas pixel = content pixel * scale + offset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Zoom {
    pub scale: f64,
    pub dx: f64,
    pub dy: f64,
}

impl Zoom {
    pub const IDENTITY: Zoom = Zoom { scale: 1.0, dx: 0.0, dy: 0.0 };
    /// The scales the graph allows.
    pub const SCALES: std::ops::RangeInclusive<f64> = 0.25..=8.0;

    /// The content point under canvas point (x, y).
    pub fn to_content(self, x: f64, y: f64) -> (f64, f64) {
        ((x - self.dx) / self.scale, (y - self.dy) / self.scale)
    }

    /// Zoomed by `factor` about canvas point (x, y), which stays put.
    pub fn zoomed(self, factor: f64, x: f64, y: f64) -> Zoom {
        let scale = (self.scale * factor).clamp(*Self::SCALES.start(), *Self::SCALES.end());
        let f = scale / self.scale;
        Zoom { scale, dx: x - (x - self.dx) * f, dy: y - (y - self.dy) * f }
    }
}

/// What the page shows of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// The token position whose predictions and graph are shown; `None`: the last.
    pub position: Option<usize>,
    /// The output ranked for (`None`: the top prediction) and the one it is
    /// contrasted with.
    pub target: Option<u32>,
    pub contrast: Option<u32>,
    pub shown: Shown,
    /// Nodes ablated at every position, in the order they were ablated.
    pub ablations: Vec<(Node, AblationKind)>,
    /// The node shown in the inspector.
    pub selected: Option<Node>,
    pub ranking: Ranking,
    pub per_site: usize,
    pub zoom: Zoom,
    /// Labels the user gave nodes, in the order first given: they stand
    /// for the computed ones and travel with links and circuit files.
    pub labels: Vec<(Node, String)>,
}

impl Default for View {
    fn default() -> View {
        View {
            position: None,
            target: None,
            contrast: None,
            shown: Shown::Ranked,
            ablations: Vec::new(),
            selected: None,
            ranking: Ranking::Attribution,
            per_site: NODES_PER_SITE,
            zoom: Zoom::IDENTITY,
            labels: Vec::new(),
        }
    }
}

impl View {
    /// The position shown in a run of `seq_len` tokens.
    pub fn at(&self, seq_len: usize) -> usize {
        self.position.unwrap_or(usize::MAX).min(seq_len.saturating_sub(1))
    }

    /// A new prompt ran: what referred to the old one goes (the position,
    /// the selected node, the ablations, the output chosen, a link's node
    /// set); how the graph is drawn stays (a listed circuit, the ranking,
    /// nodes per site, pan and zoom), and so do the labels, which are about
    /// the model.
    pub fn new_run(&mut self, circuits: &[Arc<LoadedCircuit>]) {
        let listed = self.drawn(circuits).is_some();
        *self = View {
            shown: if listed { std::mem::replace(&mut self.shown, Shown::Ranked) } else { Shown::Ranked },
            ranking: self.ranking,
            per_site: self.per_site,
            zoom: self.zoom,
            labels: std::mem::take(&mut self.labels),
            ..View::default()
        };
    }

    /// The label the user gave `node`, if any.
    pub fn label(&self, node: Node) -> Option<&str> {
        self.labels.iter().find(|(n, _)| *n == node).map(|(_, text)| text.as_str())
    }

    /// Gives `node` the label typed as `text`: control characters become
    /// spaces, the ends are trimmed and it is cut to [`MAX_LABEL_CHARS`];
    /// nothing left takes the label away (the computed one shows again).
    /// A new label past [`MAX_LABELS`] is refused.
    pub fn set_label(&mut self, node: Node, text: &str) -> Result<(), String> {
        let cleaned: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let cleaned: String = cleaned.trim().chars().take(MAX_LABEL_CHARS).collect();
        let cleaned = cleaned.trim_end().to_string();
        let full = self.labels.len() >= MAX_LABELS;
        match self.labels.iter_mut().find(|(n, _)| *n == node) {
            _ if cleaned.is_empty() => self.labels.retain(|(n, _)| *n != node),
            Some((_, old)) => *old = cleaned,
            None if full => return Err(format!("a view holds at most {MAX_LABELS} labels")),
            None => self.labels.push((node, cleaned)),
        }
        Ok(())
    }

    /// Takes the labels a circuit file gives its nodes, for nodes the user
    /// has not labelled.
    pub fn take_labels(&mut self, circuit: &LoadedCircuit) {
        for (node, text) in circuit.labels() {
            if self.label(node).is_none() && self.labels.len() < MAX_LABELS {
                self.labels.push((node, text.to_string()));
            }
        }
    }

    /// A token was clicked: predictions and graph are at it, and the output
    /// and node chosen at the old position go.
    pub fn click_token(&mut self, at: usize) {
        self.position = Some(at);
        self.selected = None;
        self.target = None;
        self.contrast = None;
    }

    /// A task's prompt ran: rank by the right answer's logit over the wrong one's.
    pub fn pick_task(&mut self, right: u32, wrong: u32) {
        self.ranking = Ranking::Attribution;
        self.target = Some(right);
        self.contrast = Some(wrong);
    }

    /// Ablates `node` unless it already is; whether it was added.
    pub fn ablate(&mut self, node: Node, kind: AblationKind) -> bool {
        let new = !self.ablations.iter().any(|(n, _)| *n == node);
        if new {
            self.ablations.push((node, kind));
        }
        new
    }

    /// Draws a listed circuit: a bundled one by its task (as links name it),
    /// any other by its nodes.
    pub fn show_circuit(&mut self, circuit: &LoadedCircuit) {
        self.shown = match circuit.origin {
            super::CircuitOrigin::Bundled => Shown::Circuit(circuit.file.task.clone()),
            _ => Shown::Nodes(circuit.nodes.clone()),
        };
    }

    /// Shows `circuit`, or the ranked nodes again when it is the one shown.
    pub fn toggle_circuit(&mut self, circuit: &LoadedCircuit, circuits: &[Arc<LoadedCircuit>]) {
        if self.drawn(circuits).is_some_and(|c| **c == *circuit) {
            self.shown = Shown::Ranked;
        } else {
            self.show_circuit(circuit);
        }
    }

    /// The listed circuit drawn, if any: the bundled circuit of the task
    /// shown, or the latest found or opened circuit of exactly the nodes shown.
    pub fn drawn<'a>(&self, circuits: &'a [Arc<LoadedCircuit>]) -> Option<&'a Arc<LoadedCircuit>> {
        match &self.shown {
            Shown::Ranked => None,
            Shown::Circuit(task) => circuits.iter().find(|c| c.origin == super::CircuitOrigin::Bundled && c.file.task == *task),
            // A found or opened circuit before a bundled one of the same nodes.
            Shown::Nodes(nodes) => circuits.iter().rev().find(|c| c.origin != super::CircuitOrigin::Bundled && c.nodes == *nodes),
        }
    }

    /// The nodes the view draws, when it draws a set rather than a ranking.
    pub fn shown_nodes<'a>(&'a self, circuits: &'a [Arc<LoadedCircuit>]) -> Option<&'a [Node]> {
        match &self.shown {
            Shown::Ranked => None,
            Shown::Circuit(_) => self.drawn(circuits).map(|c| &c.nodes[..]),
            Shown::Nodes(nodes) => Some(nodes),
        }
    }

    /// Whether all of the view fits `model`, its listed `circuits` and a
    /// run of `seq_len` tokens: every node's site and channel exist, the
    /// tokens are in the vocabulary, the position is in the prompt and a
    /// circuit named by its task comes with the model. A view that does not
    /// fit is refused whole, not shown in part.
    pub fn check(&self, model: &Model, seq_len: usize, circuits: &[Arc<LoadedCircuit>]) -> Result<(), String> {
        let config = &model.config;
        for token in [self.target, self.contrast].into_iter().flatten() {
            if token as usize >= config.vocab_size {
                return Err(format!("token {token} is outside the vocabulary of {}", config.vocab_size));
            }
        }
        let shown = match &self.shown {
            Shown::Nodes(nodes) => &nodes[..],
            Shown::Circuit(task) if self.drawn(circuits).is_none() => return Err(format!("the circuit {task:?} does not come with this model")),
            _ => &[],
        };
        let labelled = self.labels.iter().map(|(n, _)| n);
        for node in shown.iter().chain(self.ablations.iter().map(|(n, _)| n)).chain(&self.selected).chain(labelled) {
            let Site::Layer(layer, _) = node.site else { continue };
            if layer >= config.n_layer {
                return Err(format!("{node}: the model has {} layers", config.n_layer));
            }
            if node.channel >= config.site_width(node.site) {
                return Err(format!("{node}: {} has {} channels", node.site, config.site_width(node.site)));
            }
        }
        if let Some(at) = self.position.filter(|&at| at >= seq_len) {
            return Err(format!("token position {at} is past the prompt's {seq_len} tokens"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuits::CircuitOrigin;
    use crate::model::{Config, SiteKind};

    fn model() -> Model {
        let config = Config::from_json(r#"{"n_layer": 2, "d_model": 8, "n_head": 2, "d_head": 4, "d_mlp": 12, "vocab_size": 10, "block_size": 6}"#).unwrap();
        Model::synthetic(config, 0.5, 1)
    }

    /// A listed circuit of `nodes` for `task`.
    fn listed(model: &Model, task: &str, nodes: Vec<Node>, origin: CircuitOrigin) -> Arc<LoadedCircuit> {
        Arc::new(LoadedCircuit::for_test(model, task, nodes, origin))
    }

    fn busy_view() -> View {
        View {
            position: Some(3),
            target: Some(4),
            contrast: Some(5),
            shown: Shown::Nodes(vec![Node::new(0, SiteKind::AttnV, 1)]),
            ablations: vec![(Node::new(1, SiteKind::MlpPostAct, 2), AblationKind::Zero)],
            selected: Some(Node::new(0, SiteKind::AttnV, 1)),
            ranking: Ranking::Activation,
            per_site: 12,
            zoom: Zoom { scale: 2.0, dx: 1.0, dy: 2.0 },
            labels: vec![(Node::new(0, SiteKind::AttnV, 1), "opening quote".into())],
        }
    }

    #[test]
    fn after_a_new_run_what_referred_to_the_old_prompt_is_cleared_and_how_the_graph_is_drawn_stays() {
        let model = model();
        let mut view = busy_view();
        view.new_run(&[]);
        let drawn_the_same = View {
            ranking: Ranking::Activation,
            per_site: 12,
            zoom: Zoom { scale: 2.0, dx: 1.0, dy: 2.0 },
            labels: busy_view().labels,
            ..View::default()
        };
        assert_eq!(view, drawn_the_same, "a link's node set, the position, output, selection and ablations go; labels stay");
        // A listed circuit stays drawn: it is not about one prompt.
        let found = listed(&model, "bracket_type", vec![Node::new(0, SiteKind::AttnV, 1)], CircuitOrigin::Found);
        let mut view = busy_view();
        view.new_run(std::slice::from_ref(&found));
        assert_eq!(view.shown, Shown::Nodes(found.nodes.clone()));
        assert_eq!(view.drawn(std::slice::from_ref(&found)), Some(&found));
        assert!(view.ablations.is_empty() && view.selected.is_none() && view.position.is_none());
    }

    #[test]
    fn clicking_a_token_moves_the_view_there_and_forgets_the_output_and_node_chosen() {
        let mut view = busy_view();
        view.click_token(1);
        assert_eq!((view.position, view.target, view.contrast, view.selected), (Some(1), None, None, None));
        assert_eq!(view.ablations.len(), 1, "ablations hold at every position");
        assert_eq!(view.at(8), 1);
        assert_eq!(View::default().at(8), 7, "no position: the last");
        assert_eq!(View { position: Some(20), ..View::default() }.at(8), 7);
    }

    #[test]
    fn picking_a_task_ranks_by_its_right_answer_over_its_wrong_one() {
        let mut view = busy_view();
        view.new_run(&[]);
        view.pick_task(7, 2);
        assert_eq!((view.ranking, view.target, view.contrast), (Ranking::Attribution, Some(7), Some(2)));
    }

    #[test]
    fn a_label_is_set_cleaned_replaced_and_taken_away_when_emptied() {
        let mut view = View::default();
        let (a, b) = (Node::new(0, SiteKind::MlpPostAct, 3), Node::new(1, SiteKind::AttnK, 2));
        view.set_label(a, "  closes the\tstring\n ").unwrap();
        view.set_label(b, &"x".repeat(200)).unwrap();
        assert_eq!(view.label(a), Some("closes the string"));
        assert_eq!(view.label(b).map(|l| l.chars().count()), Some(MAX_LABEL_CHARS));
        view.set_label(a, "quote").unwrap();
        assert_eq!(view.labels[0], (a, "quote".to_string()), "replaced in place");
        view.set_label(a, " \n ").unwrap();
        assert_eq!((view.label(a), view.labels.len()), (None, 1));
        for c in 0..MAX_LABELS - 1 {
            view.set_label(Node::new(0, SiteKind::MlpPostAct, c), "x").unwrap();
        }
        assert!(view.set_label(Node::new(1, SiteKind::MlpPostAct, 0), "one too many").unwrap_err().contains("at most 256"));
        view.set_label(b, "still editable").unwrap();
        assert!(check_label("ok").is_ok());
        for bad in ["", "  ", "a\u{7}b", &"y".repeat(81)] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_node_is_ablated_once() {
        let mut view = View::default();
        let node = Node::new(0, SiteKind::MlpPostAct, 3);
        assert!(view.ablate(node, AblationKind::Zero));
        assert!(!view.ablate(node, AblationKind::Mean));
        assert_eq!(view.ablations, vec![(node, AblationKind::Zero)]);
    }

    #[test]
    fn circuits_show_and_hide_bundled_ones_by_task_and_others_by_their_nodes() {
        let model = model();
        let bundled = listed(&model, "bracket_type", vec![Node::new(0, SiteKind::AttnQ, 0)], CircuitOrigin::Bundled);
        let found = listed(&model, "bracket_type", vec![Node::new(1, SiteKind::AttnK, 2)], CircuitOrigin::Found);
        let circuits = [bundled.clone(), found.clone()];
        let mut view = View::default();
        view.toggle_circuit(&bundled, &circuits);
        assert_eq!(view.shown, Shown::Circuit("bracket_type".into()));
        assert_eq!(view.drawn(&circuits), Some(&bundled));
        assert_eq!(view.shown_nodes(&circuits), Some(&bundled.nodes[..]));
        view.toggle_circuit(&found, &circuits);
        assert_eq!(view.drawn(&circuits), Some(&found));
        view.toggle_circuit(&found, &circuits);
        assert_eq!(view.shown, Shown::Ranked);
        assert_eq!(view.drawn(&circuits), None);
    }

    #[test]
    fn a_view_that_does_not_fit_the_model_is_refused_whole_with_the_reason() {
        let model = model();
        let fits = View { target: Some(9), shown: Shown::Nodes(vec![Node::new(1, SiteKind::MlpPostAct, 11)]), position: Some(4), ..View::default() };
        fits.check(&model, 5, &[]).unwrap();
        let cases = [
            (View { shown: Shown::Nodes(vec![Node::new(1, SiteKind::MlpPostAct, 12)]), ..fits.clone() }, "1.mlp.post_act[12]: 1.mlp.post_act has 12 channels"),
            (View { ablations: vec![(Node::new(2, SiteKind::AttnQ, 0), AblationKind::Zero)], ..fits.clone() }, "has 2 layers"),
            (View { contrast: Some(10), ..fits.clone() }, "outside the vocabulary"),
            (View { selected: Some(Node::new(0, SiteKind::AttnV, 8)), ..fits.clone() }, "0.attn.v[8]"),
            (View { position: Some(5), ..fits.clone() }, "position 5 is past the prompt's 5 tokens"),
            (View { labels: vec![(Node::new(0, SiteKind::AttnQ, 9), "x".into())], ..fits.clone() }, "0.attn.q[9]"),
            (View { shown: Shown::Circuit("bracket_type".into()), ..fits.clone() }, "\"bracket_type\" does not come with this model"),
        ];
        for (view, expected) in cases {
            let message = view.check(&model, 5, &[]).unwrap_err();
            assert!(message.contains(expected), "{message}");
        }
    }
}
