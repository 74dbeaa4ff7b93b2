//! The model file's format: `model.safetensors` read ([`TensorFile`], a
//! [`TensorSource`]) and written ([`CompactFile`], and dense views for the
//! release's form), and plain f32 safetensors for activations.
//!
//! `model.safetensors` holds each tensor dense, as the release does, or in
//! the compact form that stores only nonzeros: tensor `NAME` of shape
//! `[r, c]` as `NAME.nz_index` (U32 `[nnz]`, ascending row-major positions)
//! and `NAME.nz_value` (F32 `[nnz]`), with `"NAME": "[r, c]"` in the file's
//! metadata. Both are plain safetensors files; a file may mix the two forms.

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::weights::Param;
use super::{ModelError, SparseMatrix, Tensor};

/// Where a model's tensors come from when it is built
/// ([`super::Model::from_source`]): a model file, or a conversion's staged
/// tensors. Each call checks the tensor's shape and values and names the
/// tensor at fault.
pub trait TensorSource {
    fn has(&self, name: &str) -> bool;
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError>;
    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor, ModelError>;
    fn sparse(&self, name: &str, rows: usize, cols: usize) -> Result<SparseMatrix, ModelError>;
}

/// A parameter as a dense f32 tensor, made only when it is written.
pub(super) struct DenseView<'a> {
    pub shape: Vec<usize>,
    pub param: Param<'a>,
}

impl safetensors::View for DenseView<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.param {
            Param::Sparse(m) => bytemuck::cast_slice(&m.to_dense()).to_vec().into(),
            Param::Dense(_, values) => bytemuck::cast_slice(values).into(),
        }
    }

    fn data_len(&self) -> usize {
        4 * self.shape().iter().product::<usize>()
    }
}

/// A safetensors file in the making, in the form [`Model::from_bytes`]
/// reads: each tensor f32 dense, or by its nonzeros (see the module's
/// documentation).
#[derive(Default)]
pub(crate) struct CompactFile {
    /// Name, dtype, shape, little-endian bytes.
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    /// The shapes of the tensors stored by their nonzeros.
    metadata: HashMap<String, String>,
}

impl CompactFile {
    pub(crate) fn dense(&mut self, name: &str, shape: Vec<usize>, values: &[f32]) {
        self.tensors.push((name.to_string(), Dtype::F32, shape, bytemuck::cast_slice(values).to_vec()));
    }

    /// Tensor `name` of `shape` by its nonzeros: `values` at the ascending
    /// row-major positions `index`.
    pub(crate) fn nonzeros(&mut self, name: &str, shape: &[usize], index: &[u32], values: &[f32]) {
        self.metadata.insert(name.to_string(), format!("{shape:?}"));
        self.tensors.push((format!("{name}{NZ_INDEX}"), Dtype::U32, vec![index.len()], bytemuck::cast_slice(index).to_vec()));
        self.tensors.push((format!("{name}{NZ_VALUE}"), Dtype::F32, vec![values.len()], bytemuck::cast_slice(values).to_vec()));
    }

    /// The file, or why the format cannot hold these tensors (a header over
    /// its 100 MB limit).
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let views = self.tensors.iter().map(|(name, dtype, shape, data)| {
            (name.clone(), TensorView::new(*dtype, shape.clone(), data).expect("shape and data agree"))
        });
        Ok(sorted_header(safetensors::serialize(views, Some(self.metadata.clone())).map_err(|e| e.to_string())?))
    }
}

/// The file with its header's keys in sorted order. safetensors writes the
/// metadata in hash-map order, which changes from run to run; one model must
/// give one file, byte for byte. Keys and values stay as they are, so the
/// header keeps its length.
fn sorted_header(mut file: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).expect("safetensors wrote JSON");
    let mut sorted = serde_json::to_vec(&header).expect("JSON serializes");
    if sorted.len() <= n {
        sorted.resize(n, b' '); // the format's padding
        file[8..8 + n].copy_from_slice(&sorted);
    }
    file
}

/// Suffixes of a tensor stored in the compact form.
const NZ_INDEX: &str = ".nz_index";
const NZ_VALUE: &str = ".nz_value";

/// A parsed safetensors file, with checks that name the tensor at fault.
pub(super) struct TensorFile<'a> {
    tensors: SafeTensors<'a>,
    /// The header's metadata: shapes of the tensors stored by their nonzeros.
    metadata: HashMap<String, String>,
}

