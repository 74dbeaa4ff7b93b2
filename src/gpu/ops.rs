//! What one dispatch computes ([`Op`]) and the parameter block its shader
//! reads: one `#[repr(C)]` struct per kernel whose fields match the shader's
//! `struct Params` by name and type, in order (a test reads the WGSL and
//! checks).

use super::kernels::{Kernel, ATTENTION_QUERIES, ELEMENT_WORKGROUP, MATMUL_TILE, TOPK_ROWS_WORKGROUP};
use crate::model::Activation;

/// Bytes of one parameter slot: the largest block (uniform slots are bound
/// with this size; smaller blocks leave the rest unread).
pub const PARAMS_BYTES: u64 = 32;

/// A shader's parameter block, as a Rust struct mirroring its WGSL. The
/// constants are read by the test that checks them against the shaders.
#[cfg_attr(not(test), allow(dead_code))]
pub trait ShaderParams: bytemuck::Pod {
    /// The shader file under `shaders/`.
    const SHADER: &'static str;
    /// (name, WGSL type) of each field, in order.
    const FIELDS: &'static [(&'static str, &'static str)];
}

/// A parameter struct's bytes, as its shader reads them.
fn block<P: ShaderParams>(params: P) -> Vec<u8> {
    bytemuck::bytes_of(&params).to_vec()
}

/// Declares a kernel's parameter struct and its field list for the check.
macro_rules! shader_params {
    ($(#[$doc:meta])* $name:ident in $file:literal { $($field:ident: $ty:ident),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $(pub $field: $ty,)*
        }

        impl ShaderParams for $name {
            const SHADER: &'static str = $file;
            const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($field), stringify!($ty))),*];
        }
    };
}

shader_params! {
    /// `embed.wgsl`: `flags` bit 0, the ids are positions; bit 1, add the position table.
    EmbedParams in "embed.wgsl" { rows: u32, width: u32, seq_len: u32, table_rows: u32, table_nnz: u32, pos_rows: u32, pos_nnz: u32, flags: u32 }
}
shader_params! {
    /// `norm.wgsl`: `rms` 1 for RMSNorm, 0 for LayerNorm.
    NormParams in "norm.wgsl" { rows: u32, width: u32, out_stride: u32, out_offset: u32, rms: u32, has_bias: u32, eps: f32, _pad: u32 }
}
shader_params! {
    /// `sparse_matmul.wgsl`: `activation` 0 none, 1 GELU, 2 ReLU.
    MatmulParams in "sparse_matmul.wgsl" { rows: u32, in_width: u32, out: u32, row0: u32, w_rows: u32, w_nnz: u32, has_bias: u32, activation: u32 }
}
shader_params! {
    AttentionParams in "attention.wgsl" { rows: u32, seq_len: u32, n_head: u32, has_sink: u32, scale: f32, _pad0: u32, _pad1: u32, _pad2: u32 }
}
shader_params! {
    /// topk.wgsl's and topk_rows.wgsl's.
    TopKParams in "topk_params.wgsl" { rows: u32, width: u32, k: u32, _pad: u32 }
}
shader_params! {
    /// `residual.wgsl`: `n` elements.
    ResidualParams in "residual.wgsl" { n: u32, relu: u32, _pad0: u32, _pad1: u32 }
}
shader_params! {
    BigramParams in "bigram.wgsl" { rows: u32, vocab: u32, _pad0: u32, _pad1: u32 }
}
shader_params! {
    /// `intervene.wgsl`: this site's entries are `start..start + count`.
    InterveneParams in "intervene.wgsl" { count: u32, start: u32, width: u32, seq_len: u32 }
}

