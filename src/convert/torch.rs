//! PyTorch checkpoints (`torch.save`, the release's `final_model.pt`): a zip
//! holding `<name>/data.pkl`, a pickle of the state dict whose tensors point
//! at storages, and each storage's raw little-endian bytes at
//! `<name>/data/<key>`. Tensors are views: any shape, stride and offset into
//! a storage that other tensors may share (tied embeddings, transposes).

use std::io::{Read, Seek};
use std::rc::Rc;

use zip::ZipArchive;

use super::pickle::{self, StorageDtype, TensorRef, Value};
use super::{Checkpoint, ConvertError, DenseTensor, Float};

pub struct TorchFile<R: Read + Seek> {
    archive: Archive<R>,
    /// The state dict's tensors, shared with the pickle's values: a file may
    /// name one record many times.
    tensors: Vec<(String, Rc<TensorRef>)>,
}

/// A `torch.save` archive opened: its index, and where its entries sit.
pub(super) struct Archive<R: Read + Seek> {
    zip: ZipArchive<R>,
    /// `<name>/`, the folder all entries sit in.
    prefix: String,
    /// The file's length in bytes.
    file_len: u64,
    /// The last storage read, kept when `keep_last` (many small tensors of
    /// a `viz_data.pt` may be views of one storage); a checkpoint's weights
    /// are read once each, and keeping one would double the peak memory.
    last: Option<(String, Rc<Vec<u8>>)>,
    pub(super) keep_last: bool,
}

impl<R: Read + Seek> Archive<R> {
    /// Reads the archive's index and runs its pickle (refusing any pickle
    /// that asks for more than tensors and plain containers).
    pub(super) fn open(mut reader: R) -> Result<(Archive<R>, Value), ConvertError> {
        let bad = |m: String| ConvertError::Torch(m);
        let file_len = reader.seek(std::io::SeekFrom::End(0)).map_err(|e| bad(e.to_string()))?;
        let mut zip = ZipArchive::new(reader).map_err(|e| {
            bad(format!("not a zip archive ({e}); torch.save writes one since torch 1.6, so an older file must be saved again"))
        })?;
        let pickles: Vec<String> = zip.file_names().filter(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1).map(String::from).collect();
        let [pickle_name] = &pickles[..] else {
            return Err(bad(format!("a checkpoint holds one <name>/data.pkl; this archive holds {}", pickles.len())));
        };
        let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
        // Older torch writes no byteorder entry; one that is there must be read
        // (a read by ranges that misses it must load it, not skip the check).
        let byteorder = format!("{prefix}byteorder");
        if zip.index_for_name(&byteorder).is_some() {
            let order = read_entry(&mut zip, &byteorder, file_len)?;
            if order.trim_ascii() != b"little" {
                let order = String::from_utf8_lossy(&order[..order.len().min(16)]).into_owned();
                return Err(bad(format!("its storages are {order:?}-endian; only little-endian is supported")));
            }
        }
        let data = read_entry(&mut zip, pickle_name, file_len)?;
        let root = pickle::load(&data)?;
        Ok((Archive { zip, prefix, file_len, last: None, keep_last: false }, root))
    }

