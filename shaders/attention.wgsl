// Causal softmax attention per head, scale 1/sqrt(d_head), with an optional
// sink: an always-visible key whose value is zero, which only adds
// exp(sink[h]) to the softmax denominator. Online softmax over the keys.
// Rows are r = b * seq_len + t: each sequence b attends within its own rows.
//
// One workgroup of QUERIES invocations per (head, sequence, tile of QUERIES
// query rows), one invocation per query. The tile's keys and values pass
// through workgroup memory KEYS at a time, loaded once by the whole
// workgroup and read by every query from there. D_HEAD, KEYS and QUERIES
// (kernels.rs, ATTENTION_QUERIES, which sizes the dispatch) are set when
// the pipeline is built (2 * KEYS * D_HEAD floats of workgroup memory).
// The last query tiles, with the most keys, get the lowest workgroup ids.
//
// A head's channels go 4 at a time in vec4 variables, D4 of them, each
// line marked "each 4 channels" written out once per vec4 (i = 0 .. D4)
// when the pipeline is built; channels past D_HEAD are zero. Private
// arrays indexed in loops, as before, took 0.87-0.97 ms a layer at the
// released shape (128 heads x 16), 256 tokens, on an H200, whether keys
// came from workgroup or global memory; the vec4 lines take 0.06 ms.

const D_HEAD: u32 = {{D_HEAD}}u;
const D4: u32 = {{D4}}u;
const KEYS: u32 = {{KEYS}}u;
const QUERIES: u32 = {{QUERIES}}u;

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

var<workgroup> keys: array<vec4<f32>, KEYS * D4>;                   // [KEYS, D4]
var<workgroup> values: array<vec4<f32>, KEYS * D4>;                 // [KEYS, D4]

// Channels 4i .. 4i + 3 of the head whose channel 0 is at `at` (zero past D_HEAD).
fn query4(at: u32, i: u32) -> vec4<f32> {
    var out = vec4<f32>();
    for (var c = 0u; c < 4u; c++) { if (4u * i + c < D_HEAD) { out[c] = q[at + 4u * i + c]; } }
    return out;
}
fn key4(at: u32, i: u32) -> vec4<f32> {
    var out = vec4<f32>();
    for (var c = 0u; c < 4u; c++) { if (4u * i + c < D_HEAD) { out[c] = k[at + 4u * i + c]; } }
    return out;
}
fn value4(at: u32, i: u32) -> vec4<f32> {
    var out = vec4<f32>();
    for (var c = 0u; c < 4u; c++) { if (4u * i + c < D_HEAD) { out[c] = v[at + 4u * i + c]; } }
    return out;
}
fn write4(at: u32, i: u32, value: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) { if (4u * i + c < D_HEAD) { y[at + 4u * i + c] = value[c]; } }
}

@compute @workgroup_size(QUERIES)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let tiles = (p.seq_len + QUERIES - 1u) / QUERIES;
    let group = wg.x + wg.y * nwg.x;
    if (group >= p.n_head * tiles * (p.rows / p.seq_len)) { return; }
    let h = group % p.n_head;
    let tile = tiles - 1u - (group / p.n_head) % tiles;
    let first = (group / (p.n_head * tiles)) * p.seq_len;
    let t = tile * QUERIES + lane;
    let in_sequence = t < p.seq_len;
    // Past the sequence's end a lane computes its last query again, unwritten.
    let tq = min(t, p.seq_len - 1u);
    let width = p.n_head * D_HEAD;
    let q_base = (first + tq) * width + h * D_HEAD;

    let q{i} = query4(q_base, {i}u);  // each 4 channels
    var acc{i} = vec4<f32>();  // each 4 channels
    var running_max = -3.0e38;
    var denom = 0.0;
    if (p.has_sink != 0u) {
        running_max = sink[h];
        denom = 1.0;
    }
    // Keys 0 ..= the tile's last query.
    let n_keys = min((tile + 1u) * QUERIES, p.seq_len);
    for (var key0 = 0u; key0 < n_keys; key0 += KEYS) {
        workgroupBarrier();
        for (var e = lane; e < KEYS * D4; e += QUERIES) {
            let j = key0 + e / D4;
            if (j < n_keys) {
                let at = (first + j) * width + h * D_HEAD;
                keys[e] = key4(at, e % D4);
                values[e] = value4(at, e % D4);
            }
        }
        workgroupBarrier();
        // This query's keys in the tile: those at or before it.
        let last = min(KEYS, tq + 1u - min(key0, tq + 1u));
        for (var j = 0u; j < last; j++) {
            var score = 0.0;
            score += dot(q{i}, keys[j * D4 + {i}u]);  // each 4 channels
            score *= p.scale;
            let new_max = max(running_max, score);
            let rescale = exp(running_max - new_max);
            let weight = exp(score - new_max);
            denom = denom * rescale + weight;
            acc{i} = acc{i} * rescale + weight * values[j * D4 + {i}u];  // each 4 channels
            running_max = new_max;
        }
    }
    if (in_sequence) {
        write4(q_base, {i}u, acc{i} / denom);  // each 4 channels
    }
}
