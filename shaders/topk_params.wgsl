// What both AbsTopK kernels (topk.wgsl, topk_rows.wgsl) bind, put before
// either file when its pipeline is built.

struct Params {
    rows: u32,
    width: u32,
    k: u32,             // k < width (the engine skips the op otherwise)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;       // [R, width]

// |v|'s bits: for non-negative floats their order as integers is the
// floats' order (NaN above infinity).
fn abs_bits(v: f32) -> u32 {
    return bitcast<u32>(v) & 0x7fffffffu;
}
