//! Dataset examples computed in the page: for the loaded model, over the
//! generated Python corpus or a text file the user picks, as
//! `circuitscope examples` computes them (the same windows, buckets and
//! seed), on the runner's faster backend, with progress and Cancel; then
//! saved as the CLI's file.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen_futures::JsFuture;

use super::circuits::CountInput;
use super::components::files_of;
use super::export::download;
use super::page::{use_page, DatasetExamples, LoadedExamples, Page};
use crate::circuits::{collect_examples, default_corpus, ExamplesProgress};
use crate::platform::now_ms;

/// Tokens per window (the CLI's default), and the reservoirs' seed.
const WINDOW: usize = 64;
const SEED: u64 = 1;
/// The most tokens the page computes examples over.
const MAX_TOKENS: usize = 1 << 22;

/// A computation under way: how far, and since when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExamplesJob {
    pub progress: ExamplesProgress,
    pub started_ms: f64,
}

impl Page {
    /// Computes every node's examples over `tokens` tokens of `file` (text,
    /// read with the model's tokenizer) or of the generated corpus; they
    /// replace the model's examples once done.
    pub fn compute_examples(self, tokens: usize, file: Option<web_sys::File>) {
        if self.examples_job.get_untracked().is_some() {
            return;
        }
        let (Some(opened), Some(runner)) = (self.opened.get_untracked(), self.runner()) else { return };
        let Some(tokenizer) = opened.tokenizer.clone() else {
            return self.error.set(Some("dataset examples need the model's tokenizer to read a corpus, and this model has none".into()));
        };
        self.cancel_examples.set_value(false);
        let start = ExamplesJob { progress: ExamplesProgress { pass: 1, done: 0, windows: 0 }, started_ms: now_ms() };
        self.examples_job.set(Some(start));
        spawn_local(async move {
            let corpus = match file {
                Some(file) => match JsFuture::from(file.text()).await {
                    Ok(text) => {
                        let mut ids = tokenizer.encode(&text.as_string().unwrap_or_default());
                        ids.truncate(tokens);
                        Ok(ids)
                    }
                    Err(_) => Err(format!("cannot read {} as text", file.name())),
                },
                None => Ok(default_corpus(&tokenizer, tokens)),
            };
            let window = WINDOW.min(opened.model.config.block_size);
            let mut progress = |progress: ExamplesProgress| {
                self.examples_job.update(|job| {
                    if let Some(job) = job {
                        job.progress = progress;
                    }
                });
                !self.cancel_examples.get_value()
            };
            let outcome = match corpus {
                Ok(corpus) => collect_examples(&runner, corpus, window, SEED, &mut progress).await,
                Err(message) => Err(message),
            };
            self.examples_job.set(None);
            let still_open = self.opened.with_untracked(|o| o.as_ref().is_some_and(|o| Arc::ptr_eq(o, &opened)));
            match outcome {
                Ok(examples) if still_open => {
                    self.node_examples.set(None);
                    self.examples.set(DatasetExamples::Ready(Arc::new(LoadedExamples::new(examples, opened.model.config.vocab_size))));
                }
                Ok(_) => {}
                Err(_) if self.cancel_examples.get_value() => {}
                Err(message) => self.error.set(Some(format!("dataset examples: {message}"))),
            }
        });
    }
}

/// The side bar's dataset examples: what the model has, and computing them
/// here.
#[component]
pub fn ExamplesPanel() -> impl IntoView {
    let page = use_page();
    let tokens = RwSignal::new(100_000usize);
    let file = StoredValue::new_local(None::<web_sys::File>);
    let status = move || match page.examples.get() {
        DatasetExamples::Absent => "This model came without examples: compute them here.".to_string(),
        DatasetExamples::NotLoaded | DatasetExamples::Loading => "Loading the model's examples...".to_string(),
        DatasetExamples::Failed(message) => format!("No examples: {message}"),
        DatasetExamples::Ready(loaded) => format!("Examples over {} tokens for every node.", loaded.examples.tokens),
    };
    let ready = move || page.examples.with(|e| e.ready().is_some());
    let save = move |_| {
        let bytes = page.examples.with_untracked(|e| Some(e.ready()?.examples.to_bytes()));
        if let Some(Err(message)) = bytes.map(|b| download("examples.safetensors", &b, "application/octet-stream")) {
            page.error.set(Some(message));
        }
    };
    let job = move || {
        page.examples_job.get().map(|job| {
            let p = job.progress;
            let pass = if p.pass == 1 { "pass 1 of 2 (bucket edges)" } else { "pass 2 of 2 (examples)" };
            let seconds = (now_ms() - job.started_ms) / 1000.0;
            view! {
                <p class="status loading" data-testid="examples-progress" data-pass=p.pass data-done=p.done data-windows=p.windows>
                    <progress max=p.windows.max(1) value=p.done></progress>
                    {format!(" {pass}: window {} of {} ({seconds:.0} s) ", p.done, p.windows)}
                    <button type="button" data-testid="cancel-examples" on:click=move |_| page.cancel_examples.set_value(true)>"Cancel"</button>
                </p>
            }
        })
    };
    view! {
        <details class="examples-panel">
            <summary>"Dataset examples"</summary>
            <p class="hint" data-testid="examples-status" data-ready=move || ready().to_string()>{status}</p>
            <CountInput label="Tokens " testid="examples-tokens" max=MAX_TOKENS value=tokens />
            <label>
                "Corpus: a text file (default: generated Python) "
                <input type="file" accept=".txt,.py,text/*" data-testid="examples-file" on:change=move |ev| {
                    let input: web_sys::HtmlInputElement = event_target(&ev);
                    file.set_value(files_of(input.files()).into_iter().next());
                } />
            </label>
            <button
                type="button"
                data-testid="compute-examples"
                disabled=move || page.examples_job.with(Option::is_some) || page.opened.with(|o| o.as_ref().is_none_or(|o| o.tokenizer.is_none()))
                on:click=move |_| page.compute_examples(tokens.get_untracked(), file.get_value())
            >
                "Compute examples"
            </button>
            <button type="button" data-testid="save-examples" disabled=move || !ready() on:click=save>"Save examples"</button>
            {job}
        </details>
    }
}
