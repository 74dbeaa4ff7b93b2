//! Node gates, as the paper's circuit pruning learns them: at a gated site
//! each channel is either kept or set to its mean activation at every
//! position. A gated run records, at each gated site, the value before the
//! gate as well as the one the pass went on with, and its backward pass
//! gives the objective's derivative with respect to each channel's gate:
//! with `a' = mean + gate (a - mean)` (gate 1 kept, 0 ablated),
//!   d objective / d gate_c = sum_t g[t, c] (a[t, c] - mean_c)
//! where g is the gradient at the gated value a' and a the value before
//! the gate. The pruner's straight-through estimator multiplies it by the
//! derivative of its surrogate (`circuits::prune`).

use super::backward::{backward_gated, Gradients, Objective};
use super::forward::Recording;
use super::{check_every_site, forward, Config, Model, ModelError, Site, SiteKind, Tensor};

/// One gated site: which channels are kept, and the value of the others.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    pub site: Site,
    /// `[width]`: true where the channel is kept.
    pub kept: Vec<bool>,
    /// `[width]`: the value of an ablated channel (its mean activation).
    pub mean: Vec<f32>,
}

/// The sites a gate may sit at: the circuit's node sites, each the output
/// of an op whose backward pass the gate can interrupt.
pub const GATEABLE: [SiteKind; 8] = [
    SiteKind::AttnActIn,
    SiteKind::AttnQ,
    SiteKind::AttnK,
    SiteKind::AttnV,
    SiteKind::AttnResidDelta,
    SiteKind::MlpActIn,
    SiteKind::MlpPostAct,
    SiteKind::MlpResidDelta,
];

impl Gate {
    /// Refuses a gate at a site it cannot sit at, or of the wrong width, or
    /// a second gate at one site.
    pub fn check_all(config: &Config, gates: &[Gate]) -> Result<(), ModelError> {
        for (i, gate) in gates.iter().enumerate() {
            let Site::Layer(layer, kind) = gate.site else {
                return Err(ModelError::Objective(format!("{} cannot be gated: only node sites can", gate.site)));
            };
            if layer >= config.n_layer || !GATEABLE.contains(&kind) {
                return Err(ModelError::Objective(format!("{} cannot be gated: only node sites can", gate.site)));
            }
            let width = config.site_width(gate.site);
            if gate.kept.len() != width || gate.mean.len() != width {
                return Err(ModelError::Objective(format!(
                    "the gate at {} has {} channels and {} means, but the site is {width} wide",
                    gate.site,
                    gate.kept.len(),
                    gate.mean.len()
                )));
            }
            if gates[..i].iter().any(|other| other.site == gate.site) {
                return Err(ModelError::Objective(format!("{} is gated twice", gate.site)));
            }
        }
        Ok(())
    }

    /// Sets every ablated channel of `acts` (`[T, width]`) to its mean.
    pub fn apply(&self, acts: &mut Tensor) {
        for row in acts.rows_iter_mut() {
            for ((value, &kept), &mean) in row.iter_mut().zip(&self.kept).zip(&self.mean) {
                if !kept {
                    *value = mean;
                }
            }
        }
    }
}

/// A gated run with the objective's gradient at every site.
#[derive(Clone, Debug)]
pub struct GatedGradients {
    /// The run as the pass went on: gated values at gated sites, and the
    /// gradient at every site (at the gated value where there is a gate).
    pub run: Gradients,
    /// Each gated site's value before its gate `[T, width]`, in the order
    /// of the gates.
    pub ungated: Recording,
}

impl GatedGradients {
    /// d objective / d gate for every channel of `gate`'s site (see the
    /// module's comment), `[width]`.
    pub fn gate_gradient(&self, gate: &Gate) -> Option<Vec<f64>> {
        let g = self.run.at(gate.site)?;
        let before = &self.ungated.iter().find(|(site, _)| *site == gate.site)?.1;
        let mut sums = vec![0.0f64; gate.mean.len()];
        for (g_row, a_row) in g.rows_iter().zip(before.rows_iter()) {
            for (((sum, &g), &a), &mean) in sums.iter_mut().zip(g_row).zip(a_row).zip(&gate.mean) {
                *sum += f64::from(g) * f64::from(a - mean);
            }
        }
        Some(sums)
    }
}

