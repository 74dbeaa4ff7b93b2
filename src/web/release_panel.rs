//! "OpenAI's release" in the side bar: fetch a released model by name from
//! a base URL (OpenAI's, or a mirror), the models stored in the browser
//! (open without the network, delete), and OpenAI's circuits of the
//! release model shown, imported beside circuitscope's with the same
//! faithfulness figures computed here.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::open::Source;
use super::page::{use_page, Page};
use super::release::{self, StoredModel};
use crate::circuits::{
    curve_points, imported_method, imported_nodes, keep_only, remove, Choice, CircuitFile, CircuitOrigin, Evaluate, Faithfulness, Finding, LoadedCircuit, RunnerEval,
    DEFAULT_TARGET_LOSS, HELD_OUT_SEED,
};
use crate::platform::sleep;
use crate::release::{Release, VizEntry, RELEASED_MODELS};

/// Held-out examples an imported circuit's figures are on: as many as for
/// every other circuit, so they compare.
const HELD_OUT: usize = 200;

/// OpenAI's circuits of the release model shown.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ReleaseCircuits {
    #[default]
    NotListed,
    Listing,
    Listed(Vec<VizEntry>),
    /// One is being imported (its path), from the list.
    Importing(Vec<VizEntry>, String),
    Failed(String),
}

impl ReleaseCircuits {
    fn entries(&self) -> Vec<VizEntry> {
        match self {
            ReleaseCircuits::Listed(entries) | ReleaseCircuits::Importing(entries, _) => entries.clone(),
            _ => Vec::new(),
        }
    }
}

impl Page {
    /// Lists OpenAI's circuits of the release model shown.
    pub fn list_release_circuits(self) {
        let Some(stored) = self.opened.with_untracked(|o| o.as_ref().and_then(|o| o.release.clone())) else { return };
        self.release_circuits.set(ReleaseCircuits::Listing);
        spawn_local(async move {
            let listed = async { release::list_circuits(&Release::new(&stored.base)?, &stored.name).await }.await;
            self.release_circuits.set(match listed {
                Ok(entries) => ReleaseCircuits::Listed(entries),
                Err(message) => ReleaseCircuits::Failed(message),
            });
        });
    }

    /// Imports one of OpenAI's circuits: its nodes checked against the model,
    /// its faithfulness and curve computed here on the held-out examples.
    pub fn import_release_circuit(self, entry: VizEntry) {
        let (Some(opened), Some(runner)) = (self.opened.get_untracked(), self.runner()) else { return };
        let (Some(stored), Some(tokenizer)) = (opened.release.clone(), opened.tokenizer.clone()) else { return };
        let entries = self.release_circuits.with_untracked(ReleaseCircuits::entries);
        self.release_circuits.set(ReleaseCircuits::Importing(entries.clone(), entry.path()));
        spawn_local(async move {
            let imported = async {
                let release = Release::new(&stored.base)?;
                let task = entry.task().ok_or_else(|| format!("OpenAI's dataset {:?} is none of circuitscope's tasks", entry.dataset))?;
                let viz = release::fetch_viz(&release, &entry).await?;
                let nodes = imported_nodes(&viz, &opened.model.config)?;
                while self.means.with_untracked(Option::is_none) {
                    sleep(100).await;
                }
                let means = self.means.get_untracked().ok_or("no means")?;
                let config = &opened.model.config;
                let held_out = Choice::of_task(task, &tokenizer, HELD_OUT_SEED, HELD_OUT)?;
                let ks = curve_points(nodes.len());
                let mut variants = vec![Vec::new(), keep_only(config, &means, &nodes)?, remove(config, &means, &nodes)?];
                for &k in &ks {
                    variants.push(keep_only(config, &means, &nodes[..k])?);
                }
                let losses = RunnerEval { runner: &runner, choices: &held_out }.losses(&variants).await?;
                let faithfulness =
                    Faithfulness { target_loss: DEFAULT_TARGET_LOSS, examples: HELD_OUT, full: losses[0], circuit: losses[1], without_circuit: losses[2] };
                let curve = ks.into_iter().zip(losses[3..].iter().copied()).collect();
                let method = imported_method(&viz, Some(&entry), &release.url(&entry.path()));
                let finding = Finding { task, nodes: &nodes, faithfulness, curve, method };
                let file = CircuitFile::new(&opened.model, stored.name.clone(), &means, finding);
                Ok::<_, String>(LoadedCircuit { file, nodes, origin: CircuitOrigin::Imported, documents: viz.samples })
            }
            .await;
            self.release_circuits.set(ReleaseCircuits::Listed(entries));
            let still_open = self.opened.with_untracked(|o| o.as_ref().is_some_and(|o| Arc::ptr_eq(o, &opened)));
            match imported {
                Ok(circuit) if still_open => {
                    self.view.update(|v| v.show_circuit(&circuit));
                    self.circuits.update(|list| list.push(Arc::new(circuit)));
                }
                Ok(_) => {}
                Err(message) => self.error.set(Some(format!("importing {}: {message}", entry.title()))),
            }
        });
    }
}

