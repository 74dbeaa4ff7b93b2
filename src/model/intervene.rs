//! Interventions: replace activations at a site before the rest of the
//! forward pass sees them. Both backends reduce every kind to "set entry
//! (position, channel) of this site to this value".

use super::{Config, ModelError, Site, SiteKind, Tensor};

/// What replaces the chosen activations.
#[derive(Clone, Debug, PartialEq)]
pub enum Ablation {
    /// Zero-ablation.
    Zero,
    /// Mean-ablation with the given mean of every channel of the site (`[width]`).
    Mean(Vec<f32>),
    /// Activation patching: the values of another run at this site (`[T, width]`).
    Patch(Tensor),
}

/// One intervention at one site, for some positions and channels.
#[derive(Clone, Debug, PartialEq)]
pub struct Intervention {
    pub site: Site,
    /// Token positions; empty means every position.
    pub positions: Vec<usize>,
    /// Channels of the site; empty means every channel.
    pub channels: Vec<usize>,
    pub ablation: Ablation,
}

/// One entry to overwrite: (position, channel, value).
pub type Assignment = (usize, usize, f32);

impl Intervention {
    /// Every entry this sets, for a run of `seq_len` tokens; checks positions,
    /// channels and the ablation's shape against the site's width.
    pub fn assignments(&self, config: &Config, seq_len: usize) -> Result<Vec<Assignment>, ModelError> {
        let (positions, channels) = self.checked(config, seq_len)?;
        let value = |p: usize, c: usize| match &self.ablation {
            Ablation::Zero => 0.0,
            Ablation::Mean(means) => means[c],
            Ablation::Patch(source) => source.row(p)[c],
        };
        Ok(positions.iter().flat_map(|&p| channels.iter().map(move |&c| (p, c, value(p, c)))).collect())
    }

    /// When this sets every position of some channels to a value that
    /// depends on the channel only (zero or mean ablation everywhere): those
    /// channels and values, checked as [`Intervention::assignments`] checks
    /// them. The GPU applies these a column at a time: T times fewer entries.
    pub fn columns(&self, config: &Config, seq_len: usize) -> Result<Option<Vec<(usize, f32)>>, ModelError> {
        if !self.positions.is_empty() || matches!(self.ablation, Ablation::Patch(_)) {
            return Ok(None);
        }
        let (_, channels) = self.checked(config, seq_len)?;
        Ok(Some(
            channels
                .into_iter()
                .map(|c| (c, if let Ablation::Mean(means) = &self.ablation { means[c] } else { 0.0 }))
                .collect(),
        ))
    }

    /// The positions and channels this sets, checked against the site.
    fn checked(&self, config: &Config, seq_len: usize) -> Result<(Vec<usize>, Vec<usize>), ModelError> {
        let width = config.site_width(self.site);
        let bad = |what: String| ModelError::Intervention(format!("at {}: {what}", self.site));
        if let Site::Layer(layer, _) = self.site {
            if layer >= config.n_layer {
                return Err(bad(format!("the model has {} layers", config.n_layer)));
            }
        }
        let positions: Vec<usize> = if self.positions.is_empty() { (0..seq_len).collect() } else { self.positions.clone() };
        let channels: Vec<usize> = if self.channels.is_empty() { (0..width).collect() } else { self.channels.clone() };
        if let Some(p) = positions.iter().find(|&&p| p >= seq_len) {
            return Err(bad(format!("position {p} is beyond the {seq_len} tokens")));
        }
        if let Some(c) = channels.iter().find(|&&c| c >= width) {
            return Err(bad(format!("channel {c} is beyond the site's width {width}")));
        }
        match &self.ablation {
            Ablation::Mean(means) if means.len() != width => {
                Err(bad(format!("{} means given for a site of width {width}", means.len())))
            }
            Ablation::Patch(source) if (source.rows, source.cols) != (seq_len, width) => Err(bad(format!(
                "patch source is [{}, {}] but the site is [{seq_len}, {width}]",
                source.rows, source.cols
            ))),
            _ => Ok((positions, channels)),
        }
    }
}

/// An intervention checked for a run: the positions and channels it sets.
pub struct Resolved<'a> {
    pub intervention: &'a Intervention,
    positions: Vec<usize>,
    channels: Vec<usize>,
}

impl Resolved<'_> {
    /// Sets this intervention's entries of its site's activations `[T, width]`.
    pub fn apply(&self, acts: &mut Tensor) {
        self.apply_to_rows(acts, 0);
    }

    /// [`Resolved::apply`] to rows `first..first + acts.rows` of the site
    /// (`acts`: `[rows, width]`), the part of a run one thread holds.
    pub fn apply_to_rows(&self, acts: &mut Tensor, first: usize) {
        let rows = first..first + acts.rows;
        for p in self.positions.iter().copied().filter(|p| rows.contains(p)) {
            let row = acts.row_mut(p - first);
            for &c in &self.channels {
                row[c] = match &self.intervention.ablation {
                    Ablation::Zero => 0.0,
                    Ablation::Mean(means) => means[c],
                    Ablation::Patch(source) => source.row(p)[c],
                };
            }
        }
    }
}

/// Every intervention checked for a run of `seq_len` tokens, in order (a
/// later one at the same entry wins). Applying them in place, rather than as
/// a list of every entry, took the bisection of a circuit search from 9% of
/// its time in building that list to none.
pub fn resolve<'a>(config: &Config, seq_len: usize, interventions: &'a [Intervention]) -> Result<Vec<Resolved<'a>>, ModelError> {
    interventions
        .iter()
        .map(|intervention| {
            let (positions, channels) = intervention.checked(config, seq_len)?;
            Ok(Resolved { intervention, positions, channels })
        })
        .collect()
}

impl Config {
    /// Width of the activations recorded at `site`.
    pub fn site_width(&self, site: Site) -> usize {
        match site {
            Site::FinalResid => self.d_model,
            Site::Layer(_, kind) => match kind {
                SiteKind::ResidIn | SiteKind::ResidMid | SiteKind::AttnResidDelta | SiteKind::MlpResidDelta => {
                    self.d_model
                }
                SiteKind::AttnActIn | SiteKind::MlpActIn => self.d_in(),
                SiteKind::AttnQ | SiteKind::AttnK | SiteKind::AttnV | SiteKind::AttnY => self.d_attn(),
                SiteKind::MlpPostAct => self.d_mlp,
            },
        }
    }
}
