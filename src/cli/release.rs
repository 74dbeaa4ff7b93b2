//! OpenAI's release natively. `circuitscope fetch-release`: a released
//! model and its tokenizer fetched by HTTP byte ranges straight into the
//! converter (never the whole `.pt` on disk or in memory), written as a
//! compact model folder, with sample prompts for the means from the
//! generated corpus (the release has none; the page uses the same). `circuitscope write-release`: a model folder
//! written in the release's layout (a mirror: `final_model.pt`, the
//! tokenizer, circuits as `viz_data.pt`, and an `index.json`), which the
//! tests serve to the page and to `fetch-release` without the internet.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use crate::circuits::{generated_samples, viz_config, CircuitOrigin, LoadedCircuit};
use crate::convert::write::{write_model_pt, write_viz_data};
use crate::convert::{convert_torch_by_ranges, NodeSamples, SampleBucket, SampleDoc, VizData, DOCS_PER_BUCKET};
use crate::circuits::parse_samples;
use crate::model::{check_tokenizer, forward, Config, Model, Tokenizer};
use crate::release::{check_name, Release, ReleaseIndex, OPENAI_BASE, RELEASED_MODELS};

/// Bytes per range request at least: each is a round trip.
const RANGE_CHUNK: u64 = 4 << 20;
/// The most a small file of the release (config, tokenizer, a circuit) may be.
const MAX_SMALL_FILE: u64 = 1 << 30;

#[derive(Args)]
pub struct FetchReleaseArgs {
    /// The released model, e.g. csp_yolo1 or csp_yolo2.
    #[arg(long)]
    name: String,
    /// The model folder to write (config.json, model.safetensors, encoder.json, vocab.bpe).
    #[arg(long)]
    out: PathBuf,
    /// Where the release is: OpenAI's, or a mirror with the same layout.
    #[arg(long, default_value = OPENAI_BASE)]
    base: String,
}

#[derive(Args)]
pub struct WriteReleaseArgs {
    /// The model folder (config.json, model.safetensors, encoder.json, vocab.bpe; samples.json for circuits' documents).
    #[arg(long)]
    model: PathBuf,
    /// The model's name in the release layout.
    #[arg(long)]
    name: String,
    /// The folder to write the release's layout in.
    #[arg(long)]
    out: PathBuf,
    /// Circuit files to write as OpenAI's `viz_data.pt` [default: the model folder's circuits/*.json].
    #[arg(long)]
    circuit: Vec<PathBuf>,
    /// The pruning sweep's name in `viz/<model>/<task>/<sweep>/<k>/`.
    #[arg(long, default_value = "circuitscope")]
    sweep: String,
}

/// HTTP over one agent: statuses are answers here, not errors.
struct Http {
    agent: ureq::Agent,
}

