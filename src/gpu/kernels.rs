//! The compute kernels: one WGSL file per op family in `shaders/` (their
//! parameter blocks are in `ops.rs`).

/// A compute pipeline: a shader file and entry point (and, for attention,
/// the head size the shader is specialised for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Embed,
    /// A norm with `lanes` invocations per row.
    Norm { lanes: u32 },
    SparseMatmul,
    Attention { d_head: u32 },
    /// AbsTopK with `lanes` invocations per row, each holding `per_lane` entries.
    TopK { lanes: u32, per_lane: u32 },
    /// AbsTopK with an invocation per row, for CPU adapters.
    TopKRows,
    ResidualAdd,
    Bigram,
    Intervene,
    TopKBackward,
    ActivationBackward,
    NormBackward,
    GateBackward,
    /// gate_backward.wgsl's second entry point: the gate derivatives.
    GateSums,
    /// attention_backward.wgsl's two entry points: dq (and the weights and
    /// score gradients), then dk and dv.
    AttentionBackwardQueries { d_head: u32 },
    AttentionBackwardKeys { d_head: u32 },
    /// A kept site's per-channel summary for the page.
    Summary,
}

const EMBED: &str = include_str!("../../shaders/embed.wgsl");
const NORM: &str = include_str!("../../shaders/norm.wgsl");
const SPARSE_MATMUL: &str = include_str!("../../shaders/sparse_matmul.wgsl");
const ATTENTION: &str = include_str!("../../shaders/attention.wgsl");
const TOPK: &str = include_str!("../../shaders/topk.wgsl");
const TOPK_ROWS: &str = include_str!("../../shaders/topk_rows.wgsl");
/// The AbsTopK kernels' parameters and bindings.
const TOPK_PARAMS: &str = include_str!("../../shaders/topk_params.wgsl");
const RESIDUAL: &str = include_str!("../../shaders/residual.wgsl");
const BIGRAM: &str = include_str!("../../shaders/bigram.wgsl");
const INTERVENE: &str = include_str!("../../shaders/intervene.wgsl");
const TOPK_BACKWARD: &str = include_str!("../../shaders/topk_backward.wgsl");
const ACTIVATION_BACKWARD: &str = include_str!("../../shaders/activation_backward.wgsl");
const NORM_BACKWARD: &str = include_str!("../../shaders/norm_backward.wgsl");
const ATTENTION_BACKWARD: &str = include_str!("../../shaders/attention_backward.wgsl");
const GATE_BACKWARD: &str = include_str!("../../shaders/gate_backward.wgsl");
const SUMMARY: &str = include_str!("../../shaders/summary.wgsl");
/// `erf`, for the kernels with the exact GELU.
const ERF: &str = include_str!("../../shaders/erf.wgsl");

/// Keys per tile of attention.wgsl's workgroup memory: 8 KB of keys and
/// values (WebGPU guarantees 16 KB), at most 64.
fn attention_keys(d_head: u32) -> u32 {
    (1024 / d_head.max(1)).clamp(1, 64)
}

/// `source` with each line marked "each 4 channels" written out once per
/// vec4 of a head's `d_head` channels, `{i}` its index.
fn each_4_channels(source: &str, d_head: u32) -> String {
    const MARK: &str = "// each 4 channels";
    let mut out = String::with_capacity(2 * source.len());
    for line in source.lines() {
        match line.strip_suffix(MARK) {
            Some(code) => (0..d_head.div_ceil(4)).for_each(|i| {
                out.push_str(&code.trim_end().replace("{i}", &i.to_string()));
                out.push('\n');
            }),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Query rows per workgroup of attention.wgsl (`QUERIES`).
pub const ATTENTION_QUERIES: u32 = 64;

/// Invocations per workgroup of the one-invocation-per-element kernels.
pub const ELEMENT_WORKGROUP: u32 = 64;

/// Rows per workgroup of topk_rows.wgsl (`ROWS` there).
pub const TOPK_ROWS_WORKGROUP: u32 = 8;

/// Token rows per sparse-matmul invocation (`TILE` in sparse_matmul.wgsl).
pub const MATMUL_TILE: u32 = 8;

impl Kernel {
    pub fn source(self) -> String {
        match self {
            Kernel::Embed => EMBED.into(),
            Kernel::Norm { lanes } => NORM.replace("{{LANES}}", &lanes.to_string()),
            Kernel::SparseMatmul => format!("{ERF}\n{SPARSE_MATMUL}"),
            // Private arrays need a constant size: specialise the text.
            Kernel::Attention { d_head } => each_4_channels(
                &ATTENTION
                    .replace("{{D_HEAD}}", &d_head.to_string())
                    .replace("{{D4}}", &d_head.div_ceil(4).to_string())
                    .replace("{{KEYS}}", &attention_keys(d_head).to_string())
                    .replace("{{QUERIES}}", &ATTENTION_QUERIES.to_string()),
                d_head,
            ),
            Kernel::AttentionBackwardQueries { d_head } | Kernel::AttentionBackwardKeys { d_head } => {
                ATTENTION_BACKWARD.replace("{{D_HEAD}}", &d_head.to_string())
            }
            Kernel::TopKBackward => TOPK_BACKWARD.into(),
            Kernel::ActivationBackward => format!("{ERF}\n{ACTIVATION_BACKWARD}"),
            Kernel::NormBackward => NORM_BACKWARD.into(),
            Kernel::GateBackward | Kernel::GateSums => GATE_BACKWARD.into(),
            Kernel::TopK { lanes, per_lane } => {
                format!("{TOPK_PARAMS}\n{}", TOPK.replace("{{LANES}}", &lanes.to_string()).replace("{{PER_LANE}}", &per_lane.to_string()))
            }
            Kernel::TopKRows => format!("{TOPK_PARAMS}\n{TOPK_ROWS}"),
            Kernel::ResidualAdd => RESIDUAL.into(),
            Kernel::Bigram => BIGRAM.into(),
            Kernel::Intervene => INTERVENE.into(),
            Kernel::Summary => SUMMARY.into(),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kernel::Embed => "embed",
            Kernel::Norm { .. } => "norm",
            Kernel::SparseMatmul => "sparse_matmul",
            Kernel::Attention { .. } => "attention",
            Kernel::TopK { .. } => "topk",
            Kernel::TopKRows => "topk_rows",
            Kernel::ResidualAdd => "residual_add",
            Kernel::Bigram => "bigram",
            Kernel::Intervene => "intervene",
            Kernel::TopKBackward => "topk_backward",
            Kernel::ActivationBackward => "activation_backward",
            Kernel::NormBackward => "norm_backward",
            Kernel::GateBackward => "gate_backward",
            Kernel::GateSums => "gate_backward sums",
            Kernel::AttentionBackwardQueries { .. } => "attention_backward queries",
            Kernel::AttentionBackwardKeys { .. } => "attention_backward keys",
            Kernel::Summary => "summary",
        }
    }

    /// The shader's entry point.
    pub fn entry(self) -> &'static str {
        match self {
            Kernel::AttentionBackwardQueries { .. } => "queries",
            Kernel::AttentionBackwardKeys { .. } => "keys",
            Kernel::GateSums => "sums_over_rows",
            _ => "main",
        }
    }
}
