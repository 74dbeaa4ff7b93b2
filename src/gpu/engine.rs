//! Forward passes on the GPU.
//!
//! A run is a list of stages (one per layer, the embedding folded into the
//! first, then the final norm and logits). Each stage is a list of steps
//! built once per workspace (`workspace.rs`): kernel dispatches with their
//! bind groups, and sites, where interventions are applied and recorded
//! values copied out. Stage s is submitted before stage s - 1 is read back,
//! so the GPU always has the next layer queued while the caller looks at
//! the previous one.

use std::cell::Cell;

use super::interventions::{flatten_interventions, Flattened};
use super::profile::Timestamps;
use super::readback::wait_for_map;
use super::saved::SavedRun;
use super::workspace::{build_workspace, Workspace};
use super::{GpuContext, GpuError, GpuWeights};
use crate::model::{check_tokens, ColumnSummary, Config, Intervention, Record, Recording, Site, Summaries, Tensor};

/// One stage's recorded sites, handed over as soon as the GPU finished it.
#[derive(Clone, Debug)]
pub struct StageOutput {
    /// The layer, or None for the final stage (`final_resid`).
    pub layer: Option<usize>,
    /// `sites[variant]`: that variant's recorded sites, each `[T, width]`.
    pub sites: Vec<Recording>,
    /// `before_interventions[variant]`: where asked for, the recorded sites
    /// with interventions as they were before them (else empty).
    pub before_interventions: Vec<Recording>,
    /// A summarised kept run's sites ([`SavedRun::summarized`]), summarised.
    pub summaries: Summaries,
    /// Stages submitted to the GPU when this one was handed over; with one
    /// stage of look-ahead it is at most this stage's index + 2.
    pub stages_submitted: usize,
}

/// The sparse transformer on one GPU: weights uploaded once; pipelines,
/// activation buffers and bind groups created once and reused by every run
/// of up to `capacity` rows (tokens x variants).
pub struct Engine {
    pub(super) ctx: GpuContext,
    pub(super) config: Config,
    pub(super) weights: GpuWeights,
    workspace: Option<Workspace>,
    /// Set while a run is profiled ([`Engine::profile`]).
    pub(super) timestamps: Option<Timestamps>,
    /// The mappable buffer [`Engine::read_kept`] reads through, kept.
    readback: Option<wgpu::Buffer>,
}


impl Engine {
    /// Uploads `model` to the GPU of `ctx`.
    pub fn new(ctx: GpuContext, model: &crate::model::Model) -> Result<Engine, GpuError> {
        let weights = GpuWeights::upload(&ctx, model)?;
        if let Some(fault) = ctx.take_fault() {
            return Err(fault);
        }
        Ok(Engine { ctx, config: model.config.clone(), weights, workspace: None, timestamps: None, readback: None })
    }

    /// Replaces the weights with `model`'s. On failure (say, a tensor over
    /// the adapter's limits) the engine keeps the model it had.
    pub fn load(&mut self, model: &crate::model::Model) -> Result<(), GpuError> {
        let weights = GpuWeights::upload(&self.ctx, model)?;
        if let Some(fault) = self.ctx.take_fault() {
            return Err(fault);
        }
        self.weights = weights;
        self.config = model.config.clone();
        self.workspace = None;
        Ok(())
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.bytes
    }

    /// Runs `tokens` once, recording `record`; returns the logits
    /// `[T, vocab_size]` and every recorded site in forward order.
    pub async fn forward(&mut self, tokens: &[u32], record: &Record) -> Result<(Tensor, Recording), GpuError> {
        let mut recording = Recording::new();
        let mut logits = self
            .run(tokens, &[Vec::new()], record, &mut |stage| recording.extend(stage.sites.into_iter().flatten()))
            .await?;
        Ok((logits.remove(0), recording))
    }

