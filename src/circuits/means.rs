//! Mean ablation's values: every node site's mean activation per channel
//! over all positions of a set of sample prompts (the paper mean-ablates
//! over its pretraining data).

use super::Node;
use crate::model::{check_tokens, parse_token_list, Ablation, Config, Intervention, Recording, Site, Tokenizer};

/// The prompts of a `samples.json` (a JSON list of strings: text with a
/// tokenizer, token ids without) as token ids, each checked against the model.
pub fn parse_samples(json: &str, config: &Config, tokenizer: Option<&Tokenizer>) -> Result<Vec<Vec<u32>>, String> {
    let prompts: Vec<String> =
        serde_json::from_str(json).map_err(|e| format!("samples.json is not a list of prompts: {e}"))?;
    if prompts.is_empty() {
        return Err("samples.json has no prompts".to_string());
    }
    prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| {
            let tokens = match tokenizer {
                Some(t) => t.encode(prompt),
                None => parse_token_list(prompt).map_err(|e| e.to_string())?,
            };
            check_tokens(config, &tokens).map(|()| tokens).map_err(|e| e.to_string())
        }
        .map_err(|e| format!("samples.json, prompt {i}: {e}")))
        .collect()
}

/// Sample prompts for a model that comes without `samples.json` (OpenAI's
/// release): the generated corpus cut at line ends into 16 prompts of about
/// 200 bytes (some 60 tokens) each, as text, so that the page and
/// `fetch-release`'s `samples.json` give the same tokens, hence the same
/// means.
pub fn generated_samples() -> Vec<String> {
    let (count, bytes) = (16, 200);
    let text = crate::tasks::corpus(super::examples::CORPUS_SEED, count * bytes * 2);
    let mut prompts = Vec::with_capacity(count);
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        current.push_str(line);
        if current.len() >= bytes {
            prompts.push(std::mem::take(&mut current));
            if prompts.len() == count {
                break;
            }
        }
    }
    prompts
}

/// Per node site, the mean of every channel: `[width]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteMeans {
    sites: Vec<(Site, Vec<f64>)>,
    /// Positions summed so far, per site (all sites see the same ones).
    positions: usize,
    /// Prompts added.
    prompts: usize,
}

impl SiteMeans {
    /// Adds one sample's run (every node site recorded, `[T, width]` each).
    pub fn add(&mut self, recording: &Recording) {
        let mut rows = 0;
        for (site, acts) in recording.iter().filter(|(s, _)| Node::is_node_site(*s)) {
            let sums = match self.sites.iter_mut().find(|(s, _)| s == site) {
                Some((_, sums)) => sums,
                None => {
                    self.sites.push((*site, vec![0.0; acts.cols]));
                    &mut self.sites.last_mut().expect("just pushed").1
                }
            };
            for row in acts.rows_iter() {
                sums.iter_mut().zip(row).for_each(|(s, &a)| *s += f64::from(a));
            }
            rows = acts.rows;
        }
        self.positions += rows;
        self.prompts += 1;
    }

    /// How many prompts the means are over.
    pub fn prompts(&self) -> usize {
        self.prompts
    }

    /// How many positions the means are over.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// The means of `site`'s channels.
    pub fn of(&self, site: Site) -> Option<Vec<f32>> {
        let n = self.positions.max(1) as f64;
        self.sites.iter().find(|(s, _)| *s == site).map(|(_, sums)| sums.iter().map(|s| (s / n) as f32).collect())
    }

    /// Mean-ablation of `node` at every position, if its site was seen.
    pub fn ablation(&self, node: Node) -> Option<Intervention> {
        let means = self.of(node.site)?;
        Some(Intervention { site: node.site, positions: vec![], channels: vec![node.channel], ablation: Ablation::Mean(means) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{forward, forward_with_interventions, Config, Model, SiteKind};

    #[test]
    fn means_over_every_position_of_every_sample() {
        let config = Config::from_json(
            r#"{"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 20, "block_size": 8}"#,
        )
        .unwrap();
        let model = Model::synthetic(config, 0.5, 5);
        let samples: [&[u32]; 2] = [&[1, 2, 3], &[4, 5]];
        let mut means = SiteMeans::default();
        let mut all = Vec::new();
        for sample in samples {
            let mut recording = Recording::new();
            forward(&model, sample, &mut |site, acts| recording.push((site, acts.clone()))).unwrap();
            means.add(&recording);
            all.push(recording);
        }
        assert_eq!(means.positions(), 5);
        let site = Site::Layer(0, SiteKind::MlpPostAct);
        let column: Vec<f32> = all.iter().flat_map(|r| {
            let acts = &r.iter().find(|(s, _)| *s == site).unwrap().1;
            (0..acts.rows).map(|p| acts.row(p)[7]).collect::<Vec<_>>()
        }).collect();
        let expected = column.iter().map(|&a| f64::from(a)).sum::<f64>() / 5.0;
        assert!((means.of(site).unwrap()[7] as f64 - expected).abs() < 1e-6);
        assert!(means.of(Site::Layer(0, SiteKind::ResidIn)).is_none(), "not a node site");

        // The ablation sets the channel to its mean everywhere.
        let node = Node::new(0, SiteKind::MlpPostAct, 7);
        let mut seen = Vec::new();
        forward_with_interventions(&model, &[3, 3, 9], &[means.ablation(node).unwrap()], &mut |s, acts| {
            if s == site {
                seen = (0..acts.rows).map(|p| acts.row(p)[7]).collect();
            }
        })
        .unwrap();
        assert!(seen.iter().all(|&v| v == means.of(site).unwrap()[7]));
    }
}
