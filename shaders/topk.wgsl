// AbsTopK, in place: in every row keep the k entries of largest |x| and zero
// the rest. Exact selection by radix select on the f32 bit pattern of |x|
// (monotone for non-negative floats): four passes over 8-bit digits, from
// the highest, each a 256-bin histogram of the entries that still match the
// digits chosen so far. Ties at the threshold keep the lowest indices.
// One workgroup of LANES invocations per row: 256 on a GPU, 64 on a CPU
// adapter (set when the pipeline is built; on lavapipe, 64 lanes made the
// 64-token forward's AbsTopK about 12% faster: fewer invocations to switch
// between at each barrier).

struct Params {
    rows: u32,
    width: u32,
    k: u32,             // k < width (the engine skips the op otherwise)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;       // [R, width]

override LANES: u32 = 256u;
var<workgroup> histogram: array<atomic<u32>, 256>;
// (prefix of the threshold's bits found so far, entries still to keep among
// those matching it, entries equal to the full threshold)
var<workgroup> chosen: vec3<u32>;

fn abs_bits(v: f32) -> u32 {
    return bitcast<u32>(v) & 0x7fffffffu;
}

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let r = wg.x + wg.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.width;
    if (lane == 0u) { chosen = vec3<u32>(0u, p.k, 0u); }
    for (var pass_ = 0u; pass_ < 4u; pass_++) {
        let shift = 24u - 8u * pass_;
        // Bits above this digit must equal the prefix chosen so far.
        let high_mask = select(0u, 0xffffffffu << (shift + 8u), pass_ > 0u);
        for (var bin = lane; bin < 256u; bin += LANES) { atomicStore(&histogram[bin], 0u); }
        let state = workgroupUniformLoad(&chosen);
        // Neighbouring entries often share a bin (the top digit is mostly the
        // exponent): count runs locally and add each run once.
        var run_bin = 0u;
        var run_count = 0u;
        for (var c = lane; c < p.width; c += LANES) {
            let bits = abs_bits(x[base + c]);
            if ((bits & high_mask) == state.x) {
                let bin = (bits >> shift) & 0xffu;
                if (run_count > 0u && bin != run_bin) {
                    atomicAdd(&histogram[run_bin], run_count);
                    run_count = 0u;
                }
                run_bin = bin;
                run_count += 1u;
            }
        }
        if (run_count > 0u) {
            atomicAdd(&histogram[run_bin], run_count);
        }
        workgroupBarrier();
        if (lane == 0u) {
            // The digit holding the remaining k-th largest, from the top.
            var remaining = state.y;
            var digit = 255u;
            loop {
                let n = atomicLoad(&histogram[digit]);
                if (n >= remaining || digit == 0u) {
                    chosen = vec3<u32>(state.x | (digit << shift), remaining, n);
                    break;
                }
                remaining -= n;
                digit -= 1u;
            }
        }
        workgroupBarrier();
    }
    let state = workgroupUniformLoad(&chosen);
    let threshold = state.x;
    for (var c = lane; c < p.width; c += LANES) {
        if (abs_bits(x[base + c]) < threshold) { x[base + c] = 0.0; }
    }
    // More entries equal the threshold than may be kept: keep the first ones.
    if (lane == 0u && state.z > state.y && threshold != 0u) {
        var kept = 0u;
        for (var c = 0u; c < p.width; c++) {
            if (abs_bits(x[base + c]) == threshold) {
                if (kept < state.y) { kept += 1u; } else { x[base + c] = 0.0; }
            }
        }
    }
}
