//! Where a forward pass's GPU time goes: a timestamp before and after every
//! dispatch (each in a compute pass of its own, which WebGPU's timestamp
//! queries need), summed per kernel. `circuitscope bench --kernels` prints
//! it. The host's share (encoding, submitting, waiting) is the wall time
//! less the span from the first dispatch's start to the last one's end.

use std::time::Duration;

use super::engine::Engine;
use super::kernels::Kernel;
use super::readback::{start_map, wait_for_map};
use super::GpuError;
use crate::model::Record;

/// Timestamp slots of a run being profiled, and the kernel each pair timed.
pub(super) struct Timestamps {
    query_set: wgpu::QuerySet,
    kernels: Vec<Kernel>,
}

impl Timestamps {
    /// The timestamp writes for the next dispatch, of `kernel`, or None once
    /// the query set is full (a run of more dispatches than it holds is
    /// timed in part).
    pub fn next(&mut self, kernel: Kernel) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let at = 2 * self.kernels.len() as u32;
        if at + 2 > self.query_set.count() {
            return None;
        }
        self.kernels.push(kernel);
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.query_set,
            beginning_of_pass_write_index: Some(at),
            end_of_pass_write_index: Some(at + 1),
        })
    }
}

/// One kernel's dispatches in a profiled run.
#[derive(Clone, Debug)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub dispatches: usize,
    /// The GPU time of all of them.
    pub gpu: Duration,
}

/// A profiled forward pass.
#[derive(Clone, Debug)]
pub struct Profile {
    /// By kernel, most time first.
    pub kernels: Vec<KernelTime>,
    /// From the first dispatch's start to the last one's end.
    pub span: Duration,
    /// The run as the caller saw it, from the call to the logits.
    pub wall: Duration,
}

impl Engine {
    /// Whether the adapter can time kernels ([`Engine::profile`]).
    pub fn can_profile(&self) -> bool {
        self.ctx.device.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Runs `tokens` forward recording `record`, timing every dispatch.
    /// Each dispatch in a pass of its own adds a little to the span.
    pub async fn profile(&mut self, tokens: &[u32], record: &Record) -> Result<Profile, GpuError> {
        if !self.can_profile() {
            return Err(GpuError::Gpu("this adapter has no timestamp queries to time kernels with".into()));
        }
        let query_set = self.ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kernel timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: wgpu::QUERY_SET_MAX_QUERIES,
        });
        self.timestamps = Some(Timestamps { query_set, kernels: Vec::new() });
        let start = std::time::Instant::now();
        let run = self.run(tokens, &[], record, &mut |_| {}).await;
        let wall = start.elapsed();
        let Timestamps { query_set, kernels } = self.timestamps.take().expect("set above");
        run?;
        let ticks = self.read_timestamps(&query_set, 2 * kernels.len() as u32).await?;
        let period = f64::from(self.ctx.queue.get_timestamp_period());
        let nanos = |a: u64, b: u64| Duration::from_nanos((b.saturating_sub(a) as f64 * period) as u64);
        let mut by_kernel: Vec<KernelTime> = Vec::new();
        for (kernel, pair) in kernels.iter().zip(ticks.chunks_exact(2)) {
            let time = nanos(pair[0], pair[1]);
            match by_kernel.iter_mut().find(|k| k.kernel == kernel.label()) {
                Some(k) => {
                    k.dispatches += 1;
                    k.gpu += time;
                }
                None => by_kernel.push(KernelTime { kernel: kernel.label(), dispatches: 1, gpu: time }),
            }
        }
        by_kernel.sort_by_key(|k| std::cmp::Reverse(k.gpu));
        let span = match (ticks.first(), ticks.last()) {
            (Some(&first), Some(&last)) => nanos(first, last),
            _ => Duration::ZERO,
        };
        Ok(Profile { kernels: by_kernel, span, wall })
    }

    /// The first `count` timestamps of `query_set`, in ticks.
    async fn read_timestamps(&self, query_set: &wgpu::QuerySet, count: u32) -> Result<Vec<u64>, GpuError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let bytes = 8 * u64::from(count);
        let buffer = |usage| self.ctx.device.create_buffer(&wgpu::BufferDescriptor { label: Some("timestamps"), size: bytes, usage, mapped_at_creation: false });
        let resolved = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let staging = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let mut encoder = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("timestamps") });
        encoder.resolve_query_set(query_set, 0..count, &resolved, 0);
        encoder.copy_buffer_to_buffer(&resolved, 0, &staging, 0, bytes);
        let submission = self.ctx.queue.submit([encoder.finish()]);
        let mapped = start_map(&staging);
        wait_for_map(&self.ctx.device, mapped, Some(submission)).await?;
        let ticks = {
            let view = staging.slice(..).get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
            bytemuck::pod_collect_to_vec::<u8, u64>(&view)
        };
        staging.unmap();
        Ok(ticks)
    }
}
