//! The backward pass on the GPU: `model/backward.rs` op by op, in WGSL. A
//! forward pass records every site; the activations the backward pass needs
//! are uploaded again (the page holds them anyway, and the engine's forward
//! workspace reuses one buffer per site across layers), then one command
//! buffer runs every layer in reverse and copies each site's gradient out.
//! Several prompts, each with its own objective, go through in one batch:
//! rows `[prompts x T]`, as the forward's variants.
//!
//! Products with a weight's transpose run in the forward's sparse kernel
//! on the uploaded transposes (`GpuWeights::transposes`): work scales with
//! nonzeros, as forward.

use wgpu::util::DeviceExt;

use super::engine::Engine;
use super::ops::{Op, PARAMS_BYTES};
use super::readback::{finish_map, start_map};
use super::weights::{GpuMatrix, GpuNorm};
use super::GpuError;
use crate::model::{
    check_every_site, Ablation, Gate, GatedGradients, Gradients, Intervention, Objective, Record, Recording, Site, SiteKind, Tensor, TopkSite,
};

/// One step of the backward pass: a dispatch with its buffers by binding
/// number, or a site's gradient copied out.
enum Step {
    Dispatch { op: Op, bindings: Vec<(u32, wgpu::Buffer)> },
    Emit { site: Site, buffer: wgpu::Buffer, width: usize },
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
        let runs = self.forward_prompts(&prompts, &Record::All, &interventions).await?;
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
        let ungated_refs: Vec<&Recording> = ungated.iter().collect();
        let runs: Vec<(Tensor, Recording)> = runs.into_iter().map(|(logits, recording, _)| (logits, recording)).collect();
        let gradients = self.gradients_of_runs(runs, &objectives, gates, &ungated_refs).await?;
        Ok(gradients.into_iter().zip(ungated).map(|(run, ungated)| GatedGradients { run, ungated }).collect())
    }

    /// The most prompts of `seq_len` tokens one forward and backward batch
    /// can hold within the adapter's binding limit (0 when not even one).
    pub fn batch_capacity(&self, seq_len: usize) -> usize {
        let row_bytes = 4 * widest_row(&self.config, seq_len.max(1)) as u64;
        (self.ctx.max_binding() / row_bytes / seq_len.max(1) as u64) as usize
    }

    /// [`Engine::gradients`] of a run already made (its logits and every
    /// site), as `model::gradients_of_run`: the backward pass alone.
    pub async fn gradients_of_run(&mut self, logits: Tensor, activations: Recording, objective: &Objective) -> Result<Gradients, GpuError> {
        let mut batch = self.gradients_of_runs(vec![(logits, activations)], &[objective], &[], &[]).await?;
        Ok(batch.remove(0))
    }

    /// The backward pass of several runs (logits and every site each), one
    /// objective per run, in one pass over rows `[runs x T]`, T the longest.
    /// With `gates`, `ungated[run]` holds its gated sites' values before the gates.
    async fn gradients_of_runs(
        &mut self,
        runs: Vec<(Tensor, Recording)>,
        objectives: &[&Objective],
        gates: &[Gate],
        ungated: &[&Recording],
    ) -> Result<Vec<Gradients>, GpuError> {
        for ((logits, activations), objective) in runs.iter().zip(objectives) {
            objective.check(logits.rows, self.config.vocab_size)?;
            check_every_site(&self.config, logits.rows, activations)?;
        }
        if let Some(fault) = self.ctx.take_fault() {
            return Err(fault);
        }
        let seq_len = runs.iter().map(|(logits, _)| logits.rows).max().unwrap_or(0);
        // d objective / d logits, as (row of the batch, token, gradient).
        let dlogits: Vec<(usize, u32, f32)> = runs
            .iter()
            .zip(objectives)
            .enumerate()
            .flat_map(|(b, ((logits, _), objective))| objective.logit_gradient(logits).into_iter().map(move |(t, token, g)| (b * seq_len + t, token, g)))
            .collect();
        let recordings: Vec<&Recording> = runs.iter().map(|(_, activations)| activations).collect();
        let batched = self.backward(&recordings, seq_len, &dlogits, gates, ungated).await?;
        if let ([(logits, _)], [objective]) = (&runs[..], objectives) {
            // One run: its gradients as they are, without a copy.
            let value = objective.value(logits);
            let (logits, activations) = runs.into_iter().next().expect("one run");
            return Ok(vec![Gradients { logits, activations, gradients: batched, value }]);
        }
        Ok(runs
            .into_iter()
            .zip(objectives)
            .enumerate()
            .map(|(b, ((logits, activations), objective))| {
                let len = logits.rows;
                let gradients = batched
                    .iter()
                    .map(|(site, g)| (*site, Tensor::from_vec(len, g.cols, g.data[b * seq_len * g.cols..][..len * g.cols].to_vec())))
                    .collect();
                Gradients { value: objective.value(&logits), logits, activations, gradients }
            })
            .collect())
    }

    /// From d objective / d logits (`(row, token, gradient)` terms) to every
    /// site's gradient `[runs x seq_len, width]`, in forward order, for runs
    /// whose activations are `runs` (each at most seq_len rows).
    /// With `gates`, `ungated[run]` holds each gated site's values before
    /// its gate: there gradient passes back only through kept channels, and
    /// the site's own top-k reads its kept set from those values.
    async fn backward(
        &mut self,
        runs: &[&Recording],
        seq_len: usize,
        dlogits: &[(usize, u32, f32)],
        gates: &[Gate],
        ungated: &[&Recording],
    ) -> Result<Recording, GpuError> {
        let c = self.config.clone();
        let (t, rows) = (seq_len, runs.len() * seq_len);
        let (d, d_in, d_attn) = (c.d_model, c.d_in(), c.d_attn());
        let ctx = &self.ctx;
        let w = &self.weights;
        // A buffer over the adapter's limits is refused before any is made
        // (the attention's [n_head, R, T] grow fastest: at the released
        // shape, past 512 tokens on WebGPU's default 128 MiB bindings).
        let max = self.ctx.max_binding();
        let bytes = 4 * (rows * widest_row(&c, t)) as u64;
        if bytes > max {
            return Err(GpuError::TooLarge { tensor: "a backward-pass buffer".into(), bytes, limit: "max_storage_buffer_binding_size", max });
        }
        let storage = |label: &str, floats: usize| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 4 * floats.max(1) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        // The forward's activations, `[R, width]` each.
        let order: Vec<Site> = runs.first().map_or(Vec::new(), |run| run.iter().map(|(site, _)| *site).collect());
        let mut saved: Vec<(Site, wgpu::Buffer)> = Vec::new();
        for &site in &order {
            let values = runs.iter().map(|run| &run.iter().find(|(s, _)| *s == site).expect("every run records every site").1);
            saved.push((site, upload_runs(ctx, "saved activation [R, width]", values, t, c.site_width(site))?));
        }
        let act = |site: Site| &saved.iter().find(|(s, _)| *s == site).expect("every site is recorded").1;
        // Each gate's values before it `[R, width]` and its kept channels `[width]`.
        let mut gated: Vec<(Site, wgpu::Buffer, wgpu::Buffer)> = Vec::new();
        for gate in gates {
            let mut values = Vec::new();
            for run in ungated {
                values.push(&run.iter().find(|(s, _)| *s == gate.site).ok_or_else(|| GpuError::Gpu(format!("no ungated values at {}", gate.site)))?.1);
            }
            let before = upload_runs(ctx, "ungated activation [R, width]", values.into_iter(), t, gate.kept.len())?;
            let kept: Vec<f32> = gate.kept.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
            let kept = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("kept [width]"),
                contents: bytemuck::cast_slice(&kept),
                usage: wgpu::BufferUsages::STORAGE,
            });
            gated.push((gate.site, before, kept));
        }
        let before_gate = |site: Site| gated.iter().find(|(s, ..)| *s == site).map_or_else(|| act(site), |(_, before, _)| before);
        let kept_of = |site: Site| gated.iter().find(|(s, ..)| *s == site).map(|(.., kept)| kept);
        let mut dense_dlogits = vec![0f32; rows * c.vocab_size];
        for &(row, token, g) in dlogits {
            dense_dlogits[row * c.vocab_size + token as usize] += g;
        }
        let dlogits = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dlogits"),
            contents: bytemuck::cast_slice(&dense_dlogits),
            usage: wgpu::BufferUsages::STORAGE,
        });
        // Scratch, reused by every layer.
        let dx = storage("dx [R, d_model]", rows * d);
        let dsum = storage("dsum [R, d_model]", rows * d);
        let dmasked = storage("dmasked [R, d_model]", rows * d);
        let dnormed = storage("dnormed [R, d_model]", rows * d);
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

        let mut b = Steps { c: &c, placeholder: &w.placeholder, steps: Vec::new() };

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
        let steps = b.steps;
        let mut gradients = self.submit(steps, rows, t).await?;
        // Into forward order, as the activations are.
        gradients.sort_by_key(|(site, _)| order.iter().position(|s| s == site));
        Ok(gradients)
    }

    /// Encodes `steps` for `rows` rows of sequences `seq_len` long in one
    /// command buffer (one compute pass between the copies out), submits it
    /// and reads every emitted gradient back.
    async fn submit(&self, steps: Vec<Step>, rows: usize, seq_len: usize) -> Result<Recording, GpuError> {
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
        let floats: usize = steps.iter().map(|s| if let Step::Emit { width, .. } = s { rows * width } else { 0 }).sum();
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gradients staging"),
            size: 4 * floats.max(1) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("backward") });
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        let (mut slot, mut offset) = (0u64, 0usize);
        let mut copies: Vec<(Site, usize, usize)> = Vec::new();
        for step in &steps {
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
                Step::Emit { site, buffer, width } => {
                    pass = None; // copies go between passes
                    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 4 * offset as u64, 4 * (rows * width) as u64);
                    copies.push((*site, *width, offset));
                    offset += rows * width;
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
        Ok(copies.into_iter().map(|(site, width, at)| (site, Tensor::from_vec(rows, width, data[at..at + rows * width].to_vec()))).collect())
    }
}

