//! Ranking nodes by their measured effect on a chosen output: the
//! measurement, through the runner (which times both backends on the first
//! nodes and runs the rest on the faster), a chunk at a time so the page
//! stays responsive and shows progress; and its controls.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::attribution::AttributionAgreement;
use super::page::{use_page, Effects, Page};
use super::summary::token_text;
use crate::circuits::{candidates_in, Node, Objective, Ranking};
use crate::model::{Intervention, Tensor};
use crate::platform::{now_ms, sleep};
use crate::runner::{Place, Runner};

/// Ablated nodes per chunk between two looks at whether the result is
/// still wanted (and a progress report).
const CHUNK: usize = 64;
/// Nodes a CPU probe may time (it stops after a slow one). The GPU is timed
/// on one node: at the released shape on a software adapter it takes seconds.
const CPU_PROBE: usize = 8;
/// Measurements estimated to take longer are not started unasked: at the
/// released scale, every node of a long prompt would take hours.
const BUDGET_MS: f64 = 120_000.0;

/// How long a measurement may take, once the runner can estimate it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Budget {
    /// As long as it takes.
    Unlimited,
    /// All the nodes or none: stop as soon as the rest is estimated longer.
    Whole(f64),
    /// As many nodes as fit in these milliseconds, in order.
    AsFarAs(f64),
}

/// How a measurement ended.
pub(super) enum Measured {
    Done(Effects),
    /// Probed, and estimated past the budget: `seconds` for `nodes` nodes;
    /// the effects measured by then.
    OverBudget { seconds: f64, nodes: usize, partial: Vec<(Node, f32)> },
}

/// Measures the effect of each of `nodes` on `objective` for a run of
/// `tokens` whose logits are `clean`: the clean objective minus the objective with the node
/// zero-ablated everywhere. Until the runner knows which backend is faster,
/// chunks are its probes; then `budget` says when to stop. `progress(done, total)` after every chunk;
/// gives up (`None`) as soon as `still_wanted` says the result is no longer
/// needed.
pub(super) async fn measure(
    runner: &Runner,
    (tokens, clean): (&[u32], &Tensor),
    nodes: Vec<Node>,
    objective: Objective,
    budget: Budget,
    progress: &dyn Fn(usize, usize),
    still_wanted: &dyn Fn() -> bool,
) -> Result<Option<Measured>, String> {
    let clean = objective.of(clean);
    let started = now_ms();
    let mut values = Vec::with_capacity(nodes.len());
    while values.len() < nodes.len() {
        progress(values.len(), nodes.len());
        sleep(0).await;
        if !still_wanted() {
            return Ok(None);
        }
        let left = nodes.len() - values.len();
        let mut size = match runner.probing() {
            Some(Place::Gpu) => 1,
            Some(Place::Cpu) => CPU_PROBE,
            None => CHUNK,
        };
        if let Some(per_node) = runner.estimate_ms(tokens.len(), 1) {
            let over = |seconds: f64, values| Ok(Some(Measured::OverBudget { seconds, nodes: nodes.len(), partial: values }));
            match budget {
                Budget::Whole(ms) if per_node * left as f64 > ms => return over(per_node * left as f64 / 1000.0, values),
                Budget::AsFarAs(ms) => {
                    let room = ((ms - (now_ms() - started)) / per_node).floor().max(0.0) as usize;
                    if room == 0 {
                        return over(per_node * left as f64 / 1000.0, values);
                    }
                    size = size.min(room);
                }
                _ => {}
            }
        }
        let chunk = &nodes[values.len()..(values.len() + size).min(nodes.len())];
        let variants: Vec<Vec<Intervention>> = chunk.iter().map(|node| vec![node.zero_ablation()]).collect();
        let logits = match runner.probing() {
            Some(_) => runner.probe(tokens, &variants).await?,
            None => runner.logits(tokens, &variants).await?,
        };
        let chunk = &chunk[..logits.len()];
        values.extend(chunk.iter().zip(logits).map(|(node, logits)| (*node, clean - objective.of(&logits))));
    }
    progress(values.len(), nodes.len());
    Ok(Some(Measured::Done(Effects { objective, values })))
}

impl Page {
    /// (Re)measures effects whenever the run, position or output changes; a
    /// newer request makes an older measurement give up. A measurement too
    /// long for the budget ranks by activation instead, saying why.
    pub fn measure_effects_on_change(self) {
        let generation = StoredValue::new(0u64);
        Effect::new(move |_| {
            // A new run, even with the same objective, is measured anew.
            self.run.track();
            let wanted = self.objective.get().filter(|_| self.ranking.get() == Ranking::Effect);
            generation.update_value(|g| *g += 1);
            let mine = generation.get_value();
            // Whatever was under way is no longer wanted: its progress goes.
            self.measuring.set(None);
            let Some(wanted) = wanted else { return };
            if self.effects.with_untracked(|e| e.as_ref().is_some_and(|e| e.objective == wanted)) {
                return;
            }
            let (Some(run), Some(runner)) = (self.run.get_untracked(), self.runner()) else { return };
            let budget = if self.budgeted.get_untracked() { Budget::Whole(BUDGET_MS) } else { Budget::Unlimited };
            spawn_local(async move {
                let still_wanted = move || generation.get_value() == mine;
                let progress = move |done, total| {
                    if still_wanted() {
                        self.measuring.set(Some((done, total)));
                    }
                };
                let nodes = candidates_in(&run.summaries, wanted.position);
                let result = measure(&runner, (&run.tokens, &run.logits), nodes, wanted, budget, &progress, &still_wanted).await;
                if !still_wanted() {
                    return;
                }
                self.measuring.set(None);
                match result {
                    Ok(Some(Measured::Done(measured))) => self.effects.set(Some(Arc::new(measured))),
                    Ok(Some(Measured::OverBudget { seconds, nodes, .. })) => {
                        self.ranking_note.set(Some(format!(
                            "Ranked by activation: measuring the effect of all {nodes} nodes would take about {} here. Choose \"measured effect\" to measure anyway.",
                            duration(seconds)
                        )));
                        self.view.update(|v| v.ranking = Ranking::Activation);
                    }
                    Ok(None) => {}
                    Err(message) => self.error.set(Some(message)),
                }
            });
        });
    }
}

