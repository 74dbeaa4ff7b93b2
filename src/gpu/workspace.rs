//! The buffers and steps a run uses, built once for up to `capacity` rows
//! (tokens x variants) and reused: activation buffers, one parameter slot
//! per step, and each stage's steps with their bind groups. A stage is
//! encoded here; `engine.rs` submits stages and reads them back.

use super::engine::{Copied, Outputs, Pending, Plan, SiteCopy};
use super::kernels::Kernel;
use super::ops::{Op, PARAMS_BYTES};
use super::profile::Timestamps;
use super::readback::start_map;
use super::saved::Summary;
use super::weights::{GpuLinear, GpuMatrix, GpuNorm};
use super::{GpuContext, GpuError, GpuWeights};
use crate::model::{Activation, Config, Site, SiteKind, TopkSite};

/// One step of a stage.
pub(super) enum Step {
    Dispatch { op: Op, bind_group: wgpu::BindGroup, slot: usize },
    /// Interventions at `site` (dispatched when the run has any there), then
    /// a copy of `buffer` (`[rows, width]`) out when the run records it.
    Site { site: Site, buffer: wgpu::Buffer, width: u32, intervene: wgpu::BindGroup, slot: usize },
}

/// Activation buffers for up to `capacity` rows, and the steps that use them.
pub(super) struct Workspace {
    pub capacity: usize,
    pub intervention_capacity: usize,
    tokens: wgpu::Buffer,
    /// The residual stream `[R, d_model]`, the concatenated position
    /// embedding `[R, d_pos_emb]`, and scratch buffers at least as wide.
    x: wgpu::Buffer,
    pos: Option<wgpu::Buffer>,
    delta: wgpu::Buffer,
    act_in: wgpu::Buffer,
    logits: wgpu::Buffer,
    params: wgpu::Buffer,
    slot_stride: u64,
    intervention_index: wgpu::Buffer,
    intervention_value: wgpu::Buffer,
    stages: Vec<Vec<Step>>,
    /// Readback buffers per stage, reused while big enough.
    staging: Vec<Option<wgpu::Buffer>>,
}

impl Workspace {
    /// Copies rows `0..seq_len` of the state that crosses stage boundaries
    /// (residual stream, position embedding) to every other variant. Through
    /// a scratch buffer: WebGPU copies cannot read and write one buffer.
    fn broadcast_first_variant(&self, encoder: &mut wgpu::CommandEncoder, c: &Config, seq_len: usize, n_variants: usize) {
        let mut broadcast = |buffer: &wgpu::Buffer, scratch: &wgpu::Buffer, width: usize| {
            let bytes = (4 * seq_len * width) as u64;
            encoder.copy_buffer_to_buffer(buffer, 0, scratch, 0, bytes);
            for variant in 1..n_variants {
                encoder.copy_buffer_to_buffer(scratch, 0, buffer, variant as u64 * bytes, bytes);
            }
        };
        broadcast(&self.x, &self.delta, c.d_model);
        if let (Some(pos), Some(d_pos)) = (&self.pos, c.d_pos_emb) {
            broadcast(pos, &self.act_in, d_pos);
        }
    }

    /// The tokens of every variant (`[n_variants * seq_len]`), and the
    /// intervention entries.
    pub fn write_inputs(&self, ctx: &GpuContext, tokens: &[u32], plan: &Plan) {
        ctx.queue.write_buffer(&self.tokens, 0, bytemuck::cast_slice(tokens));
        if !plan.entries.index.is_empty() {
            ctx.queue.write_buffer(&self.intervention_index, 0, bytemuck::cast_slice(&plan.entries.index));
            ctx.queue.write_buffer(&self.intervention_value, 0, bytemuck::cast_slice(&plan.entries.value));
        }
    }

