// Bigram logits: logits[r, c] += table[tokens[r], c] (dense table).
// One invocation per logit; 2D dispatch past 65535 workgroups.

struct Params {
    rows: u32,
    vocab: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;        // [R]
@group(0) @binding(2) var<storage, read> table: array<f32>;         // [vocab, vocab]
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;  // [R, vocab]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.rows * p.vocab) { return; }
    let r = i / p.vocab;
    logits[i] += table[tokens[r] * p.vocab + i % p.vocab];
}