/// Gated runs reduced to what learning the gates needs: the sum of their
/// objectives and, per gate, the sum of d objective / d gate. A batch's
/// examples are reduced as they come (in chunks on the GPU), so memory
/// follows a chunk, not the batch.
#[derive(Clone, Debug, PartialEq)]
pub struct GateGradients {
    /// The runs' objectives, summed.
    pub value: f64,
    /// `[gates][width]`, in the order of the gates.
    pub per_gate: Vec<Vec<f64>>,
}

impl GateGradients {
    /// No runs yet: zero everywhere.
    pub fn zero(gates: &[Gate]) -> GateGradients {
        GateGradients { value: 0.0, per_gate: gates.iter().map(|gate| vec![0.0; gate.kept.len()]).collect() }
    }

    /// Adds `run`, a gated run under `gates`.
    pub fn add_run(&mut self, run: &GatedGradients, gates: &[Gate]) -> Result<(), ModelError> {
        self.value += run.run.value;
        for (sums, gate) in self.per_gate.iter_mut().zip(gates) {
            let g = run.gate_gradient(gate).ok_or_else(|| ModelError::Objective(format!("a gated run without its gate at {}", gate.site)))?;
            sums.iter_mut().zip(g).for_each(|(sum, g)| *sum += g);
        }
        Ok(())
    }

    /// Adds another batch's sums.
    pub fn add(&mut self, other: &GateGradients) {
        self.value += other.value;
        for (sums, more) in self.per_gate.iter_mut().zip(&other.per_gate) {
            sums.iter_mut().zip(more).for_each(|(sum, g)| *sum += g);
        }
    }
}

