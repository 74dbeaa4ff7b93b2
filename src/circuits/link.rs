//! Circuit links: everything that defines a view of the page, in its URL's
//! fragment, so that a link in a paper, a chat or a slide reopens the same
//! view. A link is untrusted data: [`ViewLink::parse`] takes any string and
//! either returns a view or an error naming the part at fault; it never
//! panics, and nothing in a link is run or fetched without the user's say.
//!
//! ```text
//! #v=1&model=python_tasks&prompt=x+%3D+%22hi&at=5&out=6&vs=1
//!    &circuit=single_double_quote&zero=0.mlp.post_act:k-2&rank=effect&per_site=8&zoom=1.5,-20,4
//! ```
//!
//! - `v`: the format's version; a link from a newer circuitscope is refused
//!   with a message, links of every older version keep opening.
//! - `model`: a bundled model's id; or `url` (a model folder) with `sha256`,
//!   its weights' hash ([`Model::weights_sha256`]), checked once it loads.
//! - `prompt`: the text run; `at`: the token position shown; `out` and
//!   `vs`: the output token ranked for and the one it is contrasted with.
//! - `circuit`: the task whose listed circuit is drawn, or `nodes`: the
//!   drawn node set; neither: the nodes ranked by `rank` (`effect` or
//!   `activation`), `per_site` of them per site.
//! - `zero`, `mean`: node sets ablated (zeroed, or set to their means).
//! - `sel`: the node selected (shown in the inspector), one node.
//! - `label.<node>`: the label the user gave a node (one key per node,
//!   the node written as a node set of one), e.g. `label.0.attn.v:1k=opens`.
//! - `zoom`: the graph's scale and offset (canvas pixels).
//!
//! A node set is written site by site, `site:channels`, sites apart by `,`,
//! channels ascending as base-36 steps apart by `-`: `0.mlp.post_act:k-2`
//! is channels 20 and 22. A 60-node circuit takes about 250 characters.

use std::collections::BTreeMap;

use std::sync::Arc;

use super::view::MAX_LABELS;
use super::{AblationKind, LoadedCircuit, Node, Ranking, Shown, View, Zoom};
use crate::model::{Model, Site};

/// The link format this build writes; it reads every version up to it.
pub const LINK_VERSION: u32 = 1;
/// Longer fragments are refused before they are parsed. Room for the
/// longest link this build writes: the longest prompt percent-encoded (12
/// characters for a 4-byte character: 98,304), the most nodes (about 28
/// characters each when each starts a site: 114,688), the most labels
/// (about 1,000 characters each: 256,000) and a model URL.
pub const MAX_LINK_CHARS: usize = 512 * 1024;
/// The most tokens' worth of text a link's prompt may hold.
const MAX_PROMPT_CHARS: usize = 8_192;
/// Nodes shown and ablated in all, more than any view draws.
const MAX_NODES: usize = 4_096;
/// The start of a label's key: `label.` and the node.
const LABEL_KEY: &str = "label.";

/// Where a link's model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkModel {
    /// A model bundled with the page, by id.
    Bundled(String),
    /// A model folder at a URL, with the hash its weights must have.
    Url { url: String, weights_sha256: String },
    /// A model of OpenAI's release (fetched by ranges and stored in the
    /// browser): its base URL and name, with the hash its weights must have.
    Release { base: String, name: String, weights_sha256: String },
}

/// A view of the page, as a link holds it: the model, the prompt run, and
/// what is shown of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewLink {
    pub model: LinkModel,
    pub prompt: String,
    pub view: View,
}

/// Why a link cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LinkError {
    #[error("the link is {0} characters long, more than {MAX_LINK_CHARS}")]
    TooLong(usize),
    #[error("the link has no version (v=…): it is not a circuitscope link")]
    NoVersion,
    #[error("the link is version {0}, newer than this circuitscope reads ({LINK_VERSION}): update the page")]
    Newer(u32),
    #[error("the link names no model (model=… or url=…)")]
    NoModel,
    #[error("the link's {key} is not valid: {problem}")]
    Value { key: &'static str, problem: String },
    #[error("the link does not fit this model: {0}")]
    Model(String),
}

