//! The page's state: the model with what came with it, the last run, one
//! [`View`] of it (what a link holds), and the work under way. Plain data in
//! signals, shared with every component through Leptos' context
//! ([`use_page`]); the GPU stays outside the signals, in the runner. What the
//! page does to this state lives next to it: `open.rs` (loading a model),
//! `run.rs` (runs, what the page reads of them, ablations, links),
//! `effects.rs` (ranking by effect),
//! `circuits.rs` (the circuit search).

use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;

use super::blocks::BlockDeltas;
use super::distribution::Distributions;
use super::examples::ExamplesJob;
use super::load::{BundledModel, LoadProgress};
use super::summary::{predictions_at, LayerSummary, ModelFacts};
use crate::circuits::{
    Agreement, AblationKind, Attribution, Bucket, ExampleRow, Examples, GraphView, LinkModel, LoadedCircuit, Node, NodeDetails, Objective, PruneProgress, Ranking, SearchProgress, Shown,
    SiteMeans, Tour, View, ViewLink, Zoom,
};
use crate::model::{Model, Prediction, Recording, Summaries, Tensor, Tokenizer};
use crate::runner::{Backend, KeptRun, Place, Runner};
use crate::tasks::{Task, TaskChoice};

/// A model that opened, and everything that came with it: replaced whole.
pub struct Opened {
    pub model: Arc<Model>,
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub facts: ModelFacts,
    /// Task prompts with their answers' tokens (may be empty).
    pub tasks: Vec<TaskChoice>,
    pub tours: Vec<Tour>,
    /// How a link names it; `None` for a model opened from files.
    pub link_model: Option<LinkModel>,
    /// Sample prompts as token ids, for the means (may be empty).
    pub samples: Vec<Vec<u32>>,
    /// Where its dataset examples are, if it has them.
    pub examples_url: Option<String>,
    /// For a model of OpenAI's release: where it is, and what is stored of it.
    pub release: Option<super::release::StoredModel>,
}

impl Opened {
    /// The bundled model's id, or "" for one from a URL or files.
    pub fn bundled_id(&self) -> &str {
        match &self.link_model {
            Some(LinkModel::Bundled(id)) => id,
            _ => "",
        }
    }
}

/// A finished run of a prompt. Its sites stay where they were computed
/// (on the GPU, when it ran there): the page reads back what it shows.
pub struct Run {
    pub prompt: String,
    pub tokens: Vec<u32>,
    /// `[T, vocab]`
    pub logits: Arc<Tensor>,
    pub kept: KeptRun,
    /// Every site, summarised per channel: the layers' rows, the candidate
    /// nodes at a position.
    pub summaries: Arc<Summaries>,
}

/// A run's values at one position: every node site's `[1, width]`, what
/// the graph draws.
pub struct RunAt {
    pub run: Arc<Run>,
    pub position: usize,
    pub sites: Recording,
}

/// The model's dataset examples: fetched after the model's first run.
#[derive(Clone, Default)]
pub enum DatasetExamples {
    /// The model came without them.
    #[default]
    Absent,
    NotLoaded,
    Loading,
    Ready(Arc<LoadedExamples>),
    Failed(String),
}

impl DatasetExamples {
    /// The examples, once they are in.
    pub fn ready(&self) -> Option<&Arc<LoadedExamples>> {
        match self {
            DatasetExamples::Ready(loaded) => Some(loaded),
            _ => None,
        }
    }
}

/// Dataset examples with each token's share of their corpus (for labels).
pub struct LoadedExamples {
    pub examples: Examples,
    pub token_shares: Vec<f64>,
}

impl LoadedExamples {
    pub fn new(examples: Examples, vocab: usize) -> LoadedExamples {
        let token_shares = examples.token_shares(vocab);
        LoadedExamples { examples, token_shares }
    }
}

/// A node's label: the one the user gave it, or the one computed from its
/// dataset examples ("on ' after an opening quote").
#[derive(Clone, Debug, PartialEq)]
pub enum NodeLabel {
    Given(String),
    Computed(String),
}

impl NodeLabel {
    /// As drawn next to the node.
    pub fn text(&self) -> &str {
        match self {
            NodeLabel::Given(text) | NodeLabel::Computed(text) => text,
        }
    }

