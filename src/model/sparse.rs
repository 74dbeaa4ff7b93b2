use super::Tensor;

/// A weight matrix `[rows, cols]` that keeps only its nonzeros, in compressed
/// sparse row form: row `r` holds `values[row_ptr[r]..row_ptr[r + 1]]` at
/// columns `col_idx[..]` (ascending). Memory is `4 (rows + 1) + 8 nnz` bytes.
///
/// Rows are PyTorch's `weight` rows, i.e. output features of a linear layer
/// (`y = x @ W^T`), or vocabulary entries of an embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseMatrix {
    pub rows: usize,
    pub cols: usize,
    pub row_ptr: Vec<u32>,
    pub col_idx: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseMatrix {
    /// Keeps the nonzeros of a dense row-major matrix given as `rows * cols`
    /// values. Returns None if it has more nonzeros than u32 can index.
    pub fn from_dense(rows: usize, cols: usize, dense: impl IntoIterator<Item = f32>) -> Option<SparseMatrix> {
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let mut col_idx = Vec::new();
        let mut values = Vec::new();
        row_ptr.push(0);
        let mut dense = dense.into_iter();
        for _ in 0..rows {
            for c in 0..cols {
                let v = dense.next()?;
                if v != 0.0 {
                    col_idx.push(c as u32);
                    values.push(v);
                }
            }
            row_ptr.push(u32::try_from(values.len()).ok()?);
        }
        Some(SparseMatrix { rows, cols, row_ptr, col_idx, values })
    }

    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Bytes held in memory by the sparse form.
    pub fn bytes(&self) -> usize {
        4 * self.row_ptr.len() + 4 * self.col_idx.len() + 4 * self.values.len()
    }

    /// Row `r` as (columns, values).
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let span = self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize;
        (&self.col_idx[span.clone()], &self.values[span])
    }

    /// The dense row-major `[rows, cols]` values.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            let (cols, values) = self.row(r);
            for (&c, &v) in cols.iter().zip(values) {
                dense[r * self.cols + c as usize] = v;
            }
        }
        dense
    }

    /// `x @ W^T`: x is `[T, cols]`, the result `[T, rows]`. Work is T * nnz.
    pub fn matmul_transposed(&self, x: &Tensor) -> Tensor {
        assert_eq!(x.cols, self.cols, "input width does not match the weight");
        let mut out = Tensor::zeros(x.rows, self.rows);
        for (x_row, out_row) in x.rows_iter().zip(out.rows_iter_mut()) {
            for (r, out_value) in out_row.iter_mut().enumerate() {
                *out_value = self.dot_row(r, x_row);
            }
        }
        out
    }

    /// Row `r` of W times `x` (`[cols]`): one entry of `matmul_transposed`,
    /// summed in the same order, so the same value.
    pub fn dot_row(&self, r: usize, x: &[f32]) -> f32 {
        let (cols, values) = self.row(r);
        cols.iter().zip(values).map(|(&c, &w)| w * x[c as usize]).sum()
    }

    /// `W^T` `[cols, rows]`, in the same form: what the GPU's backward pass
    /// multiplies by (its kernel reads rows, not columns).
    pub fn transpose(&self) -> SparseMatrix {
        let mut counts = vec![0u32; self.cols + 1];
        self.col_idx.iter().for_each(|&c| counts[c as usize + 1] += 1);
        let row_ptr: Vec<u32> = counts.iter().scan(0u32, |sum, &n| { *sum += n; Some(*sum) }).collect();
        let mut next = row_ptr.clone();
        let (mut col_idx, mut values) = (vec![0u32; self.nnz()], vec![0f32; self.nnz()]);
        for r in 0..self.rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let at = next[c as usize] as usize;
                (col_idx[at], values[at]) = (r as u32, v);
                next[c as usize] += 1;
            }
        }
        SparseMatrix { rows: self.cols, cols: self.rows, row_ptr, col_idx, values }
    }

    /// Rows `ids` stacked densely: `[ids.len(), cols]` (an embedding lookup).
    pub fn gather_rows(&self, ids: impl IntoIterator<Item = usize>) -> Tensor {
        let ids: Vec<usize> = ids.into_iter().collect();
        let mut out = Tensor::zeros(ids.len(), self.cols);
        for (&id, out_row) in ids.iter().zip(out.rows_iter_mut()) {
            let (cols, values) = self.row(id);
            for (&c, &w) in cols.iter().zip(values) {
                out_row[c as usize] = w;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_matches_dense_product() {
        // W = [[1, 0, 2], [0, 0, 0], [0, 3, 0]]
        let w = SparseMatrix::from_dense(3, 3, [1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0]).unwrap();
        assert_eq!(w.nnz(), 3);
        assert_eq!(w.row_ptr, vec![0, 2, 2, 3]);
        let x = Tensor::from_vec(2, 3, vec![1.0, 1.0, 1.0, 0.5, -1.0, 2.0]);
        let y = w.matmul_transposed(&x);
        assert_eq!(y.data, vec![3.0, 0.0, 3.0, 4.5, 0.0, -3.0]);
        assert_eq!(w.gather_rows([2, 0]).data, vec![0.0, 3.0, 0.0, 1.0, 0.0, 2.0]);
        let t = w.transpose();
        assert_eq!(t.to_dense(), vec![1.0, 0.0, 0.0, 0.0, 0.0, 3.0, 2.0, 0.0, 0.0]);
        assert_eq!(t.transpose(), w);
    }

    #[test]
    fn short_input_is_refused() {
        assert!(SparseMatrix::from_dense(2, 2, [1.0, 2.0, 3.0]).is_none());
    }
}