fn bad(key: &'static str, problem: impl Into<String>) -> LinkError {
    LinkError::Value { key, problem: problem.into() }
}

impl ViewLink {
    /// The default view of a model: its prompt, nothing chosen.
    pub fn of_model(model: LinkModel, prompt: String) -> ViewLink {
        ViewLink { model, prompt, view: View::default() }
    }

    /// The fragment (without `#`) that reopens this view.
    pub fn to_fragment(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        out.append_pair("v", &LINK_VERSION.to_string());
        match &self.model {
            LinkModel::Bundled(id) => out.append_pair("model", id),
            LinkModel::Url { url, weights_sha256 } => out.append_pair("url", url).append_pair("sha256", weights_sha256),
            LinkModel::Release { base, name, weights_sha256 } => {
                out.append_pair("release", base).append_pair("name", name).append_pair("sha256", weights_sha256)
            }
        };
        out.append_pair("prompt", &self.prompt);
        let view = &self.view;
        let numbers = [("at", view.position.map(|p| p as u64)), ("out", view.target.map(u64::from)), ("vs", view.contrast.map(u64::from))];
        for (key, value) in numbers {
            if let Some(value) = value {
                out.append_pair(key, &value.to_string());
            }
        }
        match &view.shown {
            Shown::Ranked => {}
            Shown::Circuit(task) => {
                out.append_pair("circuit", task);
            }
            Shown::Nodes(nodes) => {
                out.append_pair("nodes", &encode_nodes(nodes));
            }
        }
        for (key, kind) in [("zero", AblationKind::Zero), ("mean", AblationKind::Mean)] {
            let nodes: Vec<Node> = view.ablations.iter().filter(|(_, k)| *k == kind).map(|(n, _)| *n).collect();
            if !nodes.is_empty() {
                out.append_pair(key, &encode_nodes(&nodes));
            }
        }
        if let Some(node) = view.selected {
            out.append_pair("sel", &encode_nodes(&[node]));
        }
        // In key order, as they are read back.
        let mut labels: Vec<(String, &str)> = view.labels.iter().map(|(node, text)| (format!("{LABEL_KEY}{}", encode_nodes(&[*node])), text.as_str())).collect();
        labels.sort();
        for (key, text) in labels {
            out.append_pair(&key, text);
        }
        let rank = match view.ranking {
            Ranking::Attribution => "attribution",
            Ranking::Effect => "effect",
            Ranking::Activation => "activation",
        };
        out.append_pair("rank", rank);
        out.append_pair("per_site", &view.per_site.to_string());
        if view.zoom != Zoom::IDENTITY {
            let Zoom { scale, dx, dy } = view.zoom;
            out.append_pair("zoom", &format!("{scale},{dx},{dy}"));
        }
        // `form_urlencoded` leaves `,` and `:` escaped; in a fragment they may stand as they are.
        out.finish().replace("%2C", ",").replace("%3A", ":")
    }

