//! A pickle reader that only builds data: the subset of Python's pickle
//! machine that `torch.save` of a state dict uses (protocols 0-5), with every
//! class a pickle may name checked against an allow-list by name. Nothing a
//! file says is ever run: `REDUCE` is interpreted for the few allowed
//! callables (an `OrderedDict`, a tensor rebuilt from a storage) and refused
//! for anything else, as is any opcode outside the subset.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::ConvertError;

mod value;

pub(super) use value::{StorageDtype, TensorRef, Value};
use value::{Global, StorageRef};

/// Bounds that keep a hostile pickle from using unbounded memory.
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 22;
/// Dimensions of a tensor: torch itself stops at 64, and a model's weights
/// have at most 4. A bound also keeps one memoised tensor record that a
/// state dict names 20,000 times from being 20,000 large records.
pub const MAX_DIMS: usize = 64;

/// Runs the pickle `data` and returns the object it builds.
pub(super) fn load(data: &[u8]) -> Result<Value, ConvertError> {
    Machine { data, at: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() }.run()
}

struct Machine<'a> {
    data: &'a [u8],
    /// Byte position of the next opcode or argument.
    at: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn bad(&self, what: impl std::fmt::Display) -> ConvertError {
        ConvertError::Pickle(format!("at byte {}: {what}", self.at))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ConvertError> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.data.len()).ok_or_else(|| self.bad("the pickle ends early"))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn le(&mut self, n: usize) -> Result<u64, ConvertError> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |acc, &b| acc << 8 | b as u64))
    }

    fn line(&mut self) -> Result<&'a str, ConvertError> {
        let rest = &self.data[self.at..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.bad("the pickle ends inside a text argument"))?;
        let text = std::str::from_utf8(&rest[..end]).map_err(|_| self.bad("a text argument is not UTF-8"))?;
        self.at += end + 1;
        Ok(text)
    }

    fn text(&mut self, len: u64) -> Result<Value, ConvertError> {
        let len = usize::try_from(len).map_err(|_| self.bad("a string longer than memory"))?;
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| self.bad("a string is not UTF-8"))?;
        Ok(Value::Str(text.into()))
    }

    fn bytes(&mut self, len: u64) -> Result<Value, ConvertError> {
        let len = usize::try_from(len).map_err(|_| self.bad("bytes longer than memory"))?;
        self.take(len)?;
        Ok(Value::Bytes)
    }

    fn push(&mut self, value: Value) -> Result<(), ConvertError> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.bad("the pickle's stack grows beyond any state dict's"));
        }
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, ConvertError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("an opcode takes from an empty stack"));
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&mut self) -> Result<&mut Value, ConvertError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("an opcode takes from an empty stack"));
        }
        Ok(self.stack.last_mut().expect("checked"))
    }

    /// The values pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, ConvertError> {
        let mark = self.marks.pop().ok_or_else(|| self.bad("an opcode needs a MARK, but none is open"))?;
        Ok(self.stack.split_off(mark))
    }

    fn put(&mut self, key: u64) -> Result<(), ConvertError> {
        if self.memo.len() >= MAX_MEMO {
            return Err(self.bad("the pickle's memo grows beyond any state dict's"));
        }
        let value = self.top()?.clone();
        self.memo.insert(key as u32, value);
        Ok(())
    }

    fn get(&mut self, key: u64) -> Result<(), ConvertError> {
        let value = self.memo.get(&(key as u32)).cloned().ok_or_else(|| self.bad(format!("memo entry {key} is used before it is set")))?;
        self.push(value)
    }

    fn global(&self, module: &str, name: &str) -> Result<Value, ConvertError> {
        Global::allowed(module, name)
            .map(Value::Global)
            .ok_or_else(|| ConvertError::Refused(format!("{module}.{name}")))
    }

    fn set_items(&self, target: &Value, items: Vec<Value>) -> Result<(), ConvertError> {
        let Value::Dict(dict) = target else {
            return Err(self.bad(format!("SETITEM on {}, not a dict", target.kind())));
        };
        if items.len() % 2 != 0 {
            return Err(self.bad("SETITEMS with a key but no value"));
        }
        let mut dict = dict.borrow_mut();
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            dict.push((key, value));
        }
        Ok(())
    }

    fn append(&self, target: &Value, items: Vec<Value>) -> Result<(), ConvertError> {
        let Value::List(list) = target else {
            return Err(self.bad(format!("APPEND on {}, not a list", target.kind())));
        };
        list.borrow_mut().extend(items);
        Ok(())
    }

    fn run(mut self) -> Result<Value, ConvertError> {
        loop {
            let op = self.take(1)?[0];
            match op {
                0x80 => {
                    let protocol = self.take(1)?[0];
                    if protocol > 5 {
                        return Err(self.bad(format!("pickle protocol {protocol} is newer than 5")));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let value = self.top()?.clone();
                    self.push(value)?;
                }
                // Numbers and constants.
                b'J' => {
                    let v = self.le(4)? as u32 as i32;
                    self.push(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.le(1)?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.le(2)?;
                    self.push(Value::Int(v as i64))?
                }
                0x8a => {
                    let n = self.le(1)? as usize;
                    let bytes = self.take(n)?;
                    if n > 8 {
                        return Err(self.bad(format!("an integer of {n} bytes")));
                    }
                    // Little-endian two's complement of n bytes.
                    let mut v: i64 = if bytes.last().is_some_and(|&b| b & 0x80 != 0) { -1 } else { 0 };
                    for &b in bytes.iter().rev() {
                        v = v << 8 | b as i64;
                    }
                    self.push(Value::Int(v))?
                }
                b'I' => {
                    let text = self.line()?;
                    let value = match text {
                        "00" | "01" => Value::Bool,
                        _ => Value::Int(text.parse().map_err(|_| self.bad(format!("INT {text:?} is not an integer")))?),
                    };
                    self.push(value)?
                }
                b'L' => {
                    let text = self.line()?;
                    let v = text.trim_end_matches('L').parse().map_err(|_| self.bad(format!("LONG {text:?} is not an integer")))?;
                    self.push(Value::Int(v))?
                }
                // BINFLOAT: big-endian.
                b'G' => {
                    let bytes = self.take(8)?;
                    self.push(Value::Float(f64::from_be_bytes(bytes.try_into().expect("8 bytes"))))?
                }
                b'F' => {
                    let text = self.line()?;
                    let v = text.parse().map_err(|_| self.bad(format!("FLOAT {text:?} is not a number")))?;
                    self.push(Value::Float(v))?
                }
                b'N' => self.push(Value::None)?,
                0x88 | 0x89 => self.push(Value::Bool)?,
                // Strings and bytes.
                b'X' => {
                    let n = self.le(4)?;
                    let v = self.text(n)?;
                    self.push(v)?
                }
                0x8c => {
                    let n = self.le(1)?;
                    let v = self.text(n)?;
                    self.push(v)?
                }
                0x8d => {
                    let n = self.le(8)?;
                    let v = self.text(n)?;
                    self.push(v)?
                }
                b'B' => {
                    let n = self.le(4)?;
                    let v = self.bytes(n)?;
                    self.push(v)?
                }
                b'C' => {
                    let n = self.le(1)?;
                    let v = self.bytes(n)?;
                    self.push(v)?
                }
                0x8e => {
                    let n = self.le(8)?;
                    let v = self.bytes(n)?;
                    self.push(v)?
                }
                // Python 2 `str` (protocols 0-2): latin-1 text.
                b'T' | b'U' => {
                    let n = if op == b'T' { self.le(4)? } else { self.le(1)? };
                    let n = usize::try_from(n).map_err(|_| self.bad("a string longer than memory"))?;
                    let text: String = self.take(n)?.iter().map(|&b| b as char).collect();
                    self.push(Value::Str(text.into()))?
                }
                // Containers.
                b')' => self.push(Value::Tuple(Rc::new([])))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items.into()))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>, _>>()?;
                    items.reverse();
                    self.push(Value::Tuple(items.into()))?
                }
                b']' => self.push(Value::List(Rc::default()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(items))))?
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?.clone();
                    self.append(&list, vec![item])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?.clone();
                    self.append(&list, items)?
                }
                b'}' => self.push(Value::Dict(Rc::default()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = Value::Dict(Rc::default());
                    self.set_items(&dict, items)?;
                    self.push(dict)?
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?.clone();
                    self.set_items(&dict, vec![key, value])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?.clone();
                    self.set_items(&dict, items)?
                }
                // The memo.
                b'q' => {
                    let key = self.le(1)?;
                    self.put(key)?
                }
                b'r' => {
                    let key = self.le(4)?;
                    self.put(key)?
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.put(key)?
                }
                b'p' => {
                    let text = self.line()?;
                    let key = text.parse().map_err(|_| self.bad(format!("PUT {text:?} is not a memo index")))?;
                    self.put(key)?
                }
                b'h' => {
                    let key = self.le(1)?;
                    self.get(key)?
                }
                b'j' => {
                    let key = self.le(4)?;
                    self.get(key)?
                }
                b'g' => {
                    let text = self.line()?;
                    let key = text.parse().map_err(|_| self.bad(format!("GET {text:?} is not a memo index")))?;
                    self.get(key)?
                }
                // Names of classes and functions: only those on the allow-list.
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let global = self.global(module, name)?;
                    self.push(global)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                        return Err(self.bad("STACK_GLOBAL without a module and a name"));
                    };
                    let global = self.global(module, name)?;
                    self.push(global)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent(&pid)?;
                    self.push(storage)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.reduce(&callable, &args)?;
                    self.push(value)?
                }
                // Object state: torch sets the state dict's `_metadata` (a
                // version per module), which the weights do not need.
                b'b' => {
                    self.pop()?;
                    self.top()?;
                }
                _ => {
                    self.at -= 1;
                    return Err(self.bad(format!(
                        "opcode 0x{op:02x} is not one a state dict of tensors uses, so the file is refused"
                    )));
                }
            }
        }
    }

    /// `('storage', torch.FloatStorage, key, location, numel)`.
    fn persistent(&self, pid: &Value) -> Result<Value, ConvertError> {
        let bad = || self.bad("a persistent id that is not a torch storage");
        let Value::Tuple(fields) = pid else { return Err(bad()) };
        match &fields[..] {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), key, Value::Str(_location), Value::Int(numel)]
                if &**tag == "storage" =>
            {
                let dtype = *dtype;
                let key = match key {
                    Value::Str(key) => key.to_string(),
                    Value::Int(key) => key.to_string(),
                    _ => return Err(bad()),
                };
                let numel = usize::try_from(*numel).map_err(|_| bad())?;
                Ok(Value::Storage(Rc::new(StorageRef { key, dtype, numel })))
            }
            _ => Err(bad()),
        }
    }

    fn reduce(&self, callable: &Value, args: &Value) -> Result<Value, ConvertError> {
        let Value::Global(global) = callable else {
            return Err(self.bad(format!("REDUCE calls {}, not an allowed class", callable.kind())));
        };
        let Value::Tuple(args) = args else { return Err(self.bad("REDUCE without an argument tuple")) };
        match (*global, &args[..]) {
            (Global::OrderedDict, []) => Ok(Value::Dict(Rc::default())),
            (Global::OrderedDict, [Value::List(pairs)]) => {
                let mut items = Vec::new();
                for pair in pairs.borrow().iter() {
                    match pair {
                        Value::Tuple(kv) if kv.len() == 2 => items.extend([kv[0].clone(), kv[1].clone()]),
                        _ => return Err(self.bad("OrderedDict of something other than pairs")),
                    }
                }
                let dict = Value::Dict(Rc::default());
                self.set_items(&dict, items)?;
                Ok(dict)
            }
            // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
            (Global::RebuildTensor, [Value::Storage(storage), Value::Int(offset), size, stride, ..]) if args.len() >= 6 => {
                let dims = |v: &Value, what: &str| -> Result<Vec<usize>, ConvertError> {
                    let Value::Tuple(items) = v else { return Err(self.bad(format!("a tensor's {what} is not a tuple"))) };
                    items
                        .iter()
                        .map(|d| match d {
                            Value::Int(d) => usize::try_from(*d).map_err(|_| self.bad(format!("a tensor's {what} has {d}"))),
                            _ => Err(self.bad(format!("a tensor's {what} holds {}", d.kind()))),
                        })
                        .collect()
                };
                if let Value::Tuple(items) = size {
                    if items.len() > MAX_DIMS {
                        return Err(self.bad(format!("a tensor of {} dimensions; torch allows at most {MAX_DIMS}", items.len())));
                    }
                }
                let (shape, stride) = (dims(size, "size")?, dims(stride, "stride")?);
                if shape.len() != stride.len() {
                    return Err(self.bad(format!("a tensor of {} dimensions with {} strides", shape.len(), stride.len())));
                }
                let offset = usize::try_from(*offset).map_err(|_| self.bad(format!("a tensor at offset {offset}")))?;
                Ok(Value::Tensor(Rc::new(TensorRef { storage: (**storage).clone(), offset, shape, stride })))
            }
            // _rebuild_parameter(data, requires_grad, hooks): a Parameter is its data.
            (Global::RebuildParameter, [tensor @ Value::Tensor(_), ..]) => Ok(tensor.clone()),
            (global, _) => Err(self.bad(format!("{} called with arguments it does not take", global.name()))),
        }
    }
}
