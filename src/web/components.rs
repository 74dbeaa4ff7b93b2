use std::sync::Arc;

use leptos::prelude::*;

use super::load::{BundledModel, LoadProgress};
use super::summary::{token_text, LayerSummary, ModelFacts};
use super::{AblationKind, Backend};
use crate::circuits::Node;
use crate::model::{Model, Prediction, Tokenizer};

/// The loaded model: where from, its shape, size and density; the load in progress.
#[component]
pub fn ModelStatus(facts: RwSignal<Option<ModelFacts>>, loading: RwSignal<LoadProgress>) -> impl IntoView {
    let progress = move || {
        let text = match loading.get() {
            LoadProgress::Idle => return None,
            LoadProgress::Reading { file, done, total: Some(total) } => {
                format!("Reading {file}: {} of {} KB", done / 1024, total / 1024)
            }
            LoadProgress::Reading { file, done, total: None } => format!("Reading {file}: {} KB", done / 1024),
            LoadProgress::Converting { file, done, total } => format!("Converting {file}: tensor {done} of {total}"),
            LoadProgress::Uploading => "Uploading the weights to the GPU...".to_string(),
        };
        Some(view! { <p class="status loading" data-testid="load-progress">{text}</p> })
    };
    view! {
        {move || match facts.get() {
            None => view! { <p class="status" data-testid="model-status">"Loading the model..."</p> }.into_any(),
            Some(f) => view! {
                <p class="status" data-testid="model-status" data-ready="true" data-source=f.source.clone()>
                    <strong>{f.source.clone()}</strong>": "{f.summary.clone()}
                </p>
            }
            .into_any(),
        }}
        {progress}
    }
}

/// Choose a model: a bundled one, one at a URL, or files picked or dropped
/// anywhere on the page (config .json, .safetensors or a PyTorch .pt, and
/// optionally encoder.json and vocab.bpe).
#[component]
pub fn ModelPicker(
    bundled: RwSignal<Vec<BundledModel>>,
    current: RwSignal<String>,
    busy: Signal<bool>,
    on_bundled: impl Fn(BundledModel) + Copy + 'static,
    on_url: impl Fn(String) + Copy + 'static,
    on_files: impl Fn(Vec<web_sys::File>) + Copy + 'static,
) -> impl IntoView {
    let url = RwSignal::new(String::new());
    let options = move || {
        bundled
            .get()
            .into_iter()
            .map(|m| {
                let selected = current.get() == m.id;
                view! { <option value=m.id.clone() selected=selected title=m.about.clone()>{m.name.clone()}</option> }
            })
            .collect_view()
    };
    let about = move || {
        let id = current.get();
        bundled.with(|list| list.iter().find(|m| m.id == id).map(|m| m.about.clone()))
    };
    view! {
        <section class="model-picker">
            <label>
                "Model "
                <select
                    data-testid="model-picker"
                    disabled=move || busy.get()
                    on:change=move |ev| {
                        let id = event_target_value(&ev);
                        if let Some(m) = bundled.with_untracked(|list| list.iter().find(|m| m.id == id).cloned()) {
                            on_bundled(m);
                        }
                    }
                >
                    {options}
                    <option value="" disabled=true selected=move || !bundled.with(|l| l.iter().any(|m| m.id == current.get()))>
                        "(from a URL or files)"
                    </option>
                </select>
            </label>
            <form class="model-url" on:submit=move |ev| {
                ev.prevent_default();
                on_url(url.get_untracked().trim().to_string());
            }>
                <input
                    data-testid="model-url"
                    placeholder="or a model folder's URL"
                    autocomplete="off"
                    prop:value=url
                    on:input=move |ev| url.set(event_target_value(&ev))
                />
                <button type="submit" data-testid="load-url" disabled=move || busy.get()>"Load"</button>
            </form>
            <label class="model-files" title="config.json (or the release's beeg_config.json), model.safetensors or a PyTorch checkpoint such as final_model.pt, and optionally encoder.json and vocab.bpe">
                "or files: "
                <input
                    type="file"
                    multiple=true
                    data-testid="model-files"
                    disabled=move || busy.get()
                    on:change=move |ev| {
                        let input: web_sys::HtmlInputElement = event_target(&ev);
                        on_files(files_of(input.files()));
                        input.set_value("");
                    }
                />
            </label>
            <p class="hint">{about}</p>
        </section>
    }
}

