//! The backward pass on the GPU: `model/backward.rs` op by op, in WGSL. The
//! forward pass keeps every site's activations on the GPU (`saved.rs`),
//! then one command buffer runs every layer in reverse on them and either
//! copies each site's gradient out or, for the circuit pruning, reduces each
//! gated site's gradient to one derivative per gate channel on the GPU, so
//! that only those come back. Several prompts, each with its own objective,
//! go through in one batch: rows `[prompts x T]`, as the forward's variants.
//!
//! Products with a weight's transpose run in the forward's sparse kernel
//! on the uploaded transposes (`GpuWeights::transposes`): work scales with
//! nonzeros, as forward.

use std::cell::Cell;

use wgpu::util::DeviceExt;

use super::engine::Engine;
use super::ops::{Op, PARAMS_BYTES};
use super::readback::{finish_map, start_map, work_done};
use super::saved::SavedRun;
use super::weights::{GpuMatrix, GpuNorm};
use super::GpuError;
use crate::model::{
    check_every_site, Ablation, Gate, GateGradients, GatedGradients, Gradients, Intervention, Objective, Record, Recording, Site, SiteKind, Tensor,
    TopkSite,
};

/// One step of the backward pass: a dispatch with its buffers by binding
/// number, or `floats` values of a buffer copied out (a site's gradient,
/// or without a site the gate derivatives).
enum Step {
    Dispatch { op: Op, bindings: Vec<(u32, wgpu::Buffer)> },
    ReadBack { site: Option<Site>, buffer: wgpu::Buffer, floats: usize },
}

/// What a backward pass hands back.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    /// Every site's gradient `[R, width]`.
    Gradients,
    /// Each gate's derivatives (`model::GatedGradients::gate_gradient`),
    /// summed over the batch's rows on the GPU: `[width]` per gate.
    GateSums,
}

/// What came back from a backward pass: the values, and where each
/// read-back buffer's are (site, offset, floats).
struct Readback {
    data: Vec<f32>,
    copies: Vec<(Option<Site>, usize, usize)>,
}

/// A gated run of `examples` made on the GPU: every prompt's logits (and
/// its recorded sites, with the values before the gates), and the whole
/// batch's activations kept there for the backward pass.
struct GatedForward {
    runs: Vec<(Tensor, Recording, Recording)>,
    saved: SavedRun,
    seq_len: usize,
}

impl Engine {
    /// Runs `tokens` and differentiates `objective` back to every site, as
    /// `model::gradients` does on the CPU.
    pub async fn gradients(&mut self, tokens: &[u32], objective: &Objective) -> Result<Gradients, GpuError> {
        let mut batch = self.gradients_batch(&[(tokens.to_vec(), objective.clone())]).await?;
        Ok(batch.remove(0))
    }

    /// [`Engine::gradients`] of several prompts, each with its own objective,
    /// in one forward and one backward pass (prompts do not interact, so a
    /// task's loss over its examples has each example's gradients). Prompts
    /// of different lengths are padded at the end, which no position sees.
    pub async fn gradients_batch(&mut self, examples: &[(Vec<u32>, Objective)]) -> Result<Vec<Gradients>, GpuError> {
        let runs = self.gated_gradients_batch(examples, &[]).await?;
        Ok(runs.into_iter().map(|gated| gated.run).collect())
    }

    /// A gated run of every prompt (`model::gated_gradients`, here in one
    /// batch): `gates` applied (each ablated channel set to its mean at every
    /// position), the gated sites' values before them kept, and each
    /// objective differentiated back through kept channels only.
    pub async fn gated_gradients_batch(&mut self, examples: &[(Vec<u32>, Objective)], gates: &[Gate]) -> Result<Vec<GatedGradients>, GpuError> {
        let GatedForward { runs, saved, seq_len } = self.gated_forward(examples, gates, &Record::All).await?;
        // A gate that keeps every channel changed nothing: its values before
        // it are the recorded ones.
        let ungated: Vec<Recording> = runs
            .iter()
            .map(|(_, recording, before)| {
                gates
                    .iter()
                    .map(|gate| {
                        let values = before.iter().chain(recording).find(|(site, _)| *site == gate.site).map(|(_, v)| v.clone());
                        (gate.site, values.expect("every site is recorded"))
                    })
                    .collect()
            })
            .collect();
        let objectives: Vec<&Objective> = examples.iter().map(|(_, objective)| objective).collect();
        let runs: Vec<(Tensor, Recording)> = runs.into_iter().map(|(logits, recording, _)| (logits, recording)).collect();
        let dlogits = batch_dlogits(&runs, &objectives, seq_len);
        let readback = self.backward(&saved, runs.len(), seq_len, &dlogits, gates, Output::Gradients, None).await?;
        let gradients = split_runs(readback, runs, &objectives, seq_len);
        Ok(gradients.into_iter().zip(ungated).map(|(run, ungated)| GatedGradients { run, ungated }).collect())
    }

