// AbsTopK for CPU adapters (lavapipe, SwiftShader), in place: in every row
// keep the k entries of largest |x| and zero the rest, exactly as topk.wgsl
// does (radix select on the f32 bit pattern of |x|, 8-bit digits from the
// highest, ties at the threshold keep the lowest indices), but one
// invocation per row with its 256-bin histogram in private memory: no
// barriers and no atomics.
//
// A CPU adapter runs a workgroup's invocations as the lanes of SIMD loops
// and splits the shader at every barrier; topk.wgsl's workgroup per row
// meets at 7 barriers a pass and counts with atomics, which there took a
// third of the 64-token forward (bench --kernels, lavapipe). Here the lanes
// are rows, and each walks its own row. On a GPU this would leave the
// device idle: GPUs keep topk.wgsl.
//
// A pass whose chosen digit holds exactly the entries still to keep keeps
// them all, whatever their lower bits: the selection ends there (with 2048
// entries and 256 bins that is usually the second or third pass).
//
// Dispatch: ceil(R / ROWS) workgroups (folded into x and y) of ROWS invocations.

const ROWS: u32 = 8u;

// Params, p, x and abs_bits are in topk_params.wgsl.

@compute @workgroup_size(ROWS)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let r = (wg.x + wg.y * nwg.x) * ROWS + lane;
    if (r >= p.rows) { return; }
    let base = r * p.width;
    var histogram: array<u32, 256>;
    // The threshold's bits found so far, the entries still to keep among
    // those matching them, and how many entries match them.
    var prefix = 0u;
    var remaining = p.k;
    var matching = p.width;
    for (var pass_ = 0u; pass_ < 4u; pass_++) {
        let shift = 24u - 8u * pass_;
        // Bits above this digit must equal the prefix chosen so far.
        let high_mask = select(0u, 0xffffffffu << (shift + 8u), pass_ > 0u);
        for (var bin = 0u; bin < 256u; bin++) { histogram[bin] = 0u; }
        for (var c = 0u; c < p.width; c++) {
            let bits = abs_bits(x[base + c]);
            if ((bits & high_mask) == prefix) {
                let digit = (bits >> shift) & 0xffu;
                histogram[digit] += 1u;
            }
        }
        // From the top digit down to the one holding the remaining k-th largest.
        var digit = 255u;
        while (digit > 0u && histogram[digit] < remaining) {
            remaining -= histogram[digit];
            digit -= 1u;
        }
        prefix |= digit << shift;
        matching = histogram[digit];
        if (matching == remaining) { break; }
    }
    let threshold = prefix;
    for (var c = 0u; c < p.width; c++) {
        if (abs_bits(x[base + c]) < threshold) { x[base + c] = 0.0; }
    }
    // More entries equal the threshold than may be kept: keep the first ones.
    if (matching > remaining && threshold != 0u) {
        var kept = 0u;
        for (var c = 0u; c < p.width; c++) {
            if (abs_bits(x[base + c]) == threshold) {
                if (kept < remaining) { kept += 1u; } else { x[base + c] = 0.0; }
            }
        }
    }
}