    /// Visits the bytes of each element of `tensor`'s view in row-major
    /// order (`dtype().size()` bytes each); `what` names it in errors.
    pub(super) fn read_view(&mut self, tensor: &TensorRef, what: &str, visit: &mut dyn FnMut(&[u8])) -> Result<(), ConvertError> {
        let bad = |m: String| ConvertError::Torch(format!("{what}: {m}"));
        let storage = &tensor.storage;
        let size = storage.dtype.size();
        let numel = tensor.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| bad("its size overflows".into()))?;
        // A view of a saved tensor never repeats elements (a broadcast one
        // could ask for more memory than the file has).
        if numel > storage.numel {
            return Err(bad(format!("its view has {numel} elements, more than its storage's {}", storage.numel)));
        }
        // The last element the view reaches must lie in the storage.
        if numel > 0 {
            tensor
                .shape
                .iter()
                .zip(&tensor.stride)
                .try_fold(tensor.offset, |at, (&d, &s)| at.checked_add((d - 1).checked_mul(s)?))
                .filter(|&last| last < storage.numel)
                .ok_or_else(|| bad(format!("shape {:?}, stride {:?} and offset {} reach past its storage of {} elements", tensor.shape, tensor.stride, tensor.offset, storage.numel)))?;
        }
        let entry_name = format!("{}data/{}", self.prefix, storage.key);
        let too_short = |bytes: u64| bad(format!("its storage {} holds {bytes} bytes, not the {} elements the pickle says", storage.key, storage.numel));
        if is_row_major(&tensor.shape, &tensor.stride) && !self.keep_last {
            // Decoded as it is read, a block at a time: the page converts a
            // 67 MB storage without a second copy of it. With the ranges'
            // bodies copied chunk by chunk (web/release.rs), the tab's
            // memory while fetching the released shape went from 959 MB at
            // most to 650 MB, and from 729 to 398 MB after.
            let entry_error = |e: std::io::Error| ConvertError::Torch(format!("entry {entry_name}: {e}"));
            let mut entry = self.zip.by_name(&entry_name).map_err(|e| ConvertError::Torch(format!("entry {entry_name}: {e}")))?;
            if entry.size() < (storage.numel as u64).saturating_mul(size as u64) {
                return Err(too_short(entry.size()));
            }
            let skip = (tensor.offset * size) as u64;
            if std::io::copy(&mut (&mut entry).take(skip), &mut std::io::sink()).map_err(entry_error)? < skip {
                return Err(too_short(skip));
            }
            let mut block = vec![0u8; VIEW_BLOCK_BYTES / size * size];
            let mut left = numel * size;
            while left > 0 {
                let n = left.min(block.len());
                entry.read_exact(&mut block[..n]).map_err(entry_error)?;
                block[..n].chunks_exact(size).for_each(&mut *visit);
                left -= n;
            }
            return Ok(());
        }
        let bytes = match &self.last {
            Some((key, bytes)) if *key == storage.key => Rc::clone(bytes),
            _ => Rc::new(read_entry(&mut self.zip, &entry_name, self.file_len)?),
        };
        if self.keep_last {
            self.last = Some((storage.key.clone(), Rc::clone(&bytes)));
        }
        if bytes.len() < storage.numel.saturating_mul(size) {
            return Err(too_short(bytes.len() as u64));
        }
        gather(&tensor.shape, &tensor.stride, tensor.offset, &mut |at| visit(&bytes[at * size..(at + 1) * size]));
        Ok(())
    }
}

/// Bytes a contiguous view is read in at a time.
const VIEW_BLOCK_BYTES: usize = 1 << 20;