#[component]
pub fn ReleasePanel() -> impl IntoView {
    let page = use_page();
    page.refresh_stored();
    let name = RwSignal::new(RELEASED_MODELS[0].0.to_string());
    let busy = move || page.busy();
    let about = move || name.with(|n| RELEASED_MODELS.iter().find(|(m, _)| m == n).map(|(_, about)| *about));
    view! {
        <details class="release-panel" data-testid="release-panel">
            <summary>"OpenAI's release"</summary>
            <form on:submit=move |ev| {
                ev.prevent_default();
                page.open(Source::Release { base: page.release_base.get_untracked(), name: name.get_untracked() });
            }>
                <label>
                    "From "
                    <input
                        data-testid="release-base"
                        size="40"
                        autocomplete="off"
                        title="The release's base URL: OpenAI's, or a mirror with the same layout (models/<name>/final_model.pt, tinypython/, viz/)"
                        prop:value=page.release_base
                        on:input=move |ev| page.release_base.set(event_target_value(&ev))
                    />
                </label>
                <label>
                    " model "
                    <input data-testid="release-name" list="released-models" size="12" prop:value=name on:input=move |ev| name.set(event_target_value(&ev)) />
                    <datalist id="released-models">
                        {RELEASED_MODELS.iter().map(|(n, about)| view! { <option value=*n>{*about}</option> }).collect_view()}
                    </datalist>
                </label>
                " "
                <button type="submit" data-testid="release-fetch" disabled=busy title="Fetched by byte ranges and converted as it comes (never the whole .pt in the tab), then stored in this browser">
                    "Fetch"
                </button>
                <p class="hint">{about}</p>
            </form>
            <StoredModels />
            <ReleaseCircuitList />
        </details>
    }
}

/// The models stored in this browser: open (without the network) or delete.
#[component]
fn StoredModels() -> impl IntoView {
    let page = use_page();
    let busy = move || page.busy();
    let delete = move |stored: StoredModel| {
        spawn_local(async move {
            if let Err(message) = release::delete(&stored.url).await {
                page.error.set(Some(message));
            }
            page.refresh_stored();
        });
    };
    let rows = move || {
        page.stored_models
            .get()
            .into_iter()
            .map(|stored| {
                let (to_open, to_delete) = (stored.clone(), stored.clone());
                let size = format!("{:.1} MB", stored.stored_bytes as f64 / 1e6);
                let title = format!("{} from {}; {:.0} MB on the host", stored.url, stored.base, stored.source_bytes as f64 / 1e6);
                view! {
                    <li data-testid="stored-model" data-name=stored.name.clone() data-bytes=stored.stored_bytes title=title>
                        <strong>{stored.name.clone()}</strong>" "{size}" "
                        <button type="button" data-testid="stored-open" disabled=busy on:click=move |_| page.open(Source::Stored(to_open.clone()))>"Open"</button>
                        " "
                        <button type="button" data-testid="stored-delete" disabled=busy on:click=move |_| delete(to_delete.clone())>"Delete"</button>
                    </li>
                }
            })
            .collect_view()
    };
    view! {
        <Show when=move || page.stored_models.with(|m| !m.is_empty())>
            <p class="stored-title">"Stored in this browser (opens without the network):"</p>
            <ul class="stored-models" data-testid="stored-models">{rows}</ul>
        </Show>
    }
}

/// OpenAI's circuits of the release model shown, each imported on a click.
#[component]
fn ReleaseCircuitList() -> impl IntoView {
    let page = use_page();
    let is_release = move || page.opened.with(|o| o.as_ref().is_some_and(|o| o.release.is_some()));
    let list = move || match page.release_circuits.get() {
        ReleaseCircuits::NotListed => view! {
            <button type="button" data-testid="release-circuits-list" on:click=move |_| page.list_release_circuits()>"List OpenAI's circuits"</button>
        }
        .into_any(),
        ReleaseCircuits::Listing => view! { <p class="status">"Listing OpenAI's circuits..."</p> }.into_any(),
        ReleaseCircuits::Failed(message) => view! { <p class="status error" data-testid="release-circuits-error">{message}</p> }.into_any(),
        state @ (ReleaseCircuits::Listed(_) | ReleaseCircuits::Importing(..)) => {
            let importing = match &state {
                ReleaseCircuits::Importing(_, path) => Some(path.clone()),
                _ => None,
            };
            let entries = state.entries();
            if entries.is_empty() {
                return view! { <p class="status" data-testid="release-circuits-none">"The release has no circuits of this model."</p> }.into_any();
            }
            let rows = entries
                .into_iter()
                .map(|entry| {
                    let path = entry.path();
                    let this = importing.as_deref() == Some(path.as_str());
                    let title = entry.title();
                    view! {
                        <li>
                            <button
                                type="button"
                                data-testid="release-circuit-import"
                                data-path=path
                                disabled=importing.is_some()
                                title="Import: its nodes checked against this model, its faithfulness computed here on 200 held-out examples"
                                on:click=move |_| page.import_release_circuit(entry.clone())
                            >
                                {title}
                            </button>
                            {this.then_some(" importing...")}
                        </li>
                    }
                })
                .collect_view();
            view! { <ul class="release-circuits" data-testid="release-circuits">{rows}</ul> }.into_any()
        }
    };
    view! { <Show when=is_release>{list}</Show> }
}
