//! The Leptos page: load the bundled model, run token ids through it, show
//! the next-token predictions and each layer's recorded sites.

mod components;
mod load;
mod summary;

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::model::Model;
use components::{ErrorBanner, LayerTable, Predictions, TokenForm};
use summary::{run_summary, RunSummary};

/// Where Trunk copies `www/models/default`.
const DEFAULT_MODEL_URL: &str = "models/default";

pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let model = RwSignal::new(None::<Arc<Model>>);
    let error = RwSignal::new(None::<String>);
    let summary = RwSignal::new(None::<RunSummary>);

    spawn_local(async move {
        match load::fetch_model(DEFAULT_MODEL_URL).await {
            Ok(loaded) => model.set(Some(Arc::new(loaded))),
            Err(message) => error.set(Some(message)),
        }
    });

    let run = move |text: String| {
        let Some(model) = model.get_untracked() else { return };
        match run_summary(&model, &text) {
            Ok(result) => {
                error.set(None);
                summary.set(Some(result));
            }
            Err(message) => {
                summary.set(None);
                error.set(Some(message));
            }
        }
    };

    view! {
        <header>
            <h1>"circuitscope"</h1>
            <p class="subtitle">"Inside a weight-sparse transformer, in your browser."</p>
        </header>
        <main>
            <ModelStatus model=model />
            <ErrorBanner error=error />
            <TokenForm ready=Signal::derive(move || model.with(Option::is_some)) on_run=run />
            <Show when=move || summary.with(Option::is_some)>
                <Predictions summary=summary />
                <LayerTable summary=summary />
            </Show>
        </main>
    }
}

#[component]
fn ModelStatus(model: RwSignal<Option<Arc<Model>>>) -> impl IntoView {
    move || match model.get() {
        None => view! { <p class="status" data-testid="model-status">"Loading the model..."</p> }.into_any(),
        Some(m) => {
            let c = &m.config;
            let nnz: usize = m.weight_stats().iter().map(|s| s.nnz).sum();
            view! {
                <p class="status" data-testid="model-status" data-ready="true">
                    {format!(
                        "Model: {} layers, d_model {}, {} heads, vocab {}; {} nonzero weights. Runs on the CPU (WebAssembly).",
                        c.n_layer, c.d_model, c.n_head, c.vocab_size, nnz
                    )}
                </p>
            }
            .into_any()
        }
    }
}
