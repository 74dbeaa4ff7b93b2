//! Forward passes on the GPU.
//!
//! A run is a list of stages (one per layer, the embedding folded into the
//! first, then the final norm and logits). Each stage is a list of steps
//! built once per workspace: kernel dispatches with their bind groups, and
//! sites, where interventions are applied and recorded values copied out.
//! Stage s is submitted before stage s - 1 is read back, so the GPU always
//! has the next layer queued while the caller looks at the previous one.

use crate::model::{check_tokens, Config, Intervention, Record, Recording, Site, SiteKind, Tensor, TopkSite};

/// The activation fused into a sparse matmul, if any.
type FusedActivation = Option<crate::model::Activation>;

use super::kernels::{Kernel, Params, ELEMENT_WORKGROUP, MATMUL_TILE};
use super::readback::{finish_map, start_map};
use super::weights::{GpuLinear, GpuMatrix, GpuNorm};
use super::{GpuContext, GpuError, GpuWeights};

/// One stage's recorded sites, handed over as soon as the GPU finished it.
#[derive(Clone, Debug)]
pub struct StageOutput {
    /// The layer, or None for the final stage (`final_resid`).
    pub layer: Option<usize>,
    /// `sites[variant]`: that variant's recorded sites, each `[T, width]`.
    pub sites: Vec<Recording>,
    /// Stages submitted to the GPU when this one was handed over; with one
    /// stage of look-ahead it is at most this stage's index + 2.
    pub stages_submitted: usize,
}

/// The sparse transformer on one GPU: weights uploaded once; pipelines,
/// activation buffers and bind groups created once and reused by every run
/// of up to `capacity` rows (tokens x variants).
pub struct Engine {
    ctx: GpuContext,
    config: Config,
    weights: GpuWeights,
    workspace: Option<Workspace>,
}

/// What one dispatch computes, with the sizes that do not change between runs.
#[derive(Clone, Copy, Debug)]
enum Op {
    Embed { width: u32, table: (u32, u32), pos: (u32, u32), ids_are_positions: bool, add_pos: bool },
    Norm { width: u32, out_stride: u32, out_offset: u32, rms: bool, has_bias: bool },
    Matmul { in_width: u32, out: u32, row0: u32, w_rows: u32, w_nnz: u32, has_bias: bool, activation: FusedActivation },
    Attention { n_head: u32, d_head: u32, has_sink: bool },
    TopK { width: u32, k: u32 },
    ResidualAdd { width: u32, relu: bool },
    Bigram { vocab: u32 },
    /// Applies a site's intervention entries; `width` is the site's, for whole-column entries.
    Intervene { width: u32 },
}

impl Op {
    fn kernel(self) -> Kernel {
        match self {
            Op::Embed { .. } => Kernel::Embed,
            Op::Norm { .. } => Kernel::Norm,
            Op::Matmul { .. } => Kernel::SparseMatmul,
            Op::Attention { d_head, .. } => Kernel::Attention { d_head },
            Op::TopK { .. } => Kernel::TopK,
            Op::ResidualAdd { .. } => Kernel::ResidualAdd,
            Op::Bigram { .. } => Kernel::Bigram,
            Op::Intervene { .. } => Kernel::Intervene,
        }
    }

    /// The shader's parameter block for `rows` rows of `seq_len` tokens;
    /// `span` is (start, count) of this site's intervention entries.
    fn params(self, rows: u32, seq_len: u32, span: (u32, u32)) -> Params {
        let b = u32::from;
        match self {
            Op::Embed { width, table, pos, ids_are_positions, add_pos } => {
                let flags = b(ids_are_positions) | (b(add_pos) << 1);
                [rows, width, seq_len, table.0, table.1, pos.0, pos.1, flags]
            }
            Op::Norm { width, out_stride, out_offset, rms, has_bias } => {
                let eps = if rms { f32::EPSILON } else { 1e-5 };
                [rows, width, out_stride, out_offset, b(rms), b(has_bias), eps.to_bits(), 0]
            }
            Op::Matmul { in_width, out, row0, w_rows, w_nnz, has_bias, activation } => {
                let activation = match activation {
                    None => 0,
                    Some(crate::model::Activation::Gelu) => 1,
                    Some(crate::model::Activation::Relu) => 2,
                };
                [rows, in_width, out, row0, w_rows, w_nnz, b(has_bias), activation]
            }
            Op::Attention { n_head, d_head, has_sink } => {
                let scale = 1.0 / (d_head as f32).sqrt();
                [rows, seq_len, n_head, b(has_sink), scale.to_bits(), 0, 0, 0]
            }
            Op::TopK { width, k } => [rows, width, k, 0, 0, 0, 0, 0],
            Op::ResidualAdd { width, relu } => [rows * width, b(relu), 0, 0, 0, 0, 0, 0],
            Op::Bigram { vocab } => [rows, vocab, 0, 0, 0, 0, 0, 0],
            Op::Intervene { width } => [span.1, span.0, width, seq_len, 0, 0, 0, 0],
        }
    }

