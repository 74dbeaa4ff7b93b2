//! Where OpenAI's release keeps its files (`circuit_sparsity/registries.py`
//! and `viz.py` in openai/circuit_sparsity), for the page's "Released models"
//! and `circuitscope fetch-release`: under one base URL,
//! - `models/<name>/beeg_config.json` and `models/<name>/final_model.pt`;
//! - `tinypython/encoder.json` and `tinypython/vocab.bpe`, the tokenizer;
//! - `viz/<model>/<task>/<sweep>/<k>/viz_data.pt`, OpenAI's circuits.
//!
//! Plain HTTP cannot list a folder, so the circuits are listed from
//! `index.json` at the base where a mirror has one (`circuitscope
//! write-release` writes it), or else by Azure Blob Storage's container
//! listing, which is where OpenAI's files are.

use serde::{Deserialize, Serialize};

use crate::tasks::Task;

/// OpenAI's base URL for the release.
pub const OPENAI_BASE: &str = "https://openaipublic.blob.core.windows.net/circuit-sparsity";

/// The released models the viewer lists, with what each is for.
pub const RELEASED_MODELS: [(&str, &str); 2] = [
    ("csp_yolo1", "118M parameters; the quote-closing circuit"),
    ("csp_yolo2", "475M parameters; bracket counting and set_or_string"),
];

/// The release's files under one base URL.
#[derive(Clone, Debug, PartialEq)]
pub struct Release {
    base: String,
}

/// A mirror's `index.json`: the models and circuits under the base.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseIndex {
    pub models: Vec<String>,
    /// Paths under the base: `viz/<model>/<task>/<sweep>/<k>/viz_data.pt`.
    pub viz: Vec<String>,
}

/// One of OpenAI's circuits: a `viz_data.pt` of the release.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VizEntry {
    pub model: String,
    /// OpenAI's dataset name, e.g. `single_double_quote` or `bracket_counting_beeg`.
    pub dataset: String,
    /// The pruning sweep.
    pub sweep: String,
    /// The node budget: a number, or `k_optim`.
    pub k: String,
}

impl VizEntry {
    /// The entry a release path names, if it is a `viz_data.pt` of the layout.
    pub fn parse(path: &str) -> Option<VizEntry> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ["viz", model, dataset, sweep, k, "viz_data.pt"] = parts[..] else { return None };
        [model, dataset, sweep, k].iter().all(|p| check_name(p).is_ok()).then(|| VizEntry {
            model: model.into(),
            dataset: dataset.into(),
            sweep: sweep.into(),
            k: k.into(),
        })
    }

    pub fn path(&self) -> String {
        format!("viz/{}/{}/{}/{}/viz_data.pt", self.model, self.dataset, self.sweep, self.k)
    }

    /// The task of circuitscope's the dataset is, by name: OpenAI's names
    /// carry suffixes (`bracket_counting_beeg`, `single_double_quote_beeg3`).
    pub fn task(&self) -> Option<Task> {
        Task::ALL.into_iter().filter(|t| self.dataset.starts_with(t.name())).max_by_key(|t| t.name().len())
    }

    /// `csp_yolo1 single_double_quote / sweep / k 128`, for lists.
    pub fn title(&self) -> String {
        format!("{} {} / {} / k {}", self.model, self.dataset, self.sweep, self.k)
    }
}

/// A model or path part must be a plain name: letters, digits, `_`, `-`
/// and `.` (not only dots), so a name from a link or a listing cannot
/// reach outside the release's layout.
pub fn check_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 100
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && !name.chars().all(|c| c == '.');
    match plain {
        true => Ok(()),
        false => Err(format!("{name:?} is not a release name (letters, digits, _, - and . only)")),
    }
}

impl Release {
    /// The release at `base` (an http or https URL).
    pub fn new(base: &str) -> Result<Release, String> {
        let base = base.trim().trim_end_matches('/');
        let Some((scheme, rest)) = base.split_once("://") else {
            return Err(format!("{base:?} is not a URL (http://… or https://…)"));
        };
        if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains(['?', '#', ' ']) {
            return Err(format!("{base:?} is not an http or https URL of a folder"));
        }
        Ok(Release { base: base.to_string() })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    pub fn config_url(&self, model: &str) -> String {
        self.url(&format!("models/{model}/beeg_config.json"))
    }

    pub fn weights_url(&self, model: &str) -> String {
        self.url(&format!("models/{model}/final_model.pt"))
    }

    /// `encoder.json` and `vocab.bpe`.
    pub fn tokenizer_urls(&self) -> [String; 2] {
        [self.url("tinypython/encoder.json"), self.url("tinypython/vocab.bpe")]
    }

    pub fn index_url(&self) -> String {
        self.url("index.json")
    }

    /// Azure Blob Storage's listing of the blobs under `prefix` (a path
    /// under the base), when the base is `https://host/container[/folder]`;
    /// `marker` continues a listing cut short (`NextMarker`).
    pub fn azure_listing_url(&self, prefix: &str, marker: Option<&str>) -> Option<String> {
        let (scheme, rest) = self.base.split_once("://")?;
        let (host, path) = rest.split_once('/')?;
        let (container, folder) = path.split_once('/').map_or((path, ""), |(c, f)| (c, f));
        let prefix = match folder {
            "" => prefix.to_string(),
            folder => format!("{folder}/{prefix}"),
        };
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("restype", "container").append_pair("comp", "list").append_pair("prefix", &prefix);
        if let Some(marker) = marker {
            query.append_pair("marker", marker);
        }
        Some(format!("{scheme}://{host}/{container}?{}", query.finish()))
    }

    /// The part of an Azure blob name under the base (`viz/…`).
    fn under_base<'a>(&self, blob: &'a str) -> &'a str {
        let folder = self.base.split_once("://").and_then(|(_, r)| r.split_once('/')).and_then(|(_, p)| p.split_once('/')).map(|(_, f)| f);
        match folder {
            Some(folder) => blob.strip_prefix(folder).map_or(blob, |b| b.trim_start_matches('/')),
            None => blob,
        }
    }

    /// The circuits of `model` an Azure listing page names, and the marker
    /// of the next page if the listing goes on.
    pub fn parse_azure_listing(&self, xml: &str, model: &str) -> (Vec<VizEntry>, Option<String>) {
        let entries = tag_texts(xml, "Name")
            .into_iter()
            .filter_map(|name| VizEntry::parse(self.under_base(&unescape_xml(name))))
            .filter(|e| e.model == model)
            .collect();
        let next = tag_texts(xml, "NextMarker").into_iter().next().filter(|m| !m.is_empty()).map(unescape_xml);
        (entries, next)
    }
}

