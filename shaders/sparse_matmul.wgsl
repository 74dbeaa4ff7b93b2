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
    // A tile past the last row reads the last row again and writes nothing:
    // every loop over the tile has a constant trip count, so that the
    // accumulators can stay in registers (a private array indexed by a loop
    // bounded by n cannot). On lavapipe the 64-token forward's matmuls took
    // 117-154 ms against 158-207 ms before, runs taking turns.
    var x_base: array<u32, TILE>;
    for (var t = 0u; t < TILE; t++) {
        x_base[t] = min(r0 + t, p.rows - 1u) * p.in_width;
    }
    var acc: array<f32, TILE>;
    for (var e = w[row]; e < w[row + 1u]; e++) {
        let weight = bitcast<f32>(w[vals + e]);
        let col = w[cols + e];
        for (var t = 0u; t < TILE; t++) {
            acc[t] += weight * x[x_base[t] + col];
        }
    }
    var b = 0.0;
    if (p.has_bias != 0u) { b = bias[row]; }
    for (var t = 0u; t < TILE; t++) {
        if (t < n) {
            y[(r0 + t) * p.out + o] = activate(acc[t] + b);
        }
    }
}