    /// Workgroups to dispatch.
    fn workgroups(self, rows: u32, count: u32) -> u32 {
        let elements = |n: u32| n.div_ceil(ELEMENT_WORKGROUP);
        match self {
            Op::Embed { .. } | Op::Norm { .. } | Op::TopK { .. } => rows,
            Op::Matmul { out, .. } => elements(rows.div_ceil(MATMUL_TILE) * out),
            Op::Attention { n_head, .. } => elements(rows * n_head),
            Op::ResidualAdd { width, .. } => elements(rows * width),
            Op::Bigram { vocab } => elements(rows * vocab),
            Op::Intervene { .. } => elements(count),
        }
    }
}

enum Step {
    Dispatch { op: Op, bind_group: wgpu::BindGroup, slot: usize },
    /// Interventions at `site` (dispatched when the run has any there), then
    /// a copy of `buffer` (`[rows, width]`) out when the run records it.
    Site { site: Site, buffer: wgpu::Buffer, width: u32, intervene: wgpu::BindGroup, slot: usize },
}

/// Activation buffers for up to `capacity` rows, and the steps that use them.
struct Workspace {
    capacity: usize,
    intervention_capacity: usize,
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

impl Engine {
    /// Uploads `model` to the GPU of `ctx`.
    pub fn new(ctx: GpuContext, model: &crate::model::Model) -> Result<Engine, GpuError> {
        let weights = GpuWeights::upload(&ctx, model)?;
        if let Some(fault) = ctx.take_fault() {
            return Err(fault);
        }
        Ok(Engine { ctx, config: model.config.clone(), weights, workspace: None })
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
        if let Some(fault) = self.ctx.take_fault() {
            return Err(fault);
        }
        check_tokens(&self.config, tokens)?;
        let n_variants = variants.len().max(1);
        let seq_len = tokens.len();
        let rows = seq_len * n_variants;

        let Flattened { spans, index, value } = flatten_interventions(&self.config, seq_len, variants)?;
        self.ensure_workspace(rows, index.len())?;
        let ctx = &self.ctx;
        let ws = self.workspace.as_mut().expect("workspace was just made");
        let tokens_all: Vec<u32> = (0..n_variants).flat_map(|_| tokens.iter().copied()).collect();
        ctx.queue.write_buffer(&ws.tokens, 0, bytemuck::cast_slice(&tokens_all));
        if !index.is_empty() {
            ctx.queue.write_buffer(&ws.intervention_index, 0, bytemuck::cast_slice(&index));
            ctx.queue.write_buffer(&ws.intervention_value, 0, bytemuck::cast_slice(&value));
        }
        let span_of = |site: Site| spans.iter().find(|(s, ..)| *s == site).map_or((0, 0), |&(_, start, n)| (start, n));

        // Variants are identical up to the first stage with an intervention:
        // those stages run once, on the first T rows, and the residual stream
        // is copied to every variant before the first stage that differs.
        let n_stages = ws.stages.len();
        let stage_of = |site: Site| match site {
            Site::Layer(layer, _) => layer,
            Site::FinalResid => n_stages - 1,
        };
        let first_varying = match n_variants {
            1 => 0,
            _ => spans.iter().map(|(site, ..)| stage_of(*site)).min().unwrap_or(n_stages),
        };
        let variants_in = |stage: usize| if stage < first_varying { 1 } else { n_variants };

        // Every dispatch's parameters, in one write.
        let slots = ws.stages.iter().flatten().count();
        let stride_words = (ws.slot_stride / 4) as usize;
        let mut params = vec![0u32; slots * stride_words];
        for (stage, steps) in ws.stages.iter().enumerate() {
            let stage_rows = (seq_len * variants_in(stage)) as u32;
            for step in steps {
                let (slot, block) = match step {
                    Step::Dispatch { op, slot, .. } => (*slot, op.params(stage_rows, seq_len as u32, (0, 0))),
                    Step::Site { site, slot, width, .. } => {
                        (*slot, Op::Intervene { width: *width }.params(0, seq_len as u32, span_of(*site)))
                    }
                };
                params[slot * stride_words..slot * stride_words + 8].copy_from_slice(&block);
            }
        }
        ctx.queue.write_buffer(&ws.params, 0, bytemuck::cast_slice(&params));

        // Encode and submit stage by stage; read back with one stage of look-ahead.
        let shape = RunShape { n_stages, seq_len, n_variants, vocab: self.config.vocab_size };
        let mut pending: Option<Pending> = None;
        let mut logits = Vec::new();
        for s in 0..n_stages {
            let computed = variants_in(s);
            let rows = seq_len * computed;
            let mut copies: Vec<(Site, u32, u64)> = Vec::new(); // (site, width, offset in floats)
            let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("stage") });
            if s == first_varying && s > 0 {
                ws.broadcast_first_variant(&mut encoder, &self.config, seq_len, n_variants);
            }
            let is_final = s == n_stages - 1;
            let recorded_floats: u64 = ws.stages[s]
                .iter()
                .filter_map(|step| match step {
                    Step::Site { site, width, .. } if record.wants(*site) => Some(u64::from(*width)),
                    _ => None,
                })
                .sum::<u64>()
                * rows as u64
                + if is_final { (rows * self.config.vocab_size) as u64 } else { 0 };
            let staging = if recorded_floats > 0 {
                let needed = 4 * recorded_floats;
                let fits = ws.staging[s].as_ref().is_some_and(|b| b.size() >= needed);
                if !fits {
                    ws.staging[s] = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("staging"),
                        size: needed,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }));
                }
                ws.staging[s].clone()
            } else {
                None
            };
            let mut offset = 0u64;
            // One compute pass for all dispatches between copies: per-pass
            // costs add up over hundreds of small dispatches.
            let mut pass: Option<wgpu::ComputePass<'static>> = None;
            for step in &ws.stages[s] {
                let (op, bind_group, count) = match step {
                    Step::Dispatch { op, bind_group, .. } => (*op, bind_group, 0),
                    Step::Site { site, intervene, width, .. } => (Op::Intervene { width: *width }, intervene, span_of(*site).1),
                };
                let groups = op.workgroups(rows as u32, count);
                if groups > 0 {
                    let pass = pass.get_or_insert_with(|| {
                        encoder
                            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("stage"), timestamp_writes: None })
                            .forget_lifetime()
                    });
                    let (x, y) = ctx.grid(groups);
                    pass.set_pipeline(&ctx.pipeline(op.kernel()));
                    pass.set_bind_group(0, bind_group, &[]);
                    pass.dispatch_workgroups(x, y, 1);
                }
                if let Step::Site { site, buffer, width, .. } = step {
                    if record.wants(*site) {
                        pass = None; // ends the pass: copies go between passes
                        let floats = rows as u64 * u64::from(*width);
                        let staging = staging.as_ref().expect("staging sized for every recorded site");
                        encoder.copy_buffer_to_buffer(buffer, 0, staging, 4 * offset, 4 * floats);
                        copies.push((*site, *width, offset));
                        offset += floats;
                    }
                }
            }
            drop(pass);
            if is_final {
                let staging = staging.as_ref().expect("the final stage always reads the logits");
                let floats = (rows * self.config.vocab_size) as u64;
                encoder.copy_buffer_to_buffer(&ws.logits, 0, staging, 4 * offset, 4 * floats);
            }
            let submission = ctx.queue.submit([encoder.finish()]);
            let this = staging.map(|buffer| Pending {
                stage: s,
                mapped: start_map(&buffer),
                buffer,
                submission,
                copies,
                floats: recorded_floats as usize,
                logits_at: is_final.then_some(offset as usize),
                computed,
            });
            if let Some(previous) = pending.take() {
                deliver(ctx, previous, s + 1, &shape, on_stage, &mut logits).await?;
            }
            pending = this;
        }
        if let Some(last) = pending {
            deliver(ctx, last, n_stages, &shape, on_stage, &mut logits).await?;
        }
        if let Some(fault) = ctx.take_fault() {
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
}