    /// Runs `tokens` forward keeping every site in GPU buffers, reading back
    /// only the logits `[T, vocab_size]`. With `on_layer` (a prompt the page
    /// shows), each layer's sites are also summarised on the GPU and handed
    /// to it as soon as it is computed (the last stage, `final_resid`, as
    /// layer `n_layer`). The buffers of `reuse` are written again when they
    /// hold as many rows, summarised alike (a prompt run again, edited).
    pub async fn forward_kept(
        &mut self,
        tokens: &[u32],
        reuse: Option<SavedRun>,
        mut on_layer: Option<&mut dyn FnMut(usize, Summaries)>,
    ) -> Result<(Tensor, SavedRun), GpuError> {
        check_tokens(&self.config, tokens)?;
        let summarized = on_layer.is_some();
        let saved = match reuse {
            Some(saved) if saved.rows() == tokens.len() && saved.is_summarized() == summarized => saved,
            _ if summarized => SavedRun::summarized(&self.ctx, &self.config, tokens.len())?,
            _ => SavedRun::new(&self.ctx, &self.config, tokens.len(), &[])?,
        };
        let plan = Plan::new(&self.config, tokens.len(), &[Vec::new()])?;
        let n_layer = self.config.n_layer;
        let outputs = Outputs { record: &Record::LogitsOnly, before_interventions: false, saved: Some(&saved) };
        let mut logits = self
            .run_plan(&plan, tokens, &outputs, &mut |stage| {
                if let Some(on_layer) = on_layer.as_mut() {
                    on_layer(stage.layer.unwrap_or(n_layer), stage.summaries);
                }
            })
            .await?;
        Ok((logits.remove(0), saved))
    }

    /// Rows of sites of a run kept by [`Engine::forward_kept`]
    /// ([`SavedRun::read`]).
    pub async fn read_kept_rows(&mut self, kept: &SavedRun, wanted: &[(Site, std::ops::Range<usize>)]) -> Result<Recording, GpuError> {
        kept.read(&self.ctx, wanted).await
    }

    /// Every site of a run kept by [`Engine::forward_kept`], read back
    /// (`forward --out`, export): `[T, width]` each, layer by layer in
    /// `SiteKind::ALL`'s order.
    pub async fn read_kept(&mut self, kept: &SavedRun) -> Result<Recording, GpuError> {
        kept.read_all(&self.ctx, &mut self.readback).await
    }

    /// Runs several prompts in one batch, each recording `record`; returns
    /// each prompt's logits `[T_b, vocab_size]` and recorded sites. Shorter
    /// prompts are padded at the end to the longest and cut back after:
    /// attention is causal, so a position never sees the padding.
    pub async fn forward_batch(&mut self, prompts: &[Vec<u32>], record: &Record) -> Result<Vec<(Tensor, Recording)>, GpuError> {
        let runs = self.forward_prompts(prompts, record, &[], None).await?;
        Ok(runs.into_iter().map(|(logits, recording, _)| (logits, recording)).collect())
    }