/// One site's values of every run, `[T_b, width]` each, in a buffer
/// `[runs x t, width]`: run b's rows at b x t, the padding after a shorter
/// run zero (it reaches no real row). Written while mapped at creation: no
/// staging copy (a queue write cost 0.3 s more at the released shape, 256
/// tokens).
fn upload_runs<'a>(ctx: &super::GpuContext, label: &str, runs: impl ExactSizeIterator<Item = &'a Tensor>, t: usize, width: usize) -> Result<wgpu::Buffer, GpuError> {
    let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: 4 * (runs.len() * t * width).max(1) as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: true,
    });
    {
        let mut mapped = buffer.slice(..).get_mapped_range_mut().map_err(|e| GpuError::Gpu(e.to_string()))?;
        for (b, values) in runs.enumerate() {
            let bytes: &[u8] = bytemuck::cast_slice(&values.data);
            let at = 4 * b * t * width;
            mapped.slice(at..at + bytes.len()).copy_from_slice(bytes);
        }
    }
    buffer.unmap();
    Ok(buffer)
}

/// The backward pass's steps, as they are listed.
struct Steps<'a> {
    c: &'a crate::model::Config,
    placeholder: &'a wgpu::Buffer,
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

    /// `site`'s gradient, in `buffer` (`[T, width]`), copied out here.
    fn emit(&mut self, site: Site, buffer: &wgpu::Buffer, width: usize) {
        self.steps.push(Step::Emit { site, buffer: buffer.clone(), width });
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