/// A file's length and the validators that say whether it changed.
struct Probe {
    len: u64,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Http {
    fn new() -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(std::time::Duration::from_secs(30)))
            .timeout_recv_body(Some(std::time::Duration::from_secs(120)))
            .build();
        Http { agent: config.into() }
    }

    /// The whole body of `url`, at most `limit` bytes.
    fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>, String> {
        let mut response = self.agent.get(url).call().map_err(|e| format!("cannot fetch {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("cannot fetch {url}: HTTP {}", response.status()));
        }
        response.body_mut().with_config().limit(limit).read_to_vec().map_err(|e| format!("cannot read {url}: {e}"))
    }

    /// Asks for the first byte of `url`: a host that serves ranges answers
    /// 206 with the file's length.
    fn probe(&self, url: &str) -> Result<Probe, String> {
        let response = self.agent.get(url).header("Range", "bytes=0-0").call().map_err(|e| format!("cannot fetch {url}: {e}"))?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
        match response.status().as_u16() {
            206 => {}
            200 => {
                return Err(format!(
                    "{url}: the host does not serve byte ranges (it answered the whole file), so the checkpoint cannot be \
                     converted as it is read; download it and run `circuitscope convert --in final_model.pt`"
                ))
            }
            status => return Err(format!("cannot fetch {url}: HTTP {status}")),
        }
        let len = header("content-range")
            .and_then(|range| range.rsplit_once('/').and_then(|(_, len)| len.trim().parse().ok()))
            .ok_or_else(|| format!("{url}: the host's range answer does not say the file's length (Content-Range)"))?;
        Ok(Probe { len, etag: header("etag"), last_modified: header("last-modified") })
    }

    /// Bytes `at..at + count` of `url`, refused if the file changed since `probe`.
    fn range(&self, url: &str, probe: &Probe, at: u64, count: u64) -> Result<Vec<u8>, String> {
        let mut request = self.agent.get(url).header("Range", format!("bytes={at}-{}", at + count - 1));
        if let Some(validator) = probe.etag.as_ref().or(probe.last_modified.as_ref()) {
            request = request.header("If-Range", validator);
        }
        let mut response = request.call().map_err(|e| format!("cannot fetch {url}: {e}"))?;
        match response.status().as_u16() {
            206 => {}
            200 => return Err(format!("{url} changed on the host while it was read; fetch it again")),
            status => return Err(format!("cannot fetch bytes {at}.. of {url}: HTTP {status}")),
        }
        let mut bytes = Vec::with_capacity(count as usize);
        response.body_mut().as_reader().take(count).read_to_end(&mut bytes).map_err(|e| format!("cannot read {url}: {e}"))?;
        if bytes.len() as u64 != count {
            return Err(format!("{url}: asked for {count} bytes at {at}, got {}", bytes.len()));
        }
        Ok(bytes)
    }
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8 text"))
}

pub fn fetch(args: &FetchReleaseArgs) -> Result<(), String> {
    let started = Instant::now();
    check_name(&args.name)?;
    let release = Release::new(&args.base)?;
    if release.base() == OPENAI_BASE && !RELEASED_MODELS.iter().any(|(n, _)| *n == args.name) {
        let names: Vec<&str> = RELEASED_MODELS.iter().map(|(n, _)| *n).collect();
        eprintln!("note: {} is not one of the models the viewer lists ({}); trying it anyway", args.name, names.join(", "));
    }
    let http = Http::new();
    let config = text(http.get(&release.config_url(&args.name), MAX_SMALL_FILE)?, "beeg_config.json")?;
    let parsed = Config::from_json(&config).map_err(|e| format!("{}: {e}", release.config_url(&args.name)))?;
    let [encoder_url, vocab_url] = release.tokenizer_urls();
    let encoder = text(http.get(&encoder_url, MAX_SMALL_FILE)?, "encoder.json")?;
    let vocab = text(http.get(&vocab_url, MAX_SMALL_FILE)?, "vocab.bpe")?;
    let tokenizer = Tokenizer::from_files(&encoder, &vocab).map_err(|e| format!("{encoder_url}: {e}"))?;
    check_tokenizer(&parsed, &tokenizer).map_err(|e| e.to_string())?;
    let url = release.weights_url(&args.name);
    let probe = http.probe(&url)?;
    eprintln!("{url}: {:.1} MB, read by ranges into the converter", probe.len as f64 / 1e6);
    let fetched = std::cell::Cell::new(0u64);
    let load = async |at: u64, count: u64| {
        let bytes = http.range(&url, &probe, at, count)?;
        fetched.set(fetched.get() + bytes.len() as u64);
        Ok(bytes)
    };
    let mut last_shown = None;
    let mut progress = |done: usize, total: usize, _: &str| {
        let tenth = done * 10 / total.max(1);
        if last_shown != Some(tenth) {
            last_shown = Some(tenth);
            eprintln!("  {done}/{total} tensors, {:.1} MB fetched, {:.0} s", fetched.get() as f64 / 1e6, started.elapsed().as_secs_f64());
        }
    };
    let converted = super::block_on(convert_torch_by_ranges(&config, probe.len, RANGE_CHUNK, load, &mut progress)).map_err(|e| format!("{url}: {e}"))?;
    let compact = converted.compact();
    let source = serde_json::json!({
        "base": release.base(),
        "name": args.name,
        "url": url,
        "etag": probe.etag,
        "last_modified": probe.last_modified,
        "bytes": probe.len,
    });
    let source = serde_json::to_string_pretty(&source).map_err(|e| e.to_string())? + "\n";
    // The release has no sample prompts for the means: the generated corpus's, as the page uses.
    let samples = serde_json::to_string_pretty(&generated_samples()).map_err(|e| e.to_string())? + "\n";
    super::write_folder(
        &args.out,
        &[
            ("config.json", config.as_bytes()),
            ("model.safetensors", &compact),
            ("encoder.json", encoder.as_bytes()),
            ("vocab.bpe", vocab.as_bytes()),
            ("release.json", source.as_bytes()),
            ("samples.json", samples.as_bytes()),
        ],
    )?;
    let (nonzero, total) = converted.model.weight_density();
    println!(
        "{}: {nonzero} of {total} weights nonzero; {:.1} MB fetched of {:.1} MB, compact model {:.1} MB, {:.0} s",
        args.name,
        fetched.get() as f64 / 1e6,
        probe.len as f64 / 1e6,
        compact.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!("wrote {}", args.out.display());
    Ok(())
}

/// `url` whole: a release file (a `viz_data.pt`) for `circuit-import`.
pub(super) fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    Http::new().get(url, MAX_SMALL_FILE)
}