shader_params! {
    /// `topk_backward.wgsl`: `k` = `width` keeps every entry.
    TopKBackwardParams in "topk_backward.wgsl" { rows: u32, width: u32, k: u32, relu: u32, out_stride: u32, out_offset: u32, _pad0: u32, _pad1: u32 }
}
shader_params! {
    /// `activation_backward.wgsl`: `activation` 1 GELU, 2 ReLU.
    ActivationBackwardParams in "activation_backward.wgsl" { n: u32, activation: u32, _pad0: u32, _pad1: u32 }
}
shader_params! {
    NormBackwardParams in "norm_backward.wgsl" { rows: u32, width: u32, dout_stride: u32, rms: u32, has_residual: u32, eps: f32, _pad0: u32, _pad1: u32 }
}
shader_params! {
    GateBackwardParams in "gate_backward.wgsl" { n: u32, width: u32, out_offset: u32, _pad: u32 }
}
shader_params! {
    AttentionBackwardParams in "attention_backward.wgsl" { rows: u32, seq_len: u32, n_head: u32, has_sink: u32, scale: f32, _pad0: u32, _pad1: u32, _pad2: u32 }
}
shader_params! {
    /// `summary.wgsl`: a kept site `[rows, width]`.
    SummaryParams in "summary.wgsl" { rows: u32, width: u32, _pad0: u32, _pad1: u32 }
}

/// What one dispatch computes, with the sizes that do not change between runs.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Embed { width: u32, table: (u32, u32), pos: (u32, u32), ids_are_positions: bool, add_pos: bool },
    /// `lanes` invocations per row ([`super::GpuContext::row_lanes`]).
    Norm { width: u32, out_stride: u32, out_offset: u32, rms: bool, has_bias: bool, lanes: u32 },
    Matmul { in_width: u32, out: u32, row0: u32, w_rows: u32, w_nnz: u32, has_bias: bool, activation: Option<Activation> },
    Attention { n_head: u32, d_head: u32, has_sink: bool },
    /// `lanes` invocations per row ([`super::GpuContext::topk_lanes`]); 1:
    /// an invocation per row (topk_rows.wgsl).
    TopK { width: u32, k: u32, lanes: u32 },
    ResidualAdd { width: u32, relu: bool },
    Bigram { vocab: u32 },
    /// Applies a site's intervention entries; `width` is the site's, for whole-column entries.
    Intervene { width: u32 },
    /// The gradient through a top-k (`k` = `width`: none there) and, with
    /// `relu`, the residual ReLU, into columns `out_offset..` of rows `out_stride` wide.
    TopKBackward { width: u32, k: u32, relu: bool, out_stride: u32, out_offset: u32 },
    ActivationBackward { width: u32, activation: Activation },
    NormBackward { width: u32, dout_stride: u32, rms: bool, has_residual: bool },
    /// A gated site's gradient kept only in its kept channels, in place.
    GateBackward { width: u32 },
    /// A gated site's gate derivatives summed over rows, into columns `out_offset..`.
    GateSums { width: u32, out_offset: u32 },
    /// `keys`: the second pass (dk, dv); else the first (dq).
    AttentionBackward { n_head: u32, d_head: u32, has_sink: bool, keys: bool },
    /// A kept site's per-channel sums of squares and first nonzero rows.
    Summary { width: u32 },
}

impl Op {
    pub fn kernel(self) -> Kernel {
        match self {
            Op::Embed { .. } => Kernel::Embed,
            Op::Norm { lanes, .. } => Kernel::Norm { lanes },
            Op::Matmul { .. } => Kernel::SparseMatmul,
            Op::Attention { d_head, .. } => Kernel::Attention { d_head },
            Op::TopK { lanes: 1, .. } => Kernel::TopKRows,
            Op::TopK { width, lanes, .. } => Kernel::TopK { lanes, per_lane: width.div_ceil(lanes) },
            Op::ResidualAdd { .. } => Kernel::ResidualAdd,
            Op::Bigram { .. } => Kernel::Bigram,
            Op::Intervene { .. } => Kernel::Intervene,
            Op::TopKBackward { .. } => Kernel::TopKBackward,
            Op::ActivationBackward { .. } => Kernel::ActivationBackward,
            Op::NormBackward { .. } => Kernel::NormBackward,
            Op::GateBackward { .. } => Kernel::GateBackward,
            Op::GateSums { .. } => Kernel::GateSums,
            Op::AttentionBackward { d_head, keys: false, .. } => Kernel::AttentionBackwardQueries { d_head },
            Op::AttentionBackward { d_head, keys: true, .. } => Kernel::AttentionBackwardKeys { d_head },
            Op::Summary { .. } => Kernel::Summary,
        }
    }

