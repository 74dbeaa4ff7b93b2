//! Opening a model in the page: the first one (the page's `?model=`, or a
//! link's), then any the user picks. A model replaces the one shown only
//! once it is ready to run; a failed load keeps the old one working.

use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::link;
use super::load::{self, BundledModel, LoadProgress, LoadedModel, Optional, MODELS_URL};
use super::release;
use super::blocks::BlockDeltas;
use super::distribution::Distributions;
use super::page::{DatasetExamples, Opened, Page};
use super::run::check_link;
use super::summary::ModelFacts;
use crate::circuits::{LinkModel, SiteMeans, ViewLink};
use crate::model::Record;
use crate::platform::sleep;
use crate::runner::{Runner, Want};

/// Where a model comes from.
pub enum Source {
    Bundled(BundledModel),
    Url(String),
    Files(Vec<web_sys::File>),
    /// A model of OpenAI's release (a base URL and the model's name),
    /// fetched by ranges and stored.
    Release { base: String, name: String },
    /// A model stored in the browser, opened without the network.
    Stored(super::release::StoredModel),
}

impl Page {
    /// Opens the first model: the one a link names, or `?model=ID`, or the
    /// first bundled one. A link's model at a URL waits for the user's yes
    /// while the default opens.
    pub fn start(self) {
        link::reopen_on_new_link();
        spawn_local(async move {
            let list = match load::fetch_index().await {
                Ok(list) => list,
                Err(message) => return self.error.set(Some(message)),
            };
            let mut asked = query_parameter("model");
            match link::opened_with() {
                None => {}
                Some(Err(e)) => self.notice.set_value(Some(format!("{e}; showing the default view instead"))),
                Some(Ok(link)) => {
                    match &link.model {
                        LinkModel::Bundled(id) => asked = Some(id.clone()),
                        other => self.ask_model.set(Some(other.clone())),
                    }
                    self.waiting_link.set_value(Some(link));
                }
            }
            let chosen = asked.as_ref().and_then(|id| list.iter().find(|m| &m.id == id));
            if let (Some(id), None) = (&asked, chosen) {
                self.notice.set_value(Some(format!("there is no bundled model {id:?}; showing the default instead")));
            }
            let first = chosen.or(list.first()).cloned();
            self.bundled.set(list);
            if let Some(first) = first {
                self.open(Source::Bundled(first));
            }
        });
    }

    /// Loads a model; only when it is ready (parsed, and uploaded to the GPU
    /// if there is one) does it replace the one shown. It opens with its
    /// sample prompt run, or with the view of a link that waited for it.
    pub fn open(self, source: Source) {
        // One thing at a time: the controls are disabled meanwhile too.
        if self.running.get_untracked() || self.loading.get_untracked() != LoadProgress::Idle {
            return;
        }
        self.loading.set(LoadProgress::Reading { file: String::new(), done: 0, total: None });
        self.cancel_load.set_value(false);
        spawn_local(async move {
            let progress = move |p: LoadProgress| self.loading.set(p);
            let mut examples_url = None;
            let (link_model, sample, loaded) = match source {
                Source::Bundled(entry) => {
                    let url = format!("{MODELS_URL}/{}", entry.id);
                    examples_url = entry.examples.then(|| format!("{url}/examples.safetensors"));
                    let loaded = load::fetch_model(&url, (&entry).into(), &progress).await;
                    (Some(LinkModel::Bundled(entry.id.clone())), Some(entry.prompt.clone()), loaded)
                }
                Source::Url(url) if url.is_empty() => (None, None, Err("enter the URL of a model folder first".to_string())),
                Source::Url(url) => {
                    let loaded = load::fetch_model(&url, Optional::default(), &progress).await;
                    let link_model = loaded.as_ref().ok().map(|l| LinkModel::Url { url: url.clone(), weights_sha256: l.model.weights_sha256() });
                    (link_model, None, loaded)
                }
                Source::Files(files) => (None, None, load::read_files(files, &progress).await),
                Source::Release { base, name } => {
                    let loaded = self.fetch_release(&base, &name, &progress).await;
                    (loaded.as_ref().ok().and_then(release_link_model), None, loaded)
                }
                Source::Stored(stored) => {
                    let loaded = release::open_stored(&stored, &progress).await;
                    if loaded.is_ok() {
                        self.check_stored_is_current(stored);
                    }
                    (loaded.as_ref().ok().and_then(release_link_model), None, loaded)
                }
            };
            let result = match loaded {
                Ok(loaded) => self.install(loaded, link_model, examples_url).await,
                Err(message) => Err(message),
            };
            self.loading.set(LoadProgress::Idle);
            match result {
                Ok(opened) => self.show_opened(opened, sample),
                // The model shown so far stays, and keeps working.
                Err(message) => self.error.set(Some(message)),
            }
        });
    }

