// Causal softmax attention per head, scale 1/sqrt(d_head), with an optional
// sink: an always-visible key whose value is zero, which only adds
// exp(sink[h]) to the softmax denominator. Online softmax over the keys.
// Rows are r = b * seq_len + t: each variant b attends within its own rows.
// One invocation per (row, head). D_HEAD is set when the pipeline is built.

const D_HEAD: u32 = {{D_HEAD}}u;

struct Params {
    rows: u32,
    seq_len: u32,
    n_head: u32,
    has_sink: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;             // [R, n_head * D_HEAD]
@group(0) @binding(2) var<storage, read> k: array<f32>;             // [R, n_head * D_HEAD]
@group(0) @binding(3) var<storage, read> v: array<f32>;             // [R, n_head * D_HEAD]
@group(0) @binding(4) var<storage, read> sink: array<f32>;          // [n_head] (unused without sink)
@group(0) @binding(5) var<storage, read_write> y: array<f32>;       // [R, n_head * D_HEAD]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.rows * p.n_head) { return; }
    let r = i / p.n_head;
    let h = i % p.n_head;
    let first = r - r % p.seq_len;
    let width = p.n_head * D_HEAD;
    let q_base = r * width + h * D_HEAD;

    var query: array<f32, D_HEAD>;
    var acc: array<f32, D_HEAD>;
    for (var d = 0u; d < D_HEAD; d++) {
        query[d] = q[q_base + d];
        acc[d] = 0.0;
    }
    var running_max = -3.0e38;
    var denom = 0.0;
    if (p.has_sink != 0u) {
        running_max = sink[h];
        denom = 1.0;
    }
    for (var j = first; j <= r; j++) {
        let kv_base = j * width + h * D_HEAD;
        var score = 0.0;
        for (var d = 0u; d < D_HEAD; d++) {
            score += query[d] * k[kv_base + d];
        }
        score *= p.scale;
        let new_max = max(running_max, score);
        let rescale = exp(running_max - new_max);
        let weight = exp(score - new_max);
        denom = denom * rescale + weight;
        for (var d = 0u; d < D_HEAD; d++) {
            acc[d] = acc[d] * rescale + weight * v[kv_base + d];
        }
        running_max = new_max;
    }
    for (var d = 0u; d < D_HEAD; d++) {
        y[q_base + d] = acc[d] / denom;
    }
}