    /// Reads a link's fragment (with or without its `#`). Every value is
    /// checked for form here; against the model in [`ViewLink::check`].
    pub fn parse(fragment: &str) -> Result<ViewLink, LinkError> {
        let fragment = fragment.strip_prefix('#').unwrap_or(fragment);
        if fragment.len() > MAX_LINK_CHARS {
            return Err(LinkError::TooLong(fragment.len()));
        }
        let pairs: BTreeMap<String, String> = form_urlencoded::parse(fragment.as_bytes()).into_owned().collect();
        let get = |key: &str| pairs.get(key).map(String::as_str);
        let version: u32 = get("v").ok_or(LinkError::NoVersion)?.parse().map_err(|_| bad("version (v)", "not a whole number"))?;
        if version > LINK_VERSION {
            return Err(LinkError::Newer(version));
        }
        let model = match (get("model"), get("url"), get("release")) {
            (Some(id), None, None) => LinkModel::Bundled(checked_id(id)?),
            (None, Some(url), None) => LinkModel::Url { url: checked_url(url)?, weights_sha256: checked_sha256(get("sha256"))? },
            (None, None, Some(base)) => {
                let base = crate::release::Release::new(checked_url(base)?.as_str()).map_err(|e| bad("release", e))?.base().to_string();
                let name = get("name").ok_or_else(|| bad("name", "a model of the release needs its name (name=…)"))?;
                crate::release::check_name(name).map_err(|e| bad("name", e))?;
                LinkModel::Release { base, name: name.to_string(), weights_sha256: checked_sha256(get("sha256"))? }
            }
            (None, None, None) => return Err(LinkError::NoModel),
            _ => return Err(bad("model", "more than one of model=, url= and release= is given")),
        };
        let prompt = get("prompt").unwrap_or_default().to_string();
        if prompt.chars().count() > MAX_PROMPT_CHARS {
            return Err(bad("prompt", format!("longer than {MAX_PROMPT_CHARS} characters")));
        }
        let number = |key: &'static str| -> Result<Option<u32>, LinkError> {
            get(key).map(|v| v.parse::<u32>().map_err(|_| bad(key, format!("{v:?} is not a whole number")))).transpose()
        };
        let shown = match (get("circuit"), get("nodes")) {
            (Some(task), None) => Shown::Circuit(checked_id(task).map_err(|_| bad("circuit", format!("{task:?} is not a task name")))?),
            (None, Some(nodes)) => Shown::Nodes(decode_nodes("nodes", nodes)?),
            (Some(_), Some(_)) => return Err(bad("circuit", "both circuit= and nodes= are given")),
            (None, None) => Shown::Ranked,
        };
        let mut ablations = Vec::new();
        for (key, kind) in [("zero", AblationKind::Zero), ("mean", AblationKind::Mean)] {
            if let Some(text) = get(key) {
                ablations.extend(decode_nodes(key, text)?.into_iter().map(|n| (n, kind)));
            }
        }
        let selected = match get("sel").map(|text| decode_nodes("sel", text)).transpose()?.as_deref() {
            None => None,
            Some(&[node]) => Some(node),
            Some(_) => return Err(bad("sel", "not one node")),
        };
        let mut labels = Vec::new();
        for (key, text) in pairs.range(LABEL_KEY.to_string()..).take_while(|(key, _)| key.starts_with(LABEL_KEY)) {
            let node = match decode_nodes("label", &key[LABEL_KEY.len()..])?[..] {
                [node] => node,
                _ => return Err(bad("label", format!("{key:?} does not name one node"))),
            };
            super::view::check_label(text).map_err(|problem| bad("label", format!("{node}: {problem}")))?;
            labels.push((node, text.clone()));
        }
        // In the order they are written (a key may spell its node otherwise, e.g. `label.,0.attn.q:1`), each node once.
        labels.sort_by_cached_key(|(node, _)| encode_nodes(&[*node]));
        if let Some(pair) = labels.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(bad("label", format!("{} is labelled twice", pair[0].0)));
        }
        if labels.len() > MAX_LABELS {
            return Err(bad("label", format!("more than {MAX_LABELS} labels")));
        }
        let shown_nodes = match &shown {
            Shown::Nodes(nodes) => nodes.len(),
            _ => 0,
        };
        if shown_nodes + ablations.len() > MAX_NODES {
            return Err(bad("nodes", format!("more than {MAX_NODES} nodes in all")));
        }
        let ranking = match get("rank") {
            None | Some("effect") => Ranking::Effect,
            Some("attribution") => Ranking::Attribution,
            Some("activation") => Ranking::Activation,
            Some(other) => return Err(bad("rank", format!("{other:?} is not attribution, effect or activation"))),
        };
        let per_site = match number("per_site")? {
            None => 8,
            Some(n @ 1..=64) => n as usize,
            Some(n) => return Err(bad("per_site", format!("{n} is not between 1 and 64"))),
        };
        let view = View {
            position: number("at")?.map(|p| p as usize),
            target: number("out")?,
            contrast: number("vs")?,
            shown,
            ablations,
            selected,
            ranking,
            per_site,
            zoom: get("zoom").map(parse_zoom).transpose()?.unwrap_or(Zoom::IDENTITY),
            labels,
        };
        Ok(ViewLink { model, prompt, view })
    }

    /// Checks the link against the model it opened, its listed circuits
    /// and its prompt's `seq_len` tokens: the weights match, and the view
    /// fits ([`View::check`]).
    pub fn check(&self, model: &Model, seq_len: usize, circuits: &[Arc<LoadedCircuit>]) -> Result<(), LinkError> {
        if let LinkModel::Url { weights_sha256, .. } | LinkModel::Release { weights_sha256, .. } = &self.model {
            let actual = model.weights_sha256();
            if &actual != weights_sha256 {
                return Err(LinkError::Model(format!(
                    "its weights have hash {}…, the link expects {}… (the model at that URL has changed)",
                    &actual[..12],
                    &weights_sha256[..12]
                )));
            }
        }
        self.view.check(model, seq_len, circuits).map_err(LinkError::Model)
    }
}