    /// Every step's parameter block, in one write.
    pub fn write_params(&self, ctx: &GpuContext, plan: &Plan) {
        let slots = self.stages.iter().flatten().count();
        let stride = self.slot_stride as usize;
        let mut bytes = vec![0u8; slots * stride];
        let seq_len = plan.seq_len as u32;
        for (stage, steps) in self.stages.iter().enumerate() {
            let rows = (plan.seq_len * plan.variants_in(stage)) as u32;
            for step in steps {
                let (slot, block) = match step {
                    Step::Dispatch { op, slot, .. } => (*slot, op.params(rows, seq_len, (0, 0))),
                    Step::Site { site, slot, width, .. } => (*slot, Op::Intervene { width: *width }.params(0, seq_len, plan.entries.span_of(*site))),
                };
                bytes[slot * stride..slot * stride + block.len()].copy_from_slice(&block);
            }
        }
        ctx.queue.write_buffer(&self.params, 0, &bytes);
    }

    /// Encodes and submits stage `s`: its dispatches (all in one compute
    /// pass between copies: per-pass costs add up over hundreds of small
    /// dispatches), a copy of every site `outputs.record` wants and, in the
    /// last stage, of the logits, into a staging buffer whose mapping starts
    /// now; and the copies into `outputs.saved`, on the GPU.
    pub fn submit_stage(
        &mut self,
        ctx: &GpuContext,
        c: &Config,
        plan: &Plan,
        s: usize,
        outputs: &Outputs,
        mut timestamps: Option<&mut Timestamps>,
    ) -> Option<Pending> {
        let Outputs { record, before_interventions, saved } = *outputs;
        let computed = plan.variants_in(s);
        let rows = plan.seq_len * computed;
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("stage") });
        if s == plan.first_varying && s > 0 {
            self.broadcast_first_variant(&mut encoder, c, plan.seq_len, plan.n_variants);
        }
        let is_final = s == plan.n_stages - 1;
        let copied_before = |site: Site| before_interventions && plan.entries.span_of(site).1 > 0;
        let site_floats: u64 = self.stages[s]
            .iter()
            .filter_map(|step| match step {
                Step::Site { site, width, .. } if record.wants(*site) => Some(u64::from(*width) * if copied_before(*site) { 2 } else { 1 }),
                _ => None,
            })
            .sum::<u64>()
            * rows as u64;
        // A summarised kept run hands over each site's summary `[2, width]`.
        let summaries: Vec<&Summary> = self.stages[s]
            .iter()
            .filter_map(|step| match step {
                Step::Site { site, .. } => saved.and_then(|saved| saved.summary(*site)),
                _ => None,
            })
            .collect();
        let summary_floats: u64 = summaries.iter().map(|summary| 2 * u64::from(summary.width)).sum();
        let floats = site_floats + summary_floats + if is_final { (rows * c.vocab_size) as u64 } else { 0 };
        let staging = (floats > 0).then(|| self.staging_buffer(ctx, s, 4 * floats));
        let mut copies: Vec<SiteCopy> = Vec::new();
        let mut offset = 0u64;
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        for step in &self.stages[s] {
            if let Step::Site { site, buffer, width, .. } = step {
                let floats = rows as u64 * u64::from(*width);
                let keep = saved.and_then(|saved| saved.destination(*site, true)).filter(|_| plan.entries.span_of(*site).1 > 0);
                if let Some(keep) = keep {
                    pass = None; // ends the pass: copies go between passes
                    encoder.copy_buffer_to_buffer(buffer, 0, keep, 0, 4 * floats);
                }
                if record.wants(*site) && copied_before(*site) {
                    pass = None;
                    let staging = staging.as_ref().expect("staging sized for every recorded site");
                    encoder.copy_buffer_to_buffer(buffer, 0, staging, 4 * offset, 4 * floats);
                    copies.push(SiteCopy { site: *site, width: *width, offset, of: Copied::BeforeInterventions });
                    offset += floats;
                }
            }
            let (op, bind_group, count) = match step {
                Step::Dispatch { op, bind_group, .. } => (*op, bind_group, 0),
                Step::Site { site, intervene, width, .. } => (Op::Intervene { width: *width }, intervene, plan.entries.span_of(*site).1),
            };
            let groups = op.workgroups(rows as u32, plan.seq_len as u32, count);
            if groups > 0 {
                // A timed dispatch gets a pass of its own.
                let timestamp_writes = timestamps.as_deref_mut().and_then(|t| t.next(op.kernel()));
                let timed = timestamp_writes.is_some();
                if timed {
                    pass = None;
                }
                let open = pass.get_or_insert_with(|| {
                    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("stage"), timestamp_writes }).forget_lifetime()
                });
                let (x, y) = ctx.grid(groups);
                open.set_pipeline(&ctx.pipeline(op.kernel()));
                open.set_bind_group(0, bind_group, &[]);
                open.dispatch_workgroups(x, y, 1);
                if timed {
                    pass = None;
                }
            }
            if let Step::Site { site, buffer, width, .. } = step {
                let floats = rows as u64 * u64::from(*width);
                if let Some(keep) = saved.and_then(|saved| saved.destination(*site, false)) {
                    pass = None;
                    encoder.copy_buffer_to_buffer(buffer, 0, keep, 0, 4 * floats);
                }
                if record.wants(*site) {
                    pass = None;
                    let staging = staging.as_ref().expect("staging sized for every recorded site");
                    encoder.copy_buffer_to_buffer(buffer, 0, staging, 4 * offset, 4 * floats);
                    copies.push(SiteCopy { site: *site, width: *width, offset, of: Copied::Values });
                    offset += floats;
                }
            }
        }
        drop(pass);
        if !summaries.is_empty() {
            // After every site of the stage is kept, in one pass.
            let mut open = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("summaries"), timestamp_writes: None });
            open.set_pipeline(&ctx.pipeline(Kernel::Summary));
            for summary in &summaries {
                open.set_bind_group(0, &summary.bind_group, &[]);
                open.dispatch_workgroups(Op::Summary { width: summary.width }.workgroups(0, 0, 0), 1, 1);
            }
            drop(open);
            let staging = staging.as_ref().expect("staging sized for every summary");
            for summary in &summaries {
                let floats = 2 * u64::from(summary.width);
                encoder.copy_buffer_to_buffer(&summary.out, 0, staging, 4 * offset, 4 * floats);
                copies.push(SiteCopy { site: summary.site, width: summary.width, offset, of: Copied::Summary });
                offset += floats;
            }
        }
        if is_final {
            let staging = staging.as_ref().expect("the final stage always reads the logits");
            encoder.copy_buffer_to_buffer(&self.logits, 0, staging, 4 * offset, 4 * (rows * c.vocab_size) as u64);
        }
        let submission = ctx.queue.submit([encoder.finish()]);
        staging.map(|buffer| Pending {
            stage: s,
            mapped: start_map(&buffer),
            buffer,
            submission,
            copies,
            floats: floats as usize,
            logits_at: is_final.then_some(offset as usize),
            computed,
        })
    }

    /// Stage `s`'s readback buffer, of at least `bytes`: reused while big enough.
    fn staging_buffer(&mut self, ctx: &GpuContext, s: usize, bytes: u64) -> wgpu::Buffer {
        let fits = self.staging[s].as_ref().is_some_and(|b| b.size() >= bytes);
        if !fits {
            self.staging[s] = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        self.staging[s].clone().expect("just made")
    }
}

