// Sparse weight times activations: y[r, o] = act(sum_j W[row0 + o, j] * x[r, j] (+ bias[row0 + o]))
// over the stored nonzeros of W only: work is R * (out + nnz), not R * out * in.
// act is the identity, exact-erf GELU or ReLU (the MLP's c_fc fuses its
// activation here instead of another pass over [R, d_mlp]).
// W is [w_rows, in_width] packed CSR in one u32 buffer (see embed.wgsl);
// rows row0 .. row0 + out of W are computed, so q, k and v come out of one
// c_attn weight as three separate tensors.
// One invocation per output column o and TILE consecutive rows: the row's
// nonzeros are read once and applied to TILE token rows.
// 2D dispatch past 65535 workgroups.

struct Params {
    rows: u32,          // R
    in_width: u32,      // columns of x (and of W)
    out: u32,           // columns of y
    row0: u32,          // first row of W computed
    w_rows: u32,        // rows of W in the packed buffer
    w_nnz: u32,
    has_bias: u32,
    activation: u32,    // 0: none, 1: GELU, 2: ReLU
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;             // [R, in_width]
@group(0) @binding(2) var<storage, read> w: array<u32>;             // packed CSR [w_rows, in_width]
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // [w_rows] (unused without bias)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;       // [R, out]

const TILE: u32 = 8u;

// erf(v) is in erf.wgsl, which the pipeline puts before this file.

fn activate(v: f32) -> f32 {
    switch p.activation {
        case 1u: { return 0.5 * v * (1.0 + erf(v * 0.70710678118654752)); }
        case 2u: { return max(v, 0.0); }
        default: { return v; }
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let tiles = (p.rows + TILE - 1u) / TILE;
    if (i >= tiles * p.out) { return; }
    let r0 = (i / p.out) * TILE;
    let o = i % p.out;
    let n = min(TILE, p.rows - r0);
    let row = p.row0 + o;
    let cols = p.w_rows + 1u;
    let vals = cols + p.w_nnz;
    // A tile past the last row reads the last row again and writes nothing,
    // so the loop over the tile's rows has no branch. Its TILE = 8 rows are
    // two vec4s written out: with a private array indexed in loops a
    // dispatch took 27 us at the released shape, 64 tokens, on an H200, and
    // takes 10 us so (lavapipe: the 49 dispatches 159 -> 137 ms).
    let last = p.rows - 1u;
    let rows_lo = min(vec4<u32>(r0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last)) * p.in_width;
    let rows_hi = min(vec4<u32>(r0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(last)) * p.in_width;
    var acc_lo = vec4<f32>();
    var acc_hi = vec4<f32>();
    for (var e = w[row]; e < w[row + 1u]; e++) {
        let weight = bitcast<f32>(w[vals + e]);
        let col = w[cols + e];
        acc_lo += weight * vec4<f32>(x[rows_lo.x + col], x[rows_lo.y + col], x[rows_lo.z + col], x[rows_lo.w + col]);
        acc_hi += weight * vec4<f32>(x[rows_hi.x + col], x[rows_hi.y + col], x[rows_hi.z + col], x[rows_hi.w + col]);
    }
    var b = 0.0;
    if (p.has_bias != 0u) { b = bias[row]; }
    let y_at = r0 * p.out + o;
    y[y_at] = activate(acc_lo.x + b);
    if (n > 1u) { y[y_at + p.out] = activate(acc_lo.y + b); }
    if (n > 2u) { y[y_at + 2u * p.out] = activate(acc_lo.z + b); }
    if (n > 3u) { y[y_at + 3u * p.out] = activate(acc_lo.w + b); }
    if (n > 4u) { y[y_at + 4u * p.out] = activate(acc_hi.x + b); }
    if (n > 5u) { y[y_at + 5u * p.out] = activate(acc_hi.y + b); }
    if (n > 6u) { y[y_at + 6u * p.out] = activate(acc_hi.z + b); }
    if (n > 7u) { y[y_at + 7u * p.out] = activate(acc_hi.w + b); }
}
