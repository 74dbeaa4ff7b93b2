//! What a pickle builds: plain data only (containers, numbers, strings,
//! and the few classes a state dict names), dropped without recursion.

use std::cell::RefCell;
use std::rc::Rc;

/// The element types of torch storages (`torch.FloatStorage`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    fn from_class(name: &str) -> Option<StorageDtype> {
        Some(match name {
            "DoubleStorage" => StorageDtype::F64,
            "FloatStorage" => StorageDtype::F32,
            "HalfStorage" => StorageDtype::F16,
            "BFloat16Storage" => StorageDtype::BF16,
            "LongStorage" => StorageDtype::I64,
            "IntStorage" => StorageDtype::I32,
            "ShortStorage" => StorageDtype::I16,
            "CharStorage" => StorageDtype::I8,
            "ByteStorage" => StorageDtype::U8,
            "BoolStorage" => StorageDtype::Bool,
            _ => return None,
        })
    }

    /// One little-endian element of `self.size()` bytes, as a number.
    pub fn decode(self, b: &[u8]) -> f64 {
        let array = |n: usize| -> [u8; 8] {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(&b[..n]);
            a
        };
        match self {
            StorageDtype::F64 => f64::from_le_bytes(array(8)),
            StorageDtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            StorageDtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
            StorageDtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
            StorageDtype::I64 => i64::from_le_bytes(array(8)) as f64,
            StorageDtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            StorageDtype::I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            StorageDtype::I8 => b[0] as i8 as f64,
            StorageDtype::U8 => b[0] as f64,
            StorageDtype::Bool => (b[0] != 0) as u8 as f64,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StorageDtype::F64 | StorageDtype::I64 => 8,
            StorageDtype::F32 | StorageDtype::I32 => 4,
            StorageDtype::F16 | StorageDtype::BF16 | StorageDtype::I16 => 2,
            StorageDtype::I8 | StorageDtype::U8 | StorageDtype::Bool => 1,
        }
    }
}

/// A storage named by a persistent id: the zip entry `data/{key}`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: StorageDtype,
    /// Elements in the storage.
    pub numel: usize,
}

/// A tensor as a view of a storage: element `i` (multi-index) is at
/// `offset + sum(i_k * stride_k)` in elements.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// The globals a state dict may name. Anything else is refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(StorageDtype),
}

impl Global {
    pub(crate) fn allowed(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", storage) => Global::Storage(StorageDtype::from_class(storage)?),
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Global::OrderedDict => "collections.OrderedDict",
            Global::RebuildTensor => "torch._utils._rebuild_tensor_v2",
            Global::RebuildParameter => "torch._utils._rebuild_parameter",
            Global::Storage(_) => "a torch storage class",
        }
    }
}

/// A value of the pickle machine. Lists and dicts are shared and mutable, as
/// in Python: `SETITEMS` on a dict fetched from the memo changes the one dict.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Int(i64),
    Str(Rc<str>),
    /// Bools and bytes: read past, never needed.
    Bool,
    Float(f64),
    Bytes,
    Tuple(Rc<[Value]>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    Global(Global),
}

/// Values are dropped with a loop, not by recursion: a pickle of a few MB
/// can nest a tuple a million deep, and the compiler's recursive drop of
/// that chain overflows the stack. Each container that nothing else shares
/// hands its items to a work list before it is freed.
impl Drop for Value {
    fn drop(&mut self) {
        let mut pending = Vec::new();
        move_items(self, &mut pending);
        while let Some(mut value) = pending.pop() {
            move_items(&mut value, &mut pending);
            // `value` now holds no items and drops without recursing.
        }
    }
}

/// Moves the items of `value` to `out` when `value` is the last owner of
/// its container; a shared container is left to its other owners.
fn move_items(value: &mut Value, out: &mut Vec<Value>) {
    let take = |item: &mut Value| std::mem::replace(item, Value::None);
    match value {
        Value::Tuple(items) => {
            if let Some(items) = Rc::get_mut(items) {
                out.extend(items.iter_mut().map(take));
            }
        }
        Value::List(items) => {
            if let Some(items) = Rc::get_mut(items) {
                out.append(items.get_mut());
            }
        }
        Value::Dict(items) => {
            if let Some(items) = Rc::get_mut(items) {
                for (key, value) in items.get_mut().drain(..) {
                    out.extend([key, value]);
                }
            }
        }
        _ => {}
    }
}

impl Value {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Bytes => "bytes",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
            Value::Global(_) => "a class",
        }
    }
}
