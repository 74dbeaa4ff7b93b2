use super::GpuError;

/// Starts mapping `buffer` for reading; the receiver resolves when the GPU has
/// finished the work that writes it. Natively a poll drives the callback; on
/// the web the browser does, once control returns to its event loop.
pub fn start_map(buffer: &wgpu::Buffer) -> futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>> {
    let (tx, rx) = futures_channel::oneshot::channel();
    buffer.map_async(wgpu::MapMode::Read, .., move |result| {
        let _ = tx.send(result);
    });
    rx
}

/// Waits for a mapping started by [`start_map`] and copies out the first
/// `len` f32 values of `buffer`, then unmaps it.
pub async fn finish_map(
    device: &wgpu::Device,
    buffer: &wgpu::Buffer,
    mapped: futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
    submission: Option<wgpu::SubmissionIndex>,
    len: usize,
) -> Result<Vec<f32>, GpuError> {
    wait_for_map(device, mapped, submission).await?;
    let values = {
        let view = buffer.get_mapped_range(..).map_err(|e| GpuError::Readback(e.to_string()))?;
        bytemuck::pod_collect_to_vec::<u8, f32>(&view[..4 * len])
    };
    buffer.unmap();
    Ok(values)
}

/// Waits for a mapping started by [`start_map`], after `submission`.
pub async fn wait_for_map(
    device: &wgpu::Device,
    mapped: futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
    submission: Option<wgpu::SubmissionIndex>,
) -> Result<(), GpuError> {
    // Natively: block until this submission is done (no-op on the web).
    // A submission that never happened means the device stopped taking work.
    device
        .poll(wgpu::PollType::Wait { submission_index: submission, timeout: None })
        .map_err(|e| GpuError::DeviceLost(format!("the GPU stopped accepting work ({e})")))?;
    mapped
        .await
        .map_err(|_| GpuError::Readback("the mapping was cancelled".into()))?
        .map_err(|e| GpuError::Readback(e.to_string()))
}

/// Waits until the GPU has done the work submitted so far (after
/// `submission`, natively): a long command stream submitted in parts can
/// then stop between two of them.
pub async fn work_done(device: &wgpu::Device, queue: &wgpu::Queue, submission: wgpu::SubmissionIndex) -> Result<(), GpuError> {
    let (tx, rx) = futures_channel::oneshot::channel();
    queue.on_submitted_work_done(move || {
        let _ = tx.send(());
    });
    device
        .poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: None })
        .map_err(|e| GpuError::DeviceLost(format!("the GPU stopped accepting work ({e})")))?;
    rx.await.map_err(|_| GpuError::DeviceLost("the GPU's queue was dropped".into()))
}
