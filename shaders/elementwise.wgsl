// Elementwise ops over a flat [n] view of an activation tensor:
//   gelu          x = x * 0.5 * (1 + erf(x / sqrt 2))   (exact-erf GELU)
//   relu          x = max(x, 0)
//   residual_add  x = x + delta, then relu when p.relu is set
// One invocation per element; 2D dispatch past 65535 workgroups.

struct Params {
    n: u32,
    relu: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;       // [n]
@group(0) @binding(2) var<storage, read> delta: array<f32>;         // [n] (residual_add only)

// erf with absolute error below 1.2e-7 (Numerical Recipes' erfc Chebyshev fit).
fn erf(v: f32) -> f32 {
    let z = abs(v);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * exp(poly);
    return select(erfc - 1.0, 1.0 - erfc, v >= 0.0);
}

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

@compute @workgroup_size(64)
fn gelu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let v = x[i];
    x[i] = 0.5 * v * (1.0 + erf(v * 0.70710678118654752));
}

@compute @workgroup_size(64)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    x[i] = max(x[i], 0.0);
}

@compute @workgroup_size(64)
fn residual_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    var v = x[i] + delta[i];
    if (p.relu != 0u) { v = max(v, 0.0); }
    x[i] = v;
}
