//! OpenAI's release in the page: a released model fetched by HTTP byte
//! ranges straight into the converter (never the whole `.pt` in the tab),
//! and kept converted in the browser's Cache Storage, so the next visit
//! opens it without the network.
//!
//! Why Cache Storage: it stores whole responses by URL, which is what is
//! kept here (the compact model, its config and tokenizer files), and keeps
//! a body out of the page's heap until it is read; IndexedDB would hold
//! the same bytes as a structured clone, and OPFS needs a worker for
//! synchronous writes. Entries are keyed by the checkpoint's URL; the
//! manifest beside them holds the server's validators (ETag, Last-Modified,
//! size), which a background check compares with the host's after a
//! stored model opens.

use gloo_net::http::Request;
use js_sys::Uint8Array;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::load::{build_loaded, fetch_bytes, js_message, read_body, unreadable, LoadProgress, LoadedModel};
use crate::circuits::{generated_samples, Choice};
use crate::convert::convert_torch_by_ranges;
use crate::model::{Model, Tokenizer};
use crate::release::{Release, ReleaseIndex, VizEntry};
use crate::tasks::{Task, TaskChoice};

/// The Cache Storage cache the page keeps converted models in.
const CACHE: &str = "circuitscope-models-v1";
/// The files kept per model, beside its manifest.
const FILES: [&str; 4] = ["config.json", "model.safetensors", "encoder.json", "vocab.bpe"];
const MANIFEST: &str = "manifest.json";
/// Bytes per range request at least: each is a round trip.
const RANGE_CHUNK: u64 = 4 << 20;
/// Seed of each task's prompt shown for a released model.
const TASK_PROMPT_SEED: u64 = 4_000_037;

/// What is stored of one model, beside its files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredModel {
    pub name: String,
    pub base: String,
    /// The checkpoint's URL: the key of the model's entries.
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The checkpoint's size on the host.
    pub source_bytes: u64,
    /// Bytes stored (the compact model, config and tokenizer).
    pub stored_bytes: u64,
    /// When it was stored, in ms since the epoch.
    pub stored_at: f64,
}

/// A released model, fetched and converted, and what to store of it.
pub struct Fetched {
    pub loaded: LoadedModel,
    pub stored: StoredModel,
    /// The files to store: config, compact model, tokenizer.
    files: Vec<Vec<u8>>,
}

/// The host's answer to a checkpoint's HEAD.
struct Probe {
    len: u64,
    etag: Option<String>,
    last_modified: Option<String>,
}

async fn get_bytes(url: &str) -> Result<Vec<u8>, String> {
    fetch_bytes(url, &|_, _| {}).await
}

async fn get_text(url: &str) -> Result<String, String> {
    String::from_utf8(get_bytes(url).await?).map_err(|_| format!("{url} is not UTF-8 text"))
}

/// The checkpoint's size and validators: from a HEAD request, or, where
/// the host does not answer HEAD to this page, from the first byte's range
/// answer (its `Content-Range`, which the host must then expose).
async fn probe(url: &str) -> Result<Probe, String> {
    let head = Request::get(url).method(gloo_net::http::Method::HEAD).send().await.ok();
    if let Some(response) = head.filter(|r| r.ok()) {
        let headers = response.headers();
        if let Some(len) = headers.get("content-length").and_then(|l| l.parse().ok()) {
            return Ok(Probe { len, etag: headers.get("etag"), last_modified: headers.get("last-modified") });
        }
    }
    let response = Request::get(url).header("Range", "bytes=0-0").cache(web_sys::RequestCache::NoStore).send().await.map_err(|_| unreadable(url))?;
    if response.status() == 404 || !response.ok() {
        return Err(format!("cannot fetch {url}: HTTP {} {}", response.status(), response.status_text()));
    }
    let headers = response.headers();
    let len = headers
        .get("content-range")
        .and_then(|range| range.rsplit_once('/').and_then(|(_, len)| len.trim().parse().ok()))
        .ok_or_else(|| format!("{url}: the host says neither the file's size (Content-Length to HEAD) nor its range's (Content-Range)"))?;
    Ok(Probe { len, etag: headers.get("etag"), last_modified: headers.get("last-modified") })
}

