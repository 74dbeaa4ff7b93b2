use std::sync::Arc;

use leptos::prelude::*;

use super::summary::LayerSummary;
use super::Backend;
use crate::circuits::Node;
use crate::model::{Model, Prediction};

#[component]
pub fn ModelStatus(model: RwSignal<Option<Arc<Model>>>) -> impl IntoView {
    move || match model.get() {
        None => view! { <p class="status" data-testid="model-status">"Loading the model..."</p> }.into_any(),
        Some(m) => {
            let c = &m.config;
            let nnz: usize = m.weight_stats().iter().map(|s| s.nnz).sum();
            let text = format!(
                "Model: {} layers, d_model {}, {} heads, vocab {}; {} nonzero weights.",
                c.n_layer, c.d_model, c.n_head, c.vocab_size, nnz
            );
            view! { <p class="status" data-testid="model-status" data-ready="true">{text}</p> }.into_any()
        }
    }
}

#[component]
pub fn BackendStatus(backend: RwSignal<Backend>) -> impl IntoView {
    move || {
        let (kind, text) = match backend.get() {
            Backend::Probing => ("probing", "Looking for a WebGPU adapter...".to_string()),
            Backend::Gpu(adapter) => ("gpu", format!("Runs on the GPU through WebGPU: {adapter}.")),
            Backend::Cpu(reason) => ("cpu", format!("Runs on the CPU (WebAssembly): {reason}.")),
        };
        view! { <p class=format!("status backend-{kind}") data-testid="backend" data-backend=kind>{text}</p> }
    }
}

#[component]
pub fn ErrorBanner(error: RwSignal<Option<String>>) -> impl IntoView {
    move || {
        error.get().map(|message| {
            view! { <div class="error-banner" role="alert" data-testid="error-banner">{message}</div> }
        })
    }
}

/// Token ids in, a run out. Enter in the field runs too.
#[component]
pub fn TokenForm(ready: Signal<bool>, on_run: impl Fn(String) + Copy + 'static) -> impl IntoView {
    let text = RwSignal::new(String::new());
    view! {
        <form class="token-form" on:submit=move |ev| {
            ev.prevent_default();
            on_run(text.get_untracked());
        }>
            <label for="tokens">"Token ids"</label>
            <input
                id="tokens"
                data-testid="token-input"
                placeholder="e.g. 88, 58, 30, 80"
                autocomplete="off"
                prop:value=text
                on:input=move |ev| text.set(event_target_value(&ev))
            />
            <button type="submit" data-testid="run-button" disabled=move || !ready.get()>
                "Run"
            </button>
        </form>
    }
}

/// The next-token predictions; with ablations, each next to its clean probability.
#[component]
pub fn Predictions(
    predictions: Signal<Vec<Prediction>>,
    clean: Signal<Vec<Prediction>>,
    ablations: RwSignal<usize>,
) -> impl IntoView {
    move || {
        let rows = predictions.get();
        let n_ablated = ablations.get();
        (!rows.is_empty()).then(|| {
            let items = rows
                .into_iter()
                .map(|p| {
                    let before = (n_ablated > 0)
                        .then(|| clean.with(|c| c.iter().find(|q| q.token == p.token).map(|q| q.prob)))
                        .map(|prob| match prob {
                            Some(prob) => format!("clean {:.1}%", 100.0 * prob),
                            None => "clean: not in the top 5".to_string(),
                        });
                    view! {
                        <li data-testid="prediction" data-token=p.token>
                            <span class="token">{format!("token {}", p.token)}</span>
                            <span class="bar" style=format!("width: {:.1}%", 100.0 * p.prob)></span>
                            <span class="prob">{format!("{:.1}%", 100.0 * p.prob)}</span>
                            <span class="clean">{before}</span>
                        </li>
                    }
                })
                .collect_view();
            let title = match n_ablated {
                0 => "Next token".to_string(),
                n => format!("Next token with {n} node(s) ablated"),
            };
            view! {
                <section>
                    <h2>{title}</h2>
                    <ol class="predictions">{items}</ol>
                </section>
            }
        })
    }
}

/// The run's tokens; clicking one shows the predictions and circuit there.
#[component]
pub fn TokenStrip(
    tokens: RwSignal<Vec<u32>>,
    position: RwSignal<usize>,
    on_select: impl Fn(usize) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    move || {
        let tokens = tokens.get();
        (!tokens.is_empty()).then(|| {
            let chips = tokens
                .into_iter()
                .enumerate()
                .map(|(i, id)| {
                    view! {
                        <button
                            class="token-chip"
                            class:selected=move || position.get() == i
                            data-testid="token"
                            data-position=i
                            title=format!("position {i}")
                            on:click=move |_| {
                                position.set(i);
                                on_select(i);
                            }
                        >
                            {id}
                        </button>
                    }
                })
                .collect_view();
            view! {
                <section class="token-strip">
                    <h3>{move || format!("Tokens (showing position {})", position.get())}</h3>
                    <div>{chips}</div>
                </section>
            }
        })
    }
}

/// The ablated nodes, with one button to clear them all.
#[component]
pub fn AblationList(
    ablated: RwSignal<Vec<Node>>,
    model: RwSignal<Option<Arc<Model>>>,
    on_clear: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    move || {
        let nodes = ablated.get();
        let config = model.with(|m| m.as_ref().map(|m| m.config.clone()))?;
        (!nodes.is_empty()).then(|| {
            let items = nodes.iter().map(|n| view! { <li>{n.label(&config)}</li> }).collect_view();
            view! {
                <section class="ablations" data-testid="ablation-list">
                    <h3>"Zero-ablated at every position"</h3>
                    <ul>{items}</ul>
                    <button data-testid="clear-ablations" on:click=move |_| on_clear()>"Clear all"</button>
                </section>
            }
        })
    }
}

/// One row per layer, added as each layer arrives: the root-mean-square of
/// every recorded site, drawn as bars on one scale so layers compare at a glance.
#[component]
pub fn LayerTable(layers: RwSignal<Vec<LayerSummary>>) -> impl IntoView {
    move || {
        let layers = layers.get();
        let first = layers.first()?;
        let max = layers.iter().flat_map(|l| l.site_norms.iter().map(|(_, n)| *n)).fold(f32::MIN_POSITIVE, f32::max);
        let header = first.site_norms.iter().map(|(name, _)| view! { <th>{name.clone()}</th> }).collect_view();
        let rows = layers
            .into_iter()
            .map(|layer| {
                let cells = layer
                    .site_norms
                    .into_iter()
                    .map(|(name, norm)| {
                        view! {
                            <td title=format!("{}.{name}: rms {norm:.4}", layer.layer)>
                                <div class="cell-bar" style=format!("width: {:.1}%", 100.0 * norm / max)></div>
                                <span>{format!("{norm:.3}")}</span>
                            </td>
                        }
                    })
                    .collect_view();
                view! { <tr data-testid="layer-row" data-layer=layer.layer><th>{format!("layer {}", layer.layer)}</th>{cells}</tr> }
            })
            .collect_view();
        Some(view! {
            <section>
                <h2>"Activation size per site (root mean square)"</h2>
                <table class="layers"><thead><tr><th></th>{header}</tr></thead><tbody>{rows}</tbody></table>
            </section>
        })
    }
}
