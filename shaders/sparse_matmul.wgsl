// Sparse weight times activations: y[r, o] = sum_j W[row0 + o, j] * x[r, j] (+ bias[row0 + o])
// over the stored nonzeros of W only (work R * (out + nnz), not R * out * in).
// W is [out_total, in] packed CSR in one u32 buffer (see embed.wgsl);
// rows row0 .. row0 + out of W are computed, so q, k and v come out of one
// c_attn weight as three separate tensors.
// One invocation per output element; 2D dispatch past 65535 workgroups.

struct Params {
    rows: u32,          // R
    in_width: u32,      // columns of x (and of W)
    out: u32,           // columns of y
    row0: u32,          // first row of W computed
    w_rows: u32,        // rows of W in the packed buffer
    w_nnz: u32,
    has_bias: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;             // [R, in_width]
@group(0) @binding(2) var<storage, read> w: array<u32>;             // packed CSR [w_rows, in_width]
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // [w_rows] (unused without bias)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;       // [R, out]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.rows * p.out) { return; }
    let r = i / p.out;
    let o = i % p.out;
    let row = p.row0 + o;
    let cols = p.w_rows + 1u;
    let vals = cols + p.w_nnz;
    let x_base = r * p.in_width;
    var acc = 0.0;
    for (var e = w[row]; e < w[row + 1u]; e++) {
        acc += bitcast<f32>(w[vals + e]) * x[x_base + w[cols + e]];
    }
    if (p.has_bias != 0u) { acc += bias[row]; }
    y[i] = acc;
}