    /// As a sentence: a computed label says what it is from.
    pub fn sentence(&self) -> String {
        match self {
            NodeLabel::Given(text) => text.clone(),
            NodeLabel::Computed(text) => format!("Fires {text}"),
        }
    }
}

impl Page {
    /// The label of `node`: the user's, or else the computed one once the
    /// examples are in.
    pub fn node_label(self, node: Node) -> Option<NodeLabel> {
        if let Some(given) = self.view.with(|v| v.label(node).map(str::to_string)) {
            return Some(NodeLabel::Given(given));
        }
        let tokenizer = self.tokenizer();
        self.examples.with(|e| {
            let loaded = e.ready()?;
            loaded.examples.label_text(node, &loaded.token_shares, tokenizer.as_deref()).map(NodeLabel::Computed)
        })
    }
}

/// One node's dataset examples as the inspector shows them.
pub struct NodeExamples {
    pub node: Node,
    pub buckets: Vec<(Bucket, Vec<ExampleRow>)>,
}

/// The last run again with nodes ablated at every position.
pub struct Ablated {
    pub ablations: Vec<(Node, AblationKind)>,
    /// `[T, vocab]`
    pub logits: Tensor,
}

/// Every candidate node's effect on `objective`, for one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Effects {
    pub objective: Objective,
    pub values: Vec<(Node, f32)>,
}

/// Every candidate node's attribution on `objective`, for one run, and the
/// gradients it came from (the inspector's attribution per position).
pub struct Attributed {
    /// The run attributed: a later run (or model) is not this one's, even
    /// with an equal objective.
    pub run: Arc<Run>,
    pub objective: Objective,
    pub values: Vec<(Node, f32)>,
    pub attribution: Attribution,
}

/// The shown nodes' measured effects, checking their attribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Confirmed {
    pub objective: Objective,
    /// Measured, largest attribution first.
    pub values: Vec<(Node, f32)>,
    /// Nodes shown.
    pub of: usize,
    /// When the budget stopped it: about how long the rest would take.
    pub rest_seconds: Option<f64>,
    pub agreement: Agreement,
}

/// How the page finds a task's circuit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SearchMethod {
    /// The paper's: learned node masks (gated forward and backward passes),
    /// then bisection on k; as `circuitscope prune`.
    #[default]
    Masks,
    /// Group-tested ablations, forward passes only; as `prune --method ablation`.
    Greedy,
}

impl SearchMethod {
    pub fn name(self) -> &'static str {
        match self {
            SearchMethod::Masks => "masks",
            SearchMethod::Greedy => "greedy",
        }
    }

    pub fn parse(name: &str) -> Option<SearchMethod> {
        [SearchMethod::Masks, SearchMethod::Greedy].into_iter().find(|m| m.name() == name)
    }
}

/// How far a search is, by method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SearchStatus {
    Greedy(SearchProgress),
    Masks(PruneProgress),
    /// The circuit found, measured on the held-out examples.
    HeldOut { nodes: usize },
}

/// A circuit search under way: how far it is, where it runs once the
/// runner has chosen, and when it started (`now_ms`, once the means are in).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Searching {
    pub progress: Option<SearchStatus>,
    pub place: Option<Place>,
    pub started_ms: f64,
}

impl Searching {
    /// Seconds left while the masks are learned: the mean step so far times
    /// the steps to go (the bisection after them takes a few passes more).
    pub fn seconds_left(&self, now_ms: f64) -> Option<f64> {
        let Some(SearchStatus::Masks(PruneProgress::Masks { progress, steps })) = self.progress else { return None };
        let per_step = (now_ms - self.started_ms) / progress.step.max(1) as f64;
        Some(per_step * steps.saturating_sub(progress.step) as f64 / 1000.0)
    }
}

