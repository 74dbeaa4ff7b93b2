//! A batch's forward activations kept on the GPU for its backward pass: one
//! buffer `[R, width]` per site (the forward's workspace reuses one buffer
//! per site kind across layers, so its stages copy each site here as they
//! go), and at each gate with ablated channels the site's values before the
//! gate. The backward pass binds them in place: nothing is read back to
//! the host and uploaded again. Measured before this: at the released shape
//! a 64-token example records 82 MB, and a pruning step of 32 examples sent
//! 2.6 GB each way through the host.

use wgpu::util::DeviceExt;

use super::kernels::Kernel;
use super::ops::Op;
use super::readback::{finish_map, start_map, wait_for_map};
use super::{GpuContext, GpuError};
use crate::model::{Config, Recording, Site, SiteKind, Tensor};

pub struct SavedRun {
    rows: usize,
    /// Every site: `[R, width]`.
    sites: Vec<(Site, wgpu::Buffer)>,
    /// Gated sites whose gate ablates a channel: the values before the gate `[R, width]`.
    before: Vec<(Site, wgpu::Buffer)>,
    /// Where a run is summarised as it goes ([`SavedRun::summarized`]).
    summaries: Vec<Summary>,
}

/// A site's summary (`shaders/summary.wgsl`): its output `[2, width]` and
/// the dispatch that writes it from the kept values.
pub(super) struct Summary {
    pub site: Site,
    pub width: u32,
    pub out: wgpu::Buffer,
    pub bind_group: wgpu::BindGroup,
}

impl SavedRun {
    /// Empty buffers for `rows` rows of every site of `config`, and for the
    /// values before the gates at `gated` sites.
    pub fn new(ctx: &GpuContext, config: &Config, rows: usize, gated: &[Site]) -> Result<SavedRun, GpuError> {
        let buffer = |site: Site, label: &str| storage(ctx, label, rows, config.site_width(site), false);
        let sites = every_site(config).map(|site| Ok((site, buffer(site, "saved activation [R, width]")?))).collect::<Result<_, GpuError>>()?;
        let before = gated.iter().map(|&site| Ok((site, buffer(site, "value before a gate [R, width]")?))).collect::<Result<_, GpuError>>()?;
        Ok(SavedRun { rows, sites, before, summaries: Vec::new() })
    }