/// Bytes `at..at + count` of `url`. A host that answers a range with the
/// whole file is stopped at once (a 1.65 GB download) and named.
async fn range(url: &str, at: u64, count: u64) -> Result<Vec<u8>, String> {
    let abort = web_sys::AbortController::new().map_err(|e| js_message(&e))?;
    let response = Request::get(url)
        .header("Range", &format!("bytes={at}-{}", at + count - 1))
        .cache(web_sys::RequestCache::NoStore)
        .abort_signal(Some(&abort.signal()))
        .send()
        .await
        .map_err(|_| unreadable(url))?;
    match response.status() {
        206 => {}
        200 => {
            abort.abort();
            return Err(format!(
                "{url}: the host does not serve byte ranges (it answered the whole file), so the page cannot convert \
                 it as it reads; download it and pick the files instead, or use `circuitscope convert`"
            ));
        }
        status => return Err(format!("cannot fetch bytes {at}.. of {url}: HTTP {status} {}", response.status_text())),
    }
    // Copied out of the body chunk by chunk: the whole range as one JS
    // ArrayBuffer first (`binary()`) took a second 67 MB per storage, and
    // garbage the tab kept for a while.
    let body = response.body().ok_or_else(|| format!("{url}: an answer without a body"))?;
    let Some(bytes) = read_body(url, body, count as usize, count, &|_| {}).await? else {
        abort.abort();
        return Err(format!("{url}: asked for {count} bytes at {at}, got more"));
    };
    if bytes.len() as u64 != count {
        return Err(format!("{url}: asked for {count} bytes at {at}, got {}", bytes.len()));
    }
    Ok(bytes)
}

/// Fetches `name` from the release at `base`: config, tokenizer, then the
/// checkpoint by ranges into the converter, stopping when `cancelled`.
pub async fn fetch_release(
    release: &Release,
    name: &str,
    progress: &dyn Fn(LoadProgress),
    cancelled: &dyn Fn() -> bool,
) -> Result<Fetched, String> {
    crate::release::check_name(name)?;
    let config_url = release.config_url(name);
    progress(LoadProgress::Reading { file: config_url.clone(), done: 0, total: None });
    let config = get_text(&config_url).await?;
    let [encoder_url, vocab_url] = release.tokenizer_urls();
    let encoder = get_bytes(&encoder_url).await?;
    let vocab = get_bytes(&vocab_url).await?;
    let url = release.weights_url(name);
    let probe = probe(&url).await?;
    let fetched = std::cell::Cell::new(0u64);
    let tensors = std::cell::Cell::new((0usize, 0usize));
    let show = || {
        let (done, total) = tensors.get();
        progress(LoadProgress::Fetching { file: url.clone(), bytes: fetched.get(), total_bytes: probe.len, done, total });
    };
    show();
    let load = async |at: u64, count: u64| {
        if cancelled() {
            return Err("cancelled".to_string());
        }
        let bytes = range(&url, at, count).await?;
        fetched.set(fetched.get() + bytes.len() as u64);
        show();
        Ok(bytes)
    };
    let mut on_tensor = |done, total, _: &str| {
        tensors.set((done, total));
        show();
    };
    let converted = convert_torch_by_ranges(&config, probe.len, RANGE_CHUNK, load, &mut on_tensor).await;
    if cancelled() {
        return Err("the fetch was cancelled; the model shown stays".to_string());
    }
    let model = converted.map_err(|e| format!("{url}: {e}"))?.model;
    let compact = model.to_compact_safetensors();
    let files = vec![config.into_bytes(), compact, encoder, vocab];
    let stored = StoredModel {
        name: name.to_string(),
        base: release.base().to_string(),
        url,
        etag: probe.etag,
        last_modified: probe.last_modified,
        source_bytes: probe.len,
        stored_bytes: files.iter().map(|f| f.len() as u64).sum(),
        stored_at: js_sys::Date::now(),
    };
    let loaded = released_model(model, &files, &stored, fetched.get())?;
    Ok(Fetched { loaded, stored, files })
}

