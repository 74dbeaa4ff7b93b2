// The backward pass through causal softmax attention (scale 1/sqrt(d_head),
// the sink's logit only in the denominator: its value is zero), per head,
// for one sequence of T rows. With p_ij the weights and dy the gradient at y:
//   dp_ij = dy_i . v_j            ds_ij = p_ij (dp_ij - sum_j' p_ij' dp_ij') scale
//   dq_i  = sum_j ds_ij k_j       dk_j  = sum_i ds_ij q_i       dv_j = sum_i p_ij dy_i
// Two entry points: `queries`, one invocation per (head, query row i),
// computes the weights again, dq_i, and stores p and ds in [n_head, T, T];
// `keys`, one invocation per (head, key row j), sums them into dk_j and dv_j
// (a sum over i per j: no two invocations write one row).
// D_HEAD is set when the pipeline is built.

const D_HEAD: u32 = {{D_HEAD}}u;

struct Params {
    rows: u32,          // T
    n_head: u32,
    has_sink: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;             // [T, n_head * D_HEAD]
@group(0) @binding(2) var<storage, read> k: array<f32>;             // [T, n_head * D_HEAD]
@group(0) @binding(3) var<storage, read> v: array<f32>;             // [T, n_head * D_HEAD]
@group(0) @binding(4) var<storage, read> sink: array<f32>;          // [n_head] (unused without sink)
@group(0) @binding(5) var<storage, read> dy: array<f32>;            // [T, n_head * D_HEAD]
@group(0) @binding(6) var<storage, read_write> weights: array<f32>; // [n_head, T, T]: p_ij
@group(0) @binding(7) var<storage, read_write> dscores: array<f32>; // [n_head, T, T]: ds_ij
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;      // [T, n_head * D_HEAD] (`queries`)
@group(0) @binding(9) var<storage, read_write> dk: array<f32>;      // [T, n_head * D_HEAD] (`keys`)
@group(0) @binding(10) var<storage, read_write> dv: array<f32>;     // [T, n_head * D_HEAD] (`keys`)

// Invocations are numbered head-major (index = h * T + row): neighbouring
// invocations share a head, so they read the same key (or query) row, and
// `keys`' neighbours read neighbouring entries of weights and dscores.
// Measured at the released shape, 256 tokens, on lavapipe: row-major
// numbering with the scores computed three times took 7.2 s of an 8.9 s
// backward pass; head-major, each score computed once, about 2.7 s of 4.3 s.

@compute @workgroup_size(64)
fn queries(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let index = gid.x + gid.y * nwg.x * 64u;
    if (index >= p.rows * p.n_head) { return; }
    let h = index / p.rows;
    let i = index % p.rows;
    let width = p.n_head * D_HEAD;
    let i_base = i * width + h * D_HEAD;
    let pair_base = (h * p.rows + i) * p.rows;
    var query: array<f32, D_HEAD>;
    var grad: array<f32, D_HEAD>;
    for (var d = 0u; d < D_HEAD; d++) {
        query[d] = q[i_base + d];
        grad[d] = dy[i_base + d];
    }
    // The scores (kept in `weights` until the next pass), and the softmax's
    // maximum and denominator in one online pass, as forward.
    var max_score = -3.0e38;
    var denom = 0.0;
    if (p.has_sink != 0u) {
        max_score = sink[h];
        denom = 1.0;
    }
    for (var j = 0u; j <= i; j++) {
        let j_base = j * width + h * D_HEAD;
        var s = 0.0;
        for (var d = 0u; d < D_HEAD; d++) { s += query[d] * k[j_base + d]; }
        s *= p.scale;
        weights[pair_base + j] = s;
        let new_max = max(max_score, s);
        denom = denom * exp(max_score - new_max) + exp(s - new_max);
        max_score = new_max;
    }
    // p_ij and dp_ij, and sum_j p_ij dp_ij.
    var mean = 0.0;
    for (var j = 0u; j <= i; j++) {
        let j_base = j * width + h * D_HEAD;
        var dp = 0.0;
        for (var d = 0u; d < D_HEAD; d++) {
            dp += grad[d] * v[j_base + d];
        }
        let weight = exp(weights[pair_base + j] - max_score) / denom;
        weights[pair_base + j] = weight;
        dscores[pair_base + j] = dp;
        mean += weight * dp;
    }
    var acc: array<f32, D_HEAD>;
    for (var j = 0u; j <= i; j++) {
        let j_base = j * width + h * D_HEAD;
        let ds = weights[pair_base + j] * (dscores[pair_base + j] - mean) * p.scale;
        dscores[pair_base + j] = ds;
        for (var d = 0u; d < D_HEAD; d++) {
            acc[d] += ds * k[j_base + d];
        }
    }
    for (var d = 0u; d < D_HEAD; d++) {
        dq[i_base + d] = acc[d];
    }
}

@compute @workgroup_size(64)
fn keys(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let index = gid.x + gid.y * nwg.x * 64u;
    if (index >= p.rows * p.n_head) { return; }
    let h = index / p.rows;
    let j = index % p.rows;
    let width = p.n_head * D_HEAD;
    var dk_acc: array<f32, D_HEAD>;
    var dv_acc: array<f32, D_HEAD>;
    for (var i = j; i < p.rows; i++) {
        let i_base = i * width + h * D_HEAD;
        let pair = (h * p.rows + i) * p.rows + j;
        let ds = dscores[pair];
        let weight = weights[pair];
        for (var d = 0u; d < D_HEAD; d++) {
            dk_acc[d] += ds * q[i_base + d];
            dv_acc[d] += weight * dy[i_base + d];
        }
    }
    let j_base = j * width + h * D_HEAD;
    for (var d = 0u; d < D_HEAD; d++) {
        dk[j_base + d] = dk_acc[d];
        dv[j_base + d] = dv_acc[d];
    }
}