    /// Makes a loaded model runnable: the first one starts the runner, which
    /// answers on the CPU at once and readies a GPU in the background (or
    /// says why there is none); later ones replace its model.
    async fn install(self, loaded: LoadedModel, link_model: Option<LinkModel>, examples_url: Option<String>) -> Result<(Opened, Vec<crate::circuits::LoadedCircuit>), String> {
        let facts = ModelFacts::new(&loaded.model, loaded.tokenizer.as_ref(), loaded.source.clone(), loaded.bytes);
        self.loading.set(LoadProgress::Uploading);
        sleep(0).await; // let the page show the upload step
        let model = Arc::new(loaded.model);
        match self.runner() {
            None => {
                let backend = self.backend;
                let runner = Rc::new(Runner::at_once(model.clone(), Want::Fastest, Box::new(move |b| backend.set(b.clone()))));
                self.backend.set(runner.backend());
                self.set_runner(runner.clone());
                spawn_local(async move { runner.attach_gpu().await });
            }
            Some(runner) => {
                runner.load(model.clone()).await.map_err(|e| format!("{} cannot run on this GPU: {e}", loaded.source))?;
            }
        }
        let opened = Opened {
            model,
            tokenizer: loaded.tokenizer.map(Arc::new),
            facts,
            tasks: loaded.tasks,
            tours: loaded.tours,
            link_model,
            samples: loaded.samples,
            examples_url,
            release: loaded.release,
        };
        Ok((opened, loaded.circuits))
    }

    /// Shows a model that opened: with the view of a link that waited for
    /// it (checked whole first: one that does not fit gives the default
    /// view, not half of its own), or with `sample` run.
    fn show_opened(self, (opened, circuits): (Opened, Vec<crate::circuits::LoadedCircuit>), sample: Option<String>) {
        self.error.set(None);
        let circuits: Vec<_> = circuits.into_iter().map(Arc::new).collect();
        let mut first_view = None;
        // A link is for this model when it names it; its weights are checked below.
        let linked = |link: &ViewLink| match (&link.model, &opened.link_model) {
            (LinkModel::Bundled(a), Some(LinkModel::Bundled(b))) => a == b,
            (LinkModel::Url { url: a, .. }, Some(LinkModel::Url { url: b, .. })) => a == b,
            (LinkModel::Release { base: a, name: m, .. }, Some(LinkModel::Release { base: b, name: n, .. })) => a == b && m == n,
            _ => false,
        };
        if let Some(link) = self.waiting_link.get_value().filter(linked) {
            self.waiting_link.set_value(None);
            let checked = check_link(&link, &opened.model, opened.tokenizer.as_deref(), &circuits);
            match checked {
                Ok(()) => first_view = Some(link),
                Err(e) => self.notice.set_value(Some(format!("{e}; showing the model's default view instead"))),
            }
        }
        let opened = Arc::new(opened);
        self.run.set(None);
        self.layers.set(Vec::new());
        self.means.set(None);
        self.examples.set(if opened.examples_url.is_some() { DatasetExamples::NotLoaded } else { DatasetExamples::Absent });
        self.node_examples.set(None);
        self.chosen_task.set(None);
        self.distributions.set(Distributions::None);
        self.block_deltas.set(BlockDeltas::None);
        self.touring.set(None);
        self.release_circuits.set(Default::default());
        // A search on the old model stops; the view keeps how the graph is drawn.
        self.cancel_search.set_value(true);
        self.effects.set(None);
        self.attributed.set(None);
        self.confirmed.set(None);
        self.view.update(|v| v.new_run(&[]));
        self.circuits.set(circuits);
        self.budgeted.set(true);
        self.ranking_note.set(None);
        self.opened.set(Some(opened.clone()));
        match first_view {
            Some(link) => self.show_view(link),
            None => {
                if let Some(sample) = sample {
                    self.run_prompt(sample, None);
                }
            }
        }
        // After the run's start: a message the load left to show.
        if let Some(message) = self.notice.try_update_value(Option::take).flatten() {
            self.error.set(Some(message));
        }
        self.compute_means(opened);
    }