/// A bundled model's id or a task's name: letters, digits, `_`, `-`, `.`.
fn checked_id(id: &str) -> Result<String, LinkError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok && !id.starts_with('.') {
        Ok(id.to_string())
    } else {
        Err(bad("model", format!("{:?} is not a model id", id.chars().take(64).collect::<String>())))
    }
}

/// Only http(s) URLs: a link must not make the page fetch `javascript:` or `file:` or `data:`.
fn checked_url(url: &str) -> Result<String, LinkError> {
    let lower = url.to_ascii_lowercase();
    if url.len() > 2048 || !(lower.starts_with("https://") || lower.starts_with("http://")) || url.chars().any(char::is_control) {
        return Err(bad("url", "only an http:// or https:// address of up to 2,048 characters"));
    }
    Ok(url.to_string())
}

fn checked_sha256(hash: Option<&str>) -> Result<String, LinkError> {
    match hash {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h.to_ascii_lowercase()),
        Some(_) => Err(bad("sha256", "not 64 hexadecimal digits")),
        None => Err(bad("sha256", "a model from a URL needs the hash of its weights (sha256=…)")),
    }
}

fn parse_zoom(text: &str) -> Result<Zoom, LinkError> {
    let parts: Vec<f64> = text.split(',').map(|p| p.parse::<f64>()).collect::<Result<_, _>>().map_err(|_| bad("zoom", "not three numbers"))?;
    let &[scale, dx, dy] = &parts[..] else { return Err(bad("zoom", "not three numbers")) };
    if !(Zoom::SCALES.contains(&scale) && dx.is_finite() && dy.is_finite() && dx.abs() < 1e6 && dy.abs() < 1e6) {
        return Err(bad("zoom", "scale between 0.25 and 8 and offsets under a million pixels"));
    }
    Ok(Zoom { scale, dx, dy })
}

/// `site:channels,site:channels`, channels ascending as base-36 steps.
pub fn encode_nodes(nodes: &[Node]) -> String {
    let mut by_site: BTreeMap<Site, Vec<usize>> = BTreeMap::new();
    for node in nodes {
        by_site.entry(node.site).or_default().push(node.channel);
    }
    let sites: Vec<String> = by_site
        .into_iter()
        .map(|(site, mut channels)| {
            channels.sort_unstable();
            channels.dedup();
            let mut last = 0;
            let steps: Vec<String> = channels
                .into_iter()
                .map(|c| {
                    let step = c - last;
                    last = c;
                    base36(step)
                })
                .collect();
            format!("{site}:{}", steps.join("-"))
        })
        .collect();
    sites.join(",")
}

