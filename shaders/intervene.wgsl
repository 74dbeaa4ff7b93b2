// Interventions at one site. Each entry sets one cell, x[index] = value, or,
// with the top bit of its index set, one channel at every position of its
// variant: x[base + r * width] = value for r < seq_len. Zero-ablation,
// mean-ablation and patching all reduce to this: the engine computes the
// values (0, the given means, or the other run's activations); ablations at
// every position become whole-column entries, T times fewer.
// One invocation per entry.

struct Params {
    count: u32,         // entries at this site
    start: u32,         // first entry of this site in index and value
    width: u32,         // the site's channels
    seq_len: u32,       // T: rows of one variant
}

const COLUMN: u32 = 0x80000000u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;         // [entries of all sites] flat r * width + c, COLUMN-marked for whole columns
@group(0) @binding(2) var<storage, read> value: array<f32>;         // [entries of all sites]
@group(0) @binding(3) var<storage, read_write> x: array<f32>;       // [R, width]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.count) { return; }
    let at = index[p.start + i];
    let v = value[p.start + i];
    if ((at & COLUMN) == 0u) {
        x[at] = v;
        return;
    }
    let base = at & ~COLUMN;
    for (var r = 0u; r < p.seq_len; r++) {
        x[base + r * p.width] = v;
    }
}
