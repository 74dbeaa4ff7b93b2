//! PyTorch checkpoints written as `torch.save` writes them: a zip of stored
//! entries holding `archive/data.pkl`, a protocol-2 pickle whose tensors are
//! `torch._utils._rebuild_tensor_v2` of persistent storages, and each
//! storage's little-endian bytes at `archive/data/<key>`. The release's
//! mirror (`circuitscope write-release`) writes its `final_model.pt` and
//! `viz_data.pt` with it; the reader (`torch.rs`) is checked against files
//! torch itself wrote (`tests/fixtures/*.pt`), not only against these.

use std::io::{Cursor, Seek, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A Python object to pickle: plain data and tensors.
#[derive(Clone, Debug, PartialEq)]
pub enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Py>),
    List(Vec<Py>),
    Dict(Vec<(Py, Py)>),
    /// `collections.OrderedDict`, what `state_dict()` returns.
    OrderedDict(Vec<(Py, Py)>),
    Tensor(StoredTensor),
}

impl Py {
    pub fn str(text: &str) -> Py {
        Py::Str(text.to_string())
    }
}

/// The storage element types the mirror writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    I64,
}

impl StoredDtype {
    fn class(self) -> &'static str {
        match self {
            StoredDtype::F32 => "FloatStorage",
            StoredDtype::I64 => "LongStorage",
        }
    }
}

/// A contiguous tensor over the whole of storage `key`, whose bytes are
/// written separately ([`TorchWriter::storage`]): a 1.65 GB model is written
/// a tensor at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTensor {
    pub key: String,
    pub dtype: StoredDtype,
    pub shape: Vec<usize>,
}

impl StoredTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The pickle of `root`, protocol 2, as torch's pickler writes it (without
/// the memo, which a reader does not need when nothing is shared).
pub fn pickle(root: &Py) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    write_py(root, &mut out);
    out.push(b'.');
    out
}

fn write_py(value: &Py, out: &mut Vec<u8>) {
    match value {
        Py::None => out.push(b'N'),
        Py::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
        Py::Int(v) => match *v {
            0..=0xff => out.extend([b'K', *v as u8]),
            0x100..=0xffff => {
                out.push(b'M');
                out.extend((*v as u16).to_le_bytes());
            }
            v if i32::try_from(v).is_ok() => {
                out.push(b'J');
                out.extend((v as i32).to_le_bytes());
            }
            v => {
                out.extend([0x8a, 8]);
                out.extend(v.to_le_bytes());
            }
        },
        // BINFLOAT is big-endian.
        Py::Float(v) => {
            out.push(b'G');
            out.extend(v.to_be_bytes());
        }
        Py::Str(text) => {
            out.push(b'X');
            out.extend((text.len() as u32).to_le_bytes());
            out.extend(text.as_bytes());
        }
        Py::Tuple(items) => {
            out.push(b'(');
            items.iter().for_each(|item| write_py(item, out));
            out.push(b't');
        }
        Py::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                items.iter().for_each(|item| write_py(item, out));
                out.push(b'e');
            }
        }
        Py::Dict(items) | Py::OrderedDict(items) => {
            match value {
                Py::OrderedDict(_) => out.extend(b"ccollections\nOrderedDict\n)R"),
                _ => out.push(b'}'),
            }
            if !items.is_empty() {
                out.push(b'(');
                for (key, item) in items {
                    write_py(key, out);
                    write_py(item, out);
                }
                out.push(b'u');
            }
        }
        // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
        Py::Tensor(tensor) => {
            out.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
            // The persistent id: ('storage', class, key, location, numel).
            out.push(b'(');
            write_py(&Py::str("storage"), out);
            out.extend(format!("ctorch\n{}\n", tensor.dtype.class()).as_bytes());
            write_py(&Py::Str(tensor.key.clone()), out);
            write_py(&Py::str("cpu"), out);
            write_py(&Py::Int(tensor.numel() as i64), out);
            out.extend(b"tQ");
            write_py(&Py::Int(0), out);
            let mut stride = vec![1usize; tensor.shape.len()];
            for d in (0..tensor.shape.len().saturating_sub(1)).rev() {
                stride[d] = stride[d + 1] * tensor.shape[d + 1];
            }
            write_py(&Py::Tuple(tensor.shape.iter().map(|&d| Py::Int(d as i64)).collect()), out);
            write_py(&Py::Tuple(stride.iter().map(|&s| Py::Int(s as i64)).collect()), out);
            write_py(&Py::Bool(false), out);
            out.extend(b"ccollections\nOrderedDict\n)R");
            out.extend(b"tR");
        }
    }
}

/// A `.pt` being written: the pickle first, then each storage it names.
pub struct TorchWriter<W: Write + Seek> {
    zip: ZipWriter<W>,
}

const ARCHIVE: &str = "archive";

impl<W: Write + Seek> TorchWriter<W> {
    /// Starts the archive with `root`'s pickle and the byte order.
    pub fn new(out: W, root: &Py) -> std::io::Result<TorchWriter<W>> {
        let mut writer = TorchWriter { zip: ZipWriter::new(out) };
        writer.entry("data.pkl", &pickle(root))?;
        writer.entry("byteorder", b"little")?;
        Ok(writer)
    }

