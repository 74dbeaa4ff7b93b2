// A site kept on the GPU, summarised per channel for the page (model::ColumnSummary):
//   out[c]          = sum over rows r of x[r, c]^2      (the site's RMS)
//   out[width + c]  = the first row r with x[r, c] != 0, or rows, as f32
//                     (exact to 2^24 rows)
// so that a run hands over [2, width] per site instead of [rows, width]. One
// invocation per channel, walking the rows: neighbouring invocations read
// neighbouring columns of a row. Dispatch: ceil(width / 64) workgroups.

struct Params {
    rows: u32,
    width: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;             // [rows, width]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;     // [2, width]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.width) { return; }
    var sum_sq = 0.0;
    var first = p.rows;
    for (var r = 0u; r < p.rows; r++) {
        let value = x[r * p.width + c];
        sum_sq += value * value;
        if (value != 0.0 && first == p.rows) {
            first = r;
        }
    }
    out[c] = sum_sq;
    out[p.width + c] = f32(first);
}