    /// A step of the circuit pruning on a batch: the gated runs of
    /// [`Engine::gated_gradients_batch`] reduced on the GPU to what learning
    /// the gates needs (`model::GateGradients`). Only the logits and one
    /// float per gate channel come back.
    pub async fn gate_gradients(&mut self, examples: &[(Vec<u32>, Objective)], gates: &[Gate]) -> Result<GateGradients, GpuError> {
        let GatedForward { runs, saved, seq_len } = self.gated_forward(examples, gates, &Record::LogitsOnly).await?;
        let objectives: Vec<&Objective> = examples.iter().map(|(_, objective)| objective).collect();
        let runs: Vec<(Tensor, Recording)> = runs.into_iter().map(|(logits, recording, _)| (logits, recording)).collect();
        let dlogits = batch_dlogits(&runs, &objectives, seq_len);
        let Readback { data, .. } = self.backward(&saved, runs.len(), seq_len, &dlogits, gates, Output::GateSums, None).await?;
        let mut at = 0;
        let per_gate = gates
            .iter()
            .map(|gate| {
                at += gate.kept.len();
                data[at - gate.kept.len()..at].iter().map(|&g| f64::from(g)).collect()
            })
            .collect();
        let value = runs.iter().zip(&objectives).map(|((logits, _), objective)| objective.value(logits)).sum();
        Ok(GateGradients { value, per_gate })
    }

    /// The forward half of a gated batch: `examples` checked, run with
    /// `gates` applied, `record` read back, every site kept on the GPU.
    async fn gated_forward(&mut self, examples: &[(Vec<u32>, Objective)], gates: &[Gate], record: &Record) -> Result<GatedForward, GpuError> {
        Gate::check_all(&self.config, gates)?;
        for (tokens, objective) in examples {
            objective.check(tokens.len(), self.config.vocab_size)?;
        }
        let interventions: Vec<Intervention> = gates
            .iter()
            .filter_map(|gate| {
                let channels: Vec<usize> = (0..gate.kept.len()).filter(|&c| !gate.kept[c]).collect();
                let ablation = Ablation::Mean(gate.mean.clone());
                (!channels.is_empty()).then_some(Intervention { site: gate.site, positions: Vec::new(), channels, ablation })
            })
            .collect();
        let prompts: Vec<Vec<u32>> = examples.iter().map(|(tokens, _)| tokens.clone()).collect();
        let seq_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        self.check_backward_fits(prompts.len() * seq_len, seq_len)?;
        let ablated: Vec<Site> = interventions.iter().map(|i| i.site).collect();
        let saved = SavedRun::new(&self.ctx, &self.config, prompts.len() * seq_len, &ablated)?;
        let runs = self.forward_prompts(&prompts, record, &interventions, Some(&saved)).await?;
        Ok(GatedForward { runs, saved, seq_len })
    }

    /// The most prompts of `seq_len` tokens one forward and backward batch
    /// can hold within the adapter's binding limit (0 when not even one).
    pub fn batch_capacity(&self, seq_len: usize) -> usize {
        let row_bytes = 4 * widest_row(&self.config, seq_len.max(1)) as u64;
        (self.ctx.max_binding() / row_bytes / seq_len.max(1) as u64) as usize
    }

