// The backward pass through causal softmax attention (scale 1/sqrt(d_head),
// the sink's logit only in the denominator: its value is zero), per head,
// for a batch of sequences of seq_len rows each (row r = b * seq_len + t
// attends within its own sequence). With p_ij the weights and dy the
// gradient at y:
//   dp_ij = dy_i . v_j            ds_ij = p_ij (dp_ij - sum_j' p_ij' dp_ij') scale
//   dq_i  = sum_j ds_ij k_j       dk_j  = sum_i ds_ij q_i       dv_j = sum_i p_ij dy_i
// Two entry points. `queries`, one invocation per (head, query row i), goes
// over the keys once (online softmax, as forward) for dq_i, then turns the
// scores and dp it stored into p_ij and ds_ij in [n_head, R, seq_len].
// `keys`, one workgroup per (head, sequence, tile of 64 key rows j), sums
// them into dk_j and dv_j (a sum over i per j: no two invocations write one
// row). D_HEAD is set when the pipeline is built.

const D_HEAD: u32 = {{D_HEAD}}u;
const TILE: u32 = 64u;

struct Params {
    rows: u32,          // R = batch * seq_len
    seq_len: u32,       // T
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
@group(0) @binding(5) var<storage, read> dy: array<f32>;            // [R, n_head * D_HEAD]
@group(0) @binding(6) var<storage, read_write> weights: array<f32>; // [n_head, R, T]: p_ij, j within i's sequence
@group(0) @binding(7) var<storage, read_write> dscores: array<f32>; // [n_head, R, T]: ds_ij
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;      // [R, n_head * D_HEAD] (`queries`)
@group(0) @binding(9) var<storage, read_write> dk: array<f32>;      // [R, n_head * D_HEAD] (`keys`)
@group(0) @binding(10) var<storage, read_write> dv: array<f32>;     // [R, n_head * D_HEAD] (`keys`)

// Measured at the released shape (128 heads x 16), 256 tokens, one layer on
// lavapipe: 340 ms with three passes over the keys in `queries` (scores,
// then dp, then dq) and one invocation per key row in `keys`; 240 ms with
// one pass and `keys` in workgroup tiles, where every lane reads the same
// row of q and dy (lavapipe's loads cost about as much as the arithmetic).
// Register-blocking several rows per invocation was slower there.

// Invocations are numbered head-major (index = h * R + r): neighbouring
// invocations share a head, so they read the same key row.
@compute @workgroup_size(64)
fn queries(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let index = gid.x + gid.y * nwg.x * 64u;
    if (index >= p.rows * p.n_head) { return; }
    let h = index / p.rows;
    let r = index % p.rows;
    let i = r % p.seq_len;              // the query's position in its sequence
    let first = r - i;                  // its sequence's first row
    let width = p.n_head * D_HEAD;
    let r_base = r * width + h * D_HEAD;
    let pair_base = (h * p.rows + r) * p.seq_len;
    var query: array<f32, D_HEAD>;
    var grad: array<f32, D_HEAD>;
    for (var d = 0u; d < D_HEAD; d++) {
        query[d] = q[r_base + d];
        grad[d] = dy[r_base + d];
    }
    // One online pass: with e_j = exp(s_ij - m) for the running maximum m,
    // denom = sum e_j, dot = sum e_j dp_ij, a = sum e_j dp_ij k_j and
    // b = sum e_j k_j, each rescaled when m grows. Then with
    // mean = sum_j p_ij dp_ij = dot / denom,
    //   dq_i = scale sum_j p_ij (dp_ij - mean) k_j = scale (a - mean b) / denom.
    var m = -3.0e38;
    var denom = 0.0;
    if (p.has_sink != 0u) {
        m = sink[h];
        denom = 1.0;
    }
    var dot = 0.0;
    var a: array<f32, D_HEAD>;
    var b: array<f32, D_HEAD>;
    for (var j = 0u; j <= i; j++) {
        let j_base = (first + j) * width + h * D_HEAD;
        var key: array<f32, D_HEAD>;
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < D_HEAD; d++) {
            key[d] = k[j_base + d];
            s += query[d] * key[d];
            dp += grad[d] * v[j_base + d];
        }
        s *= p.scale;
        weights[pair_base + j] = s;
        dscores[pair_base + j] = dp;
        let new_m = max(m, s);
        let rescale = exp(m - new_m);
        let e = exp(s - new_m);
        denom = denom * rescale + e;
        dot = dot * rescale + e * dp;
        for (var d = 0u; d < D_HEAD; d++) {
            a[d] = a[d] * rescale + e * dp * key[d];
            b[d] = b[d] * rescale + e * key[d];
        }
        m = new_m;
    }
    let mean = dot / denom;
    for (var d = 0u; d < D_HEAD; d++) {
        dq[r_base + d] = p.scale * (a[d] - mean * b[d]) / denom;
    }
    // The scores and dp, stored above, into p_ij and ds_ij for `keys`.
    let log_denom = m + log(denom);
    for (var j = 0u; j <= i; j++) {
        let weight = exp(weights[pair_base + j] - log_denom);
        weights[pair_base + j] = weight;
        dscores[pair_base + j] = weight * (dscores[pair_base + j] - mean) * p.scale;
    }
}

// Workgroups are numbered (head, sequence, tile): h, the sequence and the
// loop over query rows are uniform in a workgroup; lane j's row is in the
// tile, and rows i < j (or past the sequence's end) add nothing.
@compute @workgroup_size(64)
fn keys(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let group = wg.x + wg.y * nwg.x;
    let tiles = (p.seq_len + TILE - 1u) / TILE;
    let sequences = p.rows / p.seq_len;
    let h = group / (sequences * tiles);
    if (h >= p.n_head) { return; }
    let first = (group / tiles % sequences) * p.seq_len;
    let tile = group % tiles * TILE;
    let j = tile + lane;
    let width = p.n_head * D_HEAD;
    var dk_acc: array<f32, D_HEAD>;
    var dv_acc: array<f32, D_HEAD>;
    for (var i = tile; i < p.seq_len; i++) {
        let i_base = (first + i) * width + h * D_HEAD;
        var ds = 0.0;
        var weight = 0.0;
        if (j <= i) {
            let pair = (h * p.rows + first + i) * p.seq_len + j;
            ds = dscores[pair];
            weight = weights[pair];
        }
        for (var d = 0u; d < D_HEAD; d++) {
            dk_acc[d] += ds * q[i_base + d];
            dv_acc[d] += weight * dy[i_base + d];
        }
    }
    if (j < p.seq_len) {
        let j_base = (first + j) * width + h * D_HEAD;
        for (var d = 0u; d < D_HEAD; d++) {
            dk[j_base + d] = dk_acc[d];
            dv[j_base + d] = dv_acc[d];
        }
    }
}
