//! The drawn circuit's block deltas (`circuits::block_deltas`): its task
//! loss with each layer block's circuit nodes mean-ablated as well, less
//! its own, over the same held-out examples as `circuitscope circuit-eval`;
//! drawn over each block's columns of the graph and listed under it.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::page::{use_page, Page};
use super::distribution::{of_all, within_budget};
use crate::circuits::{block_deltas, BlockReport, Choice, LoadedCircuit, BlockDelta, HELD_OUT_SEED};
use crate::platform::{now_ms, sleep};
use crate::tasks::Task;

/// Held-out examples the deltas are over (`circuit-eval`'s default).
const EXAMPLES: usize = 200;

/// Where the drawn circuit's block deltas are.
#[derive(Clone, Default)]
pub enum BlockDeltas {
    #[default]
    None,
    /// Examples done, of all.
    Computing(Arc<LoadedCircuit>, usize, usize),
    Ready { circuit: Arc<LoadedCircuit>, report: BlockReport },
    Failed(Arc<LoadedCircuit>, String),
}

impl BlockDeltas {
    fn of(&self) -> Option<&Arc<LoadedCircuit>> {
        match self {
            BlockDeltas::None => None,
            BlockDeltas::Computing(c, ..) | BlockDeltas::Ready { circuit: c, .. } | BlockDeltas::Failed(c, _) => Some(c),
        }
    }

    /// The deltas, when they are the drawn circuit's.
    pub fn ready_for(&self, drawn: &Arc<LoadedCircuit>) -> Option<&[BlockDelta]> {
        match self {
            BlockDeltas::Ready { circuit, report } if Arc::ptr_eq(circuit, drawn) => Some(&report.deltas),
            _ => None,
        }
    }
}

impl Page {
    /// Measures the drawn circuit's block deltas once it is drawn and the
    /// mean activations are in.
    pub fn block_deltas_on_change(self) {
        Effect::new(move |_| {
            let (Some(circuit), Some(means)) = (self.drawn.get(), self.means.get()) else { return };
            if self.block_deltas.with_untracked(|b| b.of().is_some_and(|c| Arc::ptr_eq(c, &circuit))) {
                return;
            }
            let (Some(tokenizer), Some(runner)) = (self.tokenizer(), self.runner()) else { return };
            let Some(task) = Task::parse(&circuit.file.task) else { return };
            self.block_deltas.set(BlockDeltas::Computing(circuit.clone(), 0, EXAMPLES));
            spawn_local(async move {
                while self.running.get_untracked() {
                    sleep(50).await;
                }
                let current = || self.block_deltas.with_untracked(|b| matches!(b, BlockDeltas::Computing(c, ..) if Arc::ptr_eq(c, &circuit)));
                let started = now_ms();
                let mut progress = |done: usize, of: usize| {
                    if current() {
                        self.block_deltas.set(BlockDeltas::Computing(circuit.clone(), done, of));
                    }
                    current() && within_budget(started, done)
                };
                let outcome = match Choice::of_task(task, &tokenizer, HELD_OUT_SEED, EXAMPLES) {
                    Ok(choices) => block_deltas(&runner, &choices, &means, &circuit.nodes, &mut progress).await,
                    Err(message) => Err(message),
                };
                if current() {
                    self.block_deltas.set(match outcome {
                        Ok(report) => BlockDeltas::Ready { circuit, report },
                        Err(message) => BlockDeltas::Failed(circuit, message),
                    });
                }
            });
        });
    }
}

/// Under the graph: each block's delta, for the drawn circuit.
#[component]
pub fn BlockDeltasView() -> impl IntoView {
    let page = use_page();
    move || {
        let drawn = page.drawn.get()?;
        let shown = page.block_deltas.with(|b| match b {
            BlockDeltas::Ready { circuit, report } if Arc::ptr_eq(circuit, &drawn) => {
                let items = report
                    .deltas
                    .iter()
                    .map(|d| {
                        view! {
                            <li data-testid="block-delta" data-block=d.block.name() data-delta=d.delta data-nodes=d.nodes>
                                {format!("{}: {} nodes, loss {:.3} ({:+.3}), accuracy {:.1}%", d.block.name(), d.nodes, d.loss.loss, d.delta, 100.0 * d.loss.accuracy)}
                            </li>
                        }
                    })
                    .collect_view();
                let fewer = of_all(report.examples, EXAMPLES);
                view! {
                    <p class="hint" data-testid="block-examples" data-examples=report.examples>{format!(
                        "Each block's share: the circuit's task loss over {}{fewer} held-out examples ({:.3} with only the circuit kept) when that block's circuit nodes are mean-ablated too. Drawn over each block's columns.",
                        report.examples, report.own.loss
                    )}</p>
                    <ul class="block-deltas" data-testid="block-deltas">{items}</ul>
                }
                .into_any()
            }
            BlockDeltas::Failed(circuit, message) if Arc::ptr_eq(circuit, &drawn) => view! { <p class="hint">{format!("No block deltas: {message}")}</p> }.into_any(),
            _ if page.means.with(Option::is_none) => view! { <p class="hint">"Block deltas need the mean activations (the model's samples.json)."</p> }.into_any(),
            BlockDeltas::Computing(circuit, done, of) if Arc::ptr_eq(circuit, &drawn) => view! {
                <p class="status loading" data-testid="block-progress">
                    <progress max=(*of).max(1) value=*done></progress>
                    {format!(" Measuring each block's share of the circuit: {done} of {of} examples")}
                </p>
            }
            .into_any(),
            _ => view! { <p class="status loading">"Measuring each block's share of the circuit..."</p> }.into_any(),
        });
        Some(view! { <section class="blocks"><h3>"Blocks"</h3>{shown}</section> })
    }
}