    /// Storage `key`'s bytes, little-endian.
    pub fn storage(&mut self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.entry(&format!("data/{key}"), bytes)
    }

    /// Writes the zip's index; the archive is complete.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("version", b"3\n")?;
        self.zip.finish().map_err(std::io::Error::other)
    }

    fn entry(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .large_file(bytes.len() as u64 >= u32::MAX as u64);
        self.zip.start_file(format!("{ARCHIVE}/{name}"), options).map_err(std::io::Error::other)?;
        self.zip.write_all(bytes)
    }
}

/// f32 values as a storage's bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// i64 values as a storage's bytes.
pub fn i64_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `model` as the release's `final_model.pt`: its state dict, dense f32
/// under the PyTorch names, written a tensor at a time.
pub fn write_model_pt<W: Write + Seek>(model: &crate::model::Model, out: W) -> std::io::Result<W> {
    let shapes = model.shapes();
    let state_dict = shapes
        .iter()
        .enumerate()
        .map(|(key, (name, shape))| {
            (Py::str(name), Py::Tensor(StoredTensor { key: key.to_string(), dtype: StoredDtype::F32, shape: shape.clone() }))
        })
        .collect();
    let mut writer = TorchWriter::new(out, &Py::OrderedDict(state_dict))?;
    let mut key = 0;
    model.visit_dense(|_, _, values| {
        writer.storage(&key.to_string(), &f32_bytes(values))?;
        key += 1;
        Ok::<(), std::io::Error>(())
    })?;
    writer.finish()
}

/// `viz` as OpenAI's `viz_data.pt`, in the structure the release's viewer
/// reads (see `viz.rs`): losses stored twice their value, as the viewer
/// expects, channels as LongTensors, documents as `(tokens, activations,
/// position)`.
pub fn write_viz_data(viz: &super::VizData) -> std::io::Result<Vec<u8>> {
    let mut storages: Vec<Vec<u8>> = Vec::new();
    let mut tensor = |dtype: StoredDtype, shape: Vec<usize>, bytes: Vec<u8>| {
        let key = storages.len().to_string();
        storages.push(bytes);
        Py::Tensor(StoredTensor { key, dtype, shape })
    };
    let stored = |loss: f64| Py::Float(loss * 2.0);
    let circuit_data = viz
        .circuit
        .iter()
        .map(|(site, channels)| {
            let ids: Vec<i64> = channels.iter().map(|&c| c as i64).collect();
            (Py::str(site), tensor(StoredDtype::I64, vec![ids.len()], i64_bytes(&ids)))
        })
        .collect();
    let channel_losses = viz
        .channel_losses
        .iter()
        .map(|(site, losses)| (Py::str(site), Py::List(losses.iter().map(|&l| stored(l)).collect())))
        .collect();
    let config = viz.config.iter().map(|(k, v)| (Py::str(k), Py::Int(*v))).collect();
    let mut importances = vec![
        (Py::str("ch_interv_losses"), Py::Dict(channel_losses)),
        (Py::str("beeg_model_config"), Py::Dict(config)),
    ];
    if let Some(loss) = viz.loss {
        importances.push((Py::str("loss"), stored(loss)));
    }
    if let Some(loss) = viz.circuit_loss {
        importances.push((Py::str("interv_loss"), stored(loss)));
    }
    let mut by_site: Vec<(String, Vec<(Py, Py)>)> = Vec::new();
    for node in &viz.samples {
        let buckets = node
            .buckets
            .iter()
            .map(|bucket| {
                let mut side = |docs: &[super::SampleDoc]| {
                    Py::List(
                        docs.iter()
                            .map(|doc| {
                                let ids: Vec<i64> = doc.tokens.iter().map(|&t| t as i64).collect();
                                Py::Tuple(vec![
                                    tensor(StoredDtype::I64, vec![ids.len()], i64_bytes(&ids)),
                                    tensor(StoredDtype::F32, vec![doc.values.len()], f32_bytes(&doc.values)),
                                    Py::Int(doc.position as i64),
                                ])
                            })
                            .collect(),
                    )
                };
                let sides = Py::List(vec![side(&bucket.bottom), side(&bucket.top)]);
                (Py::Float(bucket.fraction), sides)
            })
            .collect();
        let entry = (Py::Int(node.channel as i64), Py::Dict(buckets));
        match by_site.iter_mut().find(|(site, _)| *site == node.site) {
            Some((_, channels)) => channels.push(entry),
            None => by_site.push((node.site.clone(), vec![entry])),
        }
    }
    let samples = by_site.into_iter().map(|(site, channels)| (Py::Str(site), Py::Dict(channels))).collect();
    let root = Py::Dict(vec![
        (Py::str("circuit_data"), Py::Dict(circuit_data)),
        (Py::str("importances"), Py::Dict(importances)),
        (Py::str("samples"), Py::Dict(samples)),
        (Py::str("num_total_nodes"), Py::Int(viz.nodes() as i64)),
    ]);
    let mut writer = TorchWriter::new(Cursor::new(Vec::new()), &root)?;
    for (key, bytes) in storages.iter().enumerate() {
        writer.storage(&key.to_string(), bytes)?;
    }
    Ok(writer.finish()?.into_inner())
}
