// AbsTopK, in place: in every row keep the k entries of largest |x| and zero
// the rest. Exact selection: the k-th largest |x| is found by a bitwise
// binary search over the f32 bit pattern of |x| (monotone for non-negative
// floats), counting entries at or above each candidate across the workgroup.
// Ties at the threshold keep the lowest indices. One workgroup per row.

struct Params {
    rows: u32,
    width: u32,
    k: u32,             // 0 < k < width (the engine skips the op otherwise)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;       // [R, width]

const WG: u32 = 256u;
var<workgroup> counter: atomic<u32>;

fn abs_bits(v: f32) -> u32 {
    return bitcast<u32>(v) & 0x7fffffffu;
}

// Entries of row `base` whose |x| bits are >= threshold, summed over the workgroup.
fn count_at_least(base: u32, lane: u32, threshold: u32) -> u32 {
    if (lane == 0u) { atomicStore(&counter, 0u); }
    workgroupBarrier();
    var n = 0u;
    for (var c = lane; c < p.width; c += WG) {
        if (abs_bits(x[base + c]) >= threshold) { n += 1u; }
    }
    atomicAdd(&counter, n);
    return workgroupUniformLoad(&counter);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let r = wg.x + wg.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.width;
    // Largest threshold with at least k entries at or above it: the k-th largest |x|.
    var threshold = 0u;
    for (var bit = 30i; bit >= 0i; bit--) {
        let candidate = threshold | (1u << u32(bit));
        if (count_at_least(base, lane, candidate) >= p.k) {
            threshold = candidate;
        }
    }
    let above = count_at_least(base, lane, threshold + 1u);
    // Entries equal to the threshold that are kept, in index order.
    let keep_equal = p.k - above;
    for (var c = lane; c < p.width; c += WG) {
        let bits = abs_bits(x[base + c]);
        if (bits < threshold) { x[base + c] = 0.0; }
    }
    if (lane == 0u && threshold != 0u) {
        var kept = 0u;
        for (var c = 0u; c < p.width; c++) {
            if (abs_bits(x[base + c]) == threshold) {
                if (kept < keep_equal) { kept += 1u; } else { x[base + c] = 0.0; }
            }
        }
    }
}
