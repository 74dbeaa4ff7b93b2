/// A row-major f32 matrix. Activations are `[T, width]`: one row per token.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn zeros(rows: usize, cols: usize) -> Tensor {
        Tensor { rows, cols, data: vec![0.0; rows * cols] }
    }

    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Tensor {
        assert_eq!(data.len(), rows * cols, "tensor data does not fit [{rows}, {cols}]");
        Tensor { rows, cols, data }
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn rows_iter(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.cols.max(1))
    }

    pub fn rows_iter_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        self.data.chunks_exact_mut(self.cols.max(1))
    }

    /// Columns `start..start + width` of every row: `[rows, width]`.
    pub fn columns(&self, start: usize, width: usize) -> Tensor {
        let data = self.rows_iter().flat_map(|row| &row[start..start + width]).copied().collect();
        Tensor::from_vec(self.rows, width, data)
    }

    /// `[self | other]` side by side: `[rows, self.cols + other.cols]`.
    pub fn concat_cols(&self, other: &Tensor) -> Tensor {
        assert_eq!(self.rows, other.rows);
        let data = self
            .rows_iter()
            .zip(other.rows_iter())
            .flat_map(|(a, b)| a.iter().chain(b))
            .copied()
            .collect();
        Tensor::from_vec(self.rows, self.cols + other.cols, data)
    }

    pub fn add_assign(&mut self, other: &Tensor) {
        assert_eq!((self.rows, self.cols), (other.rows, other.cols));
        self.data.iter_mut().zip(&other.data).for_each(|(a, b)| *a += b);
    }

    /// Adds `vector` (`[cols]`) to every row.
    pub fn add_row_vector(&mut self, vector: &[f32]) {
        assert_eq!(vector.len(), self.cols);
        for row in self.rows_iter_mut() {
            row.iter_mut().zip(vector).for_each(|(a, b)| *a += b);
        }
    }

    pub fn map_inplace(&mut self, f: impl Fn(f32) -> f32) {
        self.data.iter_mut().for_each(|v| *v = f(*v));
    }

    /// Root mean square of all entries: the "norm" the page shows per site.
    pub fn rms(&self) -> f32 {
        if self.data.is_empty() {
            return 0.0;
        }
        let sum: f64 = self.data.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        (sum / self.data.len() as f64).sqrt() as f32
    }
}