pub fn write(args: &WriteReleaseArgs) -> Result<(), String> {
    check_name(&args.name)?;
    check_name(&args.sweep)?;
    let (model, tokenizer) = super::load_model_dir(&args.model)?;
    let tokenizer = tokenizer.ok_or_else(|| format!("{} has no tokenizer (encoder.json + vocab.bpe)", args.model.display()))?;
    let read = |name: &str| std::fs::read(args.model.join(name)).map_err(|e| format!("cannot read {}: {e}", args.model.join(name).display()));
    let model_dir = args.out.join("models").join(&args.name);
    super::write_folder(&model_dir, &[("beeg_config.json", &read("config.json")?)])?;
    let pt_path = model_dir.join("final_model.pt");
    let partial = super::partial_path(&pt_path);
    let file = std::fs::File::create(&partial).map_err(|e| format!("cannot write {}: {e}", pt_path.display()))?;
    write_model_pt(&model, std::io::BufWriter::new(file))
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&partial, &pt_path))
        .map_err(|e| format!("cannot write {}: {e}", pt_path.display()))?;
    super::write_folder(&args.out.join("tinypython"), &[("encoder.json", &read("encoder.json")?), ("vocab.bpe", &read("vocab.bpe")?)])?;
    let circuits = match args.circuit.is_empty() {
        false => args.circuit.clone(),
        true => bundled_circuits(&args.model),
    };
    let prompts = match std::fs::read_to_string(args.model.join("samples.json")) {
        Ok(json) => parse_samples(&json, &model.config, Some(&tokenizer))?,
        Err(_) => Vec::new(),
    };
    let mut index = ReleaseIndex { models: vec![args.name.clone()], viz: Vec::new() };
    for path in circuits {
        let json = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let circuit = LoadedCircuit::parse(&json, &model, CircuitOrigin::Opened).map_err(|e| format!("{}: {e}", path.display()))?;
        let viz = viz_of(&model, &circuit, &prompts)?;
        let entry = format!("viz/{}/{}/{}/{}/viz_data.pt", args.name, circuit.file.task, args.sweep, circuit.nodes.len());
        let bytes = write_viz_data(&viz).map_err(|e| e.to_string())?;
        let (dir, name) = entry.rsplit_once('/').expect("a path with folders");
        super::write_folder(&args.out.join(dir), &[(name, &bytes)])?;
        println!("{entry}: {} nodes, documents for {}", viz.nodes(), viz.samples.len());
        index.viz.push(entry);
    }
    let index = serde_json::to_string_pretty(&index).map_err(|e| e.to_string())? + "\n";
    super::write_folder(&args.out, &[("index.json", index.as_bytes())])?;
    println!("wrote {} ({} as {})", args.out.display(), args.model.display(), args.name);
    Ok(())
}