/// The page's state; `Copy`, every field a handle.
#[derive(Clone, Copy)]
pub struct Page {
    pub bundled: RwSignal<Vec<BundledModel>>,
    pub opened: RwSignal<Option<Arc<Opened>>>,
    /// The model's circuits: bundled, opened from files, found here.
    pub circuits: RwSignal<Vec<Arc<LoadedCircuit>>>,
    /// Mean activations over the sample prompts, for mean ablation.
    pub means: RwSignal<Option<Arc<SiteMeans>>>,
    pub run: RwSignal<Option<Arc<Run>>>,
    /// The run's values at the position shown, once read.
    pub at: RwSignal<Option<Arc<RunAt>>>,
    /// The selected node's details in the run, once read.
    pub inspected: RwSignal<Option<Arc<NodeDetails>>>,
    pub examples: RwSignal<DatasetExamples>,
    /// Examples being computed in the page, and the user's Cancel.
    pub examples_job: RwSignal<Option<ExamplesJob>>,
    pub cancel_examples: StoredValue<bool>,
    /// The selected node's dataset examples, once its windows have run.
    pub node_examples: RwSignal<Option<Arc<NodeExamples>>>,
    /// The task chosen in the inspector to show nodes over (else the drawn circuit's).
    pub chosen_task: RwSignal<Option<Task>>,
    /// The graph's nodes over that task's examples.
    pub distributions: RwSignal<Distributions>,
    /// The drawn circuit's block deltas.
    pub block_deltas: RwSignal<BlockDeltas>,
    /// The layers of the run under way, as they arrive.
    pub layers: RwSignal<Vec<LayerSummary>>,
    pub view: RwSignal<View>,
    pub ablated: RwSignal<Option<Arc<Ablated>>>,
    pub effects: RwSignal<Option<Arc<Effects>>>,
    pub attributed: RwSignal<Option<Arc<Attributed>>>,
    /// The shown nodes' measured effects, once measured after attribution.
    pub confirmed: RwSignal<Option<Arc<Confirmed>>>,
    /// Whether the backward pass (or the confirmation) is under way.
    pub attributing: RwSignal<bool>,
    /// Nodes measured of all, while effects are measured.
    pub measuring: RwSignal<Option<(usize, usize)>>,
    /// Why the ranking is by activation when effects were too slow to measure.
    pub ranking_note: RwSignal<Option<String>>,
    /// Whether effects are measured within a time budget (until asked anyway).
    pub budgeted: RwSignal<bool>,
    pub searching: RwSignal<Option<Searching>>,
    pub cancel_search: StoredValue<bool>,
    /// Task examples a search runs on.
    pub search_examples: RwSignal<usize>,
    pub search_method: RwSignal<SearchMethod>,
    /// Steps of the masks' optimisation (the CLI's `--steps`).
    pub search_steps: RwSignal<usize>,
    /// The task loss a found circuit meets (the CLI's `--target-loss`).
    pub search_target: RwSignal<f64>,
    pub loading: RwSignal<LoadProgress>,
    /// Set by the load's Cancel (a release fetched by ranges stops).
    pub cancel_load: StoredValue<bool>,
    /// OpenAI's release: the base URL its files are fetched from.
    pub release_base: RwSignal<String>,
    /// Models kept converted in the browser (Cache Storage).
    pub stored_models: RwSignal<Vec<super::release::StoredModel>>,
    /// OpenAI's circuits of the release model shown.
    pub release_circuits: RwSignal<super::release_panel::ReleaseCircuits>,
    pub running: RwSignal<bool>,
    /// Finished runs, for tests and screen readers to wait on.
    pub runs: RwSignal<usize>,
    /// Where passes run (the runner's word).
    pub backend: RwSignal<Backend>,
    pub error: RwSignal<Option<String>>,
    /// The prompt box's text.
    pub prompt: RwSignal<String>,
    /// The tour step shown: (tour, step).
    pub touring: RwSignal<Option<(usize, usize)>>,
    /// A link's model at a URL or of the release, waiting for the user's yes.
    pub ask_model: RwSignal<Option<LinkModel>>,
    /// A link waiting for its model to open, and one waiting for its prompt's run.
    pub waiting_link: StoredValue<Option<ViewLink>>,
    /// A message for the error banner once the next model has opened.
    pub notice: StoredValue<Option<String>>,
    runner: StoredValue<Option<Rc<Runner>>, LocalStorage>,
    // Parts of the view, each notifying only when it changes.
    pub position: Memo<usize>,
    pub ranking: Memo<Ranking>,
    pub per_site: Memo<usize>,
    pub shown: Memo<Shown>,
    pub ablations: Memo<Vec<(Node, AblationKind)>>,
    pub selected: Memo<Option<Node>>,
    pub zoom: Memo<Zoom>,
    // Derived.
    pub drawn: Memo<Option<Arc<LoadedCircuit>>>,
    pub clean_top: Memo<Vec<Prediction>>,
    pub top: Memo<Vec<Prediction>>,
    pub objective: Memo<Option<Objective>>,
    pub graph: Memo<Option<GraphView>>,
}

