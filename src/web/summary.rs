use crate::model::{check_tokens, parse_token_list, top_predictions, Model, Prediction, Site, Tensor};

/// One layer's row in the page: plain data, cheap to clone.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSummary {
    pub layer: usize,
    /// (site name, root mean square over all tokens and channels)
    pub site_norms: Vec<(String, f32)>,
}

pub const TOP_PREDICTIONS: usize = 5;

/// Parses `text` as token ids and checks them against the model.
pub fn parse_tokens(model: &Model, text: &str) -> Result<Vec<u32>, String> {
    let tokens = parse_token_list(text).map_err(|e| e.to_string())?;
    check_tokens(&model.config, &tokens).map_err(|e| e.to_string())?;
    Ok(tokens)
}

/// The summary of one layer's recorded sites.
pub fn layer_summary<'a>(layer: usize, sites: impl IntoIterator<Item = &'a (Site, Tensor)>) -> LayerSummary {
    let site_norms = sites
        .into_iter()
        .filter_map(|(site, acts)| match site {
            Site::Layer(l, kind) if *l == layer => Some((kind.suffix().to_string(), acts.rms())),
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
