//! The model on the GPU: every weight matrix as packed CSR (only nonzeros),
//! vectors and the bigram table dense. Uploaded once per model.

use wgpu::util::DeviceExt;

use super::{GpuContext, GpuError};
use crate::model::{Linear, Model, Norm, SparseMatrix};

/// A sparse `[rows, cols]` matrix packed in one u32 buffer: row pointers
/// (`rows + 1`), then the column of each nonzero, then its f32 bits.
pub struct GpuMatrix {
    pub buffer: wgpu::Buffer,
    pub rows: u32,
    pub nnz: u32,
}

pub struct GpuNorm {
    pub rms: bool,
    /// `[width]`
    pub weight: wgpu::Buffer,
    /// `[width]`
    pub bias: Option<wgpu::Buffer>,
}

pub struct GpuLinear {
    /// `[out, in]`
    pub weight: GpuMatrix,
    /// `[out]`
    pub bias: Option<wgpu::Buffer>,
}

pub struct GpuLayer {
    pub ln_1: GpuNorm,
    pub ln_2: GpuNorm,
    pub ln_p1: Option<GpuNorm>,
    pub ln_p2: Option<GpuNorm>,
    pub c_attn: GpuLinear,
    pub attn_proj: GpuLinear,
    /// `[n_head]`
    pub sink_logit: Option<wgpu::Buffer>,
    pub c_fc: GpuLinear,
    pub mlp_proj: GpuLinear,
}

pub struct GpuWeights {
    pub wte: GpuMatrix,
    pub wpe: GpuMatrix,
    pub layers: Vec<GpuLayer>,
    pub ln_f: GpuNorm,
    pub lm_head: Option<GpuMatrix>,
    /// `[vocab_size]`
    pub final_logits_bias: wgpu::Buffer,
    /// `[vocab_size, vocab_size]`
    pub bigram_table: Option<wgpu::Buffer>,
    /// Bound where a kernel's optional input is absent (no bias, no sink).
    pub placeholder: wgpu::Buffer,
    /// Bytes of all weight buffers on the GPU.
    pub bytes: u64,
}

impl GpuWeights {
    pub fn upload(ctx: &GpuContext, model: &Model) -> Result<GpuWeights, GpuError> {
        let mut up = Uploader { ctx, bytes: 0 };
        let layers = model
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let p = format!("transformer.h.{l}");
                Ok(GpuLayer {
                    ln_1: up.norm(&format!("{p}.ln_1"), &layer.ln_1)?,
                    ln_2: up.norm(&format!("{p}.ln_2"), &layer.ln_2)?,
                    ln_p1: layer.ln_p1.as_ref().map(|n| up.norm(&format!("{p}.ln_p1"), n)).transpose()?,
                    ln_p2: layer.ln_p2.as_ref().map(|n| up.norm(&format!("{p}.ln_p2"), n)).transpose()?,
                    c_attn: up.linear(&format!("{p}.attn.c_attn"), &layer.c_attn)?,
                    attn_proj: up.linear(&format!("{p}.attn.c_proj"), &layer.attn_proj)?,
                    sink_logit: layer
                        .sink_logit
                        .as_ref()
                        .map(|s| up.floats(&format!("{p}.attn.attn_imp.sink_logit"), s))
                        .transpose()?,
                    c_fc: up.linear(&format!("{p}.mlp.c_fc"), &layer.c_fc)?,
                    mlp_proj: up.linear(&format!("{p}.mlp.c_proj"), &layer.mlp_proj)?,
                })
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        Ok(GpuWeights {
            wte: up.matrix("transformer.wte.weight", &model.wte)?,
            wpe: up.matrix("transformer.wpe.weight", &model.wpe)?,
            layers,
            ln_f: up.norm("transformer.ln_f", &model.ln_f)?,
            lm_head: model.lm_head.as_ref().map(|m| up.matrix("lm_head.weight", m)).transpose()?,
            final_logits_bias: up.floats("final_logits_bias", &model.final_logits_bias)?,
            bigram_table: model.bigram_table.as_ref().map(|t| up.floats("bigram_table", &t.data)).transpose()?,
            placeholder: up.floats("placeholder", &[0.0])?,
            bytes: up.bytes,
        })
    }

    /// The unembedding: `lm_head`, or `wte` when tied.
    pub fn unembedding(&self) -> &GpuMatrix {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }
}

struct Uploader<'a> {
    ctx: &'a GpuContext,
    bytes: u64,
}

impl Uploader<'_> {
    fn buffer(&mut self, name: &str, contents: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        let bytes = contents.len() as u64;
        let limits = &self.ctx.limits;
        let binding_max = limits.max_storage_buffer_binding_size;
        for (limit, max) in [("max_storage_buffer_binding_size", binding_max), ("max_buffer_size", limits.max_buffer_size)] {
            if bytes > max {
                return Err(GpuError::TooLarge { tensor: name.into(), bytes, limit, max });
            }
        }
        self.bytes += bytes;
        Ok(self.ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(name),
            contents,
            usage: wgpu::BufferUsages::STORAGE,
        }))
    }

    fn floats(&mut self, name: &str, values: &[f32]) -> Result<wgpu::Buffer, GpuError> {
        self.buffer(name, bytemuck::cast_slice(values))
    }

    fn matrix(&mut self, name: &str, m: &SparseMatrix) -> Result<GpuMatrix, GpuError> {
        let mut packed = Vec::with_capacity(m.row_ptr.len() + 2 * m.nnz());
        packed.extend_from_slice(&m.row_ptr);
        packed.extend_from_slice(&m.col_idx);
        packed.extend(m.values.iter().map(|v| v.to_bits()));
        Ok(GpuMatrix { buffer: self.buffer(name, bytemuck::cast_slice(&packed))?, rows: m.rows as u32, nnz: m.nnz() as u32 })
    }

    fn norm(&mut self, prefix: &str, norm: &Norm) -> Result<GpuNorm, GpuError> {
        Ok(GpuNorm {
            rms: norm.rms,
            weight: self.floats(&format!("{prefix}.weight"), &norm.weight)?,
            bias: norm.bias.as_ref().map(|b| self.floats(&format!("{prefix}.bias"), b)).transpose()?,
        })
    }

    fn linear(&mut self, prefix: &str, linear: &Linear) -> Result<GpuLinear, GpuError> {
        Ok(GpuLinear {
            weight: self.matrix(&format!("{prefix}.weight"), &linear.weight)?,
            bias: linear.bias.as_ref().map(|b| self.floats(&format!("{prefix}.bias"), b)).transpose()?,
        })
    }
}
