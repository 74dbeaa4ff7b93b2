//! OpenAI's release without the internet: `write-release` writes the bundled
//! model as a mirror of the release's layout (`final_model.pt`, the
//! tokenizer, its circuits as `viz_data.pt`, `index.json`), a local server
//! serves it with byte ranges on or off, and `fetch-release` and
//! `circuit-import` read it as they would read OpenAI's host.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/models/python_tasks");

fn circuitscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_circuitscope")).args(args).output().expect("run circuitscope")
}

fn succeeds(args: &[&str]) -> String {
    let out = circuitscope(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = circuitscope(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A static file server on a free loopback port, with byte ranges
/// switchable, counting the bytes of the bodies it sent.
struct Server {
    url: String,
    ranges: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

fn serve(root: &Path) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (ranges, sent) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
    let (root, serve_ranges, counted) = (root.to_path_buf(), ranges.clone(), sent.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (start, end) = value.trim().split_once('-').unwrap();
                    range = Some((start.parse::<u64>().unwrap(), end.parse::<u64>().unwrap()));
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let body = std::fs::read(root.join(path.trim_start_matches('/'))).ok().filter(|_| !path.contains(".."));
            let (status, headers, body) = match (body, range) {
                (None, _) => ("404 Not Found", String::new(), b"not found".to_vec()),
                (Some(body), Some((start, end))) if serve_ranges.load(Ordering::SeqCst) => {
                    let end = end.min(body.len() as u64 - 1);
                    let part = body[start as usize..=end as usize].to_vec();
                    ("206 Partial Content", format!("Content-Range: bytes {start}-{end}/{}\r\nETag: \"v1\"\r\n", body.len()), part)
                }
                (Some(body), _) => ("200 OK", "ETag: \"v1\"\r\n".to_string(), body),
            };
            counted.fetch_add(body.len() as u64, Ordering::SeqCst);
            let head = format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    Server { url, ranges, sent }
}

/// The bundled model written as a release mirror, named `tiny_tasks`.
fn mirror() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    succeeds(&["write-release", "--model", BUNDLED, "--name", "tiny_tasks", "--out", dir.path().to_str().unwrap()]);
    dir
}

fn sha(dir: &Path) -> String {
    circuitscope::model::Model::load_dir(dir).unwrap().weights_sha256()
}

#[test]
fn a_mirror_of_the_bundled_model_is_fetched_by_ranges_into_the_same_model_and_tokenizer() {
    let mirror = mirror();
    let pt = mirror.path().join("models/tiny_tasks/final_model.pt");
    let server = serve(mirror.path());
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("tiny");
    let printed = succeeds(&["fetch-release", "--name", "tiny_tasks", "--base", &server.url, "--out", folder.to_str().unwrap()]);
    assert!(printed.contains("34666 of 1738512 weights nonzero"), "{printed}");
    assert_eq!(sha(&folder), sha(Path::new(BUNDLED)));
    for file in ["encoder.json", "vocab.bpe"] {
        assert_eq!(std::fs::read(folder.join(file)).unwrap(), std::fs::read(Path::new(BUNDLED).join(file)).unwrap(), "{file}");
    }
    let source: serde_json::Value = serde_json::from_slice(&std::fs::read(folder.join("release.json")).unwrap()).unwrap();
    assert_eq!(source["etag"], "\"v1\"");
    // The fetched model runs as the bundled one does.
    let forward = |dir: &Path| succeeds(&["forward", "--model", dir.to_str().unwrap(), "--prompt", "x = '", "--json"]);
    assert_eq!(forward(&folder), forward(Path::new(BUNDLED)));
    // Ranges, not one whole download per read: the file's index and
    // each storage once, and the small files.
    let len = std::fs::metadata(&pt).unwrap().len();
    assert!(server.sent.load(Ordering::SeqCst) < 3 * len, "{} bytes sent for a file of {len}", server.sent.load(Ordering::SeqCst));
}

#[test]
fn a_host_without_ranges_or_without_the_model_is_refused_with_what_to_do() {
    let mirror = mirror();
    let server = serve(mirror.path());
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("tiny");
    let fetch = |name: &str| fails(&["fetch-release", "--name", name, "--base", &server.url, "--out", folder.to_str().unwrap()]);
    let missing = fetch("csp_nothing");
    assert!(missing.contains("models/csp_nothing/beeg_config.json: HTTP 404"), "{missing}");
    assert!(fetch("../tiny_tasks").contains("not a release name"));
    server.ranges.store(false, Ordering::SeqCst);
    let refused = fetch("tiny_tasks");
    assert!(refused.contains("does not serve byte ranges") && refused.contains("circuitscope convert"), "{refused}");
    assert!(!folder.exists(), "a refused fetch wrote its folder");
    let bad_base = fails(&["fetch-release", "--name", "x", "--base", "ftp://example.com", "--out", folder.to_str().unwrap()]);
    assert!(bad_base.contains("not an http or https URL"), "{bad_base}");
}

#[test]
fn a_truncated_checkpoint_on_the_host_is_named_and_writes_nothing() {
    let mirror = mirror();
    let pt = mirror.path().join("models/tiny_tasks/final_model.pt");
    let bytes = std::fs::read(&pt).unwrap();
    std::fs::write(&pt, &bytes[..bytes.len() / 2]).unwrap();
    let server = serve(mirror.path());
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("tiny");
    let message = fails(&["fetch-release", "--name", "tiny_tasks", "--base", &server.url, "--out", folder.to_str().unwrap()]);
    assert!(message.contains("final_model.pt") && message.contains("not a zip archive"), "{message}");
    assert!(!folder.exists());
}

fn circuit_nodes(path: &Path) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut nodes: Vec<String> = json["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    nodes.sort();
    nodes
}

#[test]
fn an_imported_circuit_keeps_the_fixtures_channels_and_gets_its_faithfulness_computed_here() {
    let mirror = mirror();
    let server = serve(mirror.path());
    let out = tempfile::tempdir().unwrap();
    let imported = out.path().join("imported.json");
    let url = format!("{}/viz/tiny_tasks/single_double_quote/circuitscope/35/viz_data.pt", server.url);
    let printed = succeeds(&["circuit-import", "--model", BUNDLED, "--viz", &url, "--out", imported.to_str().unwrap()]);
    assert!(printed.contains("OpenAI's circuit of 35 nodes") && printed.contains("35 of its nodes have pretraining documents"), "{printed}");
    let bundled: PathBuf = Path::new(BUNDLED).join("circuits/single_double_quote.json");
    assert_eq!(circuit_nodes(&imported), circuit_nodes(&bundled));
    // The same nodes, so the same figures as the bundled circuit's own evaluation.
    let eval = |path: &Path| {
        let json: serde_json::Value = serde_json::from_str(&succeeds(&["circuit-eval", "--model", BUNDLED, "--circuit", path.to_str().unwrap(), "--json"])).unwrap();
        json["faithfulness"].clone()
    };
    assert_eq!(eval(&imported), eval(&bundled));
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&imported).unwrap()).unwrap();
    assert_eq!(file["method"]["name"], "openai-viz-data");
    assert_eq!(file["method"]["settings"]["sweep"], "circuitscope");
    // A file outside the layout needs --task; one of another task's model is refused.
    let local = mirror.path().join("viz/tiny_tasks/bracket_type/circuitscope/15/viz_data.pt");
    let copied = out.path().join("viz_data.pt");
    std::fs::copy(&local, &copied).unwrap();
    let no_task = fails(&["circuit-import", "--model", BUNDLED, "--viz", copied.to_str().unwrap()]);
    assert!(no_task.contains("--task"), "{no_task}");
    succeeds(&["circuit-import", "--model", BUNDLED, "--viz", copied.to_str().unwrap(), "--task", "bracket_type", "--out", out.path().join("b.json").to_str().unwrap()]);
    assert_eq!(circuit_nodes(&out.path().join("b.json")), circuit_nodes(&Path::new(BUNDLED).join("circuits/bracket_type.json")));
    let shape = out.path().join("shape.json");
    std::fs::write(&shape, r#"{"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 512, "block_size": 16}"#).unwrap();
    let small = out.path().join("small");
    succeeds(&["synthetic", "--config", shape.to_str().unwrap(), "--tokenizer", BUNDLED, "--out", small.to_str().unwrap()]);
    let other = fails(&["circuit-import", "--model", small.to_str().unwrap(), "--viz", copied.to_str().unwrap(), "--task", "bracket_type"]);
    assert!(other.contains("the circuit was found on a model with"), "{other}");
}

#[test]
fn a_hostile_viz_data_is_refused_by_name() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("viz_data.pt");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("archive/data.pkl", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.").unwrap();
    std::fs::write(&path, zip.finish().unwrap().into_inner()).unwrap();
    let message = fails(&["circuit-import", "--model", BUNDLED, "--viz", path.to_str().unwrap(), "--task", "bracket_type"]);
    assert!(message.contains("`os.system`") && message.contains("never runs code"), "{message}");
    let mut read = Vec::new();
    std::fs::File::open(&path).unwrap().read_to_end(&mut read).unwrap();
    assert!(!read.is_empty());
}
