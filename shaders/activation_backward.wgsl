// The backward pass through the MLP's activation, elementwise over a flat [n]:
//   g_out = g_in * act'(pre)
// with GELU' = Phi(x) + x phi(x) (exact, erf: erf.wgsl is put before this
// file) or ReLU' = [x > 0] (0 at 0, as PyTorch). pre is the pre-activation,
// computed again from the saved MLP input.
// One invocation per element; 2D dispatch past 65535 workgroups.

struct Params {
    n: u32,
    activation: u32,    // 1: GELU, 2: ReLU
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pre: array<f32>;           // [n]
@group(0) @binding(2) var<storage, read> g_in: array<f32>;          // [n]
@group(0) @binding(3) var<storage, read_write> g_out: array<f32>;   // [n]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }
    let x = pre[i];
    var slope = select(0.0, 1.0, x > 0.0);
    if (p.activation == 1u) {
        slope = 0.5 * (1.0 + erf(x * 0.70710678118654752)) + x * 0.3989422804014327 * exp(-0.5 * x * x);
    }
    g_out[i] = g_in[i] * slope;
}