/// The page's state, from any component.
pub fn use_page() -> Page {
    expect_context::<Page>()
}

impl Page {
    pub fn new() -> Page {
        let opened = RwSignal::new(None::<Arc<Opened>>);
        let circuits = RwSignal::new(Vec::<Arc<LoadedCircuit>>::new());
        let run = RwSignal::new(None::<Arc<Run>>);
        let at = RwSignal::new(None::<Arc<RunAt>>);
        let view = RwSignal::new(View::default());
        let ablated = RwSignal::new(None::<Arc<Ablated>>);
        let effects = RwSignal::new(None::<Arc<Effects>>);
        let attributed = RwSignal::new(None::<Arc<Attributed>>);
        let seq_len = move || run.with(|r| r.as_ref().map_or(0, |r| r.tokens.len()));
        let position = Memo::new(move |_| view.with(|v| v.at(seq_len())));
        let ranking = Memo::new(move |_| view.with(|v| v.ranking));
        let per_site = Memo::new(move |_| view.with(|v| v.per_site));
        let shown = Memo::new(move |_| view.with(|v| v.shown.clone()));
        let target = Memo::new(move |_| view.with(|v| (v.target, v.contrast)));
        let drawn = Memo::new(move |_| {
            shown.track();
            circuits.with(|list| view.with_untracked(|v| v.drawn(list).cloned()))
        });
        let clean_top = Memo::new(move |_| run.with(|r| r.as_ref().map(|r| predictions_at(&r.logits, position.get())).unwrap_or_default()));
        let top = Memo::new(move |_| match ablated.get() {
            Some(ablated) => predictions_at(&ablated.logits, position.get()),
            None => clean_top.get(),
        });
        let objective = Memo::new(move |_| {
            let rows = run.with(|r| r.as_ref().map(|r| r.logits.rows))?;
            let (target, contrast) = target.get();
            let target = target.or_else(|| clean_top.with(|p| p.first().map(|p| p.token)))?;
            Some(Objective { position: position.get().min(rows - 1), target, contrast })
        });
        let graph = Memo::new(move |_| {
            let model = opened.with(|o| o.as_ref().map(|o| o.model.clone()))?;
            let run = run.get()?;
            // The values at the position last read: the graph stays until the next arrive.
            let at = at.get().filter(|a| Arc::ptr_eq(&a.run, &run))?;
            let recording = &at.sites;
            let at = at.position;
            let nodes = shown.with(|shown| match shown {
                Shown::Ranked => None,
                Shown::Nodes(nodes) => Some(nodes.clone()),
                Shown::Circuit(_) => drawn.with(|c| c.as_ref().map(|c| c.nodes.clone())),
            });
            if let Some(nodes) = nodes {
                return Some(GraphView::of_nodes(&model, recording, at, &nodes));
            }
            match ranking.get() {
                Ranking::Activation => Some(GraphView::top_activations(&model, recording, at, per_site.get())),
                // By activation until the measured effects arrive.
                Ranking::Effect => match effects.get().filter(|e| objective.get() == Some(e.objective)) {
                    Some(measured) => Some(GraphView::top_effects(&model, recording, at, per_site.get(), &measured.values)),
                    None => Some(GraphView::top_activations(&model, recording, at, per_site.get())),
                },
                // By activation until the backward pass is done.
                Ranking::Attribution => match attributed.get().filter(|a| objective.get() == Some(a.objective) && Arc::ptr_eq(&a.run, &run)) {
                    Some(attributed) => {
                        let mut view = GraphView::top_effects(&model, recording, at, per_site.get(), &attributed.values);
                        view.attribute_edges(|from, to, edge| attributed.attribution.edge(&model, from, to, edge.kind, edge.weight));
                        Some(view)
                    }
                    None => Some(GraphView::top_activations(&model, recording, at, per_site.get())),
                },
            }
        });
        Page {
            bundled: RwSignal::new(Vec::new()),
            opened,
            circuits,
            means: RwSignal::new(None),
            run,
            at,
            inspected: RwSignal::new(None),
            examples: RwSignal::new(DatasetExamples::Absent),
            examples_job: RwSignal::new(None),
            cancel_examples: StoredValue::new(false),
            node_examples: RwSignal::new(None),
            chosen_task: RwSignal::new(None),
            distributions: RwSignal::new(Distributions::None),
            block_deltas: RwSignal::new(BlockDeltas::None),
            layers: RwSignal::new(Vec::new()),
            view,
            ablated,
            effects,
            attributed,
            confirmed: RwSignal::new(None),
            attributing: RwSignal::new(false),
            measuring: RwSignal::new(None),
            ranking_note: RwSignal::new(None),
            budgeted: RwSignal::new(true),
            searching: RwSignal::new(None),
            cancel_load: StoredValue::new(false),
            release_base: RwSignal::new(crate::release::OPENAI_BASE.to_string()),
            stored_models: RwSignal::new(Vec::new()),
            release_circuits: RwSignal::new(Default::default()),
            cancel_search: StoredValue::new(false),
            search_examples: RwSignal::new(64),
            search_method: RwSignal::new(SearchMethod::default()),
            search_steps: RwSignal::new(crate::circuits::MaskSettings::default().steps),
            search_target: RwSignal::new(crate::circuits::DEFAULT_TARGET_LOSS),
            loading: RwSignal::new(LoadProgress::Idle),
            running: RwSignal::new(false),
            runs: RwSignal::new(0),
            backend: RwSignal::new(Backend::Looking),
            error: RwSignal::new(None),
            prompt: RwSignal::new(String::new()),
            touring: RwSignal::new(None),
            ask_model: RwSignal::new(None),
            waiting_link: StoredValue::new(None),
            notice: StoredValue::new(None),
            runner: StoredValue::new_local(None),
            position,
            ranking,
            per_site,
            shown,
            ablations: Memo::new(move |_| view.with(|v| v.ablations.clone())),
            selected: Memo::new(move |_| view.with(|v| v.selected)),
            zoom: Memo::new(move |_| view.with(|v| v.zoom)),
            drawn,
            clean_top,
            top,
            objective,
            graph,
        }
    }

