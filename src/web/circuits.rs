//! Task circuits in the page: the circuit files that come with a model or
//! that the user opens, the search that finds one on the GPU (forward
//! passes only, `circuits::ablation_search`), and the table that lists each
//! task's prompt next to its circuits, their size and faithfulness.

use std::sync::Arc;

use leptos::prelude::*;

use super::components::files_of;
use super::{next_frame, take_engine, Backend, SharedEngine};
use crate::circuits::{
    ablation_search, keep_only, remove, Choice, CircuitFile, CpuEval, Evaluate, Faithfulness, GpuEval, Method,
    Node, SearchProgress, SearchResult, SearchSettings, SearchStage, SiteMeans, TaskLoss,
};
use crate::model::{Intervention, Model, Tokenizer};
use crate::tasks::{Task, TaskChoice};

/// Where a circuit shown in the page came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitOrigin {
    /// A circuit file bundled with the model.
    Bundled,
    /// A circuit file the user opened.
    Opened,
    /// Found in this page by the forward-pass search.
    Found,
}

/// A circuit file checked against the model shown: plain data.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedCircuit {
    pub file: CircuitFile,
    pub nodes: Vec<Node>,
    pub origin: CircuitOrigin,
}

impl LoadedCircuit {
    pub fn parse(json: &str, model: &Model, origin: CircuitOrigin) -> Result<LoadedCircuit, String> {
        let (file, nodes) = CircuitFile::parse(json, model).map_err(|e| e.to_string())?;
        Ok(LoadedCircuit { file, nodes, origin })
    }

    /// A short name for buttons and tests: `bundled`, `opened` or `found`.
    pub fn origin_name(&self) -> &'static str {
        match self.origin {
            CircuitOrigin::Bundled => "bundled",
            CircuitOrigin::Opened => "opened",
            CircuitOrigin::Found => "found",
        }
    }
}

/// Seeds of the task examples the page searches on and reports on (the
/// held-out seed is the CLI's, so the figures compare).
const SEARCH_SEED: u64 = 3_000_017;
const HELD_OUT_SEED: u64 = 1_000_003;
/// Held-out examples the page reports a found circuit's faithfulness on:
/// as many as the CLI and the bundled circuits use, so the figures compare.
const HELD_OUT: usize = 200;
/// Variants per evaluator call: a GPU batch; on the CPU, small enough that
/// the page answers (and can cancel) between calls.
const GPU_BATCH: usize = 64;
const CPU_BATCH: usize = 4;
/// Variants timed on each backend before a search picks one.
const PROBE: usize = 4;

/// The CPU reference, handing the page back to the browser before each call.
struct YieldingCpu<'a>(CpuEval<'a>);

impl Evaluate for YieldingCpu<'_> {
    async fn losses(&mut self, variants: &[Vec<Intervention>]) -> Result<Vec<TaskLoss>, String> {
        next_frame().await;
        self.0.losses(variants).await
    }
}