/// Whether a view's elements are its storage's in order from its offset:
/// each dimension's stride is the product of the later dimensions' sizes
/// (a dimension of size 1 may have any).
fn is_row_major(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d > 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

impl<R: Read + Seek> TorchFile<R> {
    /// Reads the archive's index and its pickle (refusing any pickle that
    /// asks for more than tensors and plain containers).
    pub fn open(reader: R) -> Result<TorchFile<R>, ConvertError> {
        let (archive, root) = Archive::open(reader)?;
        let tensors = state_dict(&root)?;
        Ok(TorchFile { archive, tensors })
    }

    /// The size in bytes of tensor `name`'s storage, which reading it reads.
    pub fn storage_bytes(&self, name: &str) -> Option<u64> {
        let tensor = self.tensor(name)?;
        Some(tensor.storage.numel as u64 * tensor.storage.dtype.size() as u64)
    }

    fn tensor(&self, name: &str) -> Option<&Rc<TensorRef>> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// The state dict in what a checkpoint's pickle built: a dict of tensors, or
/// a dict holding exactly one such dict (`{"model": state_dict, "step": …}`).
fn state_dict(root: &Value) -> Result<Vec<(String, Rc<TensorRef>)>, ConvertError> {
    let tensors_of = |value: &Value| -> Option<Vec<(String, Rc<TensorRef>)>> {
        let Value::Dict(dict) = value else { return None };
        let tensors: Vec<_> = dict
            .borrow()
            .iter()
            .filter_map(|(k, v)| match (k, v) {
                (Value::Str(k), Value::Tensor(t)) => Some((k.to_string(), Rc::clone(t))),
                _ => None,
            })
            .collect();
        (!tensors.is_empty()).then_some(tensors)
    };
    if let Some(tensors) = tensors_of(root) {
        return Ok(tensors);
    }
    let Value::Dict(dict) = root else {
        return Err(ConvertError::Torch("its pickle holds no dict of tensors (a state dict)".into()));
    };
    let nested: Vec<_> = dict.borrow().iter().filter_map(|(k, v)| Some((k.clone(), tensors_of(v)?))).collect();
    match &nested[..] {
        [(_, tensors)] => Ok(tensors.clone()),
        [] => Err(ConvertError::Torch("its pickle holds no dict of tensors (a state dict)".into())),
        _ => Err(ConvertError::Torch(format!("its pickle holds {} dicts of tensors; save the model's state_dict alone", nested.len()))),
    }
}

/// Entry `name` whole. `file_len` bounds what is reserved for it: entries
/// are stored, never compressed, so an honest one is no larger than the file.
fn read_entry<R: Read + Seek>(zip: &mut ZipArchive<R>, name: &str, file_len: u64) -> Result<Vec<u8>, ConvertError> {
    let bad = |m: String| ConvertError::Torch(format!("entry {name}: {m}"));
    let mut entry = zip.by_name(name).map_err(|e| bad(e.to_string()))?;
    // The size is the archive's word for it (a hostile index claiming 4 GB
    // had 256 MB reserved).
    let mut bytes = Vec::with_capacity(entry.size().min(file_len) as usize);
    entry.read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
    Ok(bytes)
}

impl<R: Read + Seek> Checkpoint for TorchFile<R> {
    fn names(&self) -> Vec<String> {
        self.tensors.iter().map(|(name, _)| name.clone()).collect()
    }

    fn read(&mut self, name: &str) -> Result<DenseTensor, ConvertError> {
        let tensor = self.tensor(name).map(Rc::clone).ok_or_else(|| ConvertError::Torch(format!("no tensor `{name}`")))?;
        let float = match tensor.storage.dtype {
            StorageDtype::F64 => Float::F64,
            StorageDtype::F32 => Float::F32,
            StorageDtype::F16 => Float::F16,
            StorageDtype::BF16 => Float::BF16,
            other => return Err(ConvertError::Torch(format!("tensor `{name}`: its storage is {other:?}; weights must be floating point"))),
        };
        let numel = tensor.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(0);
        let mut values = Vec::with_capacity(numel.min(tensor.storage.numel));
        self.archive.read_view(&tensor, &format!("tensor `{name}`"), &mut |b| values.push(float.read(b)))?;
        Ok(DenseTensor { shape: tensor.shape.clone(), values })
    }
}

/// Visits the storage positions of a strided view in row-major order. An
/// odometer over the multi-index, not a recursion per dimension: the number
/// of dimensions comes from the file.
fn gather(shape: &[usize], stride: &[usize], offset: usize, visit: &mut dyn FnMut(usize)) {
    if shape.contains(&0) {
        return;
    }
    let mut index = vec![0usize; shape.len()];
    let mut at = offset;
    loop {
        visit(at);
        // Advance the last dimension, carrying into earlier ones.
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            // Wrapping: a dimension of size 1 may have any stride, and the
            // step past the last element is taken back before it is used.
            index[d] += 1;
            at = at.wrapping_add(stride[d]);
            if index[d] < shape[d] {
                break;
            }
            at = at.wrapping_sub(shape[d].wrapping_mul(stride[d]));
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{gather, is_row_major};

    #[test]
    fn row_major_views_are_told_from_others() {
        assert!(is_row_major(&[], &[]));
        assert!(is_row_major(&[2, 3], &[3, 1]));
        assert!(is_row_major(&[1, 3], &[99, 1]), "a dimension of size 1 may have any stride");
        assert!(!is_row_major(&[2, 3], &[1, 2]), "a transpose");
        assert!(!is_row_major(&[3], &[2]), "a strided slice");
    }

    fn positions(shape: &[usize], stride: &[usize], offset: usize) -> Vec<usize> {
        let mut out = Vec::new();
        gather(shape, stride, offset, &mut |at| out.push(at));
        out
    }

    #[test]
    fn gather_visits_views_in_row_major_order() {
        assert_eq!(positions(&[], &[], 5), [5]);
        assert_eq!(positions(&[3], &[2], 1), [1, 3, 5]);
        assert_eq!(positions(&[2, 3], &[1, 2], 0), [0, 2, 4, 1, 3, 5], "a transpose");
        assert_eq!(positions(&[2, 0, 3], &[9, 9, 9], 0), Vec::<usize>::new());
        assert_eq!(positions(&[2, 1, 2], &[4, 100, 1], 1), [1, 2, 5, 6]);
        assert_eq!(positions(&[2, 1], &[1, usize::MAX], 0), [0, 1], "any stride on a dimension of size 1");
    }

    #[test]
    fn gather_of_a_million_unit_dimensions_does_not_recurse() {
        let shape = vec![1; 1_000_000];
        assert_eq!(positions(&shape, &vec![7; 1_000_000], 3), [3]);
    }
}