/// An objective as the page's data attributes name it, e.g. `58-12@28`
/// (tests wait on them).
fn objective_key(o: &Objective) -> String {
    format!("{}{}@{}", o.target, o.contrast.map(|c| format!("-{c}")).unwrap_or_default(), o.position)
}

/// A rough duration for people: "40 s", "12 min", "3.5 h".
pub(super) fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

/// Rank by effect or activation; the output effects are measured on: a
/// token's logit, or its difference to another token's, picked from the top
/// predictions at the selected position.
#[component]
pub fn RankingControls() -> impl IntoView {
    let page = use_page();
    let (effects, note, predictions) = (page.effects, page.ranking_note, page.clean_top);
    // What the effects shown were measured on, e.g. `58-12@28`, for tests to wait on.
    let measured = move || effects.with(|e| e.as_ref().map(|e| objective_key(&e.objective)));
    // The top predictions, and the chosen token too when it is not among them
    // (a task's answers need not be).
    let options = move |chosen: Option<u32>| {
        let tokenizer = page.tokenizer();
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
    let ranking = page.ranking;
    let on_output = move || ranking.get() != Ranking::Activation;
    // What the attributions shown were computed for, as `data-measured`.
    let attributed = move || {
        page.attributed.with(|a| a.as_ref().filter(|_| page.attribution_shown()).map(|a| objective_key(&a.objective)))
    };
    let confirmed = move || page.confirmed_now().map(|c| objective_key(&c.objective));
    let target = move || page.view.with(|v| v.target).or_else(|| predictions.with(|p| p.first().map(|p| p.token)));
    let contrast = move || page.view.with(|v| v.contrast);
    view! {
        <div class="ranking" data-testid="ranking" data-measured=measured data-attributed=attributed data-confirmed=confirmed style:display=move || if predictions.with(Vec::is_empty) { "none" } else { "flex" }>
            <label>
                "Rank nodes by "
                <select
                    data-testid="rank-by"
                    on:change=move |ev| {
                        let ranking = match event_target_value(&ev).as_str() {
                            "attribution" => Ranking::Attribution,
                            "effect" => Ranking::Effect,
                            _ => Ranking::Activation,
                        };
                        // Asked for again after a note that it would be slow: measure anyway.
                        page.budgeted.set(!(ranking == Ranking::Effect && note.get_untracked().is_some()));
                        note.set(None);
                        page.view.update(|v| v.ranking = ranking);
                    }
                >
                    <option value="attribution" selected=move || ranking.get() == Ranking::Attribution>"attribution (estimated effect) on"</option>
                    <option value="effect" selected=move || ranking.get() == Ranking::Effect>"measured effect on"</option>
                    <option value="activation" selected=move || ranking.get() == Ranking::Activation>"|activation| (no output)"</option>
                </select>
            </label>
            <span class="objective" style:visibility=move || if on_output() { "visible" } else { "hidden" }>
                <label>
                    " the logit of "
                    <select data-testid="target-token" on:change=move |ev| page.view.update(|v| v.target = parse(event_target_value(&ev)))>
                        {move || options(target())}
                    </select>
                </label>
                <label>
                    " minus "
                    <select data-testid="contrast-token" on:change=move |ev| page.view.update(|v| v.contrast = parse(event_target_value(&ev)))>
                        <option value="" selected=move || contrast().is_none()>"nothing"</option>
                        {move || options(contrast())}
                    </select>
                </label>
            </span>
            {move || note.get().map(|text| view! { <span class="hint" data-testid="ranking-note">{text}</span> })}
            <AttributionAgreement />
            {move || {
                page.measuring.get().map(|(done, total)| {
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
pub fn ObjectiveChange() -> impl IntoView {
    let page = use_page();
    move || {
        let objective = page.objective.get()?;
        let clean_value = objective.of(page.run.with(|r| r.as_ref().map(|r| r.logits.clone()))?.as_ref());
        let tokenizer = page.tokenizer();
        let name = |t: u32| format!("logit({})", token_text(tokenizer.as_deref(), t));
        let what = match objective.contrast {
            Some(c) => format!("{} - {}", name(objective.target), name(c)),
            None => name(objective.target),
        };
        let ablated = page.ablated.get();
        let after = ablated.as_ref().map(|a| (a.ablations.len(), objective.of(&a.logits)));
        let text = match after {
            Some((n, value)) => format!(
                "{what} at position {}: {clean_value:.3} clean, {value:.3} with {n} node(s) ablated ({:+.3})",
                objective.position,
                value - clean_value
            ),
            None => format!("{what} at position {}: {clean_value:.3}", objective.position),
        };
        Some(view! {
            <p class="objective-change" data-testid="objective-change" data-clean=clean_value data-ablated=after.map(|(_, v)| v)>
                {text}
            </p>
        })
    }
}