    /// GPU memory a gated batch keeps per token of each prompt (every
    /// site, and the values before the gates at `gated` sites): with
    /// [`Engine::batch_capacity`], what sizes a batch.
    pub fn saved_bytes_per_token(&self, gated: &[Site]) -> u64 {
        SavedRun::row_bytes(&self.config, gated)
    }

    /// [`Engine::gradients`] of a run already made (its logits and every
    /// site), as `model::gradients_of_run`: the backward pass alone, on the
    /// run uploaded.
    pub async fn gradients_of_run(&mut self, logits: Tensor, activations: Recording, objective: &Objective) -> Result<Gradients, GpuError> {
        objective.check(logits.rows, self.config.vocab_size)?;
        check_every_site(&self.config, logits.rows, &activations)?;
        let seq_len = logits.rows;
        self.check_backward_fits(seq_len, seq_len)?;
        let saved = SavedRun::upload(&self.ctx, &self.config, &[&activations], seq_len)?;
        let runs = vec![(logits, activations)];
        let dlogits = batch_dlogits(&runs, &[objective], seq_len);
        let readback = self.backward(&saved, 1, seq_len, &dlogits, &[], Output::Gradients, None).await?;
        Ok(split_runs(readback, runs, &[objective], seq_len).remove(0))
    }

    /// [`Engine::gradients_of_run`] of a run kept on the GPU
    /// ([`Engine::forward_kept`]): the backward pass reads its activations
    /// where they are; they are read back only for the result's run.
    ///
    /// Once `give_way` is set (another call waits for the GPU) it stops
    /// between two layers with [`GpuError::GaveWay`]: the backward pass is
    /// submitted a layer's dispatches at a time, each waited for (at the
    /// released shape a 256-token backward pass takes over 15 s on a
    /// software adapter, and the page's next run waited for all of it).
    pub async fn gradients_of_kept(&mut self, kept: &SavedRun, logits: Tensor, objective: &Objective, give_way: &Cell<bool>) -> Result<Gradients, GpuError> {
        objective.check(logits.rows, self.config.vocab_size)?;
        let seq_len = logits.rows;
        if kept.rows() != seq_len {
            return Err(GpuError::Gpu(format!("a kept run of {} rows with logits of {seq_len}", kept.rows())));
        }
        self.check_backward_fits(seq_len, seq_len)?;
        let activations = self.read_kept(kept).await?;
        let runs = vec![(logits, activations)];
        let dlogits = batch_dlogits(&runs, &[objective], seq_len);
        let readback = self.backward(kept, 1, seq_len, &dlogits, &[], Output::Gradients, Some(give_way)).await?;
        Ok(split_runs(readback, runs, &[objective], seq_len).remove(0))
    }

    /// Refuses a backward pass over `rows` rows of `seq_len`-token
    /// sequences whose widest buffer is over the adapter's binding limit (the
    /// attention's `[n_head, R, T]` grow fastest: at the released shape, past
    /// 512 tokens on WebGPU's default 128 MiB bindings).
    fn check_backward_fits(&self, rows: usize, seq_len: usize) -> Result<(), GpuError> {
        let max = self.ctx.max_binding();
        let bytes = 4 * (rows * widest_row(&self.config, seq_len)) as u64;
        if bytes > max {
            return Err(GpuError::TooLarge { tensor: "a backward-pass buffer".into(), bytes, limit: "max_storage_buffer_binding_size", max });
        }
        Ok(())
    }