    /// The means over the model's sample prompts, for mean ablation and the
    /// circuit search: in the background, after the first run.
    fn compute_means(self, opened: Arc<Opened>) {
        spawn_local(async move {
            // The first view first: the means wait for the runs under way,
            // then run where batches do (reading back every site of every
            // sample from a software adapter took 20 s, the CPU far less).
            while self.running.get_untracked() {
                sleep(50).await;
            }
            let Some(runner) = self.runner() else { return };
            let mut sums = SiteMeans::default();
            for tokens in &opened.samples {
                match runner.record(tokens, &Record::All).await {
                    Ok((_, sites)) => sums.add(&sites),
                    Err(message) => return self.error.set(Some(format!("the sample prompts: {message}"))),
                }
            }
            let still_open = self.opened.with_untracked(|o| o.as_ref().is_some_and(|o| Arc::ptr_eq(o, &opened)));
            if sums.positions() > 0 && still_open {
                self.means.set(Some(Arc::new(sums)));
            }
        });
    }
}

impl Page {
    /// Fetches a model of the release and stores it; a model that opened
    /// but could not be stored says why beside it. One stored already (a
    /// link's, or fetched before) opens from the store, without the network.
    async fn fetch_release(self, base: &str, name: &str, progress: &dyn Fn(LoadProgress)) -> Result<LoadedModel, String> {
        let release = crate::release::Release::new(base)?;
        let url = release.weights_url(name.trim());
        if let Some(stored) = release::stored_models().await.unwrap_or_default().into_iter().find(|s| s.url == url) {
            let loaded = release::open_stored(&stored, progress).await;
            if loaded.is_ok() {
                self.check_stored_is_current(stored);
            }
            return loaded;
        }
        let cancelled = move || self.cancel_load.get_value();
        let fetched = release::fetch_release(&release, name.trim(), progress, &cancelled).await?;
        if let Err(message) = release::store(&fetched).await {
            self.notice.set_value(Some(message));
        }
        self.refresh_stored();
        Ok(fetched.loaded)
    }

    /// Lists the stored models again. Where the browser keeps no Cache
    /// Storage for the page (an http:// address other than localhost), the
    /// list is empty: said when a fetched model cannot be stored, not at
    /// every start.
    pub fn refresh_stored(self) {
        spawn_local(async move {
            self.stored_models.set(release::stored_models().await.unwrap_or_default());
        });
    }

    /// After a stored model opened: whether the host still has that
    /// checkpoint (said only when it has another; offline says nothing).
    fn check_stored_is_current(self, stored: release::StoredModel) {
        spawn_local(async move {
            if release::still_current(&stored).await == Some(false) {
                self.error.set(Some(format!(
                    "{}'s checkpoint on {} has changed since it was stored; for the new one, delete the stored one (OpenAI's release, Stored in this browser) and fetch it again",
                    stored.name, stored.base
                )));
            }
        });
    }
}

/// How a link names a model of the release that opened.
fn release_link_model(loaded: &LoadedModel) -> Option<LinkModel> {
    let stored = loaded.release.as_ref()?;
    Some(LinkModel::Release { base: stored.base.clone(), name: stored.name.clone(), weights_sha256: loaded.model.weights_sha256() })
}

/// The value of `name` in the page's query string, if any.
fn query_parameter(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
}
