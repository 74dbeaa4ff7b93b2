use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::kernels::Kernel;
use super::GpuError;

/// The device and everything created once for it: limits, and compute
/// pipelines cached by kernel. Errors the device reports asynchronously
/// (validation, loss) are kept and returned by the next run.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pipelines: RefCell<HashMap<Kernel, wgpu::ComputePipeline>>,
    fault: Arc<Mutex<Option<GpuError>>>,
    /// Whether the kernels meant for a CPU adapter are used.
    software: bool,
}

impl GpuContext {
    /// The best adapter there is, with all of its limits.
    pub async fn new() -> Result<GpuContext, GpuError> {
        GpuContext::with_limits(|_| {}).await
    }

    /// Like [`GpuContext::new`], with the adapter's limits lowered by `lower`
    /// first: to see natively how a model fares under a browser's limits.
    pub async fn with_limits(lower: impl FnOnce(&mut wgpu::Limits)) -> Result<GpuContext, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN | wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        // Ask for everything the adapter offers: big models need large
        // storage buffers and many workgroups.
        let mut limits = adapter.limits();
        lower(&mut limits);
        // Timestamps, where offered, time each kernel (`bench --kernels`).
        let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("circuitscope"),
                required_features: features,
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        let fault = Arc::new(Mutex::new(None));
        let on_error = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            on_error.lock().unwrap().get_or_insert(GpuError::Gpu(e.to_string()));
        }));
        let on_lost = fault.clone();
        device.set_device_lost_callback(move |reason, message| {
            *on_lost.lock().unwrap() = Some(GpuError::DeviceLost(format!("{reason:?} {message}")));
        });
        let software = info.device_type == wgpu::DeviceType::Cpu;
        Ok(GpuContext { device, queue, info, limits, pipelines: RefCell::new(HashMap::new()), fault, software })
    }

    /// This context with the kernels meant for a GPU even on a CPU adapter,
    /// so that the tests run them on lavapipe too.
    pub fn with_gpu_kernels(mut self) -> GpuContext {
        self.software = false;
        self
    }

    /// A one-line description of the adapter, e.g. for the page.
    pub fn describe(&self) -> String {
        // Browsers hide the adapter's name.
        let name = if self.info.name.is_empty() { "unnamed adapter" } else { &self.info.name };
        format!("{name} ({:?}, {:?})", self.info.backend, self.info.device_type)
    }

    /// The largest storage buffer one binding can take, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// A storage buffer of `bytes` that copies may read and write (mapped
    /// for writing when `mapped`), refused by `name` past the binding limit.
    pub fn storage_buffer(&self, name: &str, bytes: u64, mapped: bool) -> Result<wgpu::Buffer, GpuError> {
        let max = self.max_binding();
        if bytes > max {
            return Err(GpuError::TooLarge { tensor: name.into(), bytes, limit: "max_storage_buffer_binding_size", max });
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: mapped,
        }))
    }

    /// The first error the device reported since the last call, if any.
    pub fn take_fault(&self) -> Option<GpuError> {
        let mut fault = self.fault.lock().unwrap();
        match &*fault {
            // A lost device stays lost.
            Some(GpuError::DeviceLost(_)) => fault.clone(),
            _ => fault.take(),
        }
    }

    /// The compute pipeline for `kernel`, built on first use.
    pub fn pipeline(&self, kernel: Kernel) -> wgpu::ComputePipeline {
        self.pipelines
            .borrow_mut()
            .entry(kernel)
            .or_insert_with(|| {
                let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.label()),
                    source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
                });
                self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.label()),
                    layout: None,
                    module: &module,
                    entry_point: Some(kernel.entry()),
                    compilation_options: wgpu::PipelineCompilationOptions::default(),
                    cache: None,
                })
            })
            .clone()
    }

    /// Invocations per row of the kernels that give a workgroup to a row
    /// (the norms, and AbsTopK on a GPU; their `LANES`): 256 on a GPU, 64 on
    /// a CPU adapter, where on lavapipe 64 made the 64-token forward's
    /// AbsTopK about 12% faster (fewer invocations to switch between at a barrier).
    pub fn row_lanes(&self) -> u32 {
        if self.on_cpu() {
            64
        } else {
            256
        }
    }

    /// Invocations per row of AbsTopK: 1 on a CPU adapter (topk_rows.wgsl,
    /// no barriers), else [`GpuContext::row_lanes`].
    pub fn topk_lanes(&self) -> u32 {
        if self.on_cpu() {
            1
        } else {
            self.row_lanes()
        }
    }

    /// Whether the adapter is software on the CPU (lavapipe, SwiftShader)
    /// and the kernels meant for one are used there.
    fn on_cpu(&self) -> bool {
        self.software
    }

    /// Workgroup counts (x, y) for `groups` workgroups: x is capped at the
    /// per-dimension limit and the shaders fold y back into one index.
    pub fn grid(&self, groups: u32) -> (u32, u32) {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if groups <= max {
            (groups, 1)
        } else {
            (max, groups.div_ceil(max))
        }
    }
}
