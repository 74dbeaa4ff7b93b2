//! Ranking nodes by attribution (docs/attribution.md): one backward pass
//! through the runner estimates every candidate's effect on the chosen
//! output, the graph shows the largest, and then the shown nodes are ablated
//! one at a time to confirm them, with how well the two agreed.

use std::collections::HashMap;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::effects::{duration, measure, Budget, Measured};
use super::page::{use_page, Attributed, Confirmed, Page, Run};
use crate::circuits::{agreement, AblationKind, Attribution, Node, Objective, Ranking};
use crate::runner::Runner;

/// Confirming the shown nodes stops when the rest is estimated to take
/// longer (at the released shape on a software adapter, hundreds of
/// ablations of a long prompt take minutes).
const CONFIRM_BUDGET_MS: f64 = 20_000.0;

impl Page {
    /// (Re)attributes whenever the run, position or output changes while the
    /// graph is ranked by attribution, then confirms the shown nodes; a newer
    /// request makes an older one give up.
    pub fn attribute_on_change(self) {
        let generation = StoredValue::new(0u64);
        Effect::new(move |_| {
            // A new run, even with the same objective, is attributed anew.
            self.run.track();
            let wanted = self.objective.get().filter(|_| self.ranking.get() == Ranking::Attribution);
            generation.update_value(|g| *g += 1);
            let mine = generation.get_value();
            // Whatever was under way is no longer wanted; a newer request says otherwise.
            self.attributing.set(false);
            self.measuring.set(None);
            let Some(wanted) = wanted else { return };
            let (Some(run), Some(runner)) = (self.run.get_untracked(), self.runner()) else { return };
            let done = |objective: Option<Objective>| objective == Some(wanted);
            let attributed = self.attributed.with_untracked(|a| a.as_ref().filter(|a| Arc::ptr_eq(&a.run, &run)).map(|a| a.objective));
            if done(attributed) && done(self.confirmed.with_untracked(|c| c.as_ref().map(|c| c.objective))) {
                return;
            }
            self.attributing.set(true);
            spawn_local(async move {
                let still_wanted = move || generation.get_value() == mine;
                let outcome = self.attribute_and_confirm(&runner, &run, wanted, &still_wanted).await;
                if still_wanted() {
                    self.attributing.set(false);
                    if let Err(message) = outcome {
                        self.error.set(Some(message));
                    }
                }
            });
        });
    }

    /// The backward pass of the page's run (its forward pass is not made
    /// again), every candidate's attribution, then the shown nodes measured.
    async fn attribute_and_confirm(self, runner: &Runner, run: &Arc<Run>, objective: Objective, still_wanted: &dyn Fn() -> bool) -> Result<(), String> {
        let tokens = &run.tokens;
        let gradients = runner.gradients_of_kept(&run.kept, &run.logits, &objective.differentiated()).await?;
        let attribution = Attribution::of(gradients, &objective, AblationKind::Zero, None).map_err(|e| e.to_string())?;
        if !still_wanted() {
            return Ok(());
        }
        let values: Vec<(Node, f32)> = attribution.nodes.iter().copied().zip(attribution.scores.iter().copied()).collect();
        let logits = attribution.run.logits.clone();
        let scores: HashMap<Node, f32> = values.iter().copied().collect();
        // A drawn circuit may show nodes that are no candidates here (zero up to the position).
        let score = |node: &Node| scores.get(node).copied().unwrap_or(0.0);
        self.attributed.set(Some(Arc::new(Attributed { run: run.clone(), objective, values, attribution })));
        // The graph now shows the nodes of largest attribution: measure them,
        // largest first, as far as the budget goes.
        let mut shown: Vec<Node> = self.graph.with_untracked(|g| g.as_ref().map(|g| g.nodes.iter().map(|n| n.node).collect()).unwrap_or_default());
        shown.sort_by(|a, b| score(b).abs().total_cmp(&score(a).abs()).then(a.cmp(b)));
        let total = shown.len();
        let progress = |done, total| {
            if still_wanted() {
                self.measuring.set(Some((done, total)));
            }
        };
        let measured = measure(runner, (tokens, &logits), shown, objective, Budget::AsFarAs(CONFIRM_BUDGET_MS), &progress, still_wanted).await;
        if !still_wanted() {
            return Ok(());
        }
        self.measuring.set(None);
        let (values, left) = match measured? {
            Some(Measured::Done(effects)) => (effects.values, None),
            Some(Measured::OverBudget { seconds, partial, .. }) => (partial, Some(seconds)),
            None => return Ok(()),
        };
        let estimated: Vec<f32> = values.iter().map(|(n, _)| score(n)).collect();
        let effects: Vec<f32> = values.iter().map(|(_, e)| *e).collect();
        let agreed = agreement(&estimated, &effects, (values.len() / 2).clamp(1, 10));
        self.confirmed.set(Some(Arc::new(Confirmed { objective, values, of: total, rest_seconds: left, agreement: agreed })));
        Ok(())
    }

    /// The shown nodes' measured effects, when confirmed for the output chosen.
    pub fn confirmed_now(&self) -> Option<Arc<Confirmed>> {
        let objective = self.objective.get();
        self.confirmed.get().filter(|c| Some(c.objective) == objective)
    }

    /// A shown node's measured effect, once confirmed.
    pub fn measured_effect(&self, node: Node) -> Option<f32> {
        self.confirmed_now()?.values.iter().find(|(n, _)| *n == node).map(|(_, e)| *e)
    }
}

/// How well attribution agreed with the measured effects of the shown
/// nodes, once they are measured; progress until then.
#[component]
pub fn AttributionAgreement() -> impl IntoView {
    let page = use_page();
    move || {
        if page.ranking.get() != Ranking::Attribution {
            return None;
        }
        if page.attributing.get() {
            let what = if page.attribution_shown() { "measuring the shown nodes to confirm them" } else { "attributing" };
            return Some(view! { <span class="measuring" data-testid="attribution-progress">{format!(" {what}...")}</span> }.into_any());
        }
        let confirmed = page.confirmed_now()?;
        let a = confirmed.agreement;
        let kept = (a.top_overlap * a.top as f64).round() as usize;
        let measured = match confirmed.rest_seconds {
            None => format!("the {} shown nodes measured", confirmed.values.len()),
            Some(seconds) => format!(
                "the {} shown nodes of largest attribution measured, of {} (the rest would take about {})",
                confirmed.values.len(),
                confirmed.of,
                duration(seconds)
            ),
        };
        let text = match confirmed.values.len() {
            // Too few to rank.
            0..=2 => format!("Confirmed by ablation: {measured}."),
            _ => format!(
                "Confirmed by ablation: {measured}; Spearman {:.2} between |attribution| and |measured effect|, \
                 {kept} of the {} largest measured among the {} largest attributed.",
                a.spearman, a.top, a.top
            ),
        };
        Some(view! { <span class="hint" data-testid="agreement" data-spearman=a.spearman data-overlap=a.top_overlap>{text}</span> }.into_any())
    }
}