    /// The logits `[T_b, vocab]` of each of `prompts` with `interventions`
    /// applied to every one (a circuit's task loss over a task's examples):
    /// prompts of like length together ([`length_chunks`]), as many per
    /// batch as the adapter's binding limit takes, for the activations and
    /// for the interventions' entries.
    pub async fn prompts_logits(&mut self, prompts: &[Vec<u32>], interventions: &[Intervention]) -> Result<Vec<Tensor>, GpuError> {
        let c = &self.config;
        let widest = [c.d_model, c.d_in(), c.d_attn(), c.d_mlp, c.vocab_size, c.d_pos_emb.unwrap_or(0)].into_iter().max().unwrap_or(1);
        let floats = self.ctx.max_binding() as usize / 4;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(1).max(1);
        // A prompt's entries: one per channel for a whole column, so at most this many at any length.
        let entries = flatten_interventions(c, longest, &[interventions.to_vec()])?.index.len().max(1);
        let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
        let fits = |seq_len: usize| (floats / widest / seq_len.max(1)).min(floats / entries);
        let mut logits: Vec<Option<Tensor>> = vec![None; prompts.len()];
        for chunk in length_chunks(&lengths, fits) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
            let runs = self.forward_prompts(&batch, &Record::LogitsOnly, interventions, None).await?;
            for (&i, (run_logits, ..)) in chunk.iter().zip(runs) {
                logits[i] = Some(run_logits);
            }
        }
        Ok(logits.into_iter().map(|l| l.expect("every prompt is in a chunk")).collect())
    }

    /// [`Engine::forward_batch`] with `interventions` applied to every
    /// prompt; each run comes with its sites that have interventions as they
    /// were before them. With `saved`, every site of the batch (prompt b's
    /// rows at b x the longest) is also kept there, on the GPU.
    pub(super) async fn forward_prompts(
        &mut self,
        prompts: &[Vec<u32>],
        record: &Record,
        interventions: &[Intervention],
        saved: Option<&SavedRun>,
    ) -> Result<Vec<(Tensor, Recording, Recording)>, GpuError> {
        for prompt in prompts {
            check_tokens(&self.config, prompt)?;
        }
        let seq_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let padded: Vec<u32> = prompts.iter().flat_map(|prompt| prompt.iter().copied().chain(std::iter::repeat_n(prompt[prompt.len() - 1], seq_len - prompt.len()))).collect();
        let plan = Plan::prompts(&self.config, seq_len, prompts.len(), interventions)?;
        let mut recordings = vec![(Recording::new(), Recording::new()); prompts.len()];
        let logits = self
            .run_plan(&plan, &padded, &Outputs { record, before_interventions: !interventions.is_empty(), saved }, &mut |stage| {
                for ((recording, before), (sites, sites_before)) in recordings.iter_mut().zip(stage.sites.into_iter().zip(stage.before_interventions)) {
                    recording.extend(sites);
                    before.extend(sites_before);
                }
            })
            .await?;
        let cut = |mut tensor: Tensor, len: usize| {
            tensor.data.truncate(len * tensor.cols);
            tensor.rows = len;
            tensor
        };
        let cut_all = |recording: Recording, len: usize| -> Recording { recording.into_iter().map(|(site, a)| (site, cut(a, len))).collect() };
        Ok(prompts
            .iter()
            .zip(logits.into_iter().zip(recordings))
            .map(|(prompt, (logits, (recording, before)))| {
                let len = prompt.len();
                (cut(logits, len), cut_all(recording, len), cut_all(before, len))
            })
            .collect())
    }

    /// Runs one forward pass per variant of `tokens` in one batch, each with
    /// its own interventions; `on_stage` gets each stage's recorded sites as
    /// soon as the GPU has computed them. Returns each variant's logits.
    pub async fn run(
        &mut self,
        tokens: &[u32],
        variants: &[Vec<Intervention>],
        record: &Record,
        on_stage: &mut dyn FnMut(StageOutput),
    ) -> Result<Vec<Tensor>, GpuError> {
        check_tokens(&self.config, tokens)?;
        let plan = Plan::new(&self.config, tokens.len(), variants)?;
        let tokens: Vec<u32> = tokens.repeat(plan.n_variants);
        self.run_plan(&plan, &tokens, &Outputs { record, before_interventions: false, saved: None }, on_stage).await
    }

    /// [`Engine::run`] of `variants`' logits that gives way: once
    /// `give_way` is set (another call waits for the GPU: the page's run
    /// behind a batch of ablations), it stops before its next stage, the
    /// stage in flight finished, with [`GpuError::GaveWay`]. A stage of a
    /// few variants of a long prompt takes seconds on a software adapter;
    /// the whole batch, tens of seconds.
    pub async fn run_giving_way(&mut self, tokens: &[u32], variants: &[Vec<Intervention>], give_way: &Cell<bool>) -> Result<Vec<Tensor>, GpuError> {
        check_tokens(&self.config, tokens)?;
        let plan = Plan::new(&self.config, tokens.len(), variants)?;
        let tokens: Vec<u32> = tokens.repeat(plan.n_variants);
        let outputs = Outputs { record: &Record::LogitsOnly, before_interventions: false, saved: None };
        self.run_plan_giving_way(&plan, &tokens, &outputs, &mut |_| {}, Some(give_way)).await
    }

    /// Runs `plan` on `tokens` (`[n_variants * seq_len]`, variant-major),
    /// handing over what `outputs` asks for.
    pub(super) async fn run_plan(
        &mut self,
        plan: &Plan,
        tokens: &[u32],
        outputs: &Outputs<'_>,
        on_stage: &mut dyn FnMut(StageOutput),
    ) -> Result<Vec<Tensor>, GpuError> {
        self.run_plan_giving_way(plan, tokens, outputs, on_stage, None).await
    }

    /// [`Engine::run_plan`], stopping before a stage once `give_way` is set.
    async fn run_plan_giving_way(
        &mut self,
        plan: &Plan,
        tokens: &[u32],
        outputs: &Outputs<'_>,
        on_stage: &mut dyn FnMut(StageOutput),
        give_way: Option<&Cell<bool>>,
    ) -> Result<Vec<Tensor>, GpuError> {
        if let Some(fault) = self.ctx.take_fault() {
            return Err(fault);
        }
        self.ensure_workspace(plan.seq_len * plan.n_variants, plan.entries.index.len())?;
        let ws = self.workspace.as_mut().expect("workspace was just made");
        ws.write_inputs(&self.ctx, tokens, plan);
        ws.write_params(&self.ctx, plan);
        // Submit stage by stage; read back with one stage of look-ahead.
        let mut logits = Vec::new();
        let mut pending: Option<Pending> = None;
        for stage in 0..plan.n_stages {
            if give_way.is_some_and(Cell::get) {
                // The stage in flight is read back (its buffer unmapped for the next run), then nothing more.
                if let Some(previous) = pending.take() {
                    deliver(&self.ctx, previous, stage, plan, &mut |_| {}, &mut logits).await.map_err(|e| self.ctx.take_fault().unwrap_or(e))?;
                }
                return Err(GpuError::GaveWay);
            }
            let submitted = ws.submit_stage(&self.ctx, &self.config, plan, stage, outputs, self.timestamps.as_mut());
            if let Some(previous) = pending.take() {
                deliver(&self.ctx, previous, stage + 1, plan, on_stage, &mut logits).await.map_err(|e| self.ctx.take_fault().unwrap_or(e))?;
            }
            pending = submitted;
        }
        if let Some(last) = pending {
            // A submission the device refused fails its wait: the refusal says why.
            deliver(&self.ctx, last, plan.n_stages, plan, on_stage, &mut logits).await.map_err(|e| self.ctx.take_fault().unwrap_or(e))?;
        }
        if let Some(fault) = self.ctx.take_fault() {
            // Buffers may be left mapped or half written: start afresh next time.
            self.workspace = None;
            return Err(fault);
        }
        Ok(logits)
    }

    /// Makes sure the workspace holds `rows` rows and `entries` intervention
    /// entries, rebuilding buffers and steps (never pipelines) if not.
    fn ensure_workspace(&mut self, rows: usize, entries: usize) -> Result<(), GpuError> {
        if let Some(ws) = &self.workspace {
            if ws.capacity >= rows && ws.intervention_capacity >= entries {
                return Ok(());
            }
        }
        let (old_rows, old_entries) = self.workspace.as_ref().map_or((0, 0), |ws| (ws.capacity, ws.intervention_capacity));
        // Grow geometrically so a sequence of growing runs rebuilds rarely.
        let capacity = rows.max(2 * old_rows).max(1);
        let intervention_capacity = entries.max(2 * old_entries).max(64);
        self.workspace = None;
        self.workspace = Some(build_workspace(&self.ctx, &self.config, &self.weights, capacity, intervention_capacity)?);
        Ok(())
    }
}