impl ReleaseIndex {
    pub fn parse(json: &str) -> Result<ReleaseIndex, String> {
        let index: ReleaseIndex = serde_json::from_str(json).map_err(|e| format!("index.json is not a release index: {e}"))?;
        for model in &index.models {
            check_name(model).map_err(|e| format!("index.json: {e}"))?;
        }
        Ok(index)
    }

    /// `model`'s circuits, sorted; paths outside the layout are left out.
    pub fn circuits_of(&self, model: &str) -> Vec<VizEntry> {
        let mut entries: Vec<VizEntry> = self.viz.iter().filter_map(|p| VizEntry::parse(p)).filter(|e| e.model == model).collect();
        entries.sort();
        entries
    }
}

/// The texts of every `<tag>…</tag>` in `xml` (Azure's listing is flat).
fn tag_texts<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(&rest[..end]);
        rest = &rest[end + close.len()..];
    }
    out
}

fn unescape_xml(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_reference_viewers() {
        let release = Release::new(OPENAI_BASE).unwrap();
        assert_eq!(release.weights_url("csp_yolo1"), format!("{OPENAI_BASE}/models/csp_yolo1/final_model.pt"));
        assert_eq!(release.config_url("csp_yolo2"), format!("{OPENAI_BASE}/models/csp_yolo2/beeg_config.json"));
        assert_eq!(release.tokenizer_urls()[1], format!("{OPENAI_BASE}/tinypython/vocab.bpe"));
        assert_eq!(
            release.azure_listing_url("viz/csp_yolo1/", None).unwrap(),
            "https://openaipublic.blob.core.windows.net/circuit-sparsity?restype=container&comp=list&prefix=viz%2Fcsp_yolo1%2F"
        );
    }

    #[test]
    fn an_azure_listing_gives_the_models_circuits_and_the_next_page() {
        let release = Release::new("https://example.net/container/sub/").unwrap();
        assert!(release.azure_listing_url("viz/m/", Some("abc")).unwrap().ends_with("container?restype=container&comp=list&prefix=sub%2Fviz%2Fm%2F&marker=abc"));
        let xml = "<?xml version=\"1.0\"?><EnumerationResults><Blobs>\
            <Blob><Name>sub/viz/m/single_double_quote_beeg3/sweep&amp;1/128/viz_data.pt</Name></Blob>\
            <Blob><Name>sub/viz/m/bracket_counting_beeg/s/k_optim/viz_data.pt</Name></Blob>\
            <Blob><Name>sub/viz/m/bracket_counting_beeg/s/64/other.pt</Name></Blob>\
            <Blob><Name>sub/viz/other/x/s/1/viz_data.pt</Name></Blob>\
            </Blobs><NextMarker>2!abc</NextMarker></EnumerationResults>";
        let (entries, next) = release.parse_azure_listing(xml, "m");
        assert_eq!(entries.len(), 1, "{entries:?}: `sweep&1` is not a plain name");
        assert_eq!(entries[0].k, "k_optim");
        assert_eq!(entries[0].task(), Some(Task::BracketCounting));
        assert_eq!(next.as_deref(), Some("2!abc"));
    }

    #[test]
    fn names_that_leave_the_layout_and_bad_bases_are_refused() {
        for name in ["..", ".", "a/b", "", "a b", "%2e%2e"] {
            assert!(check_name(name).is_err(), "{name:?}");
        }
        assert!(VizEntry::parse("viz/m/../s/1/viz_data.pt").is_none());
        for base in ["ftp://x/y", "openaipublic", "https://", "https://x/y?z=1", "javascript:alert(1)"] {
            assert!(Release::new(base).is_err(), "{base:?}");
        }
        let index = ReleaseIndex::parse(r#"{"models": ["m"], "viz": ["viz/m/set_or_string/s/9/viz_data.pt", "../etc/passwd"]}"#).unwrap();
        assert_eq!(index.circuits_of("m").len(), 1);
        assert!(ReleaseIndex::parse(r#"{"models": ["../x"], "viz": []}"#).is_err());
    }
}
