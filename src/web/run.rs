//! Runs in the page: a prompt (typed, a task's, a link's or a tour step's)
//! with every layer shown as it arrives, its values at the position shown
//! read back for the graph, and the same prompt again with the view's
//! ablations whenever they change. Every pass goes through the runner.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::page::{Ablated, Page, Run, RunAt};
use super::summary::{encode_prompt, layer_summary};
use crate::circuits::{AblationKind, LoadedCircuit, Node, View, ViewLink};
use crate::model::{Intervention, Model, Record, Site, Summaries, Tokenizer};
use crate::runner::Runner;

impl Page {
    /// Runs `text` on the model shown, then shows `then` on the run (a
    /// link's view) or the view with what referred to the last prompt cleared.
    pub fn run_prompt(self, text: String, then: Option<View>) {
        let (Some(model), Some(runner)) = (self.model(), self.runner()) else { return };
        if self.running.get_untracked() {
            return;
        }
        self.run.set(None);
        self.at.set(None);
        self.layers.set(Vec::new());
        self.effects.set(None);
        self.attributed.set(None);
        self.confirmed.set(None);
        self.circuits.with_untracked(|circuits| self.view.update(|v| v.new_run(circuits)));
        let tokens = match encode_prompt(&model, self.tokenizer().as_deref(), &text) {
            Ok(tokens) => tokens,
            Err(message) => return self.error.set(Some(message)),
        };
        self.error.set(None);
        self.prompt.set(text.clone());
        self.running.set(true);
        spawn_local(async move {
            let layers = self.layers;
            let n_layer = model.config.n_layer;
            let on_layer = &mut |layer: usize, sites: &Summaries| {
                if layer < n_layer {
                    layers.update(|rows| {
                        rows.retain(|row| row.layer < layer);
                        rows.push(layer_summary(layer, sites));
                    })
                }
            };
            let outcome = async {
                let (logits, kept, summaries) = runner.run_kept(&tokens, on_layer).await?;
                let run = Arc::new(Run { prompt: text, tokens, logits: Arc::new(logits), kept, summaries: Arc::new(summaries) });
                // The graph comes with the run: its position's values first.
                let position = match &then {
                    Some(view) => view.at(run.tokens.len()),
                    None => self.view.with_untracked(|v| v.at(run.tokens.len())),
                };
                let at = read_at(&runner, &run, position).await?;
                self.at.set(Some(Arc::new(at)));
                // The view before the run: effects are measured for the view's output.
                if let Some(view) = then {
                    self.view.set(view);
                }
                self.run.set(Some(run));
                Ok::<_, String>(())
            };
            if let Err(message) = outcome.await {
                self.error.set(Some(message));
            }
            self.running.set(false);
            self.runs.update(|n| *n += 1);
        });
    }

    /// Reads the run's values at the position shown whenever it changes
    /// (the graph draws them); a newer position makes an older read give up.
    pub fn read_position_on_change(self) {
        Effect::new(move |_| {
            let (Some(run), position) = (self.run.get(), self.position.get()) else { return };
            if self.at.with_untracked(|a| a.as_ref().is_some_and(|a| Arc::ptr_eq(&a.run, &run) && a.position == position)) {
                return;
            }
            let Some(runner) = self.runner() else { return };
            spawn_local(async move {
                let outcome = read_at(&runner, &run, position).await;
                let current = self.position.get_untracked() == position && self.run.with_untracked(|r| r.as_ref().is_some_and(|r| Arc::ptr_eq(r, &run)));
                match outcome {
                    Ok(at) if current => self.at.set(Some(Arc::new(at))),
                    Ok(_) => {}
                    Err(message) => self.error.set(Some(message)),
                }
            });
        });
    }

    /// Shows a link's view on the model shown (a tour's step): at once when
    /// its prompt is the one run, else after running it.
    pub fn show_view(self, link: ViewLink) {
        let Some(model) = self.model() else { return };
        if let Err(message) = self.circuits.with_untracked(|c| check_link(&link, &model, self.tokenizer().as_deref(), c)) {
            return self.error.set(Some(message));
        }
        let same_prompt = self.run.with_untracked(|r| r.as_ref().is_some_and(|r| r.prompt == link.prompt));
        if same_prompt {
            // Without a position of its own, the view stays at the token shown.
            let mut view = link.view;
            view.position = view.position.or_else(|| self.view.with_untracked(|v| v.position));
            self.view.set(view);
        } else {
            self.run_prompt(link.prompt, Some(link.view));
        }
    }

    /// Re-runs the prompt with the view's ablations (each node zeroed, or
    /// set to its mean, at every position) whenever they or the run change;
    /// mean ablations wait for the means.
    pub fn rerun_ablations_on_change(self) {
        Effect::new(move |_| {
            let ablations = self.ablations.get();
            let (Some(run), Some(runner), false) = (self.run.get(), self.runner(), ablations.is_empty()) else {
                return self.ablated.set(None);
            };
            // The means only matter (and are only tracked) for mean ablations.
            let needs_means = ablations.iter().any(|(_, kind)| *kind == AblationKind::Mean);
            let means = if needs_means { self.means.get() } else { None };
            let interventions: Option<Vec<Intervention>> = ablations
                .iter()
                .map(|&(node, kind)| match kind {
                    AblationKind::Zero => Some(node.zero_ablation()),
                    AblationKind::Mean => means.as_ref()?.ablation(node),
                })
                .collect();
            // Mean ablations wait for the means: this runs again when they come.
            let Some(interventions) = interventions else { return self.ablated.set(None) };
            self.running.set(true);
            spawn_local(async move {
                let result = runner.run(&run.tokens, &interventions, &Record::LogitsOnly, &mut |_, _| {}).await;
                let current = self.ablations.get_untracked() == ablations
                    && self.run.with_untracked(|r| r.as_ref().is_some_and(|r| Arc::ptr_eq(r, &run)));
                match result {
                    Ok((logits, _)) if current => self.ablated.set(Some(Arc::new(Ablated { ablations, logits }))),
                    Ok(_) => {}
                    Err(message) => self.error.set(Some(message)),
                }
                self.running.set(false);
            });
        });
    }
}

/// Whether all of `link` fits `model`, its `circuits` and its own prompt
/// ([`ViewLink::check`]); what is wrong with the view first, then with
/// the prompt.
pub(super) fn check_link(link: &ViewLink, model: &Model, tokenizer: Option<&Tokenizer>, circuits: &[Arc<LoadedCircuit>]) -> Result<(), String> {
    let tokens = encode_prompt(model, tokenizer, &link.prompt);
    let seq_len = tokens.as_ref().map_or(usize::MAX, Vec::len);
    link.check(model, seq_len, circuits).map_err(|e| e.to_string())?;
    tokens.map(|_| ())
}

/// Every node site's values of `run` at `position` (`[1, width]` each).
async fn read_at(runner: &Runner, run: &Arc<Run>, position: usize) -> Result<RunAt, String> {
    let wanted: Vec<(Site, std::ops::Range<usize>)> =
        run.summaries.iter().filter(|(site, _)| Node::is_node_site(*site)).map(|(site, _)| (*site, position..position + 1)).collect();
    let sites = runner.read_kept(&run.kept, &wanted).await?;
    Ok(RunAt { run: run.clone(), position, sites })
}
