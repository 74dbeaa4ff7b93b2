/// One candidate next token.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub token: u32,
    pub logit: f32,
    /// Softmax probability over the whole vocabulary.
    pub prob: f32,
}

/// The `k` most likely next tokens for one row of logits, most likely first.
/// Ties go to the lower token id, so the order is deterministic.
pub fn top_predictions(logits: &[f32], k: usize) -> Vec<Prediction> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let denom: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| Prediction {
            token: i as u32,
            logit: logits[i],
            prob: (f64::from(logits[i] - max).exp() / denom) as f32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_normalises() {
        let p = top_predictions(&[0.0, 2.0, 1.0, 2.0], 3);
        assert_eq!(p.iter().map(|p| p.token).collect::<Vec<_>>(), vec![1, 3, 2]);
        let total: f32 = top_predictions(&[0.0, 2.0, 1.0, 2.0], 4).iter().map(|p| p.prob).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
