// Interventions at one site: x[index[start + i]] = value[start + i] for i < count.
// Zero-ablation, mean-ablation and patching all reduce to this: the engine
// computes the values (0, the given means, or the other run's activations).
// One invocation per entry.

struct Params {
    count: u32,         // entries at this site
    start: u32,         // first entry of this site in index and value
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;         // [entries of all sites] flat r * width + c
@group(0) @binding(2) var<storage, read> value: array<f32>;         // [entries of all sites]
@group(0) @binding(3) var<storage, read_write> x: array<f32>;       // [R, width]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.count) { return; }
    x[index[p.start + i]] = value[p.start + i];
}