/// A released model as the page opens it: with sample prompts for the
/// means from the generated corpus, and a prompt per task (it comes with
/// neither).
fn released_model(model: Model, files: &[Vec<u8>], stored: &StoredModel, bytes: u64) -> Result<LoadedModel, String> {
    let text = |i: usize| String::from_utf8(files[i].clone()).map_err(|_| format!("{} is not UTF-8 text", FILES[i]));
    let tokenizer = Tokenizer::from_files(&text(2)?, &text(3)?).map_err(|e| e.to_string())?;
    crate::model::check_tokenizer(&model.config, &tokenizer).map_err(|e| e.to_string())?;
    // It comes without samples.json: prompts of the generated corpus, as `fetch-release` writes them.
    let samples = generated_samples().iter().map(|text| tokenizer.encode(text)).collect();
    let mut tasks = Vec::new();
    for task in Task::ALL {
        if let Some(choice) = Choice::of_task(task, &tokenizer, TASK_PROMPT_SEED, 1)?.into_iter().next() {
            tasks.push(TaskChoice { task: task.name().into(), prompt: tokenizer.decode(&choice.tokens), tokens: choice.tokens, right: choice.right, wrong: choice.wrong });
        }
    }
    let mut loaded = build_loaded(model, Some(tokenizer), samples, tasks, format!("{} ({})", stored.name, stored.base), bytes);
    loaded.release = Some(stored.clone());
    Ok(loaded)
}

async fn cache() -> Result<web_sys::Cache, String> {
    let window = web_sys::window().ok_or("no window")?;
    let caches = window.caches().map_err(|e| format!("this browser keeps no Cache Storage here: {}", js_message(&e)))?;
    let cache = JsFuture::from(caches.open(CACHE)).await.map_err(|e| format!("cannot open the model store: {}", js_message(&e)))?;
    Ok(cache.unchecked_into())
}

/// The key of one stored file of the model at `url`.
fn key(url: &str, file: &str) -> String {
    format!("{url}?circuitscope={file}")
}

/// Stores a fetched model; a full quota is a message (the model still opens).
pub async fn store(fetched: &Fetched) -> Result<(), String> {
    let cache = cache().await?;
    let manifest = serde_json::to_vec(&fetched.stored).map_err(|e| e.to_string())?;
    let entries = FILES.iter().zip(&fetched.files).map(|(f, b)| (*f, b.as_slice())).chain([(MANIFEST, manifest.as_slice())]);
    for (file, bytes) in entries {
        let mut body = bytes.to_vec();
        let response = web_sys::Response::new_with_opt_u8_array(Some(&mut body)).map_err(|e| js_message(&e))?;
        if let Err(e) = JsFuture::from(cache.put_with_str(&key(&fetched.stored.url, file), &response)).await {
            // What was put of it is of no use alone.
            let _ = delete(&fetched.stored.url).await;
            let quota = e.dyn_ref::<js_sys::Error>().is_some_and(|e| e.name() == "QuotaExceededError");
            return Err(match quota {
                true => format!("{} opened but is not stored: the browser's storage quota for this page is full; delete stored models to make room", fetched.stored.name),
                false => format!("{} opened but is not stored: {}", fetched.stored.name, js_message(&e)),
            });
        }
    }
    Ok(())
}

async fn read(cache: &web_sys::Cache, url: &str, file: &str) -> Result<Option<Vec<u8>>, String> {
    let found = JsFuture::from(cache.match_with_str(&key(url, file))).await.map_err(|e| js_message(&e))?;
    if found.is_undefined() {
        return Ok(None);
    }
    let response: web_sys::Response = found.unchecked_into();
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| js_message(&e))?).await.map_err(|e| js_message(&e))?;
    Ok(Some(Uint8Array::new(&buffer).to_vec()))
}