/// The nonzeros of a compact tensor: ascending row-major positions and values.
struct Nonzeros {
    index: Vec<u32>,
    values: Vec<f32>,
}

impl<'a> TensorFile<'a> {
    pub(super) fn parse(bytes: &'a [u8]) -> Result<TensorFile<'a>, ModelError> {
        // The crate checks all of this too; checking first gives messages
        // that say what is wrong with the file in a user's words.
        let file_error = |m: String| ModelError::File(m);
        if bytes.len() < 8 {
            return Err(file_error(format!(
                "file is truncated: {} bytes, shorter than the 8-byte header length",
                bytes.len()
            )));
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if header_len > (bytes.len() - 8) as u64 {
            return Err(file_error(format!(
                "header length {header_len} bytes is beyond the end of the file ({} bytes): truncated or not a safetensors file",
                bytes.len()
            )));
        }
        // The header's own account of the data's length tells a cut file
        // from one with bytes after its data.
        let header: safetensors::tensor::Metadata = serde_json::from_slice(&bytes[8..][..header_len as usize])
            .map_err(|e| file_error(format!("not a valid safetensors file: {e}")))?;
        let data_len = header.data_len() as u64;
        let have = (bytes.len() - 8) as u64 - header_len;
        if have < data_len {
            return Err(file_error(format!("file is truncated: its tensor data is {have} bytes, but the header says {data_len}")));
        }
        if have > data_len {
            return Err(file_error(format!("{} bytes follow the end of its tensor data: not a safetensors file, or two files joined", have - data_len)));
        }
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| file_error(format!("not a valid safetensors file: {e}")))?;
        // The shapes of compact tensors, from the header parsed above.
        let metadata = header.metadata().clone().unwrap_or_default();
        Ok(TensorFile { tensors, metadata })
    }


    /// The f32 values of `name` in row-major order, after checking its dtype
    /// and shape; stored dense or compact.
    fn values(&self, name: &str, shape: &[usize]) -> Result<Box<dyn Iterator<Item = f32> + 'a>, ModelError> {
        if let Some(nonzeros) = self.nonzeros(name, shape)? {
            let mut dense = vec![0.0; shape.iter().product()];
            for (&i, &v) in nonzeros.index.iter().zip(&nonzeros.values) {
                dense[i as usize] = v;
            }
            return Ok(Box::new(dense.into_iter()));
        }
        let view = self.view(name, Dtype::F32)?;
        if view.shape() != shape {
            return Err(ModelError::Shape { name: name.into(), found: view.shape().to_vec(), expected: shape.to_vec() });
        }
        finite(name, little_endian_f32(view.data()))?;
        Ok(Box::new(little_endian_f32(view.data())))
    }

    /// Tensor `name`, after checking its dtype.
    fn view(&self, name: &str, dtype: Dtype) -> Result<TensorView<'a>, ModelError> {
        let view = self.tensors.tensor(name).map_err(|_| ModelError::MissingTensor { name: name.into() })?;
        if view.dtype() != dtype {
            return Err(ModelError::Dtype { name: name.into(), dtype: format!("{:?}", view.dtype()) });
        }
        Ok(view)
    }

    /// The nonzeros of `name` when it is stored in the compact form (None
    /// when it is stored dense), checked: its recorded shape is `shape`, and
    /// its positions are ascending and inside the tensor.
    fn nonzeros(&self, name: &str, shape: &[usize]) -> Result<Option<Nonzeros>, ModelError> {
        let index_name = format!("{name}{NZ_INDEX}");
        if self.tensors.tensor(&index_name).is_err() {
            return Ok(None);
        }
        let bad = |what: String| ModelError::File(format!("compact tensor `{name}`: {what}"));
        let recorded = self.metadata.get(name).ok_or_else(|| bad("its shape is missing from the metadata".into()))?;
        let found: Vec<usize> =
            serde_json::from_str(recorded).map_err(|_| bad(format!("its shape {recorded:?} is not a list of sizes")))?;
        if found != shape {
            return Err(ModelError::Shape { name: name.into(), found, expected: shape.to_vec() });
        }
        let index_view = self.view(&index_name, Dtype::U32).map_err(|_| bad("its positions must be U32".into()))?;
        let value_view = self.view(&format!("{name}{NZ_VALUE}"), Dtype::F32)?;
        let nnz = index_view.shape().iter().product::<usize>();
        if index_view.shape().len() != 1 || value_view.shape() != [nnz] {
            return Err(bad(format!(
                "positions {:?} and values {:?} must be two lists of the same length",
                index_view.shape(),
                value_view.shape()
            )));
        }
        let index: Vec<u32> = index_view.data().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let size = shape.iter().product::<usize>();
        for (k, pair) in index.windows(2).enumerate() {
            if pair[0] >= pair[1] {
                return Err(bad(format!("positions must ascend, but entry {} is {} after {}", k + 1, pair[1], pair[0])));
            }
        }
        if let Some(&last) = index.last() {
            if last as usize >= size {
                return Err(bad(format!("position {last} is outside its {size} entries")));
            }
        }
        finite(name, little_endian_f32(value_view.data()))?;
        if self.tensors.tensor(name).is_ok() {
            return Err(bad("it is stored both dense and by its nonzeros: which one is the model is not clear".into()));
        }
        Ok(Some(Nonzeros { index, values: little_endian_f32(value_view.data()).collect() }))
    }
}

