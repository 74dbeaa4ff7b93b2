//! Ranking nodes by their measured effect on a chosen output: the control
//! for the output, and the measurement itself, batched on the GPU (or run
//! on the CPU), a chunk at a time so the page stays responsive and shows
//! progress.

use std::sync::Arc;

use leptos::prelude::*;

use super::summary::token_text;
use super::{next_frame, take_engine, Backend, SharedEngine};
use crate::circuits::{ablated_objectives, ablated_objectives_gpu, candidates, Node, Objective};
use crate::model::{Model, Prediction, Recording, Tensor, Tokenizer};

/// Ablation variants per GPU batch, per CPU chunk (the CPU blocks the page
/// while it works), and per probe of either.
const GPU_BATCH: usize = 64;
const CPU_CHUNK: usize = 16;
const PROBE: usize = 8;
/// A node slower than this per ablation on the GPU is a large model: the
/// CPU is probed with one node only, since the CPU blocks the page.
const LARGE_MODEL_MS: f64 = 20.0;
/// Measurements estimated to take longer are not started unasked: at the
/// released scale, every node of a long prompt would take hours.
pub const BUDGET_MS: f64 = 120_000.0;

pub use crate::circuits::Ranking;

/// Every candidate node's effect on `objective`, for one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Effects {
    pub objective: Objective,
    pub values: Vec<(Node, f32)>,
}

/// How a measurement ended.
pub enum Measured {
    Done(Effects),
    /// Probed, and estimated past the budget: `seconds` for `nodes` nodes.
    OverBudget { seconds: f64, nodes: usize },
}

/// Measures the effect of every candidate node on `objective`: the clean
/// objective minus the objective with the node zero-ablated everywhere.
/// With a GPU, a first small chunk is timed on each backend and the rest
/// runs on the faster one (a software adapter is slower than the CPU
/// reference for models this small). Once both are probed, a measurement
/// estimated past `budget_ms` (when given) stops there. `progress(done,
/// total)` after every chunk; gives up (`None`) as soon as `still_wanted`
/// says the result is no longer needed.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    shared: SharedEngine,
    backend: RwSignal<Backend>,
    model: &Model,
    tokens: &[u32],
    clean: &Tensor,
    recording: &Recording,
    objective: Objective,
    budget_ms: Option<f64>,
    progress: &dyn Fn(usize, usize),
    still_wanted: &dyn Fn() -> bool,
) -> Result<Option<Measured>, String> {
    let nodes = candidates(recording, objective.position);
    let clean = objective.of(clean);
    let mut values = Vec::with_capacity(nodes.len());
    // Milliseconds per ablated node, once probed.
    let (mut gpu_ms, mut cpu_ms) = (None::<f64>, None::<f64>);
    while values.len() < nodes.len() {
        progress(values.len(), nodes.len());
        next_frame().await;
        if !still_wanted() {
            return Ok(None);
        }
        let has_gpu = matches!(backend.get_untracked(), Backend::Gpu(_));
        let probed = if has_gpu { gpu_ms.is_some() && cpu_ms.is_some() } else { cpu_ms.is_some() };
        let best = [gpu_ms, cpu_ms].into_iter().flatten().fold(f64::INFINITY, f64::min);
        let estimate = best * (nodes.len() - values.len()) as f64;
        if budget_ms.is_some_and(|budget| probed && estimate > budget) {
            return Ok(Some(Measured::OverBudget { seconds: estimate / 1000.0, nodes: nodes.len() }));
        }
        // Probes are one node where a node may take seconds.
        let (on_gpu, size) = match (has_gpu, gpu_ms, cpu_ms) {
            (false, _, None) => (false, 1),
            (false, ..) => (false, CPU_CHUNK),
            (true, None, _) => (true, 1),
            (true, Some(g), None) => (false, if g < LARGE_MODEL_MS { PROBE } else { 1 }),
            (true, Some(g), Some(c)) if g <= c => (true, GPU_BATCH),
            (true, Some(_), Some(_)) => (false, CPU_CHUNK),
        };
        let chunk = &nodes[values.len()..(values.len() + size).min(nodes.len())];
        let started = js_sys::Date::now();
        let ablated = if on_gpu {
            let Some(mut gpu) = take_engine(&shared, backend).await else { continue };
            let result = ablated_objectives_gpu(&mut gpu, tokens, chunk, &objective).await;
            *shared.borrow_mut() = Some(gpu);
            result.map_err(|e| e.to_string())?
        } else {
            ablated_objectives(model, tokens, chunk, &objective).map_err(|e| e.to_string())?
        };
        let per_node = (js_sys::Date::now() - started) / chunk.len() as f64;
        if on_gpu { gpu_ms.get_or_insert(per_node) } else { cpu_ms.get_or_insert(per_node) };
        values.extend(chunk.iter().zip(ablated).map(|(node, ablated)| (*node, clean - ablated)));
    }
    progress(values.len(), nodes.len());
    Ok(Some(Measured::Done(Effects { objective, values })))
}

