//! Task circuits in the page: the paper's pruning (learned node masks,
//! then bisection on k; `circuits::prune_task`, as `circuitscope prune`
//! runs it) or the greedy search with forward passes only
//! (`circuits::ablation_search`), both through the runner; and the table
//! that lists each task's prompt next to its circuits (bundled, opened from
//! a file, found here), their size and faithfulness.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::components::files_of;
use super::page::{use_page, Page, SearchMethod, SearchStatus, Searching};
use crate::circuits::{
    ablation_search, keep_only, prune_task, remove, Choice, CircuitFile, CircuitOrigin, Evaluate, Faithfulness, Finding, LoadedCircuit, MaskSettings,
    Method, Node, PruneProgress, PruneSetup, RunnerEval, SearchSettings, SearchStage, SiteMeans, TaskLoss, HELD_OUT_SEED, SEARCH_SEED,
};
use crate::model::Model;
use crate::platform::{now_ms, sleep};
use crate::runner::{Place, Runner};
use crate::tasks::{Task, TaskChoice};

/// Held-out examples the page reports a found circuit's faithfulness on:
/// as many as the CLI and the bundled circuits use, so the figures compare.
const HELD_OUT: usize = 200;

/// What a search is given.
struct Search {
    model: Arc<Model>,
    model_name: String,
    means: Arc<SiteMeans>,
    task: Task,
    examples: usize,
    /// Steps of the masks' optimisation.
    steps: usize,
    /// The circuit is the smallest that meets this task loss.
    target: f64,
}