fn bundled_circuits(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("circuits"))
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.extension().is_some_and(|e| e == "json")).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

/// Bucket fractions of OpenAI's files: each node's top and bottom 0.1%,
/// 1%, 10% and 50% of documents.
const FRACTIONS: [f64; 4] = [0.001, 0.01, 0.1, 0.5];

/// `circuit` in OpenAI's structure: its nodes by site, the losses it was
/// found with, and each node's documents among `prompts`, ranked by the
/// node's largest value in them (the bucket of fraction f starts at that
/// share of the ranking).
fn viz_of(model: &Model, circuit: &LoadedCircuit, prompts: &[Vec<u32>]) -> Result<VizData, String> {
    let mut circuit_sites: Vec<(String, Vec<usize>)> = Vec::new();
    for node in &circuit.nodes {
        let site = node.site.to_string();
        match circuit_sites.iter_mut().find(|(s, _)| *s == site) {
            Some((_, channels)) => channels.push(node.channel),
            None => circuit_sites.push((site, vec![node.channel])),
        }
    }
    // Per node, each prompt's values, with where they are largest and smallest.
    struct Seen {
        prompt: usize,
        values: Vec<f32>,
        top: (f32, usize),
        bottom: (f32, usize),
    }
    let mut seen: Vec<Vec<Seen>> = circuit.nodes.iter().map(|_| Vec::new()).collect();
    for (prompt, tokens) in prompts.iter().enumerate() {
        let mut values: Vec<Vec<f32>> = vec![Vec::new(); circuit.nodes.len()];
        forward(model, tokens, &mut |site, acts| {
            for (i, node) in circuit.nodes.iter().enumerate().filter(|(_, n)| n.site == site) {
                values[i] = (0..acts.rows).map(|t| acts.data[t * acts.cols + node.channel]).collect();
            }
        })
        .map_err(|e| e.to_string())?;
        for (i, values) in values.into_iter().enumerate() {
            let at = |(t, v): (usize, &f32)| (*v, t);
            let top = values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or((0.0, 0), at);
            let bottom = values.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).map_or((0.0, 0), at);
            seen[i].push(Seen { prompt, values, top, bottom });
        }
    }
    let document = |s: &Seen, position: usize| SampleDoc { tokens: prompts[s.prompt].clone(), values: s.values.clone(), position };
    let mut samples = Vec::new();
    for (node, mut docs) in circuit.nodes.iter().zip(seen).filter(|(_, docs)| !docs.is_empty()) {
        let n = docs.len();
        let start = |fraction: f64| ((fraction * n as f64) as usize).min(n - 1);
        docs.sort_by(|a, b| b.top.0.total_cmp(&a.top.0));
        let tops: Vec<Vec<SampleDoc>> = FRACTIONS
            .iter()
            .map(|&f| docs[start(f)..].iter().take(DOCS_PER_BUCKET).map(|s| document(s, s.top.1)).collect())
            .collect();
        docs.sort_by(|a, b| a.bottom.0.total_cmp(&b.bottom.0));
        let buckets = FRACTIONS
            .iter()
            .zip(tops)
            .map(|(&fraction, top)| SampleBucket {
                fraction,
                bottom: docs[start(fraction)..].iter().take(DOCS_PER_BUCKET).map(|s| document(s, s.bottom.1)).collect(),
                top,
            })
            .collect();
        samples.push(NodeSamples { site: node.site.to_string(), channel: node.channel, buckets });
    }
    let f = &circuit.file.faithfulness;
    Ok(VizData {
        circuit: circuit_sites,
        channel_losses: Vec::new(),
        loss: Some(f.full.loss),
        circuit_loss: Some(f.circuit.loss),
        config: viz_config(&model.config),
        samples,
    })
}
