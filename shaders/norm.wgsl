// LayerNorm or RMSNorm of every row, written into a column range of out so
// that concat(norm(x), norm_p(pos)) needs no extra copy.
//   LayerNorm: (x - mean) / sqrt(var + eps) * weight (+ bias), eps 1e-5
//   RMSNorm:   x / sqrt(mean(x^2) + eps) * weight, eps = f32 epsilon
// One workgroup of LANES invocations per row (set when the pipeline is
// built: 256 on a GPU, 64 on a CPU adapter); reductions in workgroup
// memory. With 64 lanes a norm took 21 us at the released shape (2048
// wide) on an H200, each lane reading 32 entries one after another.

struct Params {
    rows: u32,
    width: u32,         // columns of x, weight, bias
    out_stride: u32,    // columns of out
    out_offset: u32,    // first column written in out
    rms: u32,           // 1: RMSNorm, 0: LayerNorm
    has_bias: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;             // [R, width]
@group(0) @binding(2) var<storage, read> weight: array<f32>;        // [width]
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // [width] (unused without bias)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;     // [R, out_stride]

const LANES: u32 = {{LANES}}u;
var<workgroup> partial: array<f32, LANES>;

// Sum of `value` over the workgroup; every lane gets the result.
fn workgroup_sum(lane: u32, value: f32) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            partial[lane] += partial[lane + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let r = wg.x + wg.y * nwg.x;
    // Uniform control flow for the barriers: every lane of a workgroup
    // shares r, so the whole workgroup returns together.
    if (r >= p.rows) { return; }
    let base = r * p.width;
    let n = f32(p.width);
    var shift = 0.0;
    if (p.rms == 0u) {
        var s = 0.0;
        for (var c = lane; c < p.width; c += LANES) { s += x[base + c]; }
        shift = workgroup_sum(lane, s) / n;
    }
    var sq = 0.0;
    for (var c = lane; c < p.width; c += LANES) {
        let d = x[base + c] - shift;
        sq += d * d;
    }
    let scale = inverseSqrt(workgroup_sum(lane, sq) / n + p.eps);
    let out_base = r * p.out_stride + p.out_offset;
    for (var c = lane; c < p.width; c += LANES) {
        var v = (x[base + c] - shift) * scale * weight[c];
        if (p.has_bias != 0u) { v += bias[c]; }
        out[out_base + c] = v;
    }
}