    /// The shader's parameter block for `rows` rows of `seq_len` tokens, as
    /// bytes; `span` is (start, count) of this site's intervention entries.
    pub fn params(self, rows: u32, seq_len: u32, span: (u32, u32)) -> Vec<u8> {
        let b = u32::from;
        match self {
            Op::Embed { width, table, pos, ids_are_positions, add_pos } => {
                let flags = b(ids_are_positions) | (b(add_pos) << 1);
                let p = EmbedParams { rows, width, seq_len, table_rows: table.0, table_nnz: table.1, pos_rows: pos.0, pos_nnz: pos.1, flags };
                block(p)
            }
            Op::Norm { width, out_stride, out_offset, rms, has_bias, .. } => {
                let eps = if rms { f32::EPSILON } else { 1e-5 };
                let p = NormParams { rows, width, out_stride, out_offset, rms: b(rms), has_bias: b(has_bias), eps, _pad: 0 };
                block(p)
            }
            Op::Matmul { in_width, out, row0, w_rows, w_nnz, has_bias, activation } => {
                let activation = match activation {
                    None => 0,
                    Some(Activation::Gelu) => 1,
                    Some(Activation::Relu) => 2,
                };
                let p = MatmulParams { rows, in_width, out, row0, w_rows, w_nnz, has_bias: b(has_bias), activation };
                block(p)
            }
            Op::Attention { n_head, d_head, has_sink } => {
                let scale = 1.0 / (d_head as f32).sqrt();
                let p = AttentionParams { rows, seq_len, n_head, has_sink: b(has_sink), scale, ..Default::default() };
                block(p)
            }
            Op::TopK { width, k, .. } => block(TopKParams { rows, width, k, _pad: 0 }),
            Op::ResidualAdd { width, relu } => block(ResidualParams { n: rows * width, relu: b(relu), ..Default::default() }),
            Op::Bigram { vocab } => block(BigramParams { rows, vocab, ..Default::default() }),
            Op::Intervene { width } => block(InterveneParams { count: span.1, start: span.0, width, seq_len }),
            Op::TopKBackward { width, k, relu, out_stride, out_offset } => {
                block(TopKBackwardParams { rows, width, k, relu: b(relu), out_stride, out_offset, ..Default::default() })
            }
            Op::ActivationBackward { width, activation } => {
                let activation = match activation {
                    Activation::Gelu => 1,
                    Activation::Relu => 2,
                };
                block(ActivationBackwardParams { n: rows * width, activation, ..Default::default() })
            }
            Op::NormBackward { width, dout_stride, rms, has_residual } => {
                let eps = if rms { f32::EPSILON } else { 1e-5 };
                let p = NormBackwardParams { rows, width, dout_stride, rms: b(rms), has_residual: b(has_residual), eps, ..Default::default() };
                block(p)
            }
            Op::GateBackward { width } => block(GateBackwardParams { n: rows * width, width, ..Default::default() }),
            Op::GateSums { width, out_offset } => block(GateBackwardParams { n: rows * width, width, out_offset, _pad: 0 }),
            Op::AttentionBackward { n_head, d_head, has_sink, .. } => {
                let scale = 1.0 / (d_head as f32).sqrt();
                block(AttentionBackwardParams { rows, seq_len, n_head, has_sink: b(has_sink), scale, ..Default::default() })
            }
            Op::Summary { width } => block(SummaryParams { rows, width, ..Default::default() }),
        }
    }