impl TensorSource for TensorFile<'_> {
    fn has(&self, name: &str) -> bool {
        self.tensors.tensor(name).is_ok() || self.tensors.tensor(&format!("{name}{NZ_INDEX}")).is_ok()
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        Ok(self.values(name, &[len])?.collect())
    }

    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor, ModelError> {
        Ok(Tensor::from_vec(rows, cols, self.values(name, &[rows, cols])?.collect()))
    }

    fn sparse(&self, name: &str, rows: usize, cols: usize) -> Result<SparseMatrix, ModelError> {
        if let Some(nonzeros) = self.nonzeros(name, &[rows, cols])? {
            return Ok(sparse_from_nonzeros(rows, cols, &nonzeros.index, &nonzeros.values));
        }
        SparseMatrix::from_dense(rows, cols, self.values(name, &[rows, cols])?)
            .ok_or_else(|| ModelError::File(format!("tensor `{name}` has too many nonzeros to index")))
    }
}

/// A `[rows, cols]` matrix from its nonzeros at ascending row-major
/// positions `index` (checked by the caller), straight to compressed rows.
pub(crate) fn sparse_from_nonzeros(rows: usize, cols: usize, index: &[u32], values: &[f32]) -> SparseMatrix {
    let mut m = SparseMatrix { rows, cols, row_ptr: vec![0; rows + 1], col_idx: Vec::new(), values: Vec::new() };
    for (&i, &v) in index.iter().zip(values).filter(|(_, v)| **v != 0.0) {
        let (r, c) = (i as usize / cols, i as usize % cols);
        m.row_ptr[r + 1] += 1;
        m.col_idx.push(c as u32);
        m.values.push(v);
    }
    for r in 0..rows {
        m.row_ptr[r + 1] += m.row_ptr[r];
    }
    m
}

/// Refuses NaN and infinite weights: a forward pass over them only prints
/// NaN probabilities.
pub(crate) fn finite(name: &str, values: impl Iterator<Item = f32>) -> Result<(), ModelError> {
    match values.enumerate().find(|(_, v)| !v.is_finite()) {
        Some((at, v)) => Err(ModelError::File(format!("tensor `{name}` holds {v} at entry {at}: weights must be finite numbers"))),
        None => Ok(()),
    }
}

/// Little-endian f32s; the data need not be 4-byte aligned.
fn little_endian_f32(data: &[u8]) -> impl Iterator<Item = f32> + '_ {
    data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A run as f32 safetensors: `logits` `[T, vocab]` and every recorded site
/// `[T, width]` under its name (`0.attn.q`, …), as `forward --out` and the
/// page's export write it.
pub fn activations_safetensors(logits: &super::Tensor, recording: &super::Recording) -> Vec<u8> {
    let named = std::iter::once(("logits".to_string(), logits)).chain(recording.iter().map(|(site, acts)| (site.to_string(), acts)));
    f32_safetensors(named.map(|(name, t)| (name, vec![t.rows, t.cols], t.data.as_slice())))
}

/// `(name, shape, values)` f32 tensors as safetensors bytes (every shape
/// must hold exactly its values).
pub fn f32_safetensors<'a>(tensors: impl IntoIterator<Item = (String, Vec<usize>, &'a [f32])>) -> Vec<u8> {
    let views = tensors.into_iter().map(|(name, shape, values)| {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape, bytemuck::cast_slice(values))
            .expect("shape and data agree");
        (name, view)
    });
    safetensors::serialize(views, None).expect("f32 tensors serialize")
}