/// Every variant's interventions as entries of the flat `[R, width]` views
/// of their sites: `spans` holds (site, first entry, entries), by site. An
/// entry sets one cell, or with [`COLUMN`] set, one channel at every
/// position of its variant (zero or mean ablation everywhere: a circuit
/// search's variants ablate thousands of channels, T times fewer entries).
struct Flattened {
    spans: Vec<(Site, u32, u32)>,
    index: Vec<u32>,
    value: Vec<f32>,
}

/// Marks an entry that sets a whole column of its variant (see `intervene.wgsl`).
const COLUMN: u32 = 1 << 31;

fn flatten_interventions(config: &Config, seq_len: usize, variants: &[Vec<Intervention>]) -> Result<Flattened, GpuError> {
    let mut sites: Vec<Site> = variants.iter().flatten().map(|i| i.site).collect();
    sites.sort();
    sites.dedup();
    let mut flat = Flattened { spans: Vec::new(), index: Vec::new(), value: Vec::new() };
    for site in sites {
        let width = config.site_width(site);
        if (variants.len() * seq_len * width) as u64 >= u64::from(COLUMN) {
            return Err(GpuError::Model(crate::model::ModelError::Intervention(format!("at {site}: too many variants for one batch"))));
        }
        let start = flat.index.len() as u32;
        for (variant, interventions) in variants.iter().enumerate() {
            let row0 = variant * seq_len;
            for intervention in interventions.iter().filter(|i| i.site == site) {
                if let Some(columns) = intervention.columns(config, seq_len)? {
                    for (channel, v) in columns {
                        flat.index.push((row0 * width + channel) as u32 | COLUMN);
                        flat.value.push(v);
                    }
                    continue;
                }
                for (position, channel, v) in intervention.assignments(config, seq_len)? {
                    flat.index.push(((row0 + position) * width + channel) as u32);
                    flat.value.push(v);
                }
            }
        }
        flat.spans.push((site, start, flat.index.len() as u32 - start));
    }
    Ok(flat)
}