/// Finds a circuit for `task` with forward passes only, on the GPU when the
/// page has one, and measures it on held-out examples. `None` when cancelled.
#[allow(clippy::too_many_arguments)]
pub async fn find_circuit(
    shared: SharedEngine,
    backend: RwSignal<Backend>,
    model: &Model,
    model_name: String,
    tokenizer: &Tokenizer,
    means: &SiteMeans,
    task: Task,
    examples: usize,
    target_loss: f64,
    on_backend: &dyn Fn(&'static str),
    progress: &mut dyn FnMut(SearchProgress),
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<LoadedCircuit>, String> {
    let started = js_sys::Date::now();
    let search = Choice::of_task(task, tokenizer, SEARCH_SEED, examples)?;
    let held_out = Choice::of_task(task, tokenizer, HELD_OUT_SEED, HELD_OUT)?;
    let config = &model.config;
    let settings = SearchSettings { target_loss, ..SearchSettings::default() };
    let Some(mut gpu) = take_engine(&shared, backend).await else {
        on_backend("cpu");
        let Some((found, losses)) = on_cpu(model, means, &search, &held_out, &settings, progress, cancelled).await? else {
            return Ok(None);
        };
        return Ok(Some(circuit_file(model, model_name, means, task, &settings, examples, found, losses, started)));
    };
    let result = async {
        // A software GPU can be far slower than the CPU reference for a
        // model this small: time the same variants on both, keep the faster.
        let probe: Vec<Vec<Intervention>> = crate::circuits::all_nodes(config)
            .chunks(settings.block)
            .take(PROBE)
            .map(|group| remove(config, means, group))
            .collect::<Result<_, _>>()?;
        let at = js_sys::Date::now();
        GpuEval { engine: &mut gpu, choices: &search, batch: PROBE }.losses(&probe).await?;
        let gpu_ms = js_sys::Date::now() - at;
        let at = js_sys::Date::now();
        YieldingCpu(CpuEval { model, choices: &search }).losses(&probe).await?;
        let cpu_ms = js_sys::Date::now() - at;
        if cpu_ms < gpu_ms {
            on_backend("cpu");
            return on_cpu(model, means, &search, &held_out, &settings, progress, cancelled).await;
        }
        on_backend("gpu");
        let mut eval = GpuEval { engine: &mut gpu, choices: &search, batch: GPU_BATCH };
        let Some(found) = ablation_search(&mut eval, config, means, &settings, progress, cancelled).await? else {
            return Ok(None);
        };
        let losses = GpuEval { engine: &mut gpu, choices: &held_out, batch: GPU_BATCH }.losses(&measured(&model.config, means, &found.nodes)?).await?;
        Ok(Some((found, losses)))
    }
    .await;
    *shared.borrow_mut() = Some(gpu);
    let Some((found, losses)) = result? else { return Ok(None) };
    Ok(Some(circuit_file(model, model_name, means, task, &settings, examples, found, losses, started)))
}

/// What a found circuit is measured with on the held-out examples: the
/// full model, the circuit alone, the model without the circuit.
fn measured(config: &crate::model::Config, means: &SiteMeans, nodes: &[Node]) -> Result<Vec<Vec<Intervention>>, String> {
    Ok(vec![Vec::new(), keep_only(config, means, nodes)?, remove(config, means, nodes)?])
}

/// The search and the held-out measurement on the CPU reference, a few
/// variants per call so the page stays responsive.
async fn on_cpu(
    model: &Model,
    means: &SiteMeans,
    search: &[Choice],
    held_out: &[Choice],
    settings: &SearchSettings,
    progress: &mut dyn FnMut(SearchProgress),
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<(SearchResult, Vec<TaskLoss>)>, String> {
    let settings = SearchSettings { batch: CPU_BATCH, ..settings.clone() };
    let mut eval = YieldingCpu(CpuEval { model, choices: search });
    let Some(found) = ablation_search(&mut eval, &model.config, means, &settings, progress, cancelled).await? else {
        return Ok(None);
    };
    let losses = YieldingCpu(CpuEval { model, choices: held_out }).losses(&measured(&model.config, means, &found.nodes)?).await?;
    Ok(Some((found, losses)))
}

/// A found circuit as a circuit file, with its held-out `losses` (full,
/// circuit alone, circuit removed).
#[allow(clippy::too_many_arguments)]
fn circuit_file(
    model: &Model,
    model_name: String,
    means: &SiteMeans,
    task: Task,
    settings: &SearchSettings,
    search_examples: usize,
    found: SearchResult,
    losses: Vec<TaskLoss>,
    started: f64,
) -> LoadedCircuit {
    let nodes = found.nodes.clone();
    let faithfulness = Faithfulness {
        target_loss: settings.target_loss,
        examples: HELD_OUT,
        full: losses[0],
        circuit: losses[1],
        without_circuit: losses[2],
    };
    let method = Method {
        name: "ablation-search".into(),
        settings: serde_json::json!({ "search": settings, "search_examples": search_examples, "search_seed": SEARCH_SEED, "variants": found.variants }),
        seconds: (js_sys::Date::now() - started) / 1000.0,
    };
    let file = CircuitFile::new(model, model_name, means, task, &nodes, faithfulness, found.curve, method);
    LoadedCircuit { file, nodes, origin: CircuitOrigin::Found }
}

/// One row per task: its first sample prompt (a click runs it), the
/// circuits known for it with their size and faithfulness (a click shows
/// one as the graph), and a button that searches for one in the page.
#[component]
#[allow(clippy::too_many_arguments)]
pub fn TaskTable(
    tasks: RwSignal<Vec<TaskChoice>>,
    circuits: RwSignal<Vec<Arc<LoadedCircuit>>>,
    /// Index into `circuits` of the one drawn as the graph.
    shown: RwSignal<Option<usize>>,
    ready: Signal<bool>,
    searching: RwSignal<Option<SearchProgress>>,
    search_backend: RwSignal<Option<&'static str>>,
    /// Task examples a search runs on.
    search_examples: RwSignal<usize>,
    on_pick: impl Fn(TaskChoice) + Copy + Send + Sync + 'static,
    on_find: impl Fn(String) + Copy + Send + Sync + 'static,
    on_cancel: impl Fn() + Copy + Send + Sync + 'static,
    /// A circuit file the user opened: its name and its text.
    on_open: impl Fn(String, String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let rows = move || {
        // The first prompt of each task.
        let mut firsts: Vec<TaskChoice> = Vec::new();
        for task in tasks.get() {
            if !firsts.iter().any(|t| t.task == task.task) {
                firsts.push(task);
            }
        }
        firsts
            .into_iter()
            .map(|task| {
                let question = Task::parse(&task.task).map(Task::question).unwrap_or("");
                let (name, prompt) = (task.task.clone(), task.prompt.clone());
                let find_name = name.clone();
                let known = {
                    let name = name.clone();
                    move || {
                        circuits
                            .get()
                            .into_iter()
                            .enumerate()
                            .filter(|(_, c)| c.file.task == name)
                            .map(|(i, c)| view! { <CircuitSummary circuit=c index=i shown=shown /> })
                            .collect_view()
                    }
                };
                view! {
                    <tr data-task=name.clone()>
                        <td>
                            <button
                                type="button"
                                data-testid="task-prompt"
                                data-task=name.clone()
                                title=prompt
                                disabled=move || !ready.get()
                                on:click=move |_| on_pick(task.clone())
                            >
                                <strong>{name.clone()}</strong>
                                <span class="question">{question}</span>
                            </button>
                        </td>
                        <td class="task-circuits">{known}</td>
                        <td>
                            <button
                                type="button"
                                data-testid="find-circuit"
                                data-task=find_name.clone()
                                title="Search for this task's circuit in the page, with forward passes on the GPU"
                                disabled=move || !ready.get() || searching.with(Option::is_some)
                                on:click=move |_| on_find(find_name.clone())
                            >
                                "Find circuit"
                            </button>
                        </td>
                    </tr>
                }
            })
            .collect_view()
    };
    let progress = move || {
        searching.get().map(|p| {
            let stage = match p.stage {
                SearchStage::Pruning { group: 1 } => format!("removing single nodes, {} left", p.nodes),
                SearchStage::Pruning { group } => format!("removing groups of {group} channels, {} nodes left", p.nodes),
                SearchStage::Curve => format!("measuring the loss along its {} nodes", p.nodes),
            };
            let backend = match search_backend.get() {
                Some("gpu") => " on the GPU",
                Some(_) => " on the CPU (faster here than this GPU, or no GPU)",
                None => "",
            };
            view! {
                <p class="status loading" data-testid="search-progress" data-backend=search_backend.get().unwrap_or("")>
                    <progress></progress>
                    " Finding the circuit"{backend}": "{stage}", "{p.variants}" ablations run "
                    <button type="button" data-testid="cancel-search" on:click=move |_| on_cancel()>"Cancel"</button>
                </p>
            }
        })
    };
    view! {
        <Show when=move || tasks.with(|t| !t.is_empty())>
            <section class="task-prompts" data-testid="task-prompts">
                <h2>"Tasks and their circuits"</h2>
                <table class="tasks">
                    <thead><tr><th>"Task (click to run its prompt)"</th><th>"Circuits"</th><th></th></tr></thead>
                    <tbody>{rows}</tbody>
                </table>
                <label class="search-examples">
                    "Examples per search "
                    <input
                        type="number"
                        min="1"
                        max="256"
                        data-testid="search-examples"
                        prop:value=move || search_examples.get().to_string()
                        on:change=move |ev| {
                            if let Ok(n) = event_target_value(&ev).parse::<usize>() {
                                search_examples.set(n.clamp(1, 256));
                            }
                        }
                    />
                </label>
                <label class="circuit-file">
                    " or open a circuit file: "
                    <input
                        type="file"
                        accept=".json,application/json"
                        data-testid="circuit-file"
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = event_target(&ev);
                            if let Some(file) = files_of(input.files()).into_iter().next() {
                                leptos::task::spawn_local(async move {
                                    let text = wasm_bindgen_futures::JsFuture::from(file.text()).await;
                                    let text = text.ok().and_then(|t| t.as_string());
                                    on_open(file.name(), text.unwrap_or_default());
                                });
                            }
                            input.set_value("");
                        }
                    />
                </label>
                {progress}
                <CurveChart circuits=circuits shown=shown />
            </section>
        </Show>
    }
}

/// One circuit's size and faithfulness, and a button that shows it.
#[component]
fn CircuitSummary(circuit: Arc<LoadedCircuit>, index: usize, shown: RwSignal<Option<usize>>) -> impl IntoView {
    let f = &circuit.file.faithfulness;
    let figures = format!(
        "{} nodes, {} edges; task loss {:.3} alone, {:.3} removed ({:.3} full), {:.0} s",
        circuit.nodes.len(),
        circuit.file.edges.len(),
        f.circuit.loss,
        f.without_circuit.loss,
        f.full.loss,
        circuit.file.method.seconds
    );
    let title = format!(
        "{} ({}): accuracy {:.1}% with the circuit alone, {:.1}% with it removed, {:.1}% in full, on {} held-out examples",
        circuit.file.method.name,
        circuit.origin_name(),
        100.0 * f.circuit.accuracy,
        100.0 * f.without_circuit.accuracy,
        100.0 * f.full.accuracy,
        f.examples
    );
    let is_shown = move || shown.get() == Some(index);
    view! {
        <div class="circuit-summary" data-testid="circuit" data-origin=circuit.origin_name() data-nodes=circuit.nodes.len() title=title>
            <button
                type="button"
                data-testid="show-circuit"
                aria-pressed=move || is_shown().to_string()
                on:click=move |_| shown.set(if is_shown() { None } else { Some(index) })
            >
                {move || if is_shown() { "Hide" } else { "Show" }}
            </button>
            " "<span class="method">{circuit.file.method.name.clone()}</span>": "{figures}
        </div>
    }
}

/// The shown circuit's task loss against k (the first k nodes of its
/// search's ranking kept, the rest mean-ablated), with the target as a line.
#[component]
fn CurveChart(circuits: RwSignal<Vec<Arc<LoadedCircuit>>>, shown: RwSignal<Option<usize>>) -> impl IntoView {
    const W: f64 = 360.0;
    const H: f64 = 140.0;
    const PAD: f64 = 28.0;
    move || {
        let circuit = shown.get().and_then(|i| circuits.with(|c| c.get(i).cloned()))?;
        let curve = &circuit.file.curve;
        let max_k = curve.iter().map(|(k, _)| *k).max()?.max(1) as f64;
        let max_loss = curve.iter().map(|(_, l)| l.loss).fold(circuit.file.faithfulness.target_loss * 2.0, f64::max);
        // k on a log scale: the interesting part is the few nodes at the start.
        let x = move |k: usize| PAD + (W - 2.0 * PAD) * (1.0 + k as f64).ln() / (1.0 + max_k).ln();
        let y = move |loss: f64| H - PAD - (H - 2.0 * PAD) * (loss / max_loss).min(1.0);
        let points: String = curve.iter().map(|(k, l)| format!("{:.1},{:.1}", x(*k), y(l.loss))).collect::<Vec<_>>().join(" ");
        let target = y(circuit.file.faithfulness.target_loss);
        let chosen = x(circuit.nodes.len());
        Some(view! {
            <figure class="curve" data-testid="loss-curve">
                <svg width=W height=H viewBox=format!("0 0 {W} {H}") role="img" aria-label="task loss against the number of nodes kept">
                    <line x1=PAD y1=target x2=W - PAD y2=target class="target" />
                    <line x1=chosen y1=PAD x2=chosen y2=H - PAD class="chosen" />
                    <polyline points=points class="loss" />
                    <text x=PAD y=PAD - 8.0>{format!("task loss (up to {max_loss:.2})")}</text>
                    <text x=PAD y=H - 8.0>"k = 0"</text>
                    <text x=W - PAD y=H - 8.0 text-anchor="end">{format!("k = {max_k}")}</text>
                    <text x=W - PAD y=target - 4.0 text-anchor="end">{format!("target {}", circuit.file.faithfulness.target_loss)}</text>
                </svg>
                <figcaption>
                    {format!("{}: task loss as nodes are kept in the search's order; this circuit keeps {}.", circuit.file.task, circuit.nodes.len())}
                </figcaption>
            </figure>
        })
    }
}
