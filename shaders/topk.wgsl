// AbsTopK, in place: in every row keep the k entries of largest |x| and zero
// the rest. Exact selection by radix select on the f32 bit pattern of |x|
// (monotone for non-negative floats): four passes over 8-bit digits, from
// the highest, each a 256-bin histogram of the entries that still match the
// digits chosen so far. Ties at the threshold keep the lowest indices.
//
// One workgroup of LANES invocations per row; lane l holds entries l,
// l + LANES, ... in registers (PER_LANE of them), read from memory once.
// After each histogram the digit is found in parallel: lane l sums the
// BINS bins l * BINS .. from the top, a scan over the lanes finds the lane
// whose bins hold the k-th largest, and that lane walks its own bins.
// LANES and PER_LANE are set when the pipeline is built: 256 lanes on a GPU,
// 64 on a CPU adapter (fewer invocations to switch between at a barrier;
// there the scan is one lane's loop). Measured on an H200 at the released
// shape: with one lane walking all 256 bins and the row read from memory
// in every pass a dispatch took 47 us, at 64 and at 256 rows alike; so,
// 16-18 us.

const LANES: u32 = {{LANES}}u;
const PER_LANE: u32 = {{PER_LANE}}u;
const BINS: u32 = 256u / LANES;

// Params, p, x and abs_bits are in topk_params.wgsl.

var<workgroup> histogram: array<atomic<u32>, 256>;
// Each lane's count of entries in its bins, then summed over the lanes before it.
var<workgroup> counts: array<u32, LANES>;
// (prefix of the threshold's bits found so far, entries still to keep among
// those matching it, entries equal to the full threshold)
var<workgroup> chosen: vec3<u32>;

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let r = wg.x + wg.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.width;
    var bits: array<u32, PER_LANE>;
    for (var j = 0u; j < PER_LANE; j++) {
        let c = lane + j * LANES;
        if (c < p.width) { bits[j] = abs_bits(x[base + c]); }
    }
    var state = vec3<u32>(0u, p.k, 0u);
    for (var pass_ = 0u; pass_ < 4u; pass_++) {
        let shift = 24u - 8u * pass_;
        // Bits above this digit must equal the prefix chosen so far.
        let high_mask = select(0u, 0xffffffffu << (shift + 8u), pass_ > 0u);
        for (var bin = lane; bin < 256u; bin += LANES) { atomicStore(&histogram[bin], 0u); }
        workgroupBarrier();
        for (var j = 0u; j < PER_LANE; j++) {
            if (lane + j * LANES < p.width && (bits[j] & high_mask) == state.x) {
                atomicAdd(&histogram[(bits[j] >> shift) & 0xffu], 1u);
            }
        }
        workgroupBarrier();
        // This lane's bins, digits top - BINS + 1 ..= top.
        let top = 255u - lane * BINS;
        var mine = 0u;
        for (var b = 0u; b < BINS; b++) { mine += atomicLoad(&histogram[top - b]); }
        counts[lane] = mine;
        workgroupBarrier();
        // Inclusive sums over the lanes, from the top digits down.
        if (LANES > 64u) {
            for (var offset = 1u; offset < LANES; offset *= 2u) {
                var add = 0u;
                if (lane >= offset) { add = counts[lane - offset]; }
                workgroupBarrier();
                counts[lane] += add;
                workgroupBarrier();
            }
        } else {
            if (lane == 0u) {
                for (var l = 1u; l < LANES; l++) { counts[l] += counts[l - 1u]; }
            }
            workgroupBarrier();
        }
        let above = counts[lane] - mine;
        // The lane whose bins hold the remaining k-th largest (the last lane
        // if none does, which a consistent count never leaves).
        if (above < state.y && (counts[lane] >= state.y || lane == LANES - 1u)) {
            var remaining = state.y - above;
            for (var b = 0u; b < BINS; b++) {
                let n = atomicLoad(&histogram[top - b]);
                if (n >= remaining || b == BINS - 1u) {
                    chosen = vec3<u32>(state.x | ((top - b) << shift), remaining, n);
                    break;
                }
                remaining -= n;
            }
        }
        state = workgroupUniformLoad(&chosen);
    }
    let threshold = state.x;
    for (var j = 0u; j < PER_LANE; j++) {
        let c = lane + j * LANES;
        if (c < p.width && bits[j] < threshold) { x[base + c] = 0.0; }
    }
    // More entries equal the threshold than may be kept: keep the first ones.
    // (No lane changes an entry equal to the threshold above.)
    if (lane == 0u && state.z > state.y && threshold != 0u) {
        var kept = 0u;
        for (var c = 0u; c < p.width; c++) {
            if (abs_bits(x[base + c]) == threshold) {
                if (kept < state.y) { kept += 1u; } else { x[base + c] = 0.0; }
            }
        }
    }
}
