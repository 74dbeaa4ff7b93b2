//! Getting a model into the page: a bundled folder or any URL over fetch
//! (with byte progress), or files the user picks or drops. Every failure is
//! a message naming the file; nothing here touches the model already shown.

use gloo_net::http::Request;
use js_sys::{Reflect, Uint8Array};
use serde::Deserialize;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::circuits::{parse_samples, CircuitOrigin, Examples, LoadedCircuit, Tour, Tours};
use crate::convert::convert_torch_by_ranges;
use crate::model::{check_tokenizer, Model, Tokenizer};
use crate::tasks::{parse_task_prompts, TaskChoice};

/// Where Trunk copies `www/models`.
pub const MODELS_URL: &str = "models";

/// Larger downloads are refused before they exhaust the tab's memory.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// One entry of `www/models/index.json`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BundledModel {
    /// Folder under `models/`.
    pub id: String,
    pub name: String,
    pub about: String,
    /// Run when the model opens: text with a tokenizer, token ids without.
    pub prompt: String,
    /// Whether the folder has `encoder.json` and `vocab.bpe`.
    #[serde(default)]
    pub tokenizer: bool,
    /// Whether the folder has `samples.json` (prompts for mean ablation).
    #[serde(default)]
    pub samples: bool,
    /// Whether the folder has `tasks.json` (task prompts for the page).
    #[serde(default)]
    pub tasks: bool,
    /// Tasks with a circuit file `circuits/TASK.json` in the folder.
    #[serde(default)]
    pub circuits: Vec<String>,
    /// Whether the folder has `tours.json` (classroom tours).
    #[serde(default)]
    pub tours: bool,
    /// Whether the folder has `examples.safetensors` (every node's dataset
    /// examples, `circuitscope examples`), fetched after the model's first run.
    #[serde(default)]
    pub examples: bool,
}

#[derive(Deserialize)]
struct Index {
    models: Vec<BundledModel>,
}

/// A model ready to run, with what the page says about it.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    /// Sample prompts as token ids, for mean ablation (may be empty).
    pub samples: Vec<Vec<u32>>,
    /// Task prompts with their answers' tokens (may be empty).
    pub tasks: Vec<TaskChoice>,
    /// Circuit files that came with the model, checked against it.
    pub circuits: Vec<LoadedCircuit>,
    /// Classroom tours that came with the model.
    pub tours: Vec<Tour>,
    /// Where it came from, for the page (a name, URL or file names).
    pub source: String,
    /// Bytes read: config, weights and tokenizer files.
    pub bytes: u64,
    /// For a model of OpenAI's release: where it is and what is stored of it.
    pub release: Option<super::release::StoredModel>,
}

/// What a load is doing, for the progress line.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadProgress {
    Idle,
    Reading { file: String, done: u64, total: Option<u64> },
    /// A PyTorch checkpoint read and converted tensor by tensor.
    Converting { file: String, done: usize, total: usize },
    /// A checkpoint fetched by byte ranges and converted as it comes.
    Fetching { file: String, bytes: u64, total_bytes: u64, done: usize, total: usize },
    Uploading,
}

pub async fn fetch_index() -> Result<Vec<BundledModel>, String> {
    let url = format!("{MODELS_URL}/index.json");
    let bytes = fetch_bytes(&url, &|_, _| {}).await?;
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| format!("{url} is not a model list: {e}"))?;
    Ok(index.models)
}

/// Which optional files a model folder has; `None`: ask the server.
#[derive(Clone, Debug, Default)]
pub struct Optional {
    pub tokenizer: Option<bool>,
    pub samples: Option<bool>,
    pub tasks: Option<bool>,
    /// Tasks whose circuit file to fetch.
    pub circuits: Vec<String>,
    pub tours: bool,
}

impl From<&BundledModel> for Optional {
    fn from(entry: &BundledModel) -> Optional {
        Optional {
            tokenizer: Some(entry.tokenizer),
            samples: Some(entry.samples),
            tasks: Some(entry.tasks),
            circuits: entry.circuits.clone(),
            tours: entry.tours,
        }
    }
}