/// Runs `model` on `tokens` with `gates` applied and differentiates
/// `objective` back to every site, through the gates: an ablated channel
/// passes no gradient back to what computed it.
pub fn gated_gradients(model: &Model, tokens: &[u32], objective: &Objective, gates: &[Gate]) -> Result<GatedGradients, ModelError> {
    Gate::check_all(&model.config, gates)?;
    objective.check(tokens.len(), model.config.vocab_size)?;
    let mut activations = Recording::new();
    let mut ungated = Recording::new();
    let logits = forward(model, tokens, &mut |site, acts| {
        if let Some(gate) = gates.iter().find(|gate| gate.site == site) {
            ungated.push((site, acts.clone()));
            gate.apply(acts);
        }
        activations.push((site, acts.clone()));
    })?;
    check_every_site(&model.config, logits.rows, &activations)?;
    ungated.sort_by_key(|(site, _)| gates.iter().position(|gate| gate.site == *site));
    let gated: Vec<(&Gate, &Tensor)> = gates.iter().zip(ungated.iter().map(|(_, before)| before)).collect();
    let gradients = backward_gated(model, &activations, &gated, &objective.logit_gradient(&logits));
    let value = objective.value(&logits);
    Ok(GatedGradients { run: Gradients { logits, activations, gradients, value }, ungated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    /// Gates at random node sites of every variant, half their channels
    /// ablated: each channel's gate derivative against central finite
    /// differences of a continuous gate, `a' = mean + alpha (a - mean)` at
    /// alpha = 1 or 0 +- eps, computed by the forward pass alone.
    #[test]
    fn gate_derivatives_match_finite_differences_on_every_variant() {
        for (variant, json) in crate::model::backward::VARIANTS.iter().enumerate() {
            let config = Config::from_json(json).unwrap();
            let model = Model::synthetic(config.clone(), 0.4, 11 + variant as u64);
            let mut rng = SplitMix(100 + variant as u64);
            let tokens: Vec<u32> = (0..10).map(|_| rng.below(30) as u32).collect();
            let mut gates = Vec::new();
            for site in (0..config.n_layer).flat_map(|l| GATEABLE.map(|kind| Site::Layer(l, kind))) {
                if rng.below(2) == 0 {
                    let width = config.site_width(site);
                    let kept = (0..width).map(|_| rng.below(2) == 0).collect();
                    gates.push(Gate { site, kept, mean: (0..width).map(|_| 0.3 * rng.signed()).collect() });
                }
            }
            let objective = Objective::TaskLoss { position: 8, right: 5, wrong: 11, scale: 1.0 };
            let run = gated_gradients(&model, &tokens, &objective, &gates).unwrap();
            let (mut checked, mut skipped) = (0, 0);
            for gate in &gates {
                let analytic = run.gate_gradient(gate).unwrap();
                for channel in 0..gate.kept.len() {
                    let base = if gate.kept[channel] { 1.0 } else { 0.0 };
                    let at = |alpha: f32| {
                        let mut pattern = Vec::new();
                        let logits = forward(&model, &tokens, &mut |site, acts| {
                            if let Some(g) = gates.iter().find(|g| g.site == site) {
                                for row in acts.rows_iter_mut() {
                                    for (c, value) in row.iter_mut().enumerate() {
                                        let a = if g.site == gate.site && c == channel { alpha } else if g.kept[c] { 1.0 } else { 0.0 };
                                        *value = g.mean[c] + a * (*value - g.mean[c]);
                                    }
                                }
                            }
                            pattern.extend(acts.data.iter().map(|v| *v != 0.0));
                        })
                        .unwrap();
                        (objective.value(&logits), pattern)
                    };
                    let eps = 1e-3;
                    let ((up, up_pattern), (down, down_pattern), (_, pattern)) = (at(base + eps), at(base - eps), at(base));
                    if up_pattern != pattern || down_pattern != pattern {
                        skipped += 1; // on a top-k or ReLU edge: one-sided there
                        continue;
                    }
                    let numeric = (up - down) / (2.0 * f64::from(eps));
                    let analytic = analytic[channel];
                    assert!(
                        (numeric - analytic).abs() <= 5e-3 + 1e-2 * analytic.abs(),
                        "variant {variant}: d/d gate {}[{channel}] (kept {}) is {analytic}, finite differences {numeric}",
                        gate.site,
                        gate.kept[channel]
                    );
                    checked += 1;
                }
            }
            assert!(checked >= 30, "variant {variant}: only {checked} gates checked, {skipped} on an edge");
        }
    }

    /// No gates is the plain run; a kept-everything gate changes nothing
    /// but records the value before it.
    #[test]
    fn gates_that_keep_everything_change_nothing() {
        let config = Config::from_json(crate::model::backward::VARIANTS[0]).unwrap();
        let model = Model::synthetic(config.clone(), 0.4, 5);
        let tokens = [1, 2, 3, 4, 5];
        let objective = Objective::LogitDifference { position: 4, target: 1, contrast: Some(2) };
        let plain = super::super::gradients(&model, &tokens, &objective).unwrap();
        let site = Site::Layer(1, SiteKind::MlpPostAct);
        let width = config.site_width(site);
        let keep_all = Gate { site, kept: vec![true; width], mean: vec![0.5; width] };
        let gated = gated_gradients(&model, &tokens, &objective, std::slice::from_ref(&keep_all)).unwrap();
        assert_eq!(gated.run.gradients, plain.gradients);
        assert_eq!(gated.ungated, vec![(site, plain.activations.iter().find(|(s, _)| *s == site).unwrap().1.clone())]);
    }

    #[test]
    fn a_gate_at_a_site_it_cannot_sit_at_is_an_error() {
        let config = Config::from_json(crate::model::backward::VARIANTS[0]).unwrap();
        let model = Model::synthetic(config.clone(), 0.4, 5);
        let objective = Objective::LogitDifference { position: 1, target: 1, contrast: None };
        let gate = |site: Site, width: usize| Gate { site, kept: vec![true; width], mean: vec![0.0; width] };
        let resid = gate(Site::Layer(0, SiteKind::ResidMid), config.d_model);
        let error = gated_gradients(&model, &[1, 2], &objective, &[resid]).unwrap_err().to_string();
        assert!(error.contains("0.resid_mid cannot be gated"), "{error}");
        let narrow = gate(Site::Layer(0, SiteKind::AttnQ), 3);
        let error = gated_gradients(&model, &[1, 2], &objective, &[narrow]).unwrap_err().to_string();
        assert!(error.contains("3 channels"), "{error}");
    }
}
