//! What a page shows of a site without holding its values: per channel, the
//! sum of squares over the run's rows (the site's RMS) and the first row
//! where it is nonzero (which channels can affect the output at a position).
//! The GPU computes the same (`shaders/summary.wgsl`), so a run whose sites
//! stay on the GPU hands over `[2, width]` per site instead of `[T, width]`.

use super::{Recording, Site, Tensor};

/// One site of a run, per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSummary {
    /// Rows (tokens) of the run.
    pub rows: usize,
    /// `[width]`: the sum over rows of the channel's value squared.
    pub sum_sq: Vec<f32>,
    /// `[width]`: the first row where the channel is nonzero, `rows` if none.
    pub first_nonzero: Vec<u32>,
}

impl ColumnSummary {
    /// The summary of `acts` `[T, width]`.
    pub fn of(acts: &Tensor) -> ColumnSummary {
        let mut sum_sq = vec![0f32; acts.cols];
        let mut first_nonzero = vec![acts.rows as u32; acts.cols];
        for t in (0..acts.rows).rev() {
            for (c, &value) in acts.row(t).iter().enumerate() {
                sum_sq[c] += value * value;
                if value != 0.0 {
                    first_nonzero[c] = t as u32;
                }
            }
        }
        ColumnSummary { rows: acts.rows, sum_sq, first_nonzero }
    }

    /// From the GPU's `[2, width]`: the sums of squares, then the first
    /// nonzero rows as floats.
    pub fn from_gpu(rows: usize, values: &[f32]) -> ColumnSummary {
        let (sum_sq, first) = values.split_at(values.len() / 2);
        ColumnSummary { rows, sum_sq: sum_sq.to_vec(), first_nonzero: first.iter().map(|&r| r as u32).collect() }
    }

    /// Root mean square over every row and channel (as [`Tensor::rms`]).
    pub fn rms(&self) -> f32 {
        let count = self.rows * self.sum_sq.len();
        if count == 0 {
            return 0.0;
        }
        let sum: f64 = self.sum_sq.iter().map(|&s| f64::from(s)).sum();
        (sum / count as f64).sqrt() as f32
    }

    /// The channels nonzero at `position` or before it.
    pub fn active_up_to(&self, position: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.first_nonzero.len()).filter(move |&c| (self.first_nonzero[c] as usize) <= position)
    }
}

/// Every site of a run, summarised.
pub type Summaries = Vec<(Site, ColumnSummary)>;

/// The summaries of every site of `recording`.
pub fn summarize(recording: &Recording) -> Summaries {
    recording.iter().map(|(site, acts)| (*site, ColumnSummary::of(acts))).collect()
}

/// Every site's values at one position, `[1, width]` each: what the graph
/// shows of a run at its selected token.
pub fn sites_at(recording: &Recording, position: usize) -> Recording {
    recording
        .iter()
        .filter(|(_, acts)| position < acts.rows)
        .map(|(site, acts)| (*site, Tensor::from_vec(1, acts.cols, acts.row(position).to_vec())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_holds_each_channel_s_squares_and_first_nonzero_row() {
        let acts = Tensor::from_vec(3, 3, vec![0.0, 2.0, 0.0, 0.0, -1.0, 0.0, 3.0, 0.0, 0.0]);
        let s = ColumnSummary::of(&acts);
        assert_eq!(s.sum_sq, vec![9.0, 5.0, 0.0]);
        assert_eq!(s.first_nonzero, vec![2, 0, 3]);
        assert!((s.rms() - acts.rms()).abs() < 1e-6);
        assert_eq!(s.active_up_to(1).collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.active_up_to(2).collect::<Vec<_>>(), vec![0, 1]);
        let gpu = ColumnSummary::from_gpu(3, &[9.0, 5.0, 0.0, 2.0, 0.0, 3.0]);
        assert_eq!(gpu, s);
    }
}
