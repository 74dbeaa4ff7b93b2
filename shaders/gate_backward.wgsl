// The backward pass through a node gate (circuit pruning's mask): a gated
// site's channel either passes its value on or is replaced by its mean,
//   a'[r, c] = mean[c] + gate[c] (a[r, c] - mean[c]),   gate[c] 1 or 0,
// so, with g the gradient at a':
// - `main`: the gradient reaching what computed a is
//     g[r, c] = g[r, c] if kept[c] else 0
//   in place. One invocation per element; 2D dispatch past 65535 workgroups.
// - `sums`: the derivative of the objective with respect to each gate,
//     sums[out_offset + c] = sum_r g[r, c] (a[r, c] - mean[c])
//   over every row of the batch (a padding row's g is zero). One invocation
//   per channel, walking the rows: neighbouring invocations read neighbouring
//   columns of a row.

struct Params {
    n: u32,             // rows * width
    width: u32,
    out_offset: u32,    // sums: this gate's first column in `sums`
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kept: array<f32>;          // [width]: 1 kept, 0 ablated
@group(0) @binding(2) var<storage, read_write> g: array<f32>;       // [rows, width]
@group(0) @binding(3) var<storage, read> before: array<f32>;        // [rows, width]: a, the values before the gate
@group(0) @binding(4) var<storage, read> mean: array<f32>;          // [width]
@group(0) @binding(5) var<storage, read_write> sums: array<f32>;    // [sum of the gates' widths]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }
    g[i] = g[i] * kept[i % p.width];
}

@compute @workgroup_size(64)
fn sums_over_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = gid.x + gid.y * nwg.x * 64u;
    if (c >= p.width) { return; }
    let m = mean[c];
    var total = 0.0;
    for (var i = c; i < p.n; i += p.width) {
        total += g[i] * (before[i] - m);
    }
    sums[p.out_offset + c] = total;
}
