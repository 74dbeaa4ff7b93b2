//! The page's small components: the model picker and status, the prompt,
//! the tokens, the predictions, the ablations and the per-layer sizes. Each
//! reads and changes the page's state ([`use_page`]).

use leptos::prelude::*;

use super::load::LoadProgress;
use super::open::Source;
use super::page::use_page;
use super::summary::token_text;
use crate::circuits::AblationKind;
use crate::runner::Backend;

/// The loaded model: where from, its shape, size and density; the load in progress.
#[component]
pub fn ModelStatus() -> impl IntoView {
    let page = use_page();
    let progress = move || {
        let text = match page.loading.get() {
            LoadProgress::Idle => return None,
            LoadProgress::Reading { file, done, total: Some(total) } => {
                format!("Reading {file}: {} of {} KB", done / 1024, total / 1024)
            }
            LoadProgress::Reading { file, done, total: None } => format!("Reading {file}: {} KB", done / 1024),
            LoadProgress::Converting { file, done, total } => format!("Converting {file}: tensor {done} of {total}"),
            LoadProgress::Fetching { file, bytes, total_bytes, done, total } => format!(
                "Fetching {file} by ranges: {:.1} of {:.1} MB, tensor {done} of {total}",
                bytes as f64 / 1e6,
                total_bytes as f64 / 1e6
            ),
            LoadProgress::Uploading => "Uploading the weights to the GPU...".to_string(),
        };
        Some(view! { <p class="status loading" data-testid="load-progress">{text}</p> })
    };
    view! {
        {move || match page.opened.with(|o| o.as_ref().map(|o| o.facts.clone())) {
            None => view! { <p class="status" data-testid="model-status">"Loading the model..."</p> }.into_any(),
            Some(f) => view! {
                <p class="status" data-testid="model-status" data-ready="true" data-source=f.source.clone()>
                    <strong>{f.source.clone()}</strong>": "{f.summary.clone()}
                </p>
            }
            .into_any(),
        }}
        {progress}
        // Outside the progress line, which is drawn anew at every step: a
        // button drawn anew under the pointer is hard to click.
        <Show when=move || matches!(page.loading.get(), LoadProgress::Fetching { .. })>
            <button type="button" class="load-cancel" data-testid="load-cancel" on:click=move |_| page.cancel_load.set_value(true)>"Cancel"</button>
        </Show>
    }
}

/// Choose a model: a bundled one, one at a URL, or files picked or dropped
/// anywhere on the page (config .json, .safetensors or a PyTorch .pt, and
/// optionally encoder.json and vocab.bpe).
#[component]
pub fn ModelPicker() -> impl IntoView {
    let page = use_page();
    let bundled = page.bundled;
    let current = move || page.opened.with(|o| o.as_ref().map_or_else(String::new, |o| o.bundled_id().to_string()));
    let busy = move || page.busy();
    let url = RwSignal::new(String::new());
    let options = move || {
        bundled
            .get()
            .into_iter()
            .map(|m| {
                let selected = current() == m.id;
                view! { <option value=m.id.clone() selected=selected title=m.about.clone()>{m.name.clone()}</option> }
            })
            .collect_view()
    };
    let about = move || {
        let id = current();
        bundled.with(|list| list.iter().find(|m| m.id == id).map(|m| m.about.clone()))
    };
    view! {
        <section class="model-picker">
            <label>
                "Model "
                <select
                    data-testid="model-picker"
                    disabled=busy
                    on:change=move |ev| {
                        let id = event_target_value(&ev);
                        if let Some(m) = bundled.with_untracked(|list| list.iter().find(|m| m.id == id).cloned()) {
                            page.open(Source::Bundled(m));
                        }
                    }
                >
                    {options}
                    <option value="" disabled=true selected=move || !bundled.with(|l| l.iter().any(|m| m.id == current()))>
                        "(from a URL or files)"
                    </option>
                </select>
            </label>
            <form class="model-url" on:submit=move |ev| {
                ev.prevent_default();
                page.open(Source::Url(url.get_untracked().trim().to_string()));
            }>
                <input
                    data-testid="model-url"
                    placeholder="or a model folder's URL"
                    autocomplete="off"
                    prop:value=url
                    on:input=move |ev| url.set(event_target_value(&ev))
                />
                <button type="submit" data-testid="load-url" disabled=busy>"Load"</button>
            </form>
            <label class="model-files" title="config.json (or the release's beeg_config.json), model.safetensors or a PyTorch checkpoint such as final_model.pt, and optionally encoder.json and vocab.bpe">
                "or files: "
                <input
                    type="file"
                    multiple=true
                    data-testid="model-files"
                    disabled=busy
                    on:change=move |ev| {
                        let input: web_sys::HtmlInputElement = event_target(&ev);
                        page.open(Source::Files(files_of(input.files())));
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
pub fn BackendStatus() -> impl IntoView {
    let page = use_page();
    move || {
        let (kind, text) = match page.backend.get() {
            Backend::Looking => ("probing", "Looking for a WebGPU adapter; the CPU answers meanwhile...".to_string()),
            Backend::Gpu(adapter) => ("gpu", format!("Runs on the GPU through WebGPU: {adapter}.")),
            Backend::Cpu(reason) => ("cpu", format!("Runs on the CPU (WebAssembly): {reason}.")),
        };
        view! { <p class=format!("status backend-{kind}") data-testid="backend" data-backend=kind>{text}</p> }
    }
}

#[component]
pub fn ErrorBanner() -> impl IntoView {
    let page = use_page();
    move || {
        page.error.get().map(|message| {
            view! { <div class="error-banner" role="alert" data-testid="error-banner">{message}</div> }
        })
    }
}

/// The prompt in, a run out: text when the model has a tokenizer, token ids
/// otherwise.
#[component]
pub fn PromptForm() -> impl IntoView {
    let page = use_page();
    let text = page.prompt;
    let has_tokenizer = Signal::derive(move || page.opened.with(|o| o.as_ref().is_some_and(|o| o.tokenizer.is_some())));
    let ready = Signal::derive(move || page.ready());
    let on_run = move |text: String| page.run_prompt(text, None);
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
pub fn Predictions() -> impl IntoView {
    let page = use_page();
    let clean = page.clean_top;
    move || {
        let rows = page.top.get();
        let n_ablated = page.ablated.with(|a| a.as_ref().map_or(0, |a| a.ablations.len()));
        let tokenizer = page.tokenizer();
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
pub fn TokenStrip() -> impl IntoView {
    let page = use_page();
    let position = page.position;
    move || {
        let tokens = page.run.with(|r| r.as_ref().map(|r| r.tokens.clone()).unwrap_or_default());
        let tokenizer = page.tokenizer();
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
                            on:click=move |_| page.view.update(|v| v.click_token(i))
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
pub fn AblationList() -> impl IntoView {
    let page = use_page();
    move || {
        let nodes = page.ablations.get();
        let config = page.model()?.config.clone();
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
                    <button data-testid="clear-ablations" on:click=move |_| page.view.update(|v| v.ablations.clear())>"Clear all"</button>
                </section>
            }
        })
    }
}

/// One row per layer, added as each layer arrives: the root-mean-square of
/// every recorded site, drawn as bars on one scale so layers compare at a glance.
#[component]
pub fn LayerTable() -> impl IntoView {
    let page = use_page();
    move || {
        let layers = page.layers.get();
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