    /// From d objective / d logits (`(row, token, gradient)` terms) back
    /// through every layer of `runs` runs of `seq_len` rows each, whose
    /// activations are in `saved`, to `output`. With `gates`, gradient passes
    /// back only through kept channels at gated sites, and a gated site's own
    /// top-k reads its kept set from its values before the gate.
    /// With `give_way`, as [`Engine::gradients_of_kept`] says.
    #[allow(clippy::too_many_arguments)]
    async fn backward(
        &mut self,
        saved: &SavedRun,
        runs: usize,
        seq_len: usize,
        dlogits: &[(usize, u32, f32)],
        gates: &[Gate],
        output: Output,
        give_way: Option<&Cell<bool>>,
    ) -> Result<Readback, GpuError> {
        if let Some(fault) = self.ctx.take_fault() {
            return Err(fault);
        }
        let c = self.config.clone();
        let (t, rows) = (seq_len, runs * seq_len);
        let (d, d_in, d_attn) = (c.d_model, c.d_in(), c.d_attn());
        let ctx = &self.ctx;
        let w = &self.weights;
        let storage = |label: &str, floats: usize| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 4 * floats.max(1) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let small = |label: &str, values: &[f32]| {
            ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: bytemuck::cast_slice(values), usage: wgpu::BufferUsages::STORAGE })
        };
        let act = |site: Site| saved.at(site);
        let before_gate = |site: Site| saved.before(site).unwrap_or_else(|| saved.at(site));
        // Each gate that ablates something: its kept channels `[width]`, 1 or 0.
        let kept: Vec<(Site, wgpu::Buffer)> = gates
            .iter()
            .filter(|gate| gate.kept.contains(&false))
            .map(|gate| (gate.site, small("kept [width]", &gate.kept.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect::<Vec<f32>>())))
            .collect();
        let kept_of = |site: Site| kept.iter().find(|(s, _)| *s == site).map(|(_, kept)| kept);
        // The gate derivatives: each gate's `[width]` at its offset in one buffer.
        let sums_out = storage("gate derivatives [sum of gate widths]", gates.iter().map(|g| g.kept.len()).sum());
        let mut sums = Vec::new();
        if output == Output::GateSums {
            let mut offset = 0;
            for gate in gates {
                sums.push(GateSum { site: gate.site, before: before_gate(gate.site).clone(), mean: small("mean [width]", &gate.mean), offset });
                offset += gate.kept.len();
            }
        }
        let mut dense_dlogits = vec![0f32; rows * c.vocab_size];
        for &(row, token, g) in dlogits {
            dense_dlogits[row * c.vocab_size + token as usize] += g;
        }
        let dlogits = small("dlogits [R, vocab]", &dense_dlogits);
        // Scratch, reused by every layer.
        let dx = storage("dx [R, d_model]", rows * d);
        let dsum = storage("dsum [R, d_model]", rows * d);
        let dmasked = storage("dmasked [R, d_model]", rows * d);
        let dh = storage("dh [R, d_mlp]", rows * c.d_mlp);
        let dh_masked = storage("dh masked [R, d_mlp]", rows * c.d_mlp);
        let dpre = storage("dpre [R, d_mlp]", rows * c.d_mlp);
        let pre = storage("pre [R, d_mlp]", rows * c.d_mlp);
        let dm = storage("dm [R, d_in]", rows * d_in);
        let dm_masked = storage("dm masked [R, d_in]", rows * d_in);
        let dy = storage("dy [R, d_attn]", rows * d_attn);
        let (dq, dk, dv) = (storage("dq", rows * d_attn), storage("dk", rows * d_attn), storage("dv", rows * d_attn));
        let dqkv = storage("dqkv [R, 3 d_attn]", rows * 3 * d_attn);
        let pairs = c.n_head * rows * t;
        let (weights, dscores) = (storage("weights [H, R, T]", pairs), storage("dscores [H, R, T]", pairs));
        let dnormed = storage("dnormed [R, d_model]", rows * d);

        let mut b = Steps { c: &c, placeholder: &w.placeholder, rows, output, sums: &sums, sums_out: &sums_out, steps: Vec::new() };
        // logits = ln_f(x) @ unembedding^T + ...: dnormed = dlogits @ unembedding.
        b.matmul_t(&w.unembedding_transposed, c.vocab_size, [&dlogits, &dnormed]);
        b.norm(&w.params.ln_f, d, [act(Site::FinalResid), &dnormed, &dx], None);
        b.emit(Site::FinalResid, &dx, d);
        for (l, layer) in w.params.layers.iter().enumerate().rev() {
            let site = |kind: SiteKind| act(Site::Layer(l, kind));
            let before = |kind: SiteKind| before_gate(Site::Layer(l, kind));
            let gate = |kind: SiteKind| kept_of(Site::Layer(l, kind));
            let transposes = &w.transposes[l];
            let relu = c.residual_relu;

            // MLP half, in reverse: x_out = topk(relu?(x_mid + o)).
            let x_out = if l + 1 == c.n_layer { act(Site::FinalResid) } else { act(Site::Layer(l + 1, SiteKind::ResidIn)) };
            b.topk(TopkSite::ResidPostMlp, d, relu, [x_out, &dx, &dsum], None);
            b.emit(Site::Layer(l, SiteKind::MlpResidDelta), &dsum, d);
            b.topk(TopkSite::MlpOut, d, false, [before(SiteKind::MlpResidDelta), &dsum, &dmasked], None);
            b.gate(gate(SiteKind::MlpResidDelta), d, &dmasked);
            b.matmul_t(&transposes.mlp_proj, d, [&dmasked, &dh]);
            b.emit(Site::Layer(l, SiteKind::MlpPostAct), &dh, c.d_mlp);
            b.topk(TopkSite::MlpNeuron, c.d_mlp, false, [before(SiteKind::MlpPostAct), &dh, &dh_masked], None);
            b.gate(gate(SiteKind::MlpPostAct), c.d_mlp, &dh_masked);
            let fc = &layer.c_fc;
            let forward_fc = Op::Matmul {
                in_width: d_in as u32,
                out: c.d_mlp as u32,
                row0: 0,
                w_rows: fc.weight.rows,
                w_nnz: fc.weight.nnz,
                has_bias: fc.bias.is_some(),
                activation: None,
            };
            b.op(forward_fc, &[site(SiteKind::MlpActIn), &fc.weight.buffer, fc.bias.as_ref().unwrap_or(&w.placeholder), &pre]);
            b.op(Op::ActivationBackward { width: c.d_mlp as u32, activation: c.activation }, &[&pre, &dh_masked, &dpre]);
            b.matmul_t(&transposes.c_fc, c.d_mlp, [&dpre, &dm]);
            b.emit(Site::Layer(l, SiteKind::MlpActIn), &dm, d_in);
            b.topk(TopkSite::MlpIn, d_in, false, [before(SiteKind::MlpActIn), &dm, &dm_masked], None);
            b.gate(gate(SiteKind::MlpActIn), d_in, &dm_masked);
            b.norm(&layer.ln_2, d_in, [site(SiteKind::ResidMid), &dm_masked, &dx], Some(&dsum));
            b.emit(Site::Layer(l, SiteKind::ResidMid), &dx, d);

            // Attention half, in reverse: x_mid = topk(relu?(x_in + o)).
            b.topk(TopkSite::ResidPostAttn, d, relu, [site(SiteKind::ResidMid), &dx, &dsum], None);
            b.emit(Site::Layer(l, SiteKind::AttnResidDelta), &dsum, d);
            b.topk(TopkSite::AttnOut, d, false, [before(SiteKind::AttnResidDelta), &dsum, &dmasked], None);
            b.gate(gate(SiteKind::AttnResidDelta), d, &dmasked);
            b.matmul_t(&transposes.attn_proj, d, [&dmasked, &dy]);
            b.emit(Site::Layer(l, SiteKind::AttnY), &dy, d_attn);
            let (q, k, v) = (site(SiteKind::AttnQ), site(SiteKind::AttnK), site(SiteKind::AttnV));
            let sink = layer.sink_logit.as_ref().unwrap_or(&w.placeholder);
            let attention = |keys| Op::AttentionBackward { n_head: c.n_head as u32, d_head: c.d_head as u32, has_sink: layer.sink_logit.is_some(), keys };
            b.bound(attention(false), vec![(1, q), (2, k), (3, v), (4, sink), (5, &dy), (6, &weights), (7, &dscores), (8, &dq)]);
            b.bound(attention(true), vec![(1, q), (5, &dy), (6, &weights), (7, &dscores), (9, &dk), (10, &dv)]);
            b.emit(Site::Layer(l, SiteKind::AttnQ), &dq, d_attn);
            b.emit(Site::Layer(l, SiteKind::AttnK), &dk, d_attn);
            b.emit(Site::Layer(l, SiteKind::AttnV), &dv, d_attn);
            b.gate(gate(SiteKind::AttnQ), d_attn, &dq);
            b.gate(gate(SiteKind::AttnK), d_attn, &dk);
            b.gate(gate(SiteKind::AttnV), d_attn, &dv);
            b.topk(TopkSite::AttnQ, d_attn, false, [before(SiteKind::AttnQ), &dq, &dqkv], Some((3 * d_attn, 0)));
            b.topk(TopkSite::AttnK, d_attn, false, [before(SiteKind::AttnK), &dk, &dqkv], Some((3 * d_attn, d_attn)));
            b.topk(TopkSite::AttnV, d_attn, false, [before(SiteKind::AttnV), &dv, &dqkv], Some((3 * d_attn, 2 * d_attn)));
            b.matmul_t(&transposes.c_attn, 3 * d_attn, [&dqkv, &dm]);
            b.emit(Site::Layer(l, SiteKind::AttnActIn), &dm, d_in);
            b.topk(TopkSite::AttnIn, d_in, false, [before(SiteKind::AttnActIn), &dm, &dm_masked], None);
            b.gate(gate(SiteKind::AttnActIn), d_in, &dm_masked);
            b.norm(&layer.ln_1, d_in, [site(SiteKind::ResidIn), &dm_masked, &dx], Some(&dsum));
            b.emit(Site::Layer(l, SiteKind::ResidIn), &dx, d);
        }
        if output == Output::GateSums {
            b.steps.push(Step::ReadBack { site: None, buffer: sums_out.clone(), floats: gates.iter().map(|g| g.kept.len()).sum() });
        }
        let steps = b.steps;
        self.submit(steps, rows, t, give_way).await
    }

    /// Encodes `steps` for `rows` rows of sequences `seq_len` long in one
    /// command buffer (one compute pass between the copies out), submits it
    /// and reads every copied buffer back.
    ///
    /// With `give_way`, submitted in `n_layer` parts, each waited for, and
    /// stopped between two once it is set.
    async fn submit(&self, steps: Vec<Step>, rows: usize, seq_len: usize, give_way: Option<&Cell<bool>>) -> Result<Readback, GpuError> {
        let ctx = &self.ctx;
        let slot_stride = PARAMS_BYTES.next_multiple_of(u64::from(ctx.limits.min_uniform_buffer_offset_alignment));
        let dispatches = steps.iter().filter(|s| matches!(s, Step::Dispatch { .. })).count();
        let mut params = vec![0u8; dispatches.max(1) * slot_stride as usize];
        let mut slot = 0;
        for step in &steps {
            if let Step::Dispatch { op, .. } = step {
                let block = op.params(rows as u32, seq_len as u32, (0, 0));
                params[slot * slot_stride as usize..][..block.len()].copy_from_slice(&block);
                slot += 1;
            }
        }
        let params = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("backward params"),
            contents: &params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let floats: usize = steps.iter().map(|s| if let Step::ReadBack { floats, .. } = s { *floats } else { 0 }).sum();
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("backward staging"),
            size: 4 * floats.max(1) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("backward") });
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        let (mut slot, mut offset) = (0u64, 0usize);
        let mut copies = Vec::new();
        let per_part = dispatches.div_ceil(self.config.n_layer.max(1)).max(1) as u64;
        for step in &steps {
            if let (Some(give_way), Step::Dispatch { .. }) = (give_way, step) {
                if slot > 0 && slot % per_part == 0 {
                    drop(pass.take());
                    let part = std::mem::replace(&mut encoder, ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("backward") }));
                    work_done(&ctx.device, &ctx.queue, ctx.queue.submit([part.finish()])).await?;
                    if give_way.get() {
                        return Err(GpuError::GaveWay);
                    }
                }
            }
            match step {
                Step::Dispatch { op, bindings } => {
                    let pipeline = ctx.pipeline(op.kernel());
                    let mut entries = vec![wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &params,
                            offset: slot * slot_stride,
                            size: wgpu::BufferSize::new(PARAMS_BYTES),
                        }),
                    }];
                    entries.extend(bindings.iter().map(|(binding, buffer)| wgpu::BindGroupEntry { binding: *binding, resource: buffer.as_entire_binding() }));
                    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(op.kernel().label()),
                        layout: &pipeline.get_bind_group_layout(0),
                        entries: &entries,
                    });
                    slot += 1;
                    let groups = op.workgroups(rows as u32, seq_len as u32, 0);
                    if groups == 0 {
                        continue;
                    }
                    let pass = pass.get_or_insert_with(|| {
                        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("backward"), timestamp_writes: None }).forget_lifetime()
                    });
                    let (x, y) = ctx.grid(groups);
                    pass.set_pipeline(&pipeline);
                    pass.set_bind_group(0, &bind_group, &[]);
                    pass.dispatch_workgroups(x, y, 1);
                }
                Step::ReadBack { site, buffer, floats } => {
                    pass = None; // copies go between passes
                    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 4 * offset as u64, 4 * *floats as u64);
                    copies.push((*site, offset, *floats));
                    offset += floats;
                }
            }
        }
        drop(pass);
        let submission = ctx.queue.submit([encoder.finish()]);
        let mapped = start_map(&staging);
        let data = finish_map(&ctx.device, &staging, mapped, Some(submission), floats).await?;
        if let Some(fault) = ctx.take_fault() {
            return Err(fault);
        }
        Ok(Readback { data, copies })
    }
}

