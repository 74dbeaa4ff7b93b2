// The backward pass through AbsTopK (and the residual ReLU): the gradient
// g_in of the kept values passes only to the entries the top-k kept,
//   g_out[r, out_offset + c] = g_in[r, c] if kept(r, c) (and kept_values[r, c] > 0 with relu) else 0
// where the kept set is read back from what the top-k left, kept_values: its
// nonzeros and, when fewer than k, the zeros of lowest index (the forward's
// ties go to the lower index). k = width keeps everything (no top-k there).
// g_out may be wider than g_in (out_stride): q, k and v's gradients are
// written side by side for one product with c_attn's transpose.
// One workgroup per row, each lane a contiguous chunk of it: the lanes'
// counts of zeros, summed in lane order, rank each zero among the row's
// zeros. One invocation walking a whole row gave a GPU only as many threads
// as rows (64 at 64 tokens, each reading 2 x 8192 floats in turn at the
// released shape). On lavapipe both forms cost the same (bench, 2026-11-30:
// forward + backward 1.07 s and 1.10 s at 64 tokens); no real GPU was lent
// to measure this one.

struct Params {
    rows: u32,
    width: u32,         // columns of g_in and kept_values
    k: u32,             // entries kept per row (width: all)
    relu: u32,          // 1: also only where kept_values > 0
    out_stride: u32,    // columns of g_out
    out_offset: u32,    // first column written in g_out
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kept_values: array<f32>;  // [R, width]
@group(0) @binding(2) var<storage, read> g_in: array<f32>;         // [R, width]
@group(0) @binding(3) var<storage, read_write> g_out: array<f32>;  // [R, out_stride]

const WG: u32 = 64u;
// Each lane's count of zeros, then the zeros before its chunk.
var<workgroup> zeros_before: array<u32, 64>;
var<workgroup> row_zeros: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let r = wg.x + wg.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.width;
    let chunk = (p.width + WG - 1u) / WG;
    let start = min(lane * chunk, p.width);
    let end = min(start + chunk, p.width);
    let keep_all = p.k >= p.width;
    var zeros = 0u;
    if (!keep_all) {
        for (var c = start; c < end; c++) {
            zeros += select(0u, 1u, kept_values[base + c] == 0.0);
        }
    }
    zeros_before[lane] = zeros;
    workgroupBarrier();
    if (lane == 0u) {
        var sum = 0u;
        for (var i = 0u; i < WG; i++) {
            let z = zeros_before[i];
            zeros_before[i] = sum;
            sum += z;
        }
        row_zeros = sum;
    }
    let total_zeros = workgroupUniformLoad(&row_zeros);
    // The zeros the top-k kept: as many as the nonzeros fall short of k.
    let zeros_kept = p.k - min(p.k, p.width - total_zeros);
    var rank = zeros_before[lane];
    let out_base = r * p.out_stride + p.out_offset;
    for (var c = start; c < end; c++) {
        let value = kept_values[base + c];
        var keep = keep_all || value != 0.0;
        if (!keep) {
            keep = rank < zeros_kept;
            rank += 1u;
        }
        if (p.relu != 0u) { keep = keep && value > 0.0; }
        g_out[out_base + c] = select(0.0, g_in[base + c], keep);
    }
}
