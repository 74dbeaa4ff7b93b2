// Embedding gather: out[r, :] = table[id(r), :] (+ pos_table[r % seq_len, :]).
//
// Rows are r = b * seq_len + t for variant b and token t. id(r) is tokens[r],
// or the position t when the table is the position embedding itself (the
// concatenated-position-embedding models need wpe rows as their own tensor).
// Sparse tables are packed CSR in one u32 buffer:
//   [0, rows]                  row pointers (rows + 1)
//   [rows + 1, + nnz)          column of each nonzero
//   [rows + 1 + nnz, + nnz)    f32 bits of each nonzero
// One workgroup per output row.

struct Params {
    rows: u32,          // R = batch * seq_len
    width: u32,         // columns of the table and of out
    seq_len: u32,       // T
    table_rows: u32,    // rows of table (vocab_size or block_size)
    table_nnz: u32,
    pos_rows: u32,      // rows of pos_table (block_size)
    pos_nnz: u32,
    flags: u32,         // bit 0: ids are positions; bit 1: add pos_table
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;        // [R]
@group(0) @binding(2) var<storage, read> table: array<u32>;         // packed CSR [table_rows, width]
@group(0) @binding(3) var<storage, read> pos_table: array<u32>;     // packed CSR [pos_rows, width]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;     // [R, width]

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let r = wg.x + wg.y * nwg.x;
    if (r >= p.rows) { return; }
    let t = r % p.seq_len;
    let base = r * p.width;
    for (var c = lane; c < p.width; c += WG) {
        out[base + c] = 0.0;
    }
    storageBarrier();
    var id = tokens[r];
    if ((p.flags & 1u) != 0u) { id = t; }
    let start = table[id];
    let end = table[id + 1u];
    let cols = p.table_rows + 1u;
    let vals = cols + p.table_nnz;
    for (var i = start + lane; i < end; i += WG) {
        out[base + table[cols + i]] = bitcast<f32>(table[vals + i]);
    }
    storageBarrier();
    if ((p.flags & 2u) != 0u) {
        let pstart = pos_table[t];
        let pend = pos_table[t + 1u];
        let pcols = p.pos_rows + 1u;
        let pvals = pcols + p.pos_nnz;
        for (var i = pstart + lane; i < pend; i += WG) {
            let c = base + pos_table[pcols + i];
            out[c] = out[c] + bitcast<f32>(pos_table[pvals + i]);
        }
    }
}
