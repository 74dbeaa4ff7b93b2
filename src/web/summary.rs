use crate::model::{forward, parse_token_list, top_predictions, Model, Prediction, Site};

/// What the page shows after a run: plain data, cheap to clone.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub tokens: Vec<u32>,
    /// Next-token candidates after the last position, most likely first.
    pub predictions: Vec<Prediction>,
    pub layers: Vec<LayerSummary>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerSummary {
    pub layer: usize,
    /// (site name, root mean square over all tokens and channels)
    pub site_norms: Vec<(String, f32)>,
}

pub const TOP_PREDICTIONS: usize = 5;

/// Parses `text` as token ids and runs the CPU reference forward pass.
pub fn run_summary(model: &Model, text: &str) -> Result<RunSummary, String> {
    let tokens = parse_token_list(text).map_err(|e| e.to_string())?;
    let mut layers: Vec<LayerSummary> = (0..model.config.n_layer)
        .map(|layer| LayerSummary { layer, site_norms: Vec::new() })
        .collect();
    let logits = forward(model, &tokens, &mut |site, acts| {
        if let Site::Layer(layer, kind) = site {
            layers[layer].site_norms.push((kind.suffix().to_string(), acts.rms()));
        }
    })
    .map_err(|e| e.to_string())?;
    let predictions = top_predictions(logits.row(logits.rows - 1), TOP_PREDICTIONS);
    Ok(RunSummary { tokens, predictions, layers })
}