/// The files of a picker or a drop, as a list.
pub fn files_of(list: Option<web_sys::FileList>) -> Vec<web_sys::File> {
    list.map(|l| (0..l.length()).filter_map(|i| l.get(i)).collect()).unwrap_or_default()
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

/// The prompt in, a run out: text when the model has a tokenizer, token ids
/// otherwise.
#[component]
pub fn PromptForm(
    text: RwSignal<String>,
    has_tokenizer: Signal<bool>,
    ready: Signal<bool>,
    on_run: impl Fn(String) + Copy + 'static,
) -> impl IntoView {
    view! {
        <form class="token-form" on:submit=move |ev| {
            ev.prevent_default();
            on_run(text.get_untracked());
        }>
            <label for="prompt">{move || if has_tokenizer.get() { "Prompt" } else { "Token ids" }}</label>
            // A text area: Python prompts have newlines. Enter runs token
            // ids; text runs with Ctrl+Enter (Enter is a newline there).
            <textarea
                id="prompt"
                data-testid="prompt-input"
                data-mode=move || if has_tokenizer.get() { "text" } else { "ids" }
                rows=move || if has_tokenizer.get() { "4" } else { "2" }
                placeholder=move || if has_tokenizer.get() { "e.g. x = 'hello" } else { "e.g. 88, 58, 30, 80" }
                autocomplete="off"
                spellcheck="false"
                prop:value=text
                on:input=move |ev| text.set(event_target_value(&ev))
                on:keydown=move |ev: web_sys::KeyboardEvent| {
                    let submit = ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key() || !has_tokenizer.get_untracked());
                    if submit {
                        ev.prevent_default();
                        if !ready.get_untracked() {
                            return;
                        }
                        on_run(text.get_untracked());
                    }
                }
            ></textarea>
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
    tokenizer: RwSignal<Option<Arc<Tokenizer>>>,
) -> impl IntoView {
    move || {
        let rows = predictions.get();
        let n_ablated = ablations.get();
        let tokenizer = tokenizer.get();
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
                        <li data-testid="prediction" data-token=p.token data-prob=p.prob>
                            <span class="token" title=format!("id {}", p.token)>{token_text(tokenizer.as_deref(), p.token)}</span>
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
    tokenizer: RwSignal<Option<Arc<Tokenizer>>>,
    position: RwSignal<usize>,
    on_select: impl Fn(usize) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    move || {
        let tokens = tokens.get();
        let tokenizer = tokenizer.get();
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
                            data-token=id
                            title=format!("position {i}, id {id}")
                            on:click=move |_| {
                                position.set(i);
                                on_select(i);
                            }
                        >
                            {token_text(tokenizer.as_deref(), id)}
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
    ablated: RwSignal<Vec<(Node, AblationKind)>>,
    model: RwSignal<Option<Arc<Model>>>,
    on_clear: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    move || {
        let nodes = ablated.get();
        let config = model.with(|m| m.as_ref().map(|m| m.config.clone()))?;
        (!nodes.is_empty()).then(|| {
            let items = nodes
                .iter()
                .map(|(n, kind)| {
                    let how = match kind {
                        AblationKind::Zero => "zero",
                        AblationKind::Mean => "mean",
                    };
                    view! { <li data-kind=how>{format!("{} ({how})", n.label(&config))}</li> }
                })
                .collect_view();
            view! {
                <section class="ablations" data-testid="ablation-list">
                    <h3>"Ablated at every position"</h3>
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