/// Creates the activation buffers for `capacity` rows and the steps of every
/// stage, with their bind groups.
pub(super) fn build_workspace(
    ctx: &GpuContext,
    c: &Config,
    w: &GpuWeights,
    capacity: usize,
    intervention_capacity: usize,
) -> Result<Workspace, GpuError> {
    let storage = |name: String, bytes: u64| ctx.storage_buffer(&name, bytes, false);
    // `[capacity, width]` f32 (or u32 for the tokens).
    let activation = |name: &str, width: usize| {
        storage(format!("activations {name} [{capacity}, {width}]"), 4 * capacity as u64 * width as u64)
    };
    let (d, d_in, d_attn) = (c.d_model, c.d_in(), c.d_attn());
    let tokens = activation("tokens", 1)?;
    let x = activation("resid", d)?;
    let act_in = activation("act_in", d_in)?;
    let q = activation("q", d_attn)?;
    let k = activation("k", d_attn)?;
    let v = activation("v", d_attn)?;
    let y = activation("y", d_attn)?;
    let delta = activation("resid_delta", d)?;
    let h = activation("post_act", c.d_mlp)?;
    let pos = c.d_pos_emb.map(|dp| activation("pos", dp)).transpose()?;
    let logits = activation("logits", c.vocab_size)?;
    let entries = |name: &str| storage(format!("{name} [{intervention_capacity}]"), 4 * intervention_capacity as u64);
    let intervention_index = entries("intervention indices")?;
    let intervention_value = entries("intervention values")?;

    let slot_stride = PARAMS_BYTES.next_multiple_of(u64::from(ctx.limits.min_uniform_buffer_offset_alignment));
    let mut b = StepBuilder { ctx, w, steps: Vec::new(), slots: 0, slot_stride };
    let mut stages: Vec<Vec<Unbound>> = Vec::new();

    for (l, layer) in w.params.layers.iter().enumerate() {
        if l == 0 {
            let embed = |table: &GpuMatrix, ids_are_positions: bool, add_pos: bool| Op::Embed {
                width: if ids_are_positions { c.d_pos_emb.unwrap_or(d) as u32 } else { d as u32 },
                table: (table.rows, table.nnz),
                pos: (w.params.wpe.rows, w.params.wpe.nnz),
                ids_are_positions,
                add_pos,
            };
            b.op(embed(&w.params.wte, false, c.d_pos_emb.is_none()), &[&tokens, &w.params.wte.buffer, &w.params.wpe.buffer, &x]);
            if let Some(pos) = &pos {
                b.op(embed(&w.params.wpe, true, false), &[&tokens, &w.params.wpe.buffer, &w.params.wpe.buffer, pos]);
            }
        }
        let site = |b: &mut StepBuilder, kind: SiteKind, buffer: &wgpu::Buffer| {
            b.site(Site::Layer(l, kind), buffer, c.site_width(Site::Layer(l, kind)), &intervention_index, &intervention_value)
        };
        // Attention half.
        site(&mut b, SiteKind::ResidIn, &x);
        b.norm(&layer.ln_1, layer.ln_p1.as_ref(), c, &x, pos.as_ref(), &act_in);
        b.topk(c, TopkSite::AttnIn, d_in, &act_in);
        site(&mut b, SiteKind::AttnActIn, &act_in);
        for (i, out) in [&q, &k, &v].into_iter().enumerate() {
            b.matmul(&layer.c_attn, d_in, i * d_attn..(i + 1) * d_attn, None, [&act_in, out]);
        }
        b.topk(c, TopkSite::AttnK, d_attn, &k);
        b.topk(c, TopkSite::AttnQ, d_attn, &q);
        b.topk(c, TopkSite::AttnV, d_attn, &v);
        site(&mut b, SiteKind::AttnK, &k);
        site(&mut b, SiteKind::AttnQ, &q);
        site(&mut b, SiteKind::AttnV, &v);
        let sink = layer.sink_logit.as_ref().unwrap_or(&w.placeholder);
        let attention = Op::Attention { n_head: c.n_head as u32, d_head: c.d_head as u32, has_sink: layer.sink_logit.is_some() };
        b.op(attention, &[&q, &k, &v, sink, &y]);
        site(&mut b, SiteKind::AttnY, &y);
        b.matmul(&layer.attn_proj, d_attn, 0..d, None, [&y, &delta]);
        b.topk(c, TopkSite::AttnOut, d, &delta);
        site(&mut b, SiteKind::AttnResidDelta, &delta);
        b.op(Op::ResidualAdd { width: d as u32, relu: c.residual_relu }, &[&x, &delta]);
        b.topk(c, TopkSite::ResidPostAttn, d, &x);
        // MLP half.
        site(&mut b, SiteKind::ResidMid, &x);
        b.norm(&layer.ln_2, layer.ln_p2.as_ref(), c, &x, pos.as_ref(), &act_in);
        b.topk(c, TopkSite::MlpIn, d_in, &act_in);
        site(&mut b, SiteKind::MlpActIn, &act_in);
        b.matmul(&layer.c_fc, d_in, 0..c.d_mlp, Some(c.activation), [&act_in, &h]);
        b.topk(c, TopkSite::MlpNeuron, c.d_mlp, &h);
        site(&mut b, SiteKind::MlpPostAct, &h);
        b.matmul(&layer.mlp_proj, c.d_mlp, 0..d, None, [&h, &delta]);
        b.topk(c, TopkSite::MlpOut, d, &delta);
        site(&mut b, SiteKind::MlpResidDelta, &delta);
        b.op(Op::ResidualAdd { width: d as u32, relu: c.residual_relu }, &[&x, &delta]);
        b.topk(c, TopkSite::ResidPostMlp, d, &x);
        stages.push(std::mem::take(&mut b.steps));
    }

    // Final stage: ln_f into act_in (as [R, d_model]), unembedding, bigram.
    b.site(Site::FinalResid, &x, d, &intervention_index, &intervention_value);
    let ln_f = Op::Norm {
        width: d as u32,
        out_stride: d as u32,
        out_offset: 0,
        rms: w.params.ln_f.rms,
        has_bias: w.params.ln_f.bias.is_some(),
        lanes: ctx.row_lanes(),
    };
    b.op(ln_f, &[&x, &w.params.ln_f.weight, w.params.ln_f.bias.as_ref().unwrap_or(&w.placeholder), &act_in]);
    let unembed = w.params.unembedding();
    let matmul = Op::Matmul {
        in_width: d as u32,
        out: c.vocab_size as u32,
        row0: 0,
        w_rows: unembed.rows,
        w_nnz: unembed.nnz,
        has_bias: true,
        activation: None,
    };
    b.op(matmul, &[&act_in, &unembed.buffer, &w.params.final_logits_bias, &logits]);
    if let Some(table) = &w.params.bigram_table {
        b.op(Op::Bigram { vocab: c.vocab_size as u32 }, &[&tokens, table, &logits]);
    }
    stages.push(std::mem::take(&mut b.steps));

    // The parameter blocks, one slot per step; bind groups point into it.
    let params = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("params"),
        size: (b.slots.max(1) as u64) * slot_stride,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let stages = b.bind(stages, &params);
    let staging = (0..stages.len()).map(|_| None).collect();
    Ok(Workspace {
        capacity,
        intervention_capacity,
        tokens,
        x,
        pos,
        delta,
        act_in,
        logits,
        params,
        slot_stride,
        intervention_index,
        intervention_value,
        stages,
        staging,
    })
}