    /// [`SavedRun::new`] for a prompt the page shows ([`super::Engine::forward_kept`] with `on_layer`): each stage also
    /// summarises its sites on the GPU ([`crate::model::ColumnSummary`]),
    /// handed over instead of the values.
    pub fn summarized(ctx: &GpuContext, config: &Config, rows: usize) -> Result<SavedRun, GpuError> {
        let mut saved = SavedRun::new(ctx, config, rows, &[])?;
        let pipeline = ctx.pipeline(Kernel::Summary);
        let layout = pipeline.get_bind_group_layout(0);
        for (site, values) in &saved.sites {
            let width = config.site_width(*site) as u32;
            let op = Op::Summary { width };
            let params = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("summary params"),
                contents: &op.params(rows as u32, rows as u32, (0, 0)),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let out = ctx.storage_buffer("site summary [2, width]", 8 * u64::from(width.max(1)), false)?;
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("summary"),
                layout: &layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: values.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: out.as_entire_binding() },
                ],
            });
            saved.summaries.push(Summary { site: *site, width, out, bind_group });
        }
        Ok(saved)
    }

    /// `site`'s summary, when the run is summarised.
    pub(super) fn summary(&self, site: Site) -> Option<&Summary> {
        self.summaries.iter().find(|s| s.site == site)
    }

    /// Whether stages summarise their sites.
    pub fn is_summarized(&self) -> bool {
        !self.summaries.is_empty()
    }

    /// Runs recorded on the host (each at most `t` rows), uploaded: run b's
    /// rows at b x t, the padding after a shorter run zero (it reaches no
    /// real row). No gates.
    pub fn upload(ctx: &GpuContext, config: &Config, runs: &[&Recording], t: usize) -> Result<SavedRun, GpuError> {
        let sites = every_site(config)
            .map(|site| Ok((site, upload_runs(ctx, "saved activation [R, width]", &site_values(runs, site)?, t, config.site_width(site))?)))
            .collect::<Result<_, GpuError>>()?;
        Ok(SavedRun { rows: runs.len() * t, sites, before: Vec::new(), summaries: Vec::new() })
    }

    /// Bytes per row of a run that keeps every site and the values before
    /// gates at `gated` sites: what one token of one example holds here.
    pub fn row_bytes(config: &Config, gated: &[Site]) -> u64 {
        let floats: usize = every_site(config).chain(gated.iter().copied()).map(|site| config.site_width(site)).sum();
        4 * floats as u64
    }

    /// The rows it holds.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Every site's values `[R, width]`, read back to the host layer by
    /// layer in `SiteKind::ALL`'s order: copied into `staging` (made or grown to the sites' size, at
    /// most the adapter's buffer size, and kept for the next read: making a
    /// mappable buffer of 237 MB cost more than reading it), mapped once per
    /// fill, and each site's tensor made straight from the mapped bytes (one
    /// host copy, on every core).
    pub async fn read_all(&self, ctx: &GpuContext, staging: &mut Option<wgpu::Buffer>) -> Result<Recording, GpuError> {
        let max = ctx.limits.max_buffer_size;
        let mut recording = Recording::new();
        let mut sites = self.sites.iter().peekable();
        while sites.peek().is_some() {
            // As many sites as fit one staging buffer (at least one).
            let mut batch: Vec<(Site, &wgpu::Buffer, u64)> = Vec::new();
            let mut bytes = 0u64;
            while let Some((site, buffer)) = sites.next_if(|(_, b)| batch.is_empty() || bytes + b.size() <= max) {
                batch.push((*site, buffer, bytes));
                bytes += buffer.size();
            }
            if staging.as_ref().is_none_or(|b| b.size() < bytes) {
                let all: u64 = self.sites.iter().map(|(_, b)| b.size()).sum();
                *staging = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kept sites, read back"),
                    size: all.min(max).max(bytes),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
            }
            let staging = staging.as_ref().expect("made above");
            let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read kept sites") });
            for (_, buffer, at) in &batch {
                encoder.copy_buffer_to_buffer(buffer, 0, staging, *at, buffer.size());
            }
            let submission = ctx.queue.submit([encoder.finish()]);
            let mapped = start_map(staging);
            wait_for_map(&ctx.device, mapped, Some(submission)).await?;
            {
                let view = staging.slice(..).get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
                let all: &[f32] = bytemuck::cast_slice(&view);
                // Sites copied out on every core at once: one core copies a few GB/s.
                let spans: Vec<(Site, u64, u64)> = batch.iter().map(|&(site, buffer, at)| (site, at, buffer.size())).collect();
                let rows = self.rows;
                recording.extend(crate::platform::map_on_cores(&spans, |&(site, at, size)| {
                    let floats = &all[at as usize / 4..(at + size) as usize / 4];
                    let width = floats.len() / rows.max(1);
                    (site, Tensor::from_vec(rows, width, floats[..rows * width].to_vec()))
                }));
            }
            staging.unmap();
        }
        Ok(recording)
    }

    /// Rows `rows` of each wanted site, `[rows.len(), width]` each, read
    /// back in one copy and one map (the graph's selected position, the
    /// inspector's node): a few rows of a kept run without the rest.
    pub async fn read(&self, ctx: &GpuContext, wanted: &[(Site, std::ops::Range<usize>)]) -> Result<Recording, GpuError> {
        let mut spans = Vec::with_capacity(wanted.len());
        let mut floats = 0usize;
        for (site, rows) in wanted {
            let values = self.sites.iter().find(|(s, _)| s == site).map(|(_, b)| b).ok_or_else(|| GpuError::Gpu(format!("the run did not keep {site}")))?;
            if rows.start > rows.end || rows.end > self.rows {
                return Err(GpuError::Gpu(format!("rows {}..{} of {site}, which has {}", rows.start, rows.end, self.rows)));
            }
            let width = values.size() as usize / 4 / self.rows.max(1);
            spans.push((*site, values, rows.clone(), width, floats));
            floats += rows.len() * width;
        }
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kept rows, read back"),
            size: 4 * floats.max(1) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read kept rows") });
        for (_, values, rows, width, at) in &spans {
            let bytes = 4 * (rows.len() * width) as u64;
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(values, 4 * (rows.start * width) as u64, &staging, 4 * *at as u64, bytes);
            }
        }
        let submission = ctx.queue.submit([encoder.finish()]);
        let data = finish_map(&ctx.device, &staging, start_map(&staging), Some(submission), floats).await?;
        Ok(spans.into_iter().map(|(site, _, rows, width, at)| (site, Tensor::from_vec(rows.len(), width, data[at..at + rows.len() * width].to_vec()))).collect())
    }

    /// `site`'s values as the pass went on.
    pub fn at(&self, site: Site) -> &wgpu::Buffer {
        &self.sites.iter().find(|(s, _)| *s == site).expect("every site is saved").1
    }

    /// `site`'s values before its gate, where a gate ablated something there.
    pub fn before(&self, site: Site) -> Option<&wgpu::Buffer> {
        self.before.iter().find(|(s, _)| *s == site).map(|(_, b)| b)
    }

    /// Where the forward copies `site` (before its interventions when
    /// `before`), if it keeps it.
    pub fn destination(&self, site: Site, before: bool) -> Option<&wgpu::Buffer> {
        if before {
            self.before(site)
        } else {
            Some(self.at(site))
        }
    }
}

/// `site`'s values in each of `recordings`.
fn site_values<'a>(recordings: &[&'a Recording], site: Site) -> Result<Vec<&'a Tensor>, GpuError> {
    recordings.iter().map(|run| run.iter().find(|(s, _)| *s == site).map(|(_, v)| v).ok_or_else(|| GpuError::Gpu(format!("a run without {site}")))).collect()
}

/// Every site of a run.
fn every_site(config: &Config) -> impl Iterator<Item = Site> {
    (0..config.n_layer).flat_map(|l| SiteKind::ALL.map(|kind| Site::Layer(l, kind))).chain([Site::FinalResid])
}

/// A storage buffer `[rows, width]` f32.
fn storage(ctx: &GpuContext, label: &str, rows: usize, width: usize, mapped: bool) -> Result<wgpu::Buffer, GpuError> {
    ctx.storage_buffer(label, 4 * (rows * width).max(1) as u64, mapped)
}

/// One site's values of every run, `[T_b, width]` each, in a buffer
/// `[runs x t, width]`. Written while mapped at creation: no staging copy
/// (a queue write cost 0.3 s more at the released shape, 256 tokens).
fn upload_runs(ctx: &GpuContext, label: &str, runs: &[&Tensor], t: usize, width: usize) -> Result<wgpu::Buffer, GpuError> {
    let buffer = storage(ctx, label, runs.len() * t, width, true)?;
    {
        let mut mapped = buffer.slice(..).get_mapped_range_mut().map_err(|e| GpuError::Gpu(e.to_string()))?;
        for (b, values) in runs.iter().enumerate() {
            let bytes: &[u8] = bytemuck::cast_slice(&values.data);
            let at = 4 * b * t * width;
            mapped.slice(at..at + bytes.len()).copy_from_slice(bytes);
        }
    }
    buffer.unmap();
    Ok(buffer)
}