/// Fetches `{base}/config.json`, `{base}/model.safetensors` and those of the
/// tokenizer files, `samples.json` and `tasks.json` it has.
pub async fn fetch_model(base: &str, optional: Optional, progress: &dyn Fn(LoadProgress)) -> Result<LoadedModel, String> {
    let mut folder = Folder { base: base.trim_end_matches('/'), progress, bytes: 0 };
    let config = text(&folder.get("config.json").await?, "config.json")?;
    let weights = folder.get("model.safetensors").await?;
    let tokenizer_files = match folder.get_optional("encoder.json", optional.tokenizer).await? {
        Some(encoder) => Some((encoder, folder.get("vocab.bpe").await?)),
        None => None,
    };
    let samples = folder.get_optional("samples.json", optional.samples).await?;
    let tasks = folder.get_optional("tasks.json", optional.tasks).await?;
    let mut circuit_files = Vec::new();
    for task in &optional.circuits {
        let name = format!("circuits/{task}.json");
        circuit_files.push((name.clone(), text(&folder.get(&name).await?, &name)?));
    }
    let tours = match optional.tours {
        true => Some(text(&folder.get("tours.json").await?, "tours.json")?),
        false => None,
    };
    let model = Model::from_bytes(&config, &weights).map_err(|e| e.to_string())?;
    drop(weights);
    let mut loaded = build(model, tokenizer_files, samples, tasks, folder.base.to_string(), folder.bytes)?;
    if let Some(json) = tours {
        loaded.tours = serde_json::from_str::<Tours>(&json).map_err(|e| format!("tours.json: {e}"))?.tours;
    }
    for (name, json) in circuit_files {
        loaded.circuits.push(LoadedCircuit::parse(&json, &loaded.model, CircuitOrigin::Bundled).map_err(|e| format!("{name}: {e}"))?);
    }
    Ok(loaded)
}

/// A model folder at a URL, its files fetched one by one with progress.
struct Folder<'a> {
    base: &'a str,
    progress: &'a dyn Fn(LoadProgress),
    /// Bytes fetched so far.
    bytes: u64,
}