/// A submitted stage whose readback has not been handed over yet.
struct Pending {
    stage: usize,
    buffer: wgpu::Buffer,
    mapped: futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
    submission: wgpu::SubmissionIndex,
    copies: Vec<(Site, u32, u64)>,
    floats: usize,
    logits_at: Option<usize>,
    /// Variants computed in this stage: 1 while all are still identical.
    computed: usize,
}

/// The sizes of one run.
struct RunShape {
    n_stages: usize,
    seq_len: usize,
    n_variants: usize,
    vocab: usize,
}

/// Waits for a stage's readback and hands it over.
async fn deliver(
    ctx: &GpuContext,
    pending: Pending,
    stages_submitted: usize,
    shape: &RunShape,
    on_stage: &mut dyn FnMut(StageOutput),
    logits: &mut Vec<Tensor>,
) -> Result<(), GpuError> {
    let data = finish_map(&ctx.device, &pending.buffer, pending.mapped, Some(pending.submission), pending.floats).await?;
    if let Some(fault) = ctx.take_fault() {
        return Err(fault);
    }
    let RunShape { n_stages, seq_len, n_variants, vocab } = *shape;
    // A stage computed once stands for every variant.
    let per_variant = |offset: usize, width: usize, variant: usize| {
        let start = offset + (variant % pending.computed) * seq_len * width;
        Tensor::from_vec(seq_len, width, data[start..start + seq_len * width].to_vec())
    };
    if !pending.copies.is_empty() {
        let sites = (0..n_variants)
            .map(|variant| {
                pending
                    .copies
                    .iter()
                    .map(|&(site, width, offset)| (site, per_variant(offset as usize, width as usize, variant)))
                    .collect()
            })
            .collect();
        let layer = (pending.stage + 1 < n_stages).then_some(pending.stage);
        on_stage(StageOutput { layer, sites, stages_submitted });
    }
    if let Some(at) = pending.logits_at {
        logits.extend((0..n_variants).map(|variant| per_variant(at, vocab, variant)));
    }
    Ok(())
}

