//! The Leptos page: load the bundled model, run token ids through it on the
//! GPU (WebGPU) with every layer shown as soon as it is computed, or on the
//! CPU when there is no WebGPU.

mod circuits;
mod components;
mod effects;
mod export;
mod graph_canvas;
mod inspector;
mod link;
mod load;
mod summary;
mod tour;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::circuits::{GraphView, LinkModel, Node, Objective, SearchProgress, Shown, SiteMeans, Tour, ViewLink, Zoom};
use crate::gpu::{Engine, GpuContext, GpuError, Record};
use crate::model::{forward_with_interventions, Intervention, Model, Recording, Tensor, Tokenizer};
use crate::tasks::{Task, TaskChoice};
use circuits::{CircuitOrigin, LoadedCircuit, TaskTable};
use components::{
    files_of, AblationList, BackendStatus, ErrorBanner, LayerTable, ModelPicker, ModelStatus, Predictions, PromptForm,
    TokenStrip,
};
use effects::{Effects, Measured, ObjectiveChange, Ranking, RankingControls};
use graph_canvas::{CircuitCanvas, NodeTable};
use inspector::NodeInspector;
use export::ExportBar;
use link::{LinkBar, LinkedModelPrompt};
use tour::Classroom;
use load::{BundledModel, LoadProgress, LoadedModel, Optional, MODELS_URL};
use summary::{encode_prompt, layer_summary, predictions_at, LayerSummary, ModelFacts};

/// Channels shown per site in the circuit graph, at first.
const NODES_PER_SITE: usize = 8;

pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

/// Where forward passes run.
#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    /// Looking for a WebGPU adapter.
    Probing,
    /// On this adapter.
    Gpu(String),
    /// On the CPU, for this reason.
    Cpu(String),
}

/// GPU objects live here, outside the signals (they are not Send).
pub(crate) type SharedEngine = Rc<RefCell<Option<Engine>>>;

pub use crate::circuits::AblationKind;

/// Where a model comes from.
enum Source {
    Bundled(BundledModel),
    Url(String),
    Files(Vec<web_sys::File>),
}