/// Rank by effect or activation; the output effects are measured on: a
/// token's logit, or its difference to another token's, picked from the top
/// predictions at the selected position.
#[component]
pub fn RankingControls(
    ranking: RwSignal<Ranking>,
    target: RwSignal<Option<u32>>,
    contrast: RwSignal<Option<u32>>,
    predictions: Signal<Vec<Prediction>>,
    tokenizer: RwSignal<Option<Arc<Tokenizer>>>,
    progress: RwSignal<Option<(usize, usize)>>,
    effects: RwSignal<Option<Arc<Effects>>>,
    /// Why the ranking is by activation when effects were too slow to measure.
    note: RwSignal<Option<String>>,
    /// Whether effects are measured within [`BUDGET_MS`] (until asked for anyway).
    budgeted: RwSignal<bool>,
) -> impl IntoView {
    // What the effects shown were measured on, e.g. `58-12@28`, for tests to wait on.
    let measured = move || {
        effects.with(|e| {
            e.as_ref().map(|e| {
                let o = e.objective;
                format!("{}{}@{}", o.target, o.contrast.map(|c| format!("-{c}")).unwrap_or_default(), o.position)
            })
        })
    };
    // The top predictions, and the chosen token too when it is not among them
    // (a task's answers need not be).
    let options = move |chosen: Option<u32>| {
        let tokenizer = tokenizer.get();
        let mut items: Vec<(u32, String)> = predictions
            .get()
            .into_iter()
            .map(|p| (p.token, format!("{} ({:.1}%)", token_text(tokenizer.as_deref(), p.token), 100.0 * p.prob)))
            .collect();
        if let Some(token) = chosen.filter(|t| !items.iter().any(|(i, _)| i == t)) {
            items.push((token, token_text(tokenizer.as_deref(), token)));
        }
        items
            .into_iter()
            .map(|(token, label)| view! { <option value=token selected=chosen == Some(token)>{label}</option> })
            .collect_view()
    };
    let parse = |value: String| value.parse::<u32>().ok();
    view! {
        <div class="ranking" data-testid="ranking" data-measured=measured style:display=move || if predictions.with(Vec::is_empty) { "none" } else { "flex" }>
            <label>
                "Rank nodes by "
                <select
                    data-testid="rank-by"
                    on:change=move |ev| {
                        let by_effect = event_target_value(&ev) != "activation";
                        // Asked for again after a note that it would be slow: measure anyway.
                        budgeted.set(!(by_effect && note.get_untracked().is_some()));
                        note.set(None);
                        ranking.set(if by_effect { Ranking::Effect } else { Ranking::Activation })
                    }
                >
                    <option value="effect" selected=move || ranking.get() == Ranking::Effect>
                        "measured effect on"
                    </option>
                    <option value="activation" selected=move || ranking.get() == Ranking::Activation>
                        "|activation| (no output)"
                    </option>
                </select>
            </label>
            <span class="objective" style:visibility=move || if ranking.get() == Ranking::Effect { "visible" } else { "hidden" }>
                <label>
                    " the logit of "
                    <select data-testid="target-token" on:change=move |ev| target.set(parse(event_target_value(&ev)))>
                        {move || options(target.get().or_else(|| predictions.with(|p| p.first().map(|p| p.token))))}
                    </select>
                </label>
                <label>
                    " minus "
                    <select data-testid="contrast-token" on:change=move |ev| contrast.set(parse(event_target_value(&ev)))>
                        <option value="" selected=move || contrast.get().is_none()>"nothing"</option>
                        {move || options(contrast.get())}
                    </select>
                </label>
            </span>
            {move || note.get().map(|text| view! { <span class="hint" data-testid="ranking-note">{text}</span> })}
            {move || {
                progress.get().map(|(done, total)| {
                    view! {
                        <span class="measuring" data-testid="effect-progress">
                            <progress max=total value=done></progress>
                            {format!(" measuring effects: {done} of {total} nodes ablated")}
                        </span>
                    }
                })
            }}
        </div>
    }
}

/// The chosen output, clean and with the ablations: the number an ablation
/// is meant to move.
#[component]
pub fn ObjectiveChange(
    objective: Signal<Option<Objective>>,
    clean: RwSignal<Option<Arc<Tensor>>>,
    ablated: RwSignal<Option<Arc<Tensor>>>,
    ablations: RwSignal<usize>,
    tokenizer: RwSignal<Option<Arc<Tokenizer>>>,
) -> impl IntoView {
    move || {
        let objective = objective.get()?;
        let clean_value = objective.of(clean.get()?.as_ref());
        let tokenizer = tokenizer.get();
        let name = |t: u32| format!("logit({})", token_text(tokenizer.as_deref(), t));
        let what = match objective.contrast {
            Some(c) => format!("{} - {}", name(objective.target), name(c)),
            None => name(objective.target),
        };
        let n = ablations.get();
        let after = ablated.get().filter(|_| n > 0).map(|l| objective.of(&l));
        let text = match after {
            Some(value) => format!(
                "{what} at position {}: {clean_value:.3} clean, {value:.3} with {n} node(s) ablated ({:+.3})",
                objective.position,
                value - clean_value
            ),
            None => format!("{what} at position {}: {clean_value:.3}", objective.position),
        };
        Some(view! {
            <p class="objective-change" data-testid="objective-change" data-clean=clean_value data-ablated=after>
                {text}
            </p>
        })
    }
}