    /// The model shown (untracked: a new model comes with a new run, which
    /// is what views track).
    pub fn model(&self) -> Option<Arc<Model>> {
        self.opened.with_untracked(|o| o.as_ref().map(|o| o.model.clone()))
    }

    /// Its tokenizer, untracked as [`Page::model`].
    pub fn tokenizer(&self) -> Option<Arc<Tokenizer>> {
        self.opened.with_untracked(|o| o.as_ref().and_then(|o| o.tokenizer.clone()))
    }

    pub fn runner(&self) -> Option<Rc<Runner>> {
        self.runner.get_value()
    }

    pub(super) fn set_runner(&self, runner: Rc<Runner>) {
        self.runner.set_value(Some(runner));
    }

    /// Loading or running: the controls wait.
    pub fn busy(&self) -> bool {
        self.loading.get() != LoadProgress::Idle || self.running.get()
    }

    /// A model is open and nothing is under way (the CPU answers while a
    /// GPU is readied).
    pub fn ready(&self) -> bool {
        self.opened.with(Option::is_some) && !self.busy()
    }

    /// Whether the graph is ranked by attributions for the output chosen.
    pub fn attribution_shown(&self) -> bool {
        let objective = self.objective.get();
        let run = self.run.get();
        self.attributed.with(|a| a.as_ref().is_some_and(|a| Some(a.objective) == objective && run.as_ref().is_some_and(|run| Arc::ptr_eq(&a.run, run))))
    }

    /// Whether the graph is ranked by effects measured for the output chosen.
    pub fn effects_shown(&self) -> bool {
        let objective = self.objective.get();
        self.effects.with(|e| e.as_ref().is_some_and(|e| Some(e.objective) == objective))
    }

    /// The selected node's index in the graph, if it is drawn.
    pub fn selected_index(&self) -> Option<usize> {
        let node = self.selected.get()?;
        self.graph.with(|g| g.as_ref()?.nodes.iter().position(|n| n.node == node))
    }

    /// The link fragment of what is shown, or why there is none.
    pub fn link(&self) -> Result<String, String> {
        let link_model = self.opened.with(|o| o.as_ref().map(|o| o.link_model.clone())).ok_or("no model is open")?;
        let model = link_model.ok_or("a model opened from files has no link: open it from a URL to share it")?;
        let prompt = self.run.with(|r| r.as_ref().map_or_else(String::new, |r| r.prompt.clone()));
        let mut view = self.view.get();
        view.position = Some(self.position.get());
        Ok(ViewLink { model, prompt, view }.to_fragment())
    }
}