/// A search's circuit (most important node first), its loss-vs-k curve on
/// the search examples, and the method with its settings.
type Found = (Vec<Node>, Vec<(usize, TaskLoss)>, &'static str, serde_json::Value);

impl Page {
    /// Searches for `task`'s circuit in the page by the chosen method, with
    /// progress and a cancel button; the circuit found joins the task's list
    /// and is shown. The search waits for the means; a GPU lost on the way
    /// hands it to the CPU.
    pub fn find_circuit(self, task: Task) {
        let (Some(opened), Some(runner)) = (self.opened.get_untracked(), self.runner()) else { return };
        let Some(tokenizer) = opened.tokenizer.clone() else { return };
        if self.searching.get_untracked().is_some() {
            return;
        }
        self.cancel_search.set_value(false);
        self.error.set(None);
        self.searching.set(Some(Searching { progress: None, place: None, started_ms: now_ms() }));
        let examples = self.search_examples.get_untracked();
        let method = self.search_method.get_untracked();
        let steps = self.search_steps.get_untracked();
        let target = self.search_target.get_untracked();
        spawn_local(async move {
            while self.means.with_untracked(Option::is_none) && !self.cancel_search.get_value() {
                sleep(100).await;
            }
            let Some(means) = self.means.get_untracked() else { return self.searching.set(None) };
            let search = Search { model: opened.model.clone(), model_name: opened.bundled_id().to_string(), means, task, examples, steps, target };
            let started = now_ms();
            let result = async {
                let choices = Choice::of_task(task, &tokenizer, SEARCH_SEED, examples)?;
                let held_out = Choice::of_task(task, &tokenizer, HELD_OUT_SEED, HELD_OUT)?;
                let mut report = |status: SearchStatus| {
                    // The masks' steps are gated passes with their backward passes, timed apart.
                    let place = match status {
                        SearchStatus::Masks(PruneProgress::Masks { .. }) => runner.gradients_place(),
                        _ => runner.batch_place(),
                    };
                    self.searching.set(Some(Searching { progress: Some(status), place, started_ms: started }));
                };
                let still_open = || self.opened.with_untracked(|o| o.as_ref().is_some_and(|o| Arc::ptr_eq(o, &opened)));
                let cancelled = || self.cancel_search.get_value() || !still_open();
                let mut eval = RunnerEval { runner: &runner, choices: &choices };
                let found = match method {
                    SearchMethod::Masks => by_masks(&search, &runner, &mut eval, &choices, &mut report, &cancelled).await?,
                    SearchMethod::Greedy => greedy(&search, &runner, &mut eval, &mut report, &cancelled).await?,
                };
                let Some((nodes, curve, name, settings)) = found else { return Ok(None) };
                let method = Method { name: name.into(), settings, seconds: (now_ms() - started) / 1000.0 };
                let config = &search.model.config;
                report(SearchStatus::HeldOut { nodes: nodes.len() });
                let measured = vec![Vec::new(), keep_only(config, &search.means, &nodes)?, remove(config, &search.means, &nodes)?];
                let losses = RunnerEval { runner: &runner, choices: &held_out }.losses(&measured).await?;
                Ok::<_, String>(Some(circuit_file(&search, nodes, curve, method, losses)))
            }
            .await;
            self.searching.set(None);
            let still_open = self.opened.with_untracked(|o| o.as_ref().is_some_and(|o| Arc::ptr_eq(o, &opened)));
            match result {
                Ok(Some(found)) if still_open => {
                    self.view.update(|v| v.show_circuit(&found));
                    self.circuits.update(|list| {
                        list.retain(|c| !(c.file.task == found.file.task && c.origin == found.origin));
                        list.push(Arc::new(found));
                    });
                }
                Ok(_) => {}
                Err(message) => self.error.set(Some(format!("finding the {} circuit: {message}", task.name()))),
            }
        });
    }

    /// Lists a circuit file the user opened, and shows it.
    pub fn open_circuit(self, name: String, json: String) {
        let Some(model) = self.model() else { return };
        match LoadedCircuit::parse(&json, &model, CircuitOrigin::Opened) {
            Ok(opened) => {
                self.view.update(|v| {
                    v.show_circuit(&opened);
                    v.take_labels(&opened);
                });
                self.circuits.update(|list| list.push(Arc::new(opened)));
                self.error.set(None);
            }
            Err(message) => self.error.set(Some(format!("circuit file {name}: {message}"))),
        }
    }
}

/// The paper's pruning with `circuitscope prune`'s default settings but
/// the steps.
async fn by_masks(
    search: &Search,
    runner: &Runner,
    eval: &mut RunnerEval<'_>,
    choices: &[Choice],
    report: &mut dyn FnMut(SearchStatus),
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Found>, String> {
    let settings = MaskSettings { steps: search.steps, ..MaskSettings::default() };
    let mut progress = |p| report(SearchStatus::Masks(p));
    let setup = PruneSetup { choices, means: &search.means, settings: &settings, target_loss: search.target };
    let Some(pruned) = prune_task(runner, eval, &setup, &mut progress, cancelled).await? else {
        return Ok(None);
    };
    let backend = runner.gradients_place().map_or("cpu", Place::name);
    Ok(Some((pruned.nodes, pruned.curve, "learned-mask", settings.method_settings(backend, search.target, search.examples))))
}

/// The greedy search: group-tested ablations, forward passes only.
async fn greedy(
    search: &Search,
    runner: &Runner,
    eval: &mut RunnerEval<'_>,
    report: &mut dyn FnMut(SearchStatus),
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Found>, String> {
    // On the CPU, small calls: the page answers (and can cancel) between them.
    let batch = if runner.batch_place() == Some(Place::Gpu) { SearchSettings::default().batch } else { 4 };
    let settings = SearchSettings { target_loss: search.target, batch, ..SearchSettings::default() };
    let mut progress = |p| report(SearchStatus::Greedy(p));
    let config = &search.model.config;
    let Some(found) = ablation_search(eval, config, &search.means, &settings, &mut progress, cancelled).await? else {
        return Ok(None);
    };
    let json = serde_json::json!({ "search": settings, "search_examples": search.examples, "search_seed": SEARCH_SEED, "variants": found.variants });
    Ok(Some((found.nodes, found.curve, "ablation-search", json)))
}

/// A found circuit as a circuit file, with its held-out `losses` (full,
/// circuit alone, circuit removed).
fn circuit_file(search: &Search, nodes: Vec<Node>, curve: Vec<(usize, TaskLoss)>, method: Method, losses: Vec<TaskLoss>) -> LoadedCircuit {
    let faithfulness =
        Faithfulness { target_loss: search.target, examples: HELD_OUT, full: losses[0], circuit: losses[1], without_circuit: losses[2] };
    let finding = Finding { task: search.task, nodes: &nodes, faithfulness, curve, method };
    let file = CircuitFile::new(&search.model, search.model_name.clone(), &search.means, finding);
    LoadedCircuit { file, nodes, origin: CircuitOrigin::Found, documents: Vec::new() }
}

/// One row per task: its first sample prompt (a click runs it), the
/// circuits known for it with their size and faithfulness (a click shows
/// one as the graph), and a button that searches for one in the page.
#[component]
pub fn TaskTable() -> impl IntoView {
    let page = use_page();
    let tasks = move || page.opened.with(|o| o.as_ref().map(|o| o.tasks.clone()).unwrap_or_default());
    let ready = move || page.ready();
    let pick = move |task: TaskChoice| {
        page.run_prompt(task.prompt.clone(), None);
        // After the run's reset: rank by the right answer's logit over the wrong one's.
        page.view.update(|v| v.pick_task(task.right, task.wrong));
    };
    let rows = move || {
        // The first prompt of each task.
        let mut firsts: Vec<TaskChoice> = Vec::new();
        for task in tasks() {
            if !firsts.iter().any(|t| t.task == task.task) {
                firsts.push(task);
            }
        }
        firsts
            .into_iter()
            .map(|task| {
                let question = Task::parse(&task.task).map(Task::question).unwrap_or("");
                let (name, prompt) = (task.task.clone(), task.prompt.clone());
                let known = {
                    let name = name.clone();
                    move || {
                        page.circuits
                            .get()
                            .into_iter()
                            .filter(|c| c.file.task == name)
                            .map(|c| view! { <CircuitSummary circuit=c /> })
                            .collect_view()
                    }
                };
                let searchable = Task::parse(&name);
                view! {
                    <tr data-task=name.clone()>
                        <td>
                            <button
                                type="button"
                                data-testid="task-prompt"
                                data-task=name.clone()
                                title=prompt
                                disabled=move || !ready()
                                on:click=move |_| pick(task.clone())
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
                                data-task=name.clone()
                                title="Find this task's circuit in the page by the method chosen below, on the faster of the GPU and the CPU"
                                disabled=move || !ready() || searchable.is_none() || page.searching.with(Option::is_some)
                                on:click=move |_| {
                                    if let Some(task) = searchable {
                                        page.find_circuit(task);
                                    }
                                }
                            >
                                "Find circuit"
                            </button>
                        </td>
                    </tr>
                }
            })
            .collect_view()
    };
    view! {
        <Show when=move || page.opened.with(|o| o.as_ref().is_some_and(|o| !o.tasks.is_empty()))>
            <section class="task-prompts" data-testid="task-prompts">
                <h2>"Tasks and their circuits"</h2>
                <table class="tasks">
                    <thead><tr><th>"Task (click to run its prompt)"</th><th>"Circuits"</th><th></th></tr></thead>
                    <tbody>{rows}</tbody>
                </table>
                <SearchProgress />
                <label class="search-method">
                    "Method "
                    <select
                        data-testid="search-method"
                        prop:value=move || page.search_method.get().name()
                        on:change=move |ev| {
                            if let Some(method) = SearchMethod::parse(&event_target_value(&ev)) {
                                page.search_method.set(method);
                            }
                        }
                    >
                        <option value="masks" title="The paper's: a mask per node learned by gradient descent, then the smallest k that meets the target">
                            "learned masks (the paper's)"
                        </option>
                        <option value="greedy" title="Forward passes only: groups of nodes ablated, halved until single nodes">"greedy ablation"</option>
                    </select>
                </label>
                <Show when=move || page.search_method.get() == SearchMethod::Masks>
                    <CountInput label="Steps " testid="search-steps" max=5000 value=page.search_steps />
                </Show>
                <CountInput label="Examples per search " testid="search-examples" max=256 value=page.search_examples />
                <TargetInput />
                <label class="circuit-file">
                    " or open a circuit file: "
                    <input
                        type="file"
                        accept=".json,application/json"
                        data-testid="circuit-file"
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = event_target(&ev);
                            if let Some(file) = files_of(input.files()).into_iter().next() {
                                spawn_local(async move {
                                    let text = wasm_bindgen_futures::JsFuture::from(file.text()).await;
                                    let text = text.ok().and_then(|t| t.as_string());
                                    page.open_circuit(file.name(), text.unwrap_or_default());
                                });
                            }
                            input.set_value("");
                        }
                    />
                </label>
                <CurveChart />
            </section>
        </Show>
    }
}

/// A whole number from 1 to `max` for one of the search's settings.
#[component]
pub(super) fn CountInput(label: &'static str, testid: &'static str, max: usize, value: RwSignal<usize>) -> impl IntoView {
    view! {
        <label class="search-examples">
            {label}
            <input
                type="number"
                min="1"
                max=max
                data-testid=testid
                prop:value=move || value.get().to_string()
                on:change=move |ev| {
                    if let Ok(n) = event_target_value(&ev).parse::<usize>() {
                        value.set(n.clamp(1, max));
                    }
                }
            />
        </label>
    }
}

/// The task loss the circuit must meet (binary cross-entropy, nats): a
/// model that is not sure of a task needs a looser one.
#[component]
fn TargetInput() -> impl IntoView {
    let page = use_page();
    view! {
        <label class="search-examples" title="The circuit is the smallest whose task loss, with every other node mean-ablated, is at most this (the CLI's --target-loss)">
            "Target task loss "
            <input
                type="number"
                min="0.001"
                max="20"
                step="0.01"
                data-testid="search-target"
                prop:value=move || page.search_target.get().to_string()
                on:change=move |ev| {
                    if let Ok(target) = event_target_value(&ev).parse::<f64>() {
                        if target.is_finite() {
                            page.search_target.set(target.clamp(0.001, 20.0));
                        }
                    }
                }
            />
        </label>
    }
}

/// The search under way: its stage, where it runs, and a cancel button.
#[component]
fn SearchProgress() -> impl IntoView {
    let page = use_page();
    move || {
        page.searching.get().map(|searching| {
            let step = match searching.progress {
                Some(SearchStatus::Masks(PruneProgress::Masks { progress, .. })) => progress.step,
                _ => 0,
            };
            let stage = match searching.progress {
                None => "waiting for the mean activations".to_string(),
                Some(SearchStatus::Greedy(p)) => {
                    let stage = match p.stage {
                        SearchStage::Pruning { group: 1 } => format!("removing single nodes, {} left", p.nodes),
                        SearchStage::Pruning { group } => format!("removing groups of {group} channels, {} nodes left", p.nodes),
                        SearchStage::Curve => format!("measuring the loss along its {} nodes", p.nodes),
                    };
                    format!("{stage}, {} ablations run", p.variants)
                }
                Some(SearchStatus::Masks(PruneProgress::Masks { progress, steps })) => {
                    let left = searching.seconds_left(now_ms()).map_or(String::new(), |s| format!(", about {s:.0} s left"));
                    format!(
                        "learning node masks, step {} of {steps}: task loss {:.3}, {} nodes kept{left}",
                        progress.step, progress.task_loss, progress.kept
                    )
                }
                Some(SearchStatus::Masks(PruneProgress::Bisecting { k, loss })) => {
                    let target = page.search_target.get_untracked();
                    format!("bisecting on the number of nodes: the first {k} give task loss {:.3} (target {target})", loss.loss)
                }
                Some(SearchStatus::HeldOut { nodes }) => format!("measuring the {nodes}-node circuit on {HELD_OUT} held-out examples"),
            };
            let backend = match searching.place {
                Some(Place::Gpu) => " on the GPU",
                Some(Place::Cpu) => " on the CPU (faster here than this GPU, or no GPU)",
                None => "",
            };
            view! {
                <p class="status loading" data-testid="search-progress" data-backend=searching.place.map_or("", Place::name) data-step=step>
                    <progress></progress>
                    " Finding the circuit"{backend}": "{stage}" "
                    <button type="button" data-testid="cancel-search" on:click=move |_| page.cancel_search.set_value(true)>"Cancel"</button>
                </p>
            }
        })
    }
}

/// One circuit's size and faithfulness, and a button that shows it.
#[component]
fn CircuitSummary(circuit: Arc<LoadedCircuit>) -> impl IntoView {
    let page = use_page();
    let f = &circuit.file.faithfulness;
    let figures = format!(
        "{} nodes, {} edges; task loss {:.3} alone, {:.3} removed ({:.3} full)",
        circuit.nodes.len(),
        circuit.file.edges.len(),
        f.circuit.loss,
        f.without_circuit.loss,
        f.full.loss,
    );
    // How long the search took is for those who look: in the tooltip.
    let title = format!(
        "{} ({}, {:.0} s): accuracy {:.1}% with the circuit alone, {:.1}% with it removed, {:.1}% in full, on {} held-out examples",
        circuit.file.method.name,
        circuit.origin_name(),
        circuit.file.method.seconds,
        100.0 * f.circuit.accuracy,
        100.0 * f.without_circuit.accuracy,
        100.0 * f.full.accuracy,
        f.examples
    );
    let mine = circuit.clone();
    let is_shown = Memo::new(move |_| page.drawn.with(|d| d.as_ref().is_some_and(|d| Arc::ptr_eq(d, &mine))));
    let toggled = circuit.clone();
    view! {
        <div class="circuit-summary" data-testid="circuit" data-origin=circuit.origin_name() data-nodes=circuit.nodes.len() title=title>
            <button
                type="button"
                data-testid="show-circuit"
                aria-pressed=move || is_shown.get().to_string()
                on:click=move |_| page.circuits.with_untracked(|list| page.view.update(|v| v.toggle_circuit(&toggled, list)))
            >
                {move || if is_shown.get() { "Hide" } else { "Show" }}
            </button>
            " "<span class="method">{circuit.file.method.name.clone()}</span>": "{figures}
        </div>
    }
}

/// The shown circuit's task loss against k (the first k nodes of its
/// search's ranking kept, the rest mean-ablated), with the target as a line.
#[component]
fn CurveChart() -> impl IntoView {
    let page = use_page();
    const W: f64 = 360.0;
    const H: f64 = 140.0;
    const PAD: f64 = 28.0;
    move || {
        let circuit = page.drawn.get()?;
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
