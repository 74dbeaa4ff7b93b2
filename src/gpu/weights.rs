//! The model on the GPU: every weight matrix as packed CSR (only nonzeros),
//! vectors and the bigram table dense. Uploaded once per model.

use wgpu::util::DeviceExt;

use super::{GpuContext, GpuError};
use crate::model::{Linear, Model, Norm, Params, SparseMatrix, Tensor, Visit};

/// A sparse `[rows, cols]` matrix packed in one u32 buffer: row pointers
/// (`rows + 1`), then the column of each nonzero, then its f32 bits.
pub struct GpuMatrix {
    pub buffer: wgpu::Buffer,
    pub rows: u32,
    pub nnz: u32,
}

/// A norm's gain and bias, `[width]` each.
pub type GpuNorm = Norm<wgpu::Buffer>;

/// A sparse `[out, in]` weight and an `[out]` bias.
pub type GpuLinear = Linear<GpuMatrix, wgpu::Buffer>;

/// The transposes of a layer's weights, `[in, out]` each: the backward pass
/// multiplies a gradient by a weight, `dy @ W`, as `W^T` times it, which the
/// forward's kernel computes reading rows (columns of W are scattered).
pub struct LayerTransposes {
    pub c_attn: GpuMatrix,
    pub attn_proj: GpuMatrix,
    pub c_fc: GpuMatrix,
    pub mlp_proj: GpuMatrix,
}

pub struct GpuWeights {
    /// The model core's tree, every matrix packed, every vector and the
    /// bigram table (`[vocab_size, vocab_size]`) a dense buffer.
    pub params: Params<GpuMatrix, wgpu::Buffer, wgpu::Buffer>,
    /// For the backward pass: each layer's transposes, and the unembedding's
    /// `[d_model, vocab_size]`. As many nonzeros again.
    pub transposes: Vec<LayerTransposes>,
    pub unembedding_transposed: GpuMatrix,
    /// Bound where a kernel's optional input is absent (no bias, no sink).
    pub placeholder: wgpu::Buffer,
    /// Bytes of all weight buffers on the GPU.
    pub bytes: u64,
}

impl GpuWeights {
    pub fn upload(ctx: &GpuContext, model: &Model) -> Result<GpuWeights, GpuError> {
        let mut up = Uploader { ctx, bytes: 0 };
        let params = model.params.map(&mut up)?;
        let mut transposed = |name: &str, m: &SparseMatrix| up.matrix(&format!("{name}^T"), &m.transpose());
        let transposes = (model.params.layers.iter())
            .map(|layer| {
                Ok(LayerTransposes {
                    c_attn: transposed("c_attn", &layer.c_attn.weight)?,
                    attn_proj: transposed("attn.c_proj", &layer.attn_proj.weight)?,
                    c_fc: transposed("c_fc", &layer.c_fc.weight)?,
                    mlp_proj: transposed("mlp.c_proj", &layer.mlp_proj.weight)?,
                })
            })
            .collect::<Result<_, GpuError>>()?;
        let unembedding_transposed = transposed("unembedding", model.unembedding())?;
        let placeholder = up.floats("placeholder", &[0.0])?;
        Ok(GpuWeights { params, transposes, unembedding_transposed, placeholder, bytes: up.bytes })
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
}

impl<'m> Visit<'m, SparseMatrix, Vec<f32>, Tensor> for Uploader<'_> {
    type Matrix = GpuMatrix;
    type Vector = wgpu::Buffer;
    type Table = wgpu::Buffer;
    type Error = GpuError;

    /// Packed: row pointers (`rows + 1`), then the column of each nonzero,
    /// then its f32 bits.
    fn matrix(&mut self, name: &str, m: &SparseMatrix) -> Result<GpuMatrix, GpuError> {
        let mut packed = Vec::with_capacity(m.row_ptr.len() + 2 * m.nnz());
        packed.extend_from_slice(&m.row_ptr);
        packed.extend_from_slice(&m.col_idx);
        packed.extend(m.values.iter().map(|v| v.to_bits()));
        Ok(GpuMatrix { buffer: self.buffer(name, bytemuck::cast_slice(&packed))?, rows: m.rows as u32, nnz: m.nnz() as u32 })
    }

    fn vector(&mut self, name: &str, values: &Vec<f32>) -> Result<wgpu::Buffer, GpuError> {
        self.floats(name, values)
    }

    fn table(&mut self, name: &str, table: &Tensor) -> Result<wgpu::Buffer, GpuError> {
        self.floats(name, &table.data)
    }
}
