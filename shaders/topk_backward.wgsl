// The backward pass through AbsTopK (and the residual ReLU): the gradient
// g_in of the kept values passes only to the entries the top-k kept,
//   g_out[r, out_offset + c] = g_in[r, c] if kept(r, c) (and kept_values[r, c] > 0 with relu) else 0
// where the kept set is read back from what the top-k left, kept_values: its
// nonzeros and, when fewer than k, the zeros of lowest index (the forward's
// ties go to the lower index). k = width keeps everything (no top-k there).
// g_out may be wider than g_in (out_stride): q, k and v's gradients are
// written side by side for one product with c_attn's transpose.
// One invocation per row, two passes over it (one without a top-k).

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

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 64u;
    if (r >= p.rows) { return; }
    let base = r * p.width;
    // Without a top-k every entry is kept, zeros too: count none.
    var nonzero = 0u;
    if (p.k < p.width) {
        for (var c = 0u; c < p.width; c++) {
            nonzero += select(0u, 1u, kept_values[base + c] != 0.0);
        }
    }
    var zeros_kept = p.k - min(p.k, nonzero);
    let out_base = r * p.out_stride + p.out_offset;
    for (var c = 0u; c < p.width; c++) {
        let value = kept_values[base + c];
        var keep = value != 0.0;
        if (!keep && zeros_kept > 0u) {
            keep = true;
            zeros_kept -= 1u;
        }
        if (p.relu != 0u) { keep = keep && value > 0.0; }
        g_out[out_base + c] = select(0.0, g_in[base + c], keep);
    }
}