impl Folder<'_> {
    async fn get(&mut self, name: &str) -> Result<Vec<u8>, String> {
        let on_chunk = |done, total| (self.progress)(LoadProgress::Reading { file: name.to_string(), done, total });
        let body = fetch_bytes(&format!("{}/{name}", self.base), &on_chunk).await?;
        self.bytes += body.len() as u64;
        Ok(body)
    }

    /// A file the folder may lack: `present` says whether it has it, or
    /// (`None`) to ask; a 404 answer then means it has not.
    async fn get_optional(&mut self, name: &str, present: Option<bool>) -> Result<Option<Vec<u8>>, String> {
        match present {
            Some(false) => Ok(None),
            Some(true) => self.get(name).await.map(Some),
            None => match self.get(name).await {
                Ok(body) => Ok(Some(body)),
                Err(e) if e.contains("HTTP 404") => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

/// Builds a model from picked or dropped files: a `.json` config (the
/// release's `beeg_config.json` too), the weights as one `.safetensors` file
/// or a PyTorch checkpoint (`.pt`, converted here), and optionally
/// `encoder.json` with `vocab.bpe`.
pub async fn read_files(files: Vec<web_sys::File>, progress: &dyn Fn(LoadProgress)) -> Result<LoadedModel, String> {
    let named = |want: &dyn Fn(&str) -> bool| files.iter().find(|f| want(&f.name()));
    let weights = named(&|n| n.ends_with(".safetensors"))
        .or_else(|| named(&|n| n.ends_with(".pt") || n.ends_with(".pth")))
        .ok_or("no weights among the files: give a .safetensors file or a PyTorch .pt checkpoint")?;
    let encoder = named(&|n| n == "encoder.json");
    let vocab = named(&|n| n == "vocab.bpe");
    let samples = named(&|n| n == "samples.json");
    let tasks = named(&|n| n == "tasks.json");
    let config = named(&|n| n == "config.json")
        .or_else(|| named(&|n| n.ends_with(".json") && !["encoder.json", "samples.json", "tasks.json"].contains(&n)))
        .ok_or("no config .json file among the files")?;
    let mut bytes = 0u64;
    let mut read = async |file: &web_sys::File| {
        progress(LoadProgress::Reading { file: file.name(), done: 0, total: Some(file.size() as u64) });
        if file.size() as u64 > MAX_FILE_BYTES {
            return Err(format!("{} is {} bytes, more than the page accepts ({MAX_FILE_BYTES})", file.name(), file.size()));
        }
        let buffer = JsFuture::from(file.array_buffer()).await.map_err(|e| format!("cannot read {}: {}", file.name(), js_message(&e)))?;
        let body = Uint8Array::new(&buffer).to_vec();
        bytes += body.len() as u64;
        Ok::<_, String>(body)
    };
    let config_text = text(&read(config).await?, &config.name())?;
    // A checkpoint is read by slices, once over, outside `read`.
    let (model, checkpoint_bytes) = match weights.name().ends_with(".safetensors") {
        true => (Model::from_bytes(&config_text, &read(weights).await?).map_err(|e| e.to_string())?, 0),
        false => (convert_checkpoint(weights, &config_text, progress).await?, weights.size() as u64),
    };
    let tokenizer_files = match (encoder, vocab) {
        (Some(e), Some(v)) => Some((read(e).await?, read(v).await?)),
        (None, None) => None,
        _ => return Err("a tokenizer needs both encoder.json and vocab.bpe".to_string()),
    };
    let samples = match samples {
        Some(file) => Some(read(file).await?),
        None => None,
    };
    let tasks = match tasks {
        Some(file) => Some(read(file).await?),
        None => None,
    };
    let names: Vec<String> = files.iter().map(|f| f.name()).collect();
    build(model, tokenizer_files, samples, tasks, names.join(", "), bytes + checkpoint_bytes)
}

/// A PyTorch checkpoint converted as it is read, by slices of the file: the
/// tab never holds the dense file (1.7 GB at the released scale), only the
/// zip's index and one storage at a time.
async fn convert_checkpoint(file: &web_sys::File, config: &str, progress: &dyn Fn(LoadProgress)) -> Result<Model, String> {
    let name = file.name();
    let load = async |at: u64, count: u64| -> Result<Vec<u8>, String> {
        let cannot = |e: JsValue| format!("cannot read {name}: {}", js_message(&e));
        let slice = file.slice_with_f64_and_f64(at as f64, (at + count) as f64).map_err(cannot)?;
        let buffer = JsFuture::from(slice.array_buffer()).await.map_err(cannot)?;
        Ok(Uint8Array::new(&buffer).to_vec())
    };
    let mut on_tensor = |done, total, _: &str| progress(LoadProgress::Converting { file: name.clone(), done, total });
    let converted = convert_torch_by_ranges(config, file.size() as u64, 1 << 20, load, &mut on_tensor).await;
    converted.map(|c| c.model).map_err(|e| format!("{name}: {e}"))
}

fn build(
    model: Model,
    tokenizer: Option<(Vec<u8>, Vec<u8>)>,
    samples: Option<Vec<u8>>,
    tasks: Option<Vec<u8>>,
    source: String,
    bytes: u64,
) -> Result<LoadedModel, String> {
    let tokenizer = match tokenizer {
        Some((encoder, vocab)) => {
            let tokenizer = Tokenizer::from_files(&text(&encoder, "encoder.json")?, &text(&vocab, "vocab.bpe")?)
                .map_err(|e| e.to_string())?;
            check_tokenizer(&model.config, &tokenizer).map_err(|e| e.to_string())?;
            Some(tokenizer)
        }
        None => None,
    };
    let samples = match samples {
        Some(json) => parse_samples(&text(&json, "samples.json")?, &model.config, tokenizer.as_ref())?,
        None => Vec::new(),
    };
    let tasks = match (tasks, &tokenizer) {
        (Some(json), Some(tokenizer)) => parse_task_prompts(&text(&json, "tasks.json")?, tokenizer)?,
        (Some(_), None) => return Err("tasks.json needs the model's tokenizer (encoder.json and vocab.bpe)".to_string()),
        (None, _) => Vec::new(),
    };
    Ok(build_loaded(model, tokenizer, samples, tasks, source, bytes))
}

/// A model with what came with it, checked.
pub fn build_loaded(model: Model, tokenizer: Option<Tokenizer>, samples: Vec<Vec<u32>>, tasks: Vec<TaskChoice>, source: String, bytes: u64) -> LoadedModel {
    LoadedModel { model, tokenizer, samples, tasks, circuits: Vec::new(), tours: Vec::new(), source, bytes, release: None }
}

/// A model's dataset examples file, checked against the model.
pub async fn fetch_examples(url: &str, config: &crate::model::Config) -> Result<Examples, String> {
    let bytes = fetch_bytes(url, &|_, _| {}).await?;
    let examples = Examples::from_bytes(&bytes).map_err(|e| format!("{url}: {e}"))?;
    examples.check_fits(config).map_err(|e| format!("{url}: {e}"))?;
    Ok(examples)
}

fn text(bytes: &[u8], name: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{name} is not UTF-8 text"))
}

/// What to say when a fetch fails: the browser hides why, and a host that
/// does not let this page read it is the usual cause.
pub(super) fn unreadable(url: &str) -> String {
    format!(
        "cannot fetch {url}: the server is unreachable, or does not allow this page to read it (it must send \
         Access-Control-Allow-Origin); download the files and pick them instead"
    )
}

/// The body of `url`, read chunk by chunk so `on_chunk(bytes so far, total)`
/// can show progress.
pub(super) async fn fetch_bytes(url: &str, on_chunk: &dyn Fn(u64, Option<u64>)) -> Result<Vec<u8>, String> {
    let response = Request::get(url).send().await.map_err(|_| unreadable(url))?;
    if !response.ok() {
        return Err(format!("cannot fetch {url}: HTTP {} {}", response.status(), response.status_text()));
    }
    let total = response.headers().get("content-length").and_then(|v| v.parse::<u64>().ok());
    if let Some(total) = total.filter(|&t| t > MAX_FILE_BYTES) {
        return Err(format!("{url} is {total} bytes, more than the page accepts ({MAX_FILE_BYTES})"));
    }
    let Some(body) = response.body() else { return Ok(Vec::new()) };
    on_chunk(0, total);
    let on_body = |done| on_chunk(done, total);
    read_body(url, body, total.unwrap_or(0) as usize, MAX_FILE_BYTES, &on_body)
        .await?
        .ok_or_else(|| format!("{url} is more than the page accepts ({MAX_FILE_BYTES} bytes)"))
}

/// A response body copied chunk by chunk into one buffer (never the whole
/// body as one JS ArrayBuffer first), `on_chunk` hearing the bytes so far;
/// `None` once it passes `limit` bytes.
pub(super) async fn read_body(
    url: &str,
    body: web_sys::ReadableStream,
    capacity: usize,
    limit: u64,
    on_chunk: &dyn Fn(u64),
) -> Result<Option<Vec<u8>>, String> {
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(capacity);
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| format!("cannot read {url}: {}", js_message(&e)))?;
        if Reflect::get(&chunk, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            return Ok(Some(bytes));
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into()).map_err(|_| format!("cannot read {url}"))?.unchecked_into();
        let start = bytes.len();
        if (start + value.length() as usize) as u64 > limit {
            return Ok(None);
        }
        bytes.resize(start + value.length() as usize, 0);
        value.copy_to(&mut bytes[start..]);
        on_chunk(bytes.len() as u64);
    }
}

/// A JS exception's message.
pub(super) fn js_message(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}
