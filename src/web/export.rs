//! Export: the graph as SVG (drawn by the canvas's own painting code) and
//! PNG, the shown circuit as a circuit file, the run's activations as
//! safetensors; each handed to the browser as a download.

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;

use super::graph_paint::{canvas_size, paint_annotations, paint_graph, Painter, Segment};
use super::page::use_page;
use crate::circuits::{Block, GraphView, Node};
use crate::model::activations_safetensors;

/// An SVG document being drawn.
struct Svg {
    body: String,
}

/// Text for SVG's character data and attribute values.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An `rgba(r, g, b, a)` colour as SVG 1.1 viewers read it: the colour and an opacity.
fn paint(colour: &str) -> (String, String) {
    match colour.strip_prefix("rgba(").and_then(|c| c.strip_suffix(')')).and_then(|c| c.rsplit_once(',')) {
        Some((rgb, alpha)) => (format!("rgb({rgb})"), alpha.trim().to_string()),
        None => (colour.to_string(), "1".to_string()),
    }
}

impl Painter for Svg {
    fn text(&mut self, x: f64, y: f64, text: &str, colour: &str) {
        let (fill, opacity) = paint(colour);
        self.body.push_str(&format!(
            "<text x=\"{x:.2}\" y=\"{y:.2}\" fill=\"{fill}\" fill-opacity=\"{opacity}\" text-anchor=\"middle\" font-size=\"11\" font-family=\"system-ui, sans-serif\">{}</text>\n",
            escaped(text)
        ));
    }

    fn curves(&mut self, colour: &str, width: f64, ends: &[Segment]) {
        let (stroke, opacity) = paint(colour);
        let d: String = ends
            .iter()
            .map(|&((x0, y0), (x1, y1))| {
                let bend = (x1 - x0) / 2.0;
                format!("M{x0:.2} {y0:.2}C{:.2} {y0:.2} {:.2} {y1:.2} {x1:.2} {y1:.2}", x0 + bend, x1 - bend)
            })
            .collect();
        self.body.push_str(&format!("<path class=\"edges\" d=\"{d}\" fill=\"none\" stroke=\"{stroke}\" stroke-opacity=\"{opacity}\" stroke-width=\"{width:.2}\"/>\n"));
    }

    fn circle(&mut self, x: f64, y: f64, radius: f64, fill: &str, ring: (&str, f64)) {
        let (fill, opacity) = paint(fill);
        let (ring_colour, ring_opacity) = paint(ring.0);
        self.body.push_str(&format!(
            "<g class=\"node\"><circle cx=\"{x:.2}\" cy=\"{y:.2}\" r=\"{radius}\" fill=\"#ffffff\"/><circle cx=\"{x:.2}\" cy=\"{y:.2}\" r=\"{radius}\" fill=\"{fill}\" fill-opacity=\"{opacity}\" stroke=\"{ring_colour}\" stroke-opacity=\"{ring_opacity}\" stroke-width=\"{}\"/></g>\n",
            ring.1
        ));
    }

    fn label(&mut self, x: f64, y: f64, text: &str) {
        // A white halo (the stroke, painted first) stands for the canvas's white box.
        self.body.push_str(&format!(
            "<text class=\"label\" x=\"{:.2}\" y=\"{:.2}\" fill=\"#111111\" stroke=\"#ffffff\" stroke-width=\"3\" paint-order=\"stroke\" font-size=\"11\" font-family=\"system-ui, sans-serif\">{}</text>\n",
            x + 3.0,
            y + 4.0,
            escaped(text)
        ));
    }
}

/// The graph as a standalone SVG document, as the canvas draws it unzoomed,
/// with `labels` beside their nodes and the circuit's block deltas.
pub fn graph_svg(view: &GraphView, labels: &[(usize, String)], blocks: &[(Block, f64)]) -> String {
    let (width, height) = canvas_size(view);
    let mut svg = Svg { body: String::new() };
    paint_graph(&mut svg, view);
    paint_annotations(&mut svg, view, labels, blocks);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n{}</svg>\n",
        svg.body
    )
}

/// Offers `bytes` as a file download named `name`.
pub fn download(name: &str, bytes: &[u8], mime: &str) -> Result<(), String> {
    let fail = |what: &str| format!("cannot export {name}: {what}");
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options).map_err(|_| fail("no Blob"))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|_| fail("no object URL"))?;
    let result = download_url(name, &url);
    let _ = web_sys::Url::revoke_object_url(&url);
    result.map_err(|_| fail("the page cannot start a download"))
}

/// Clicks a hidden `<a download>` for `url`.
pub fn download_url(name: &str, url: &str) -> Result<(), wasm_bindgen::JsValue> {
    let document = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let link: web_sys::HtmlAnchorElement = document.create_element("a")?.dyn_into()?;
    link.set_href(url);
    link.set_download(name);
    link.click();
    Ok(())
}

/// Exports of the run and of the shown circuit.
#[component]
pub fn ExportBar() -> impl IntoView {
    let page = use_page();
    let (circuit, run, error) = (page.drawn, page.run, page.error);
    let export_circuit = move |_| {
        let Some(circuit) = circuit.get_untracked() else { return };
        let name = format!("{}.json", circuit.file.task);
        // With the labels the user gave its nodes.
        let file = page.view.with_untracked(|v| circuit.with_labels(&v.labels));
        if let Err(message) = download(&name, file.to_json().as_bytes(), "application/json") {
            error.set(Some(message));
        }
    };
    let export_run = move |_| {
        let (Some(run), Some(runner)) = (run.get_untracked(), page.runner()) else { return };
        // Every site, read back (from the GPU) for this alone.
        spawn_local(async move {
            let saved = runner.read_all_kept(&run.kept).await.and_then(|recording| {
                let bytes = activations_safetensors(&run.logits, &recording);
                download("activations.safetensors", &bytes, "application/octet-stream")
            });
            if let Err(message) = saved {
                error.set(Some(message));
            }
        });
    };
    let examples_ready = move || page.examples.with(|e| e.ready().is_some());
    let export_examples = move |_| {
        let (Some(model), Some(view)) = (page.model(), page.graph.get_untracked()) else { return };
        let nodes: Vec<Node> = view.nodes.iter().map(|n| n.node).collect();
        let tokenizer = page.tokenizer();
        let given = page.view.with_untracked(|v| v.labels.clone());
        let json = page.examples.with_untracked(|e| Some(e.ready()?.examples.to_json(&nodes, &model.config, tokenizer.as_deref(), 12, &given)));
        if let Some(Err(message)) = json.map(|json| download("examples.json", json.to_string().as_bytes(), "application/json")) {
            error.set(Some(message));
        }
    };
    view! {
        <div class="export-bar">
            "Export: "
            <button
                type="button"
                data-testid="export-circuit"
                title=move || if circuit.with(Option::is_some) { "The shown circuit as a circuit file (JSON)" } else { "Show a task's circuit first" }
                disabled=move || circuit.with(Option::is_none)
                on:click=export_circuit
            >
                "circuit (.json)"
            </button>
            <button
                type="button"
                data-testid="export-activations"
                title="The logits and every site of the last run, f32 safetensors"
                disabled=move || run.with(Option::is_none)
                on:click=export_run
            >
                "activations (.safetensors)"
            </button>
            <button
                type="button"
                data-testid="export-examples"
                title=move || if examples_ready() { "The shown nodes' dataset examples and labels (JSON)" } else { "This model has no dataset examples yet" }
                disabled=move || !examples_ready() || page.graph.with(Option::is_none)
                on:click=export_examples
            >
                "examples (.json)"
            </button>
        </div>
    }
}
