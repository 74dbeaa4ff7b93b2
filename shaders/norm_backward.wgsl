// The backward pass through LayerNorm or RMSNorm, plus the residual stream's
// own gradient: with u = dout * weight, s the row's scale and n its width,
//   RMSNorm:   dx = s u - s^3 x mean(u x)
//   LayerNorm: dx = s (u - mean(u) - x^ mean(u x^)),  x^ = (x - mean(x)) s
//   out = residual (when has_residual) + dx
// dout is read from the first `width` columns of rows `dout_stride` wide
// (the norm's part of a concatenated input).
// One workgroup per row; reductions in workgroup memory.

struct Params {
    rows: u32,
    width: u32,         // columns of x, weight, residual and out
    dout_stride: u32,   // columns of dout
    rms: u32,           // 1: RMSNorm, 0: LayerNorm
    has_residual: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;             // [R, width]: the norm's input
@group(0) @binding(2) var<storage, read> dout: array<f32>;          // [R, dout_stride]
@group(0) @binding(3) var<storage, read> weight: array<f32>;        // [width]
@group(0) @binding(4) var<storage, read> residual: array<f32>;      // [R, width] (unused without)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;     // [R, width]

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

// Sum of `value` over the workgroup; every lane gets the result.
fn workgroup_sum(lane: u32, value: f32) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            partial[lane] += partial[lane + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let r = wg.x + wg.y * nwg.x;
    // Every lane of a workgroup shares r: the whole workgroup returns together.
    if (r >= p.rows) { return; }
    let base = r * p.width;
    let dbase = r * p.dout_stride;
    let n = f32(p.width);
    var shift = 0.0;
    if (p.rms == 0u) {
        var s = 0.0;
        for (var c = lane; c < p.width; c += WG) { s += x[base + c]; }
        shift = workgroup_sum(lane, s) / n;
    }
    var sq = 0.0;
    for (var c = lane; c < p.width; c += WG) {
        let d = x[base + c] - shift;
        sq += d * d;
    }
    let scale = inverseSqrt(workgroup_sum(lane, sq) / n + p.eps);
    // mean(u) and mean(u x^) (RMSNorm: x^ = x s, shift 0).
    var u_sum = 0.0;
    var ux_sum = 0.0;
    for (var c = lane; c < p.width; c += WG) {
        let u = dout[dbase + c] * weight[c];
        u_sum += u;
        ux_sum += u * (x[base + c] - shift) * scale;
    }
    let u_mean = workgroup_sum(lane, u_sum) / n;
    let ux_mean = workgroup_sum(lane, ux_sum) / n;
    for (var c = lane; c < p.width; c += WG) {
        let u = dout[dbase + c] * weight[c];
        let normed = (x[base + c] - shift) * scale;
        var dx = scale * (u - normed * ux_mean);
        if (p.rms == 0u) { dx -= scale * u_mean; }
        if (p.has_residual != 0u) { dx += residual[base + c]; }
        out[base + c] = dx;
    }
}
