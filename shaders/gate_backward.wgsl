// The backward pass through a node gate (circuit pruning's mask): a gated
// site's channel either passes its value on or is replaced by its mean, so
// the gradient reaching what computed it is
//   g[r, c] = g[r, c] if kept[c] else 0
// in place, for rows of `width` channels. One invocation per element; 2D
// dispatch past 65535 workgroups.

struct Params {
    n: u32,             // rows * width
    width: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kept: array<f32>;          // [width]: 1 kept, 0 ablated
@group(0) @binding(2) var<storage, read_write> g: array<f32>;       // [rows, width]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }
    g[i] = g[i] * kept[i % p.width];
}