    /// Workgroups to dispatch for `rows` rows of sequences `seq_len` long
    /// (`count` entries, for an intervention).
    pub fn workgroups(self, rows: u32, seq_len: u32, count: u32) -> u32 {
        let elements = |n: u32| n.div_ceil(ELEMENT_WORKGROUP);
        match self {
            Op::TopK { lanes: 1, .. } => rows.div_ceil(TOPK_ROWS_WORKGROUP),
            Op::Embed { .. } | Op::Norm { .. } | Op::TopK { .. } | Op::NormBackward { .. } | Op::TopKBackward { .. } => rows,
            Op::ActivationBackward { width, .. } | Op::GateBackward { width } => elements(rows * width),
            Op::GateSums { width, .. } | Op::Summary { width } => elements(width),
            Op::AttentionBackward { n_head, keys: false, .. } => elements(rows * n_head),
            // One per (head, sequence, tile of key rows).
            Op::AttentionBackward { n_head, keys: true, .. } => n_head * (rows / seq_len.max(1)) * seq_len.div_ceil(ELEMENT_WORKGROUP),
            Op::Matmul { out, .. } => elements(rows.div_ceil(MATMUL_TILE) * out),
            // One per (head, sequence, tile of query rows).
            Op::Attention { n_head, .. } => n_head * (rows / seq_len.max(1)) * seq_len.div_ceil(ATTENTION_QUERIES),
            Op::ResidualAdd { width, .. } => elements(rows * width),
            Op::Bigram { vocab } => elements(rows * vocab),
            Op::Intervene { .. } => elements(count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, type) of each field of `struct Params { ... }` in a shader.
    fn wgsl_params(shader: &str) -> Vec<(String, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders").join(shader);
        let text = std::fs::read_to_string(&path).unwrap();
        let body = text.split("struct Params {").nth(1).unwrap_or_else(|| panic!("{shader} has no struct Params"));
        let body = &body[..body.find('}').unwrap()];
        body.lines()
            .map(|line| line.split("//").next().unwrap().trim().trim_end_matches(','))
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, ty) = line.split_once(':').unwrap_or_else(|| panic!("{shader}: {line:?}"));
                (name.trim().to_string(), ty.trim().to_string())
            })
            .collect()
    }

    fn check<P: ShaderParams>() {
        let rust: Vec<(String, String)> = P::FIELDS.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(rust, wgsl_params(P::SHADER), "{}: the Rust struct and the shader's Params differ", P::SHADER);
        let size = std::mem::size_of::<P>();
        assert_eq!(size, 4 * P::FIELDS.len(), "{}: no padding between fields", P::SHADER);
        assert!(size % 16 == 0 && size as u64 <= PARAMS_BYTES, "{}: a uniform block of {size} bytes", P::SHADER);
    }

    #[test]
    fn every_kernel_s_parameter_struct_matches_its_shader_field_by_field() {
        check::<EmbedParams>();
        check::<NormParams>();
        check::<MatmulParams>();
        check::<AttentionParams>();
        check::<TopKParams>();
        check::<ResidualParams>();
        check::<BigramParams>();
        check::<InterveneParams>();
        check::<TopKBackwardParams>();
        check::<ActivationBackwardParams>();
        check::<NormBackwardParams>();
        check::<GateBackwardParams>();
        check::<AttentionBackwardParams>();
        check::<SummaryParams>();
        // And every shader with parameters has a struct here.
        let shaders: Vec<String> = std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders").join(name)).unwrap().contains("struct Params"))
            .collect();
        let covered = [
            EmbedParams::SHADER,
            NormParams::SHADER,
            MatmulParams::SHADER,
            AttentionParams::SHADER,
            TopKParams::SHADER,
            ResidualParams::SHADER,
            BigramParams::SHADER,
            InterveneParams::SHADER,
            TopKBackwardParams::SHADER,
            ActivationBackwardParams::SHADER,
            NormBackwardParams::SHADER,
            AttentionBackwardParams::SHADER,
            GateBackwardParams::SHADER,
            SummaryParams::SHADER,
        ];
        for shader in shaders {
            assert!(covered.contains(&shader.as_str()), "{shader} has no parameter struct");
        }
    }

    #[test]
    fn an_op_writes_its_fields_where_the_shader_reads_them() {
        let op = Op::Norm { width: 7, out_stride: 9, out_offset: 2, rms: true, has_bias: false, lanes: 64 };
        let p: NormParams = bytemuck::pod_read_unaligned(&op.params(5, 3, (0, 0)));
        assert_eq!(p, NormParams { rows: 5, width: 7, out_stride: 9, out_offset: 2, rms: 1, has_bias: 0, eps: f32::EPSILON, _pad: 0 });
        let p: InterveneParams = bytemuck::pod_read_unaligned(&Op::Intervene { width: 4 }.params(0, 6, (10, 3)));
        assert_eq!(p, InterveneParams { count: 3, start: 10, width: 4, seq_len: 6 });
    }
}