/// Indices of items `lengths` long in chunks, shortest first, each chunk as
/// large as `fits(its longest)` allows (at least one item): a batch is
/// padded to its longest prompt, and a task's examples range from 3 to 134
/// tokens (byte by byte), so unsorted chunks computed mostly padding.
pub(crate) fn length_chunks(lengths: &[usize], fits: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match chunks.last_mut() {
            // Sorted: the item joining is the chunk's longest.
            Some(chunk) if chunk.len() < fits(lengths[i]) => chunk.push(i),
            _ => chunks.push(vec![i]),
        }
    }
    chunks
}

/// The shape of one run: its tokens and variants, its interventions as
/// entries, and the first stage where variants differ. Variants are
/// identical up to the first stage with an intervention: those stages run
/// once, on the first T rows, and the residual stream is copied to every
/// variant before the first stage that differs.
pub(super) struct Plan {
    pub seq_len: usize,
    pub n_variants: usize,
    pub n_stages: usize,
    pub first_varying: usize,
    pub vocab: usize,
    pub entries: Flattened,
}

impl Plan {
    fn new(config: &Config, seq_len: usize, variants: &[Vec<Intervention>]) -> Result<Plan, GpuError> {
        let entries = flatten_interventions(config, seq_len, variants)?;
        let n_variants = variants.len().max(1);
        let n_stages = config.n_layer + 1;
        let stage_of = |site: Site| match site {
            Site::Layer(layer, _) => layer,
            Site::FinalResid => n_stages - 1,
        };
        let first_varying = match n_variants {
            1 => 0,
            _ => entries.spans.iter().map(|(site, ..)| stage_of(*site)).min().unwrap_or(n_stages),
        };
        Ok(Plan { seq_len, n_variants, n_stages, first_varying, vocab: config.vocab_size, entries })
    }

    /// `n_prompts` prompts of `seq_len` tokens each, `interventions` applied
    /// to every one: they differ from the first stage on.
    fn prompts(config: &Config, seq_len: usize, n_prompts: usize, interventions: &[Intervention]) -> Result<Plan, GpuError> {
        let n_variants = n_prompts.max(1);
        let entries = flatten_interventions(config, seq_len, &vec![interventions.to_vec(); n_variants])?;
        Ok(Plan { seq_len, n_variants, n_stages: config.n_layer + 1, first_varying: 0, vocab: config.vocab_size, entries })
    }

    /// Variants computed in `stage`: 1 while all are still identical.
    pub fn variants_in(&self, stage: usize) -> usize {
        if stage < self.first_varying {
            1
        } else {
            self.n_variants
        }
    }
}