fn base36(mut n: usize) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).expect("a base-36 digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

/// Reads [`encode_nodes`]' form; sites must be node sites.
pub fn decode_nodes(key: &'static str, text: &str) -> Result<Vec<Node>, LinkError> {
    let mut nodes = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (site_name, steps) = part.split_once(':').ok_or_else(|| bad(key, format!("{part:?} has no site:channels")))?;
        let site = Site::parse(site_name)
            .filter(|&s| Node::is_node_site(s))
            .ok_or_else(|| bad(key, format!("{site_name:?} is not a node site")))?;
        let mut channel = 0usize;
        for step in steps.split('-') {
            let step = usize::from_str_radix(step, 36).ok().filter(|_| step.len() <= 6).ok_or_else(|| bad(key, format!("{step:?} in {site_name} is not a channel step")))?;
            channel = channel.checked_add(step).filter(|&c| c < 1 << 24).ok_or_else(|| bad(key, format!("a channel of {site_name} is out of range")))?;
            nodes.push(Node { site, channel });
            if nodes.len() > MAX_NODES {
                return Err(bad(key, format!("more than {MAX_NODES} nodes")));
            }
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Config, SiteKind};

    fn view() -> ViewLink {
        ViewLink { model: LinkModel::Bundled("python_tasks".into()), prompt: "x = \"hi & bye #1 é\n".into(), view: busy() }
    }

    fn busy() -> View {
        View {
            position: Some(5),
            target: Some(6),
            contrast: Some(1),
            shown: Shown::Nodes(vec![Node::new(0, SiteKind::MlpPostAct, 20), Node::new(0, SiteKind::MlpPostAct, 22), Node::new(1, SiteKind::AttnV, 3)]),
            ablations: vec![(Node::new(0, SiteKind::AttnQ, 7), AblationKind::Zero), (Node::new(1, SiteKind::MlpResidDelta, 40), AblationKind::Mean)],
            selected: Some(Node::new(0, SiteKind::MlpPostAct, 22)),
            ranking: Ranking::Activation,
            per_site: 12,
            zoom: Zoom { scale: 1.5, dx: -20.25, dy: 4.0 },
            labels: vec![(Node::new(0, SiteKind::MlpPostAct, 22), "after \"x = '\" & #1 ;=".into()), (Node::new(1, SiteKind::AttnV, 3), "é".into())],
        }
    }

    #[test]
    fn a_release_models_link_round_trips_and_bad_ones_are_refused() {
        let model = LinkModel::Release { base: "https://host.example/circuit-sparsity".into(), name: "csp_yolo1".into(), weights_sha256: "cd".repeat(32) };
        let link = ViewLink::of_model(model, "x = '".into());
        assert_eq!(ViewLink::parse(&link.to_fragment()).unwrap(), link);
        let sha = "cd".repeat(32);
        for (fragment, key) in [
            (format!("v=1&release=https://h.example/x&sha256={sha}"), "name"),
            (format!("v=1&release=https://h.example/x&name=../up&sha256={sha}"), "name"),
            (format!("v=1&release=javascript:alert(1)&name=m&sha256={sha}"), "url"),
            (format!("v=1&release=https://h.example/x?q=1&name=m&sha256={sha}"), "release"),
            (format!("v=1&release=https://h.example/x&name=m&model=m&sha256={sha}"), "model"),
            ("v=1&release=https://h.example/x&name=m".to_string(), "sha256"),
        ] {
            match ViewLink::parse(&fragment) {
                Err(LinkError::Value { key: k, .. }) => assert_eq!(k, key, "{fragment}"),
                other => panic!("{fragment}: {other:?}"),
            }
        }
    }

    #[test]
    fn links_round_trip() {
        let link = view();
        let fragment = link.to_fragment();
        assert!(fragment.contains("nodes=0.mlp.post_act:k-2,1.attn.v:3"), "{fragment}");
        assert_eq!(ViewLink::parse(&format!("#{fragment}")).unwrap(), link);
        let url = ViewLink {
            model: LinkModel::Url { url: "https://example.org/m?a=1&b=2".into(), weights_sha256: "ab".repeat(32) },
            view: View { shown: Shown::Circuit("bracket_type".into()), ..busy() },
            ..view()
        };
        assert_eq!(ViewLink::parse(&url.to_fragment()).unwrap(), url);
        let plain = ViewLink::of_model(LinkModel::Bundled("m".into()), String::new());
        assert_eq!(ViewLink::parse(&plain.to_fragment()).unwrap(), plain);
        // A label's key may spell its node otherwise (the fuzzer's find): written again, the same view.
        let odd = ViewLink::parse("v=1&model=m&label.0.attn.act_in:2d=a&label.,1.mlp.post_act:j=b").unwrap();
        assert_eq!(ViewLink::parse(&odd.to_fragment()).unwrap(), odd);
    }

    #[test]
    fn the_longest_prompt_and_the_most_nodes_make_a_link_that_reads_back() {
        // 4-byte characters take 12 each percent-encoded; every node in a site of its own.
        let nodes: Vec<Node> = (0..MAX_NODES).map(|i| Node::new(1000 + i % 24, SiteKind::AttnResidDelta, (1 << 24) - 1 - i / 24)).collect();
        // The most labels, each as long as a label may be, of 4-byte characters.
        let labels: Vec<(Node, String)> = nodes[..MAX_LABELS].iter().map(|&n| (n, "😀".repeat(super::super::view::MAX_LABEL_CHARS))).collect();
        for prompt in ["€".repeat(MAX_PROMPT_CHARS), "😀".repeat(MAX_PROMPT_CHARS)] {
            let link = ViewLink { prompt, view: View { shown: Shown::Nodes(nodes.clone()), ablations: Vec::new(), selected: None, labels: labels.clone(), ..busy() }, ..view() };
            let fragment = link.to_fragment();
            // Read back, it writes the same link (node sets come back in site order).
            let again = ViewLink::parse(&fragment).map(|l| l.to_fragment());
            assert!(again.as_ref() == Ok(&fragment), "a link of {} characters does not read back: {:?}", fragment.len(), again.as_ref().err());
        }
        let too_many = ViewLink { view: View { shown: Shown::Nodes(nodes.clone()), ablations: vec![(nodes[0], AblationKind::Zero)], selected: None, labels: vec![], ..busy() }, ..view() };
        assert!(ViewLink::parse(&too_many.to_fragment()).unwrap_err().to_string().contains("more than 4096 nodes in all"));
    }

    #[test]
    fn a_typical_circuit_link_is_short() {
        // 60 nodes spread over a 2-layer model's sites, as the bundled circuits are.
        let config = Config::from_json(r#"{"n_layer": 2, "d_model": 256, "n_head": 8, "d_head": 32, "d_mlp": 1024, "vocab_size": 512, "block_size": 128}"#).unwrap();
        let nodes: Vec<Node> = super::super::all_nodes(&config).into_iter().step_by(5632 / 60).collect();
        let link = ViewLink { view: View { shown: Shown::Nodes(nodes.clone()), ablations: nodes[..10].iter().map(|&n| (n, AblationKind::Mean)).collect(), ..busy() }, ..view() };
        let chars = link.to_fragment().len();
        assert!(chars < 1000, "{chars} characters");
    }

    #[test]
    fn bad_links_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "no version"),
            ("v=abc&model=m", "version (v) is not valid"),
            ("v=99&model=m", "newer than this circuitscope"),
            ("v=1", "names no model"),
            ("v=1&model=../../etc", "is not a model id"),
            ("v=1&model=<script>", "is not a model id"),
            ("v=1&url=javascript:alert(1)&sha256=00", "only an http"),
            ("v=1&url=https://a.org/m", "needs the hash"),
            ("v=1&url=https://a.org/m&sha256=xyz", "not 64 hexadecimal"),
            ("v=1&model=m&at=-1", "at is not valid"),
            ("v=1&model=m&out=1e99", "out is not valid"),
            ("v=1&model=m&nodes=0.mlp.post_act", "has no site:channels"),
            ("v=1&model=m&nodes=0.resid_in:1", "is not a node site"),
            ("v=1&model=m&zero=0.attn.q:zzzzzzzzzz", "is not a channel step"),
            ("v=1&model=m&mean=0.attn.q:zzzzz-zzzzz-zzzzz", "out of range"),
            ("v=1&model=m&rank=random", "is not attribution, effect or activation"),
            ("v=1&model=m&sel=0.attn.q:1-1", "sel is not valid: not one node"),
            ("v=1&model=m&per_site=0", "not between 1 and 64"),
            ("v=1&model=m&zoom=1,2", "not three numbers"),
            ("v=1&model=m&zoom=NaN,0,0", "scale between"),
            ("v=1&model=m&zoom=100,0,0", "scale between"),
            ("v=1&model=m&circuit=a&nodes=0.attn.q:1", "both circuit= and nodes="),
            ("v=1&model=m&label.0.attn.q:1-2=x", "does not name one node"),
            ("v=1&model=m&label.0.attn.q=x", "has no site:channels"),
            ("v=1&model=m&label.0.attn.q:1=", "0.attn.q[1]: an empty label"),
            ("v=1&model=m&label.0.attn.q:1=a%07b", "control character"),
            ("v=1&model=m&label.0.attn.q:1=a&label.,0.attn.q:1=b", "0.attn.q[1] is labelled twice"),
        ];
        for (fragment, expected) in cases {
            let message = ViewLink::parse(fragment).unwrap_err().to_string();
            assert!(message.contains(expected), "{fragment:?}: {message}");
        }
        assert!(matches!(ViewLink::parse(&"a".repeat(MAX_LINK_CHARS + 1)), Err(LinkError::TooLong(_))));
        let many = format!("v=1&model=m&nodes=0.attn.q:{}", vec!["1"; MAX_NODES + 1].join("-"));
        assert!(ViewLink::parse(&many).unwrap_err().to_string().contains("more than"));
        let labels: String = (0..=MAX_LABELS).map(|c| format!("&label.0.attn.q:{}=x", base36(c))).collect();
        assert!(ViewLink::parse(&format!("v=1&model=m{labels}")).unwrap_err().to_string().contains("more than 256 labels"));
        // Truncated anywhere, a link parses or gives a message; it never panics.
        let fragment = view().to_fragment();
        for end in 0..fragment.len() {
            let _ = ViewLink::parse(&fragment[..end]);
        }
    }

    #[test]
    fn links_are_checked_against_the_model_s_weights_and_then_their_view() {
        let config = Config::from_json(r#"{"n_layer": 2, "d_model": 8, "n_head": 2, "d_head": 4, "d_mlp": 12, "vocab_size": 10, "block_size": 6}"#).unwrap();
        let model = Model::synthetic(config, 0.5, 1);
        let fits = ViewLink { view: View { target: Some(9), shown: Shown::Nodes(vec![Node::new(1, SiteKind::MlpPostAct, 11)]), ablations: vec![], selected: None, labels: vec![], ..busy() }, ..view() };
        fits.check(&model, 6, &[]).unwrap();
        let wide = ViewLink { view: View { shown: Shown::Nodes(vec![Node::new(1, SiteKind::MlpPostAct, 12)]), ..fits.view.clone() }, ..fits.clone() };
        assert!(wide.check(&model, 6, &[]).unwrap_err().to_string().contains("does not fit this model: 1.mlp.post_act[12]"));
        let moved = ViewLink { model: LinkModel::Url { url: "https://a.org/m".into(), weights_sha256: "0".repeat(64) }, ..fits.clone() };
        assert!(moved.check(&model, 6, &[]).unwrap_err().to_string().contains("has changed"));
        let same = ViewLink { model: LinkModel::Url { url: "https://a.org/m".into(), weights_sha256: model.weights_sha256() }, ..fits };
        same.check(&model, 6, &[]).unwrap();
    }
}
