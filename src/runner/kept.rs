//! Runs the page shows, kept where they were computed. At the released
//! shape a 256-token run has 235 MB of activations; the page shows a few
//! numbers per site, the selected token's values and one node's row. So a
//! shown run keeps its sites on the GPU, streams each layer's summary
//! ([`ColumnSummary`]) as it is computed, and the page reads back only the
//! rows it draws ([`Runner::read_kept`]); everything only for an export
//! ([`Runner::read_all_kept`]). A run on the CPU keeps its sites on the
//! host, behind the same calls.

use std::ops::Range;
use std::sync::Arc;

use super::Runner;
use crate::model::{gradients_of_run, summarize, Gradients, Objective, Recording, Site, Summaries, Tensor};

/// A run whose sites stay where they were computed. Plain data (the page's
/// signals hold it): the GPU's buffers stay in the runner, which keeps the
/// latest GPU run only.
#[derive(Clone, Debug)]
pub struct KeptRun {
    /// Which GPU run: the runner's, while it is the latest.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    id: u64,
    /// The sites, when the CPU ran it.
    host: Option<Arc<Recording>>,
}

const GONE: &str = "the run's activations were on the GPU, which is no longer in use: run the prompt again";

impl Runner {
    /// One pass of `tokens` kept for the page: on the GPU whenever there is
    /// one, its sites staying there. Each layer's summaries go to
    /// `on_layer` as soon as it is computed (on the CPU, all at the end;
    /// `final_resid` as layer `n_layer`). Returns the logits `[T, vocab]`,
    /// the kept run and every site's summary.
    pub async fn run_kept(&self, tokens: &[u32], on_layer: &mut dyn FnMut(usize, &Summaries)) -> Result<(Tensor, KeptRun, Summaries), String> {
        let id = self.next_kept.get() + 1;
        self.next_kept.set(id);
        #[cfg(feature = "gpu")]
        {
            let mut summaries = Summaries::new();
            let reuse = self.kept.take().map(|(_, saved)| saved);
            let outcome = self
                .on_engine_first(async |engine| {
                    engine
                        .forward_kept(
                            tokens,
                            reuse,
                            Some(&mut |layer, mut sites: Summaries| {
                                on_layer(layer, &sites);
                                summaries.append(&mut sites);
                            }),
                        )
                        .await
                })
                .await;
            if let Some(outcome) = outcome {
                let (logits, saved) = outcome?;
                self.kept.replace(Some((id, saved)));
                return Ok((logits, KeptRun { id, host: None }, summaries));
            }
        }
        let (logits, recording) = self.on_cpu(tokens, &[], &crate::model::Record::All, &mut |_, _| {}).await?;
        let summaries = summarize(&recording);
        let n_layer = self.model().config.n_layer;
        for layer in 0..=n_layer {
            let of_layer: Summaries = summaries.iter().filter(|(site, _)| layer_of(*site, n_layer) == layer).cloned().collect();
            on_layer(layer, &of_layer);
        }
        Ok((logits, KeptRun { id, host: Some(Arc::new(recording)) }, summaries))
    }

    /// Rows `rows` of each wanted site of a kept run, `[rows.len(), width]`
    /// each: the selected token's values, a node's row over the prompt.
    pub async fn read_kept(&self, run: &KeptRun, wanted: &[(Site, Range<usize>)]) -> Result<Recording, String> {
        if let Some(host) = &run.host {
            return wanted
                .iter()
                .map(|(site, rows)| {
                    let acts = host.iter().find(|(s, _)| s == site).map(|(_, a)| a).ok_or_else(|| format!("the run did not record {site}"))?;
                    if rows.end > acts.rows || rows.start > rows.end {
                        return Err(format!("rows {}..{} of {site}, which has {}", rows.start, rows.end, acts.rows));
                    }
                    Ok((*site, Tensor::from_vec(rows.len(), acts.cols, acts.data[rows.start * acts.cols..rows.end * acts.cols].to_vec())))
                })
                .collect();
        }
        #[cfg(feature = "gpu")]
        return self.read_on_gpu(run, async |engine, saved| engine.read_kept_rows(saved, wanted).await).await;
        #[cfg(not(feature = "gpu"))]
        Err(GONE.into())
    }

    /// Every site of a kept run, `[T, width]` each (an export).
    pub async fn read_all_kept(&self, run: &KeptRun) -> Result<Recording, String> {
        if let Some(host) = &run.host {
            return Ok(host.as_ref().clone());
        }
        #[cfg(feature = "gpu")]
        return self.read_on_gpu(run, async |engine, saved| engine.read_kept(saved).await).await;
        #[cfg(not(feature = "gpu"))]
        Err(GONE.into())
    }

    /// The gradient of `objective` at every site of a kept run whose logits
    /// are `logits`: the backward pass alone, where bulk work goes
    /// ([`Runner::gradients_of_run`]); on the GPU it reads the run's
    /// activations where they are.
    pub async fn gradients_of_kept(&self, run: &KeptRun, logits: &Tensor, objective: &Objective) -> Result<Gradients, String> {
        if let Some(host) = &run.host {
            return self.gradients_of_run(logits, host, objective).await;
        }
        #[cfg(feature = "gpu")]
        if self.bulk_on_gpu(logits.rows) {
            loop {
                let saved = self.take_kept(run)?;
                let outcome = self
                    .on_engine(async |engine| match engine.gradients_of_kept(&saved, logits.clone(), objective, &self.give_way).await {
                        Err(crate::gpu::GpuError::GaveWay) => Ok(None),
                        other => other.map(Some),
                    })
                    .await;
                self.kept.replace(Some((run.id, saved)));
                match outcome {
                    Some(Ok(Some(gradients))) => return Ok(gradients),
                    // It gave way to a call the page waits for: again after it
                    // (unless that was a new run, which replaced this one).
                    Some(Ok(None)) => crate::platform::sleep(0).await,
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
            }
        }
        let activations = self.read_all_kept(run).await?;
        self.pause_now_and_then().await;
        gradients_of_run(&self.model(), logits.clone(), activations, objective).map_err(|e| e.to_string())
    }

    /// `read` of `run`'s buffers on the GPU, as a call the page waits for.
    #[cfg(feature = "gpu")]
    async fn read_on_gpu(
        &self,
        run: &KeptRun,
        read: impl AsyncFnOnce(&mut crate::gpu::Engine, &crate::gpu::SavedRun) -> Result<Recording, crate::gpu::GpuError>,
    ) -> Result<Recording, String> {
        let saved = self.take_kept(run)?;
        let outcome = self.on_engine_first(async |engine| read(engine, &saved).await).await;
        self.kept.replace(Some((run.id, saved)));
        outcome.unwrap_or_else(|| Err(GONE.into()))
    }

    /// The GPU's buffers of `run`, out of the runner until put back.
    #[cfg(feature = "gpu")]
    fn take_kept(&self, run: &KeptRun) -> Result<crate::gpu::SavedRun, String> {
        match self.kept.take() {
            Some((id, saved)) if id == run.id => Ok(saved),
            other => {
                self.kept.replace(other);
                Err("the run's activations are no longer kept (a newer run replaced them): run the prompt again".into())
            }
        }
    }
}

/// The stage `site` is computed in: its layer, or `n_layer` for `final_resid`.
fn layer_of(site: Site, n_layer: usize) -> usize {
    match site {
        Site::Layer(layer, _) => layer,
        Site::FinalResid => n_layer,
    }
}