#[component]
fn App() -> impl IntoView {
    let model = RwSignal::new(None::<Arc<Model>>);
    let tokenizer = RwSignal::new(None::<Arc<Tokenizer>>);
    let facts = RwSignal::new(None::<ModelFacts>);
    // A message for the error banner once the next model has loaded.
    let notice = StoredValue::new(None::<String>);
    // The model's task prompts, each a click away.
    let tasks = RwSignal::new(Vec::<TaskChoice>::new());
    let bundled = RwSignal::new(Vec::<BundledModel>::new());
    // The bundled model's id, or "" for one from a URL or files.
    let current = RwSignal::new(String::new());
    let loading = RwSignal::new(LoadProgress::Idle);
    let prompt = RwSignal::new(String::new());
    // Finished runs, for tests and screen readers to wait on.
    let runs = RwSignal::new(0usize);
    let backend = RwSignal::new(Backend::Probing);
    let error = RwSignal::new(None::<String>);
    let layers = RwSignal::new(Vec::<LayerSummary>::new());
    let running = RwSignal::new(false);
    // The last run: its tokens, logits `[T, vocab]` and recorded sites; the
    // nodes ablated on top of it and the logits with them zeroed.
    let run_tokens = RwSignal::new(Vec::<u32>::new());
    let clean_logits = RwSignal::new(None::<Arc<Tensor>>);
    let recording = RwSignal::new(None::<Arc<Recording>>);
    let ablated = RwSignal::new(Vec::<(Node, AblationKind)>::new());
    // Mean activations over the model's sample prompts, for mean ablation.
    let means = RwSignal::new(None::<Arc<SiteMeans>>);
    let ablated_logits = RwSignal::new(None::<Arc<Tensor>>);
    // How many ablations the predictions shown reflect (they arrive later).
    let shown_ablations = RwSignal::new(0usize);
    // The token position whose predictions and circuit are shown, and the clicked node.
    let position = RwSignal::new(0usize);
    let selected = RwSignal::new(None::<usize>);
    let per_site = RwSignal::new(NODES_PER_SITE);
    // Task circuits: those that came with the model or were found here; the
    // one drawn as the graph; the search under way and its cancel flag.
    let circuits = RwSignal::new(Vec::<Arc<LoadedCircuit>>::new());
    let shown_circuit = RwSignal::new(None::<usize>);
    let searching = RwSignal::new(None::<SearchProgress>);
    let cancel_search = StoredValue::new(false);
    let search_examples = RwSignal::new(64usize);
    // Where the search under way runs: "gpu", or "cpu" (no GPU, or a slower one).
    let search_backend = RwSignal::new(None::<&'static str>);
    // Links: the prompt of the last run, the URL and weights hash of a model
    // opened from a URL, a node set a link drew, the graph's pan and zoom,
    // the link being opened (applied once its model has run its prompt),
    // and a link's model URL waiting for the user's yes.
    let ran_prompt = RwSignal::new(String::new());
    let model_url = RwSignal::new(None::<(String, String)>);
    let linked_nodes = RwSignal::new(None::<Arc<Vec<Node>>>);
    let zoom = RwSignal::new(Zoom::IDENTITY);
    let wanted_selection = RwSignal::new(None::<Node>);
    // Classroom tours that came with the model, and the step shown (tour, step).
    let tours = RwSignal::new(Vec::<Tour>::new());
    let touring = RwSignal::new(None::<(usize, usize)>);
    // The circuit drawn as the graph, if any.
    let drawn_circuit = Signal::derive(move || shown_circuit.get().and_then(|i| circuits.with(|c| c.get(i).cloned())));
    let waiting_link = StoredValue::new(None::<ViewLink>);
    let pending_link = StoredValue::new(None::<ViewLink>);
    let ask_url = RwSignal::new(None::<String>);

    let predictions_from = move |logits: RwSignal<Option<Arc<Tensor>>>| {
        Memo::new(move |_| logits.get().map(|l| predictions_at(&l, position.get())).unwrap_or_default())
    };
    let clean_top = predictions_from(clean_logits);
    let ablated_top = predictions_from(ablated_logits);
    let top = Memo::new(move |_| if shown_ablations.get() > 0 { ablated_top.get() } else { clean_top.get() });
    // Nodes ranked by their measured effect on the chosen output (by default
    // the top prediction's logit), or by activation.
    let ranking = RwSignal::new(Ranking::Effect);
    let target = RwSignal::new(None::<u32>);
    let contrast = RwSignal::new(None::<u32>);
    let effects = RwSignal::new(None::<Arc<Effects>>);
    let measuring = RwSignal::new(None::<(usize, usize)>);
    let ranking_note = RwSignal::new(None::<String>);
    let budgeted = RwSignal::new(true);
    // A new model is measured within the budget again.
    Effect::new(move |_| {
        model.track();
        budgeted.set(true);
        ranking_note.set(None);
    });
    let objective = Memo::new(move |_| {
        let rows = clean_logits.with(|l| l.as_ref().map(|l| l.rows))?;
        let target = target.get().or_else(|| clean_top.with(|p| p.first().map(|p| p.token)))?;
        Some(Objective { position: position.get().min(rows - 1), target, contrast: contrast.get() })
    });
    let graph = Memo::new(move |_| {
        let model = model.get()?;
        let at = position.get();
        let per_site = per_site.get();
        if let Some(circuit) = drawn_circuit.get() {
            return recording.with(|r| r.as_ref().map(|r| GraphView::of_nodes(&model, r, at, &circuit.nodes)));
        }
        if let Some(nodes) = linked_nodes.get() {
            return recording.with(|r| r.as_ref().map(|r| GraphView::of_nodes(&model, r, at, &nodes)));
        }
        match ranking.get() {
            Ranking::Activation => recording.with(|r| r.as_ref().map(|r| GraphView::top_activations(&model, r, at, per_site))),
            Ranking::Effect => {
                let measured = effects.get().filter(|e| objective.get() == Some(e.objective))?;
                recording.with(|r| r.as_ref().map(|r| GraphView::top_effects(&model, r, at, per_site, &measured.values)))
            }
        }
    });
    let engine = StoredValue::new_local(SharedEngine::default());

    // (Re)measures effects whenever the run, position or output changes; a
    // newer request makes an older measurement give up.
    let generation = StoredValue::new(0u64);
    Effect::new(move |_| {
        let wanted = objective.get().filter(|_| ranking.get() == Ranking::Effect);
        generation.update_value(|g| *g += 1);
        let mine = generation.get_value();
        let Some(wanted) = wanted else { return measuring.set(None) };
        if effects.with_untracked(|e| e.as_ref().is_some_and(|e| e.objective == wanted)) {
            return;
        }
        let (Some(model), Some(clean), Some(sites)) =
            (model.get_untracked(), clean_logits.get_untracked(), recording.get_untracked())
        else {
            return;
        };
        let tokens = run_tokens.get_untracked();
        spawn_local(async move {
            let still_wanted = move || generation.get_value() == mine;
            let progress = move |done, total| {
                if still_wanted() {
                    measuring.set(Some((done, total)));
                }
            };
            let budget = budgeted.get_untracked().then_some(effects::BUDGET_MS);
            let result = effects::measure(
                engine.get_value(),
                backend,
                &model,
                &tokens,
                &clean,
                &sites,
                wanted,
                budget,
                &progress,
                &still_wanted,
            )
            .await;
            if !still_wanted() {
                return;
            }
            measuring.set(None);
            match result {
                Ok(Some(Measured::Done(measured))) => effects.set(Some(Arc::new(measured))),
                Ok(Some(Measured::OverBudget { seconds, nodes })) => {
                    ranking_note.set(Some(format!(
                        "Ranked by activation: measuring the effect of all {nodes} nodes would take about {} here. Choose \"measured effect\" to measure anyway.",
                        duration(seconds)
                    )));
                    ranking.set(Ranking::Activation);
                }
                Ok(None) => {}
                Err(message) => error.set(Some(message)),
            }
        });
    });

    // Forgets the last run (before a new one, or after bad input).
    let clear_run = move || {
        layers.set(Vec::new());
        run_tokens.set(Vec::new());
        clean_logits.set(None);
        recording.set(None);
        selected.set(None);
        ablated.set(Vec::new());
        ablated_logits.set(None);
        shown_ablations.set(0);
        effects.set(None);
        target.set(None);
        contrast.set(None);
        linked_nodes.set(None);
    };
    Effect::new(move |_| {
        if shown_circuit.get().is_some() {
            linked_nodes.set(None);
        }
    });

    let run = move |text: String| {
        let Some(model) = model.get_untracked() else { return };
        if running.get_untracked() {
            return;
        }
        clear_run();
        let tokens = match encode_prompt(&model, tokenizer.get_untracked().as_deref(), &text) {
            Ok(tokens) => tokens,
            Err(message) => return error.set(Some(message)),
        };
        error.set(None);
        running.set(true);
        ran_prompt.set(text);
        spawn_local(async move {
            let on_layer = &mut |layer: usize, sites: &Recording| {
                layers.update(|rows| {
                    rows.retain(|row| row.layer < layer);
                    rows.push(layer_summary(layer, sites));
                })
            };
            let outcome = forward_anywhere(engine.get_value(), backend, &model, &tokens, Vec::new(), Record::All, on_layer).await;
            match outcome {
                Ok((logits, sites)) => {
                    // The recording before the logits: effects are measured once the logits are in.
                    position.set(tokens.len() - 1);
                    run_tokens.set(tokens.clone());
                    recording.set(Some(Arc::new(sites)));
                    clean_logits.set(Some(Arc::new(logits)));
                }
                Err(message) => error.set(Some(message)),
            }
            running.set(false);
            runs.update(|n| *n += 1);
        });
    };

    // Loads a model; only when it is ready (parsed, and uploaded to the GPU
    // if there is one) does it replace the one shown. A bundled model opens
    // with its sample prompt run.
    let open = move |source: Source| {
        // One thing at a time: the controls are disabled meanwhile too.
        if running.get_untracked() || loading.get_untracked() != LoadProgress::Idle {
            return;
        }
        let (label, sample) = match &source {
            Source::Bundled(entry) => (entry.id.clone(), Some(entry.prompt.clone())),
            _ => (String::new(), None),
        };
        // Whether the link waiting for its model is for this one.
        let from_url = match &source {
            Source::Url(url) => Some(url.clone()),
            _ => None,
        };
        let is_linked = {
            let (label, from_url) = (label.clone(), from_url.clone());
            move |link: &ViewLink| match &link.model {
                LinkModel::Bundled(id) => !label.is_empty() && *id == label,
                LinkModel::Url { url, .. } => from_url.as_ref() == Some(url),
            }
        };
        loading.set(LoadProgress::Reading { file: String::new(), done: 0, total: None });
        spawn_local(async move {
            let progress = move |p: LoadProgress| loading.set(p);
            let loaded = match source {
                Source::Bundled(entry) => {
                    let url = format!("{MODELS_URL}/{}", entry.id);
                    load::fetch_model(&url, (&entry).into(), &progress).await
                }
                Source::Url(url) if url.is_empty() => Err("enter the URL of a model folder first".to_string()),
                Source::Url(url) => load::fetch_model(&url, Optional::default(), &progress).await,
                Source::Files(files) => load::read_files(files, &progress).await,
            };
            let result = match loaded {
                Ok(loaded) => install(loaded, engine.get_value(), backend, loading).await,
                Err(message) => Err(message),
            };
            loading.set(LoadProgress::Idle);
            let (loaded, new_facts) = match result {
                Ok(ready) => ready,
                // The model shown so far stays, and keeps working.
                Err(message) => return error.set(Some(message)),
            };
            error.set(None);
            clear_run();
            let mut sample = sample;
            if let Some(link) = waiting_link.get_value().filter(|link| is_linked(link)) {
                waiting_link.set_value(None);
                // Checked whole before anything of it is shown: a link that
                // does not fit gives the default view, not half of its own.
                match link::fits(&link, &loaded.model, loaded.tokenizer.as_ref()) {
                    Ok(()) => {
                        sample = Some(link.prompt.clone());
                        pending_link.set_value(Some(link));
                    }
                    Err(e) => notice.set_value(Some(format!("{e}; showing the model's default view instead"))),
                }
            }
            model_url.set(from_url.map(|url| (url, loaded.model.weights_sha256())));
            facts.set(Some(new_facts));
            tokenizer.set(loaded.tokenizer.map(Arc::new));
            tasks.set(loaded.tasks);
            shown_circuit.set(None);
            circuits.set(loaded.circuits.into_iter().map(Arc::new).collect());
            touring.set(None);
            tours.set(loaded.tours);
            let new_model = Arc::new(loaded.model);
            model.set(Some(new_model.clone()));
            means.set(None);
            current.set(label);
            if let Some(sample) = sample {
                prompt.set(sample.clone());
                run(sample);
            }
            // After the run's reset: a message the load left to show.
            let mut left = None;
            notice.update_value(|n| left = n.take());
            if left.is_some() {
                error.set(left);
            }
            // Then the means for mean ablation, in the background.
            let mut sums = SiteMeans::default();
            for tokens in &loaded.samples {
                let shared = engine.get_value();
                match forward_anywhere(shared, backend, &new_model, tokens, Vec::new(), Record::All, &mut |_, _| {}).await {
                    Ok((_, sites)) => sums.add(&sites),
                    Err(message) => return error.set(Some(format!("the sample prompts: {message}"))),
                }
            }
            let still_current = model.with_untracked(|m| m.as_ref().is_some_and(|m| Arc::ptr_eq(m, &new_model)));
            if sums.positions() > 0 && still_current {
                means.set(Some(Arc::new(sums)));
            }
        });
    };
    link::reopen_on_new_link();
    // The first bundled model opens, or the one the page's `?model=ID` names.
    spawn_local(async move {
        match load::fetch_index().await {
            Ok(list) => {
                // A link's bundled model comes before `?model=`; a link's
                // URL waits for the user's yes while the default opens.
                let mut asked = query_parameter("model");
                match link::opened_with() {
                    None => {}
                    Some(Err(e)) => notice.set_value(Some(format!("{e}; showing the default view instead"))),
                    Some(Ok(link)) => {
                        match &link.model {
                            LinkModel::Bundled(id) => asked = Some(id.clone()),
                            LinkModel::Url { url, .. } => ask_url.set(Some(url.clone())),
                        }
                        waiting_link.set_value(Some(link));
                    }
                }
                let chosen = match &asked {
                    Some(id) => list.iter().find(|m| &m.id == id),
                    None => None,
                };
                if let (Some(id), None) = (&asked, chosen) {
                    notice.set_value(Some(format!("there is no bundled model {id:?}; showing the default instead")));
                }
                let first = chosen.or(list.first()).cloned();
                bundled.set(list);
                if let Some(first) = first {
                    open(Source::Bundled(first));
                }
            }
            Err(message) => error.set(Some(message)),
        }
    });

    // Re-runs the last prompt with every ablated node zeroed, or set to its
    // mean, at every position.
    let rerun_ablated = move || {
        let Some(model) = model.get_untracked() else { return };
        let means = means.get_untracked();
        let interventions: Vec<Intervention> = ablated
            .get_untracked()
            .iter()
            .filter_map(|&(node, kind)| match kind {
                AblationKind::Zero => Some(node.zero_ablation()),
                AblationKind::Mean => means.as_ref()?.ablation(node),
            })
            .collect();
        if interventions.is_empty() {
            shown_ablations.set(0);
            return;
        }
        let count = interventions.len();
        let tokens = run_tokens.get_untracked();
        running.set(true);
        spawn_local(async move {
            let result =
                forward_anywhere(engine.get_value(), backend, &model, &tokens, interventions, Record::LogitsOnly, &mut |_, _| {})
                    .await
                    .map(|(logits, _)| logits);
            match result {
                Ok(logits) => {
                    ablated_logits.set(Some(Arc::new(logits)));
                    shown_ablations.set(count);
                }
                Err(message) => error.set(Some(message)),
            }
            running.set(false);
        });
    };
    let ablate = move |node: Node, kind: AblationKind| {
        if !ablated.with_untracked(|list| list.iter().any(|(n, _)| *n == node)) {
            ablated.update(|list| list.push((node, kind)));
            rerun_ablated();
        }
    };
    // Shows a link's view on top of a run of its prompt: everything that
    // run reset, and everything a view before it set.
    let apply_link = move |link: ViewLink| {
        if let Some(at) = link.position {
            position.set(at); // checked against the prompt before the run
        }
        target.set(link.target);
        contrast.set(link.contrast);
        ranking.set(link.ranking);
        per_site.set(link.per_site);
        zoom.set(link.zoom);
        selected.set(None);
        wanted_selection.set(link.selected);
        linked_nodes.set(None);
        shown_circuit.set(None);
        match link.shown {
            Shown::Ranked => {}
            Shown::Circuit(task) => match circuits.with_untracked(|list| list.iter().position(|c| c.file.task == task && c.origin == CircuitOrigin::Bundled)) {
                Some(index) => shown_circuit.set(Some(index)),
                None => error.set(Some(format!("the link's circuit {task:?} does not come with this model"))),
            },
            Shown::Nodes(nodes) => linked_nodes.set(Some(Arc::new(nodes))),
        }
        let needs_means = link.ablations.iter().any(|(_, kind)| *kind == AblationKind::Mean);
        ablated.set(link.ablations);
        // Mean ablations wait for the means, computed after the model loads.
        spawn_local(async move {
            while needs_means && means.with_untracked(Option::is_none) {
                sleep(100).await;
            }
            rerun_ablated();
        });
    };
    // A link's view, once its model has run its prompt.
    Effect::new(move |_| {
        runs.track();
        if let Some(link) = pending_link.try_update_value(Option::take).flatten() {
            apply_link(link);
        }
    });
    // A view on the model shown (a tour's step): its prompt is run first
    // unless it is the one shown.
    let show_view = move |link: ViewLink| {
        let Some(model) = model.get_untracked() else { return };
        if let Err(message) = link::fits(&link, &model, tokenizer.get_untracked().as_deref()) {
            return error.set(Some(message));
        }
        if ran_prompt.get_untracked() == link.prompt && !run_tokens.with_untracked(Vec::is_empty) {
            apply_link(link);
        } else {
            prompt.set(link.prompt.clone());
            let text = link.prompt.clone();
            pending_link.set_value(Some(link));
            run(text);
        }
    };
    // A selection a view asked for, made once its node is in the graph.
    Effect::new(move |_| {
        let Some(wanted) = wanted_selection.get() else { return };
        if let Some(index) = graph.with(|g| g.as_ref().and_then(|g| g.nodes.iter().position(|n| n.node == wanted))) {
            selected.set(Some(index));
            wanted_selection.set(None);
        }
    });
    let view_link = Signal::derive(move || -> Result<String, String> {
        model.with(|m| m.is_some()).then_some(()).ok_or("no model is open")?;
        let link_model = match (current.get(), model_url.get()) {
            (id, _) if !id.is_empty() => LinkModel::Bundled(id),
            (_, Some((url, weights_sha256))) => LinkModel::Url { url, weights_sha256 },
            _ => return Err("a model opened from files has no link: open it from a URL to share it".into()),
        };
        let shown = match drawn_circuit.get() {
            Some(circuit) if circuit.origin == CircuitOrigin::Bundled => Shown::Circuit(circuit.file.task.clone()),
            Some(circuit) => Shown::Nodes(circuit.nodes.clone()),
            None => linked_nodes.get().map_or(Shown::Ranked, |nodes| Shown::Nodes(nodes.to_vec())),
        };
        let link = ViewLink {
            model: link_model,
            prompt: ran_prompt.get(),
            position: Some(position.get()),
            target: target.get(),
            contrast: contrast.get(),
            shown,
            ablations: ablated.get(),
            selected: selected.get().and_then(|i| graph.with(|g| g.as_ref().and_then(|g| g.nodes.get(i).map(|n| n.node)))),
            ranking: ranking.get(),
            per_site: per_site.get(),
            zoom: zoom.get(),
        };
        Ok(link.to_fragment())
    });
    let ablated_nodes = Signal::derive(move || ablated.with(|list| list.iter().map(|(n, _)| *n).collect::<Vec<_>>()));
    let clear_ablations = move || {
        ablated.set(Vec::new());
        rerun_ablated();
    };

    // Searches for a task's circuit in the page, with progress and a cancel
    // button; the circuit found joins the task's list and is shown.
    let find_circuit = move |task_name: String| {
        let (Some(searched), Some(tokenizer)) = (model.get_untracked(), tokenizer.get_untracked()) else { return };
        let Some(task) = Task::parse(&task_name) else { return };
        let Some(means) = means.get_untracked() else {
            return error.set(Some("the mean activations over the sample prompts are still being computed".into()));
        };
        if searching.get_untracked().is_some() {
            return;
        }
        cancel_search.set_value(false);
        error.set(None);
        let examples = search_examples.get_untracked();
        let model_name = current.get_untracked();
        spawn_local(async move {
            let mut progress = |p| searching.set(Some(p));
            let cancelled = || cancel_search.get_value();
            let result = circuits::find_circuit(
                engine.get_value(),
                backend,
                &searched,
                model_name,
                &tokenizer,
                &means,
                task,
                examples,
                0.15,
                &|chosen| search_backend.set(Some(chosen)),
                &mut progress,
                &cancelled,
            )
            .await;
            searching.set(None);
            search_backend.set(None);
            let still_current = model.with_untracked(|m| m.as_ref().is_some_and(|m| Arc::ptr_eq(m, &searched)));
            match result {
                Ok(Some(found)) if still_current => {
                    circuits.update(|list| {
                        list.retain(|c| !(c.file.task == found.file.task && c.origin == found.origin));
                        list.push(Arc::new(found));
                    });
                    shown_circuit.set(Some(circuits.with_untracked(|c| c.len() - 1)));
                }
                Ok(_) => {}
                Err(message) => error.set(Some(format!("finding the {task_name} circuit: {message}"))),
            }
        });
    };

    let busy = Signal::derive(move || loading.get() != LoadProgress::Idle || running.get());
    let ready = Signal::derive(move || model.with(Option::is_some) && backend.get() != Backend::Probing && !busy.get());
    view! {
        <header>
            <h1>"circuitscope"</h1>
            <p class="subtitle">"Inside a weight-sparse transformer, in your browser."</p>
        </header>
        <main
            data-runs=move || runs.get()
            data-link=move || view_link.get().unwrap_or_default()
            on:dragover=move |ev: web_sys::DragEvent| ev.prevent_default()
            on:drop=move |ev: web_sys::DragEvent| {
                ev.prevent_default();
                let files = files_of(ev.data_transfer().and_then(|d| d.files()));
                if !files.is_empty() && !busy.get_untracked() {
                    open(Source::Files(files));
                }
            }
        >
            <ModelPicker
                bundled=bundled
                current=current
                busy=busy
                on_bundled=move |m| open(Source::Bundled(m))
                on_url=move |url| open(Source::Url(url))
                on_files=move |files| open(Source::Files(files))
            />
            <ModelStatus facts=facts loading=loading />
            <BackendStatus backend=backend />
            <LinkedModelPrompt url=ask_url on_open=move |url| open(Source::Url(url)) />
            <ErrorBanner error=error />
            <LinkBar link=view_link />
            <Classroom tours=tours touring=touring ready=ready on_step=show_view error=error />
            <ExportBar
                circuit=drawn_circuit
                run=Signal::derive(move || Some((clean_logits.get()?, recording.get()?)))
                error=error
            />
            <PromptForm
                text=prompt
                has_tokenizer=Signal::derive(move || tokenizer.with(Option::is_some))
                ready=ready
                on_run=run
            />
            <TaskTable
                tasks=tasks
                circuits=circuits
                shown=shown_circuit
                ready=ready
                searching=searching
                search_backend=search_backend
                search_examples=search_examples
                on_find=find_circuit
                on_cancel=move || cancel_search.set_value(true)
                on_open=move |name: String, json: String| {
                    let Some(current_model) = model.get_untracked() else { return };
                    match LoadedCircuit::parse(&json, &current_model, circuits::CircuitOrigin::Opened) {
                        Ok(opened) => {
                            circuits.update(|list| list.push(Arc::new(opened)));
                            shown_circuit.set(Some(circuits.with_untracked(|c| c.len() - 1)));
                            error.set(None);
                        }
                        Err(message) => error.set(Some(format!("circuit file {name}: {message}"))),
                    }
                }
                on_pick=move |task: TaskChoice| {
                    prompt.set(task.prompt.clone());
                    run(task.prompt);
                    // After run's reset: rank by the right answer's logit over the wrong one's.
                    ranking.set(Ranking::Effect);
                    target.set(Some(task.right));
                    contrast.set(Some(task.wrong));
                }
            />
            <TokenStrip
                tokens=run_tokens
                tokenizer=tokenizer
                position=position
                on_select=move |_| {
                    selected.set(None);
                    target.set(None);
                    contrast.set(None);
                }
            />
            <Predictions predictions=top.into() clean=clean_top.into() ablations=shown_ablations tokenizer=tokenizer />
            <ObjectiveChange
                objective=objective.into()
                clean=clean_logits
                ablated=ablated_logits
                ablations=shown_ablations
                tokenizer=tokenizer
            />
            <AblationList ablated=ablated model=model on_clear=clear_ablations />
            <LayerTable layers=layers />
            <RankingControls
                ranking=ranking
                target=target
                contrast=contrast
                predictions=clean_top.into()
                tokenizer=tokenizer
                progress=measuring
                effects=effects
                note=ranking_note
                budgeted=budgeted
            />
            <CircuitCanvas
                graph=graph.into()
                selected=selected
                ablated=ablated_nodes
                per_site=per_site
                ranking=ranking
                circuit=Signal::derive(move || {
                    let Some(circuit) = drawn_circuit.get() else {
                        return linked_nodes.get().map(|nodes| format!("the link's {} nodes", nodes.len()));
                    };
                    Some(format!("the {} circuit ({}, {} nodes)", circuit.file.task, circuit.file.method.name, circuit.nodes.len()))
                })
                transform=zoom
            />
            <NodeInspector
                graph=graph.into()
                selected=selected
                model=model
                recording=recording
                tokens=run_tokens
                tokenizer=tokenizer
                position=position
                mean_ready=Signal::derive(move || means.with(Option::is_some))
                on_ablate=ablate
            />
            <NodeTable graph=graph.into() />
        </main>
    }
}

/// Makes a loaded model runnable: on the first model, looks for WebGPU and
/// uploads it there (or settles for the CPU); later, uploads it to the same
/// device. A model the GPU refuses (say, over the adapter's limits) is an
/// error and the engine keeps the model it had.
async fn install(
    loaded: LoadedModel,
    shared: SharedEngine,
    backend: RwSignal<Backend>,
    loading: RwSignal<LoadProgress>,
) -> Result<(LoadedModel, ModelFacts), String> {
    let facts = ModelFacts::new(&loaded.model, loaded.tokenizer.as_ref(), loaded.source.clone(), loaded.bytes);
    loading.set(LoadProgress::Uploading);
    if backend.get_untracked() == Backend::Probing {
        match GpuContext::new().await.and_then(|ctx| Engine::new(ctx, &loaded.model)) {
            Ok(ready) => {
                backend.set(Backend::Gpu(ready.context().describe()));
                *shared.borrow_mut() = Some(ready);
            }
            Err(e) => backend.set(Backend::Cpu(format!("WebGPU is not available ({e})"))),
        }
        return Ok((loaded, facts));
    }
    next_frame().await; // let the page show the upload step
    if let Some(mut gpu) = take_engine(&shared, backend).await {
        let result = gpu.load(&loaded.model);
        *shared.borrow_mut() = Some(gpu);
        result.map_err(|e| format!("{} cannot run on this GPU: {e}", loaded.source))?;
    }
    Ok((loaded, facts))
}

/// The GPU engine, taken out for one run so no borrow is held across an
/// await; put it back after. While another task has it, waits for it.
/// `None` when there is no (working) GPU.
pub(crate) async fn take_engine(shared: &SharedEngine, backend: RwSignal<Backend>) -> Option<Engine> {
    loop {
        if let Some(gpu) = shared.borrow_mut().take() {
            return Some(gpu);
        }
        if !matches!(backend.get_untracked(), Backend::Gpu(_)) {
            return None;
        }
        next_frame().await;
    }
}

/// The value of `name` in the page's query string, if any.
fn query_parameter(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

/// Resolves after the browser has had a chance to paint.
pub(crate) async fn next_frame() {
    sleep(0).await;
}

/// Resolves after `ms` milliseconds (a browser timer).
pub(crate) async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// A forward pass with `interventions`: on the GPU when there is one, handing
/// each layer's recorded sites to `on_layer` as it arrives; on the CPU when
/// there is none, or (saying so) when the GPU fails.
async fn forward_anywhere(
    shared: SharedEngine,
    backend: RwSignal<Backend>,
    model: &Model,
    tokens: &[u32],
    interventions: Vec<Intervention>,
    record: Record,
    on_layer: &mut dyn FnMut(usize, &Recording),
) -> Result<(Tensor, Recording), String> {
    if let Some(mut gpu) = take_engine(&shared, backend).await {
        let mut sites = Recording::new();
        let result = gpu
            .run(tokens, std::slice::from_ref(&interventions), &record, &mut |mut stage| {
                if let Some(layer) = stage.layer {
                    on_layer(layer, &stage.sites[0]);
                }
                sites.append(&mut stage.sites[0]);
            })
            .await;
        match result {
            Ok(mut logits) => {
                *shared.borrow_mut() = Some(gpu);
                return Ok((logits.remove(0), sites));
            }
            // Bad input is the input's fault; anything else is the GPU's.
            Err(GpuError::Model(e)) => {
                *shared.borrow_mut() = Some(gpu);
                return Err(e.to_string());
            }
            Err(e) => backend.set(Backend::Cpu(format!("the GPU failed ({e})"))),
        }
    }
    let mut sites = Recording::new();
    let keep = record != Record::LogitsOnly;
    let logits = forward_with_interventions(model, tokens, &interventions, &mut |site, acts| {
        if keep {
            sites.push((site, acts.clone()));
        }
    })
    .map_err(|e| e.to_string())?;
    if keep {
        for layer in 0..model.config.n_layer {
            on_layer(layer, &sites);
        }
    }
    Ok((logits, sites))
}

/// A rough duration for people: "40 s", "12 min", "3.5 h".
fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}