/// Every stored model, newest first (a manifest without its files is left out).
pub async fn stored_models() -> Result<Vec<StoredModel>, String> {
    let cache = cache().await?;
    let keys = JsFuture::from(cache.keys()).await.map_err(|e| js_message(&e))?;
    let mut models = Vec::new();
    for request in js_sys::Array::from(&keys).iter() {
        let request: web_sys::Request = request.unchecked_into();
        let Some(url) = request.url().strip_suffix(&format!("?circuitscope={MANIFEST}")).map(String::from) else { continue };
        let Some(bytes) = read(&cache, &url, MANIFEST).await? else { continue };
        if let Ok(stored) = serde_json::from_slice::<StoredModel>(&bytes) {
            models.push(stored);
        }
    }
    models.sort_by(|a, b| b.stored_at.total_cmp(&a.stored_at));
    Ok(models)
}

/// Deletes the stored model of checkpoint `url`.
pub async fn delete(url: &str) -> Result<(), String> {
    let cache = cache().await?;
    for file in FILES.iter().chain([&MANIFEST]) {
        JsFuture::from(cache.delete_with_str(&key(url, file))).await.map_err(|e| js_message(&e))?;
    }
    Ok(())
}

/// Opens a stored model without the network.
pub async fn open_stored(stored: &StoredModel, progress: &dyn Fn(LoadProgress)) -> Result<LoadedModel, String> {
    let cache = cache().await?;
    let mut files = Vec::new();
    for file in FILES {
        progress(LoadProgress::Reading { file: format!("{} (stored) {file}", stored.name), done: 0, total: None });
        let bytes = read(&cache, &stored.url, file).await?.ok_or_else(|| format!("the stored {} has lost its {file}; delete it and fetch it again", stored.name))?;
        files.push(bytes);
    }
    let config = String::from_utf8(files[0].clone()).map_err(|_| "the stored config is not UTF-8 text".to_string())?;
    let model = Model::from_bytes(&config, &files[1]).map_err(|e| format!("the stored {}: {e}", stored.name))?;
    let bytes = files.iter().map(|f| f.len() as u64).sum();
    released_model(model, &files, stored, bytes)
}

/// Whether the host's checkpoint is still the stored one: `None` when the
/// host cannot be asked (offline), else whether its validators match.
pub async fn still_current(stored: &StoredModel) -> Option<bool> {
    let probe = probe(&stored.url).await.ok()?;
    let same = |ours: &Option<String>, theirs: &Option<String>| ours.is_none() || theirs.is_none() || ours == theirs;
    Some(probe.len == stored.source_bytes && same(&stored.etag, &probe.etag) && same(&stored.last_modified, &probe.last_modified))
}

/// OpenAI's circuits of `model` at the release: from the mirror's
/// `index.json`, or else Azure's container listing.
pub async fn list_circuits(release: &Release, model: &str) -> Result<Vec<VizEntry>, String> {
    let response = Request::get(&release.index_url()).send().await.ok().filter(|r| r.ok());
    if let Some(response) = response {
        let text = response.text().await.map_err(|_| unreadable(&release.index_url()))?;
        return Ok(ReleaseIndex::parse(&text)?.circuits_of(model));
    }
    let mut entries = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let prefix = format!("viz/{model}/");
        let Some(url) = release.azure_listing_url(&prefix, marker.as_deref()) else {
            return Err(format!("{} has no index.json and is not an Azure container, so its circuits cannot be listed", release.base()));
        };
        let xml = get_text(&url).await.map_err(|e| format!("listing OpenAI's circuits: {e}"))?;
        let (page, next) = release.parse_azure_listing(&xml, model);
        entries.extend(page);
        match next {
            Some(next) => marker = Some(next),
            None => break,
        }
    }
    entries.sort();
    Ok(entries)
}

/// A circuit's `viz_data.pt`, read.
pub async fn fetch_viz(release: &Release, entry: &VizEntry) -> Result<crate::convert::VizData, String> {
    let url = release.url(&entry.path());
    let bytes = get_bytes(&url).await?;
    crate::convert::VizData::from_bytes(&bytes).map_err(|e| format!("{url}: {e}"))
}
