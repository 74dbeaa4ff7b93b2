use crate::model::{check_tokens, parse_token_list, top_predictions, ColumnSummary, Model, Prediction, Site, Tensor, Tokenizer};

/// One layer's row in the page: plain data, cheap to clone.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSummary {
    pub layer: usize,
    /// (site name, root mean square over all tokens and channels)
    pub site_norms: Vec<(String, f32)>,
}

/// What the page says about a loaded model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFacts {
    pub source: String,
    pub summary: String,
    pub tokenizer: bool,
}

impl ModelFacts {
    pub fn new(model: &Model, tokenizer: Option<&Tokenizer>, source: String, bytes: u64) -> ModelFacts {
        let c = &model.config;
        let (nnz, total) = model.weight_density();
        let vocab = match tokenizer {
            Some(t) => format!("a {}-token BPE tokenizer", t.vocab_size()),
            None => format!("token ids 0 to {}", c.vocab_size - 1),
        };
        let summary = format!(
            "{} layers, d_model {}, {} heads, vocab {}; {:.1} KB on disk; {} of {} weights nonzero ({:.3}%); {}.",
            c.n_layer,
            c.d_model,
            c.n_head,
            c.vocab_size,
            bytes as f64 / 1024.0,
            nnz,
            total,
            100.0 * nnz as f64 / total.max(1) as f64,
            vocab
        );
        ModelFacts { source, summary, tokenizer: tokenizer.is_some() }
    }
}

pub const TOP_PREDICTIONS: usize = 5;

/// The prompt as token ids: encoded text with a tokenizer, a list of ids
/// without one; checked against the model either way.
pub fn encode_prompt(model: &Model, tokenizer: Option<&Tokenizer>, text: &str) -> Result<Vec<u32>, String> {
    let tokens = match tokenizer {
        Some(tokenizer) => tokenizer.encode(text),
        None => parse_token_list(text).map_err(|e| e.to_string())?,
    };
    check_tokens(&model.config, &tokens).map_err(|e| e.to_string())?;
    Ok(tokens)
}

/// A token as the page shows it: its text with spaces, tabs and newlines made
/// visible, or its id when there is no tokenizer.
pub fn token_text(tokenizer: Option<&Tokenizer>, id: u32) -> String {
    match tokenizer {
        Some(t) if (id as usize) < t.vocab_size() => String::from_utf8_lossy(t.token_bytes(id))
            .chars()
            .map(|c| match c {
                ' ' => '\u{2423}',
                '\n' => '\u{21b5}',
                '\t' => '\u{21e5}',
                c => c,
            })
            .collect(),
        _ => format!("token {id}"),
    }
}

/// The summary of one layer's recorded sites.
pub fn layer_summary<'a>(layer: usize, sites: impl IntoIterator<Item = &'a (Site, ColumnSummary)>) -> LayerSummary {
    let site_norms = sites
        .into_iter()
        .filter_map(|(site, summary)| match site {
            Site::Layer(l, kind) if *l == layer => Some((kind.suffix().to_string(), summary.rms())),
            _ => None,
        })
        .collect();
    LayerSummary { layer, site_norms }
}

/// The next-token candidates after `position` of `logits` (`[T, vocab]`),
/// or after the last position if `position` is beyond it.
pub fn predictions_at(logits: &Tensor, position: usize) -> Vec<Prediction> {
    if logits.rows == 0 {
        return Vec::new();
    }
    top_predictions(logits.row(position.min(logits.rows - 1)), TOP_PREDICTIONS)
}