/// Creates the activation buffers for `capacity` rows and the steps of every
/// stage, with their bind groups.
fn build_workspace(
    ctx: &GpuContext,
    c: &Config,
    w: &GpuWeights,
    capacity: usize,
    intervention_capacity: usize,
) -> Result<Workspace, GpuError> {
    let storage = |name: String, bytes: u64| -> Result<wgpu::Buffer, GpuError> {
        let max = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
        if bytes > max {
            return Err(GpuError::TooLarge { tensor: name, bytes, limit: "max_storage_buffer_binding_size", max });
        }
        Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&name),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    };
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

    let slot_stride = 32u64.next_multiple_of(u64::from(ctx.limits.min_uniform_buffer_offset_alignment));
    let mut b = StepBuilder { ctx, w, steps: Vec::new(), slots: 0, slot_stride };
    let mut stages: Vec<Vec<Unbound>> = Vec::new();

    for (l, layer) in w.layers.iter().enumerate() {
        if l == 0 {
            let embed = |table: &GpuMatrix, ids_are_positions: bool, add_pos: bool| Op::Embed {
                width: if ids_are_positions { c.d_pos_emb.unwrap_or(d) as u32 } else { d as u32 },
                table: (table.rows, table.nnz),
                pos: (w.wpe.rows, w.wpe.nnz),
                ids_are_positions,
                add_pos,
            };
            b.op(embed(&w.wte, false, c.d_pos_emb.is_none()), &[&tokens, &w.wte.buffer, &w.wpe.buffer, &x]);
            if let Some(pos) = &pos {
                b.op(embed(&w.wpe, true, false), &[&tokens, &w.wpe.buffer, &w.wpe.buffer, pos]);
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
            b.matmul(&layer.c_attn, d_in, d_attn, i * d_attn, None, &act_in, out);
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
        b.matmul(&layer.attn_proj, d_attn, d, 0, None, &y, &delta);
        b.topk(c, TopkSite::AttnOut, d, &delta);
        site(&mut b, SiteKind::AttnResidDelta, &delta);
        b.op(Op::ResidualAdd { width: d as u32, relu: c.residual_relu }, &[&x, &delta]);
        b.topk(c, TopkSite::ResidPostAttn, d, &x);
        // MLP half.
        site(&mut b, SiteKind::ResidMid, &x);
        b.norm(&layer.ln_2, layer.ln_p2.as_ref(), c, &x, pos.as_ref(), &act_in);
        b.topk(c, TopkSite::MlpIn, d_in, &act_in);
        site(&mut b, SiteKind::MlpActIn, &act_in);
        b.matmul(&layer.c_fc, d_in, c.d_mlp, 0, Some(c.activation), &act_in, &h);
        b.topk(c, TopkSite::MlpNeuron, c.d_mlp, &h);
        site(&mut b, SiteKind::MlpPostAct, &h);
        b.matmul(&layer.mlp_proj, c.d_mlp, d, 0, None, &h, &delta);
        b.topk(c, TopkSite::MlpOut, d, &delta);
        site(&mut b, SiteKind::MlpResidDelta, &delta);
        b.op(Op::ResidualAdd { width: d as u32, relu: c.residual_relu }, &[&x, &delta]);
        b.topk(c, TopkSite::ResidPostMlp, d, &x);
        stages.push(std::mem::take(&mut b.steps));
    }

    // Final stage: ln_f into act_in (as [R, d_model]), unembedding, bigram.
    b.site(Site::FinalResid, &x, d, &intervention_index, &intervention_value);
    let ln_f = Op::Norm { width: d as u32, out_stride: d as u32, out_offset: 0, rms: w.ln_f.rms, has_bias: w.ln_f.bias.is_some() };
    b.op(ln_f, &[&x, &w.ln_f.weight, w.ln_f.bias.as_ref().unwrap_or(&w.placeholder), &act_in]);
    let unembed = w.unembedding();
    let matmul = Op::Matmul {
        in_width: d as u32,
        out: c.vocab_size as u32,
        row0: 0,
        w_rows: unembed.rows,
        w_nnz: unembed.nnz,
        has_bias: true,
        activation: None,
    };
    b.op(matmul, &[&act_in, &unembed.buffer, &w.final_logits_bias, &logits]);
    if let Some(table) = &w.bigram_table {
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
            let op = Op::Norm { width: width as u32, out_stride: d_in, out_offset: offset as u32, rms: n.rms, has_bias: n.bias.is_some() };
            let bias = n.bias.as_ref().unwrap_or(&self.w.placeholder).clone();
            self.op(op, &[input, &n.weight, &bias, out]);
        };
        add(norm, c.d_model, 0, x);
        if let (Some(pos_norm), Some(pos)) = (pos_norm, pos) {
            add(pos_norm, c.d_pos_emb.unwrap_or(0), c.d_model, pos);
        }
    }

    /// `out = activation(x @ W[row0..row0 + out_width]^T (+ bias))`.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &mut self,
        linear: &GpuLinear,
        in_width: usize,
        out_width: usize,
        row0: usize,
        activation: FusedActivation,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) {
        let op = Op::Matmul {
            in_width: in_width as u32,
            out: out_width as u32,
            row0: row0 as u32,
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
            self.op(Op::TopK { width: width as u32, k: k as u32 }, &[x]);
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
                size: wgpu::BufferSize::new(32),
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
