//! The Leptos page: open a model, run prompts through it on the GPU
//! (WebGPU) or the CPU with every layer shown as it is computed, and look
//! at its circuits. A workspace: the prompt, the graph and the inspector of
//! the selected node side by side; models, tasks, tours and export in a side
//! bar.
//!
//! - `page.rs`: the state, as plain data in signals ([`page::Page`]).
//! - `open.rs`, `run.rs`, `effects.rs`, `circuits.rs`: what the page does
//!   (open a model; run prompts, ablations and links; rank by effect; find
//!   circuits), each through the runner (`crate::runner`).
//! - The rest are components, each reading the state from context.

mod attribution;
mod blocks;
mod circuits;
mod components;
mod distribution;
mod effects;
mod examples;
mod export;
mod graph_canvas;
mod graph_paint;
mod inspector;
mod link;
mod load;
mod open;
mod page;
mod release;
mod release_panel;
mod run;
mod summary;
mod tour;

use leptos::prelude::*;

use circuits::TaskTable;
use components::{files_of, AblationList, BackendStatus, ErrorBanner, LayerTable, ModelPicker, ModelStatus, Predictions, PromptForm, TokenStrip};
use effects::{ObjectiveChange, RankingControls};
use examples::ExamplesPanel;
use export::ExportBar;
use blocks::BlockDeltasView;
use graph_canvas::{CircuitCanvas, NodeTable};
use inspector::NodeInspector;
use link::{LinkBar, LinkedModelPrompt};
use open::Source;
use page::{use_page, Page};
use tour::{TourList, TourPanel};

pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let page = Page::new();
    provide_context(page);
    page.read_position_on_change();
    page.inspect_on_change();
    page.examples_on_change();
    page.distributions_on_change();
    page.block_deltas_on_change();
    page.rerun_ablations_on_change();
    page.measure_effects_on_change();
    page.attribute_on_change();
    page.start();
    view! {
        <header class="topbar">
            <h1 title="Inside a weight-sparse transformer, in your browser">"circuitscope"</h1>
            <ModelStatus />
            <BackendStatus />
            <LinkBar />
        </header>
        <Workspace />
        <TourPanel />
    }
}

/// The side bar, the prompt with the graph, and the inspector; models or
/// files dropped anywhere on it open.
#[component]
fn Workspace() -> impl IntoView {
    let page = use_page();
    view! {
        <main
            class="workspace"
            data-runs=move || page.runs.get()
            data-link=move || page.link().unwrap_or_default()
            on:dragover=move |ev: web_sys::DragEvent| ev.prevent_default()
            on:drop=move |ev: web_sys::DragEvent| {
                ev.prevent_default();
                let files = files_of(ev.data_transfer().and_then(|d| d.files()));
                if !files.is_empty() && !untrack(|| page.busy()) {
                    page.open(Source::Files(files));
                }
            }
        >
            <aside class="sidebar" aria-label="Models, tasks, tours and export">
                <ModelPicker />
                <release_panel::ReleasePanel />
                <TaskTable />
                <TourList />
                <ExportBar />
                <ExamplesPanel />
                <details class="layers-panel">
                    <summary>"Activation size per layer"</summary>
                    <LayerTable />
                </details>
            </aside>
            <section class="center" aria-label="Prompt and circuit">
                <LinkedModelPrompt />
                <ErrorBanner />
                <PromptForm />
                <TokenStrip />
                <RankingControls />
                <CircuitCanvas />
                <BlockDeltasView />
                <NodeTable />
            </section>
            <section class="side" aria-label="Predictions and the selected node">
                <Predictions />
                <ObjectiveChange />
                <AblationList />
                <NodeInspector />
            </section>
        </main>
    }
}