/// d objective / d logits of every run in a batch of runs `seq_len` rows
/// apart, as (row of the batch, token, gradient).
fn batch_dlogits(runs: &[(Tensor, Recording)], objectives: &[&Objective], seq_len: usize) -> Vec<(usize, u32, f32)> {
    runs.iter()
        .zip(objectives)
        .enumerate()
        .flat_map(|(b, ((logits, _), objective))| objective.logit_gradient(logits).into_iter().map(move |(t, token, g)| (b * seq_len + t, token, g)))
        .collect()
}

/// Each run's gradients, cut from the batch's read-back gradients (rows
/// `seq_len` apart), with its logits, activations and objective's value;
/// sites in the order the forward pass recorded them.
fn split_runs(readback: Readback, runs: Vec<(Tensor, Recording)>, objectives: &[&Objective], seq_len: usize) -> Vec<Gradients> {
    let order: Vec<Site> = runs.first().map_or(Vec::new(), |(_, activations)| activations.iter().map(|(site, _)| *site).collect());
    let mut copies: Vec<(Site, usize, usize)> = readback.copies.into_iter().filter_map(|(site, at, floats)| Some((site?, at, floats))).collect();
    copies.sort_by_key(|(site, ..)| order.iter().position(|s| s == site));
    let rows = runs.len() * seq_len;
    runs.into_iter()
        .zip(objectives)
        .enumerate()
        .map(|(b, ((logits, activations), objective))| {
            let len = logits.rows;
            let gradients = copies
                .iter()
                .map(|&(site, at, floats)| {
                    let width = floats / rows;
                    (site, Tensor::from_vec(len, width, readback.data[at + b * seq_len * width..][..len * width].to_vec()))
                })
                .collect();
            Gradients { value: objective.value(&logits), logits, activations, gradients }
        })
        .collect()
}