/// Where a run's sites go besides the logits.
#[derive(Clone, Copy)]
pub(super) struct Outputs<'a> {
    /// The sites read back to the host.
    pub record: &'a Record,
    /// Whether a recorded site with interventions is read back before them
    /// too (a gated run's values before its gates).
    pub before_interventions: bool,
    /// Where every site is kept on the GPU (and before its interventions,
    /// where that keeps those), for a backward pass.
    pub saved: Option<&'a SavedRun>,
}

/// Where a recorded site's values are in a stage's readback.
pub(super) struct SiteCopy {
    pub site: Site,
    pub width: u32,
    /// In floats.
    pub offset: u64,
    pub of: Copied,
}

/// What a [`SiteCopy`] holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Copied {
    /// The site's values `[rows, width]`.
    Values,
    /// The values before the site's interventions (a gated run's ungated values).
    BeforeInterventions,
    /// A kept site's summary `[2, width]` (the first variant's).
    Summary,
}

/// A submitted stage whose readback has not been handed over yet.
pub(super) struct Pending {
    pub stage: usize,
    pub buffer: wgpu::Buffer,
    pub mapped: futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
    pub submission: wgpu::SubmissionIndex,
    /// Each recorded site's place in the buffer.
    pub copies: Vec<SiteCopy>,
    pub floats: usize,
    pub logits_at: Option<usize>,
    /// Variants computed in this stage: 1 while all are still identical.
    pub computed: usize,
}

/// Waits for a stage's readback and hands it over.
async fn deliver(
    ctx: &GpuContext,
    pending: Pending,
    stages_submitted: usize,
    plan: &Plan,
    on_stage: &mut dyn FnMut(StageOutput),
    logits: &mut Vec<Tensor>,
) -> Result<(), GpuError> {
    wait_for_map(&ctx.device, pending.mapped, Some(pending.submission)).await?;
    if let Some(fault) = ctx.take_fault() {
        return Err(fault);
    }
    let Plan { n_stages, seq_len, n_variants, vocab, .. } = *plan;
    let view = pending.buffer.slice(..).get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
    let data: &[f32] = bytemuck::cast_slice(&view);
    // A stage computed once stands for every variant.
    let per_variant = |offset: usize, width: usize, variant: usize| {
        let start = offset + (variant % pending.computed) * seq_len * width;
        Tensor::from_vec(seq_len, width, data[start..start + seq_len * width].to_vec())
    };
    if !pending.copies.is_empty() {
        // Each site copied out of the mapped memory once; past 4 MB on every
        // core at once (natively): one core copies a few GB/s.
        let of_variant = |variant: usize, before: bool| -> Recording {
            let wanted = if before { Copied::BeforeInterventions } else { Copied::Values };
            let copies: Vec<&SiteCopy> = pending.copies.iter().filter(|copy| copy.of == wanted).collect();
            let copy = |copy: &&SiteCopy| (copy.site, per_variant(copy.offset as usize, copy.width as usize, variant));
            if pending.floats > 1 << 20 {
                crate::platform::map_on_cores(&copies, copy)
            } else {
                copies.iter().map(copy).collect()
            }
        };
        let sites = (0..n_variants).map(|variant| of_variant(variant, false)).collect();
        let before_interventions = (0..n_variants).map(|variant| of_variant(variant, true)).collect();
        let summaries = pending
            .copies
            .iter()
            .filter(|copy| copy.of == Copied::Summary)
            .map(|copy| {
                let at = copy.offset as usize;
                (copy.site, ColumnSummary::from_gpu(seq_len, &data[at..at + 2 * copy.width as usize]))
            })
            .collect();
        let layer = (pending.stage + 1 < n_stages).then_some(pending.stage);
        on_stage(StageOutput { layer, sites, before_interventions, summaries, stages_submitted });
    }
    if let Some(at) = pending.logits_at {
        logits.extend((0..n_variants).map(|variant| per_variant(at, vocab, variant)));
    }
    drop(view);
    pending.buffer.unmap();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::length_chunks;

    #[test]
    fn items_are_chunked_shortest_first_each_chunk_within_its_longest_items_budget() {
        let lengths = [30, 3, 134, 12, 12, 45, 7];
        // At most 100 tokens of padded rows per chunk.
        let chunks = length_chunks(&lengths, |len| 100 / len);
        assert_eq!(chunks, vec![vec![1, 6, 3, 4], vec![0, 5], vec![2]]);
        for chunk in &chunks {
            let longest = chunk.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(chunk.len() == 1 || chunk.len() * longest <= 100, "{chunk:?}");
        }
        assert!(length_chunks(&[], |_| 4).is_empty());
    }
}
