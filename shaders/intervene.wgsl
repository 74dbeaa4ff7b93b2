// Interventions at one site: x[index[i]] = value[i] for every listed entry.
// Zero-ablation, mean-ablation and patching all reduce to this: the engine
// computes the values (0, the given means, or the other run's activations).
// One invocation per entry.

struct Params {
    count: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;         // [count] flat r * width + c
@group(0) @binding(2) var<storage, read> value: array<f32>;         // [count]
@group(0) @binding(3) var<storage, read_write> x: array<f32>;       // [R, width]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.count) { return; }
    x[index[i]] = value[i];
}