/// A gate's derivatives, reduced at its site: from the gradient there, the
/// values before the gate `[R, width]` and the means `[width]`, into
/// columns `offset..` of the output.
struct GateSum {
    site: Site,
    before: wgpu::Buffer,
    mean: wgpu::Buffer,
    offset: usize,
}

/// The backward pass's steps, as they are listed.
struct Steps<'a> {
    c: &'a crate::model::Config,
    placeholder: &'a wgpu::Buffer,
    rows: usize,
    output: Output,
    /// With `Output::GateSums`: every gate's reduction, into `sums_out`.
    sums: &'a [GateSum],
    sums_out: &'a wgpu::Buffer,
    steps: Vec<Step>,
}

impl Steps<'_> {
    /// A dispatch of `op` with `buffers` at bindings 1.. in order.
    fn op(&mut self, op: Op, buffers: &[&wgpu::Buffer]) {
        let bindings = buffers.iter().enumerate().map(|(i, b)| (i as u32 + 1, (*b).clone())).collect();
        self.steps.push(Step::Dispatch { op, bindings });
    }

    /// A dispatch of `op` with buffers at the bindings named (an entry
    /// point binds only what it uses).
    fn bound(&mut self, op: Op, bindings: Vec<(u32, &wgpu::Buffer)>) {
        let bindings = bindings.into_iter().map(|(i, b)| (i, b.clone())).collect();
        self.steps.push(Step::Dispatch { op, bindings });
    }

    /// `site`'s gradient is in `buffer` (`[R, width]`) here: copied out,
    /// or reduced to its gate's derivatives where the site has one.
    fn emit(&mut self, site: Site, buffer: &wgpu::Buffer, width: usize) {
        match self.output {
            Output::Gradients => self.steps.push(Step::ReadBack { site: Some(site), buffer: buffer.clone(), floats: self.rows * width }),
            Output::GateSums => {
                if let Some(sum) = self.sums.iter().find(|sum| sum.site == site) {
                    let op = Op::GateSums { width: width as u32, out_offset: sum.offset as u32 };
                    let (before, mean, out) = (sum.before.clone(), sum.mean.clone(), self.sums_out.clone());
                    self.steps.push(Step::Dispatch { op, bindings: vec![(2, buffer.clone()), (3, before), (4, mean), (5, out)] });
                }
            }
        }
    }

    /// `out = g @ W` (`[T, in_width]` from `g` `[T, out]`... of the forward),
    /// given `transposed` = W^T `[in, out]`: the forward's kernel on it.
    fn matmul_t(&mut self, transposed: &GpuMatrix, g_width: usize, [g, out]: [&wgpu::Buffer; 2]) {
        let op = Op::Matmul {
            in_width: g_width as u32,
            out: transposed.rows,
            row0: 0,
            w_rows: transposed.rows,
            w_nnz: transposed.nnz,
            has_bias: false,
            activation: None,
        };
        let placeholder = self.placeholder.clone();
        self.op(op, &[g, &transposed.buffer, &placeholder, out]);
    }

    /// AbsTopK's backward at `site` (everything kept where the config does not
    /// sparsify it), with the residual ReLU when `relu`; into `out` at
    /// (row stride, column offset), or densely.
    fn topk(&mut self, site: TopkSite, width: usize, relu: bool, [kept, g, out]: [&wgpu::Buffer; 3], at: Option<(usize, usize)>) {
        let k = self.c.topk_k(site, width).filter(|&k| k < width).unwrap_or(width);
        let (stride, offset) = at.unwrap_or((width, 0));
        let op = Op::TopKBackward { width: width as u32, k: k as u32, relu, out_stride: stride as u32, out_offset: offset as u32 };
        self.op(op, &[kept, g, out]);
    }

    /// A gated site's gradient `g` (`[R, width]`) kept only in the channels
    /// `kept` marks (`[width]`, 1 or 0), in place; nothing without a gate.
    fn gate(&mut self, kept: Option<&wgpu::Buffer>, width: usize, g: &wgpu::Buffer) {
        if let Some(kept) = kept {
            self.op(Op::GateBackward { width: width as u32 }, &[kept, g]);
        }
    }

    /// `out = residual + (the gradient at the norm's input x)`, from the
    /// gradient at its output read from the first d_model columns of rows
    /// `dout_stride` wide.
    fn norm(&mut self, norm: &GpuNorm, dout_stride: usize, [x, dout, out]: [&wgpu::Buffer; 3], residual: Option<&wgpu::Buffer>) {
        let op = Op::NormBackward { width: self.c.d_model as u32, dout_stride: dout_stride as u32, rms: norm.rms, has_residual: residual.is_some() };
        let residual = residual.unwrap_or(self.placeholder).clone();
        self.op(op, &[x, dout, &norm.weight, &residual, out]);
    }
}

/// Floats per row of the widest buffer a forward and backward batch of
/// `seq_len`-token prompts makes: attention's `[n_head, R, T]` grows with T
/// (at the released shape it is the widest past 64 tokens), the rest are an
/// activation or a gradient of one site, q, k and v together.
fn widest_row(c: &crate::model::Config, seq_len: usize) -> usize {
    [c.n_head * seq_len, 3 * c.d_attn(), c.d_mlp, c.vocab_size, c.d_in(), c.d_model].into_iter().max().unwrap_or(1)
}
