// Residual update over a flat [n] view of the residual stream:
//   x = x + delta, then relu when p.relu is set (residual_activation_type).
// One invocation per element; 2D dispatch past 65535 workgroups.

struct Params {
    n: u32,
    relu: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;       // [n]
@group(0) @binding(2) var<storage, read> delta: array<f32>;         // [n]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }
    var v = x[i] + delta[i];
    if (p.relu != 0u) { v = max(v, 0.0); }
    x[i] = v;
}