/// A step before its bind group exists (the params buffer is sized last).
enum Unbound {
    Dispatch { op: Op, buffers: Vec<wgpu::Buffer>, slot: usize },
    Site { site: Site, buffer: wgpu::Buffer, width: u32, index: wgpu::Buffer, value: wgpu::Buffer, slot: usize },
}

struct StepBuilder<'a> {
    ctx: &'a GpuContext,
    w: &'a GpuWeights,
    steps: Vec<Unbound>,
    slots: usize,
    slot_stride: u64,
}

impl StepBuilder<'_> {
    fn next_slot(&mut self) -> usize {
        self.slots += 1;
        self.slots - 1
    }

    /// A dispatch of `op` reading and writing `buffers` (the shader's
    /// bindings 1.. in order; binding 0 is its parameter block).
    fn op(&mut self, op: Op, buffers: &[&wgpu::Buffer]) {
        let slot = self.next_slot();
        self.steps.push(Unbound::Dispatch { op, buffers: buffers.iter().map(|&b| b.clone()).collect(), slot });
    }

    fn site(&mut self, site: Site, buffer: &wgpu::Buffer, width: usize, index: &wgpu::Buffer, value: &wgpu::Buffer) {
        let slot = self.next_slot();
        self.steps.push(Unbound::Site {
            site,
            buffer: buffer.clone(),
            width: width as u32,
            index: index.clone(),
            value: value.clone(),
            slot,
        });
    }

    /// `out = concat(norm(x), pos_norm(pos))` (the second part only with a
    /// concatenated position embedding).
    fn norm(&mut self, norm: &GpuNorm, pos_norm: Option<&GpuNorm>, c: &Config, x: &wgpu::Buffer, pos: Option<&wgpu::Buffer>, out: &wgpu::Buffer) {
        let d_in = c.d_in() as u32;
        let mut add = |n: &GpuNorm, width: usize, offset: usize, input: &wgpu::Buffer| {
            let lanes = self.ctx.row_lanes();
            let op = Op::Norm { width: width as u32, out_stride: d_in, out_offset: offset as u32, rms: n.rms, has_bias: n.bias.is_some(), lanes };
            let bias = n.bias.as_ref().unwrap_or(&self.w.placeholder).clone();
            self.op(op, &[input, &n.weight, &bias, out]);
        };
        add(norm, c.d_model, 0, x);
        if let (Some(pos_norm), Some(pos)) = (pos_norm, pos) {
            add(pos_norm, c.d_pos_emb.unwrap_or(0), c.d_model, pos);
        }
    }

    /// `out = activation(x @ W[rows]^T (+ bias))`, for `[x, out]`.
    fn matmul(&mut self, linear: &GpuLinear, in_width: usize, rows: std::ops::Range<usize>, activation: Option<Activation>, [x, out]: [&wgpu::Buffer; 2]) {
        let op = Op::Matmul {
            in_width: in_width as u32,
            out: rows.len() as u32,
            row0: rows.start as u32,
            w_rows: linear.weight.rows,
            w_nnz: linear.weight.nnz,
            has_bias: linear.bias.is_some(),
            activation,
        };
        let bias = linear.bias.as_ref().unwrap_or(&self.w.placeholder).clone();
        self.op(op, &[x, &linear.weight.buffer, &bias, out]);
    }

    /// AbsTopK at `site` over rows of `width`, when the config sparsifies it.
    fn topk(&mut self, c: &Config, site: TopkSite, width: usize, x: &wgpu::Buffer) {
        if let Some(k) = c.topk_k(site, width).filter(|&k| k < width) {
            self.op(Op::TopK { width: width as u32, k: k as u32, lanes: self.ctx.topk_lanes() }, &[x]);
        }
    }

    /// Creates every bind group, now that the params buffer exists.
    fn bind(&self, stages: Vec<Vec<Unbound>>, params: &wgpu::Buffer) -> Vec<Vec<Step>> {
        stages
            .into_iter()
            .map(|steps| {
                steps
                    .into_iter()
                    .map(|step| match step {
                        Unbound::Dispatch { op, buffers, slot } => {
                            let refs: Vec<&wgpu::Buffer> = buffers.iter().collect();
                            Step::Dispatch { op, bind_group: self.bind_group(op.kernel(), params, slot, &refs), slot }
                        }
                        Unbound::Site { site, buffer, width, index, value, slot } => Step::Site {
                            intervene: self.bind_group(Kernel::Intervene, params, slot, &[&index, &value, &buffer]),
                            site,
                            buffer,
                            width,
                            slot,
                        },
                    })
                    .collect()
            })
            .collect()
    }

    fn bind_group(&self, kernel: Kernel, params: &wgpu::Buffer, slot: usize, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let pipeline = self.ctx.pipeline(kernel);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: params,
                offset: slot as u64 * self.slot_stride,
                size: wgpu::BufferSize::new(PARAMS_BYTES),
            }),
        }];
        entries.extend(
            buffers
                .iter()
                .enumerate()
                .map(|(i, buffer)| wgpu::BindGroupEntry { binding: i as u32 + 1, resource: buffer.as_entire_binding() }),
        );
        self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.label()),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }
}
