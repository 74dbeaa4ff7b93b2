//! OpenAI's circuits: `viz_data.pt`, what the release's viewer (`viz.py`)
//! shows for one model, task, pruning sweep and node budget k. It is a
//! `torch.save` of plain containers and tensors, which the viewer loads
//! with `weights_only=True`; here the same data-only pickle reader as for
//! checkpoints reads it, so nothing in it is ever run. Of its keys this
//! reads what the viewer reads:
//! - `circuit_data`: `{site: LongTensor of kept channels}`;
//! - `importances`: `loss` and `interv_loss` (the task loss of the model and
//!   of the pruned circuit, both stored twice their value, as `viz.py`
//!   says), `ch_interv_losses` (`{site: [loss with that channel ablated]}`,
//!   aligned with `circuit_data`) and `beeg_model_config`;
//! - `samples`: `{site: {channel: {fraction: [bottom, top]}}}`, each a list
//!   of pretraining documents `(tokens, activations, position)`.

use std::io::Cursor;
use std::rc::Rc;

use super::pickle::{TensorRef, Value};
use super::torch::Archive;
use super::ConvertError;

/// Documents kept per bucket and direction: the viewer shows five.
pub const DOCS_PER_BUCKET: usize = 5;
/// Tokens kept each side of a document's marked position: the viewer shows 50.
pub const DOC_CONTEXT: usize = 50;

/// One `viz_data.pt`, read.
#[derive(Clone, Debug, PartialEq)]
pub struct VizData {
    /// Each site's kept channels, in the file's order.
    pub circuit: Vec<(String, Vec<usize>)>,
    /// Per site of `circuit`, the task loss with each of its channels
    /// ablated (halved, as the viewer shows it), where the file has them.
    pub channel_losses: Vec<(String, Vec<f64>)>,
    /// The full model's task loss, halved as the viewer shows it.
    pub loss: Option<f64>,
    /// The pruned circuit's task loss, halved as the viewer shows it.
    pub circuit_loss: Option<f64>,
    /// The integer fields of `beeg_model_config` (n_layer, d_model, ...).
    pub config: Vec<(String, i64)>,
    /// Pretraining documents per node, where the file has them.
    pub samples: Vec<NodeSamples>,
}

/// A node's pretraining documents by bucket of its activation.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSamples {
    pub site: String,
    pub channel: usize,
    pub buckets: Vec<SampleBucket>,
}

/// The documents at a node's top and bottom `fraction` of activations.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleBucket {
    pub fraction: f64,
    pub bottom: Vec<SampleDoc>,
    pub top: Vec<SampleDoc>,
}

/// A document cut to [`DOC_CONTEXT`] tokens each side of `position`.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleDoc {
    pub tokens: Vec<u32>,
    /// The node's activation at each of `tokens`.
    pub values: Vec<f32>,
    /// The marked token, an index into `tokens`.
    pub position: usize,
}

/// The viewer's stored losses are twice the task loss.
const STORED_LOSS_SCALE: f64 = 2.0;

impl VizData {
    /// Reads a `viz_data.pt` held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<VizData, ConvertError> {
        let (mut archive, root) = Archive::open(Cursor::new(bytes))?;
        archive.keep_last = true;
        Reader { archive }.read(&root)
    }

    /// Channels kept, over all sites: the viewer's `k`.
    pub fn nodes(&self) -> usize {
        self.circuit.iter().map(|(_, c)| c.len()).sum()
    }
}

struct Reader<'a> {
    archive: Archive<Cursor<&'a [u8]>>,
}

fn bad(message: impl Into<String>) -> ConvertError {
    ConvertError::Torch(format!("viz_data: {}", message.into()))
}

/// `dict[key]` for a string key.
fn get(dict: &Value, key: &str) -> Option<Value> {
    let Value::Dict(items) = dict else { return None };
    items.borrow().iter().find(|(k, _)| matches!(k, Value::Str(s) if &**s == key)).map(|(_, v)| v.clone())
}

fn items(value: &Value) -> Vec<(Value, Value)> {
    match value {
        Value::Dict(items) => items.borrow().clone(),
        _ => Vec::new(),
    }
}

/// A list's or tuple's items.
fn sequence(value: &Value) -> Option<Vec<Value>> {
    match value {
        Value::List(items) => Some(items.borrow().clone()),
        Value::Tuple(items) => Some(items.to_vec()),
        _ => None,
    }
}

impl Reader<'_> {
    fn read(&mut self, root: &Value) -> Result<VizData, ConvertError> {
        let circuit_data = get(root, "circuit_data").ok_or_else(|| bad("it has no `circuit_data` (each site's kept channels)"))?;
        let mut circuit = Vec::new();
        for (site, channels) in items(&circuit_data) {
            // `prune_config` and the like sit beside the sites.
            let (Value::Str(site), Value::Tensor(channels)) = (&site, &channels) else { continue };
            let channels = self
                .numbers(channels, &format!("circuit_data[{site:?}]"))?
                .into_iter()
                .map(|c| match c >= 0.0 && c.fract() == 0.0 && c < (1u64 << 32) as f64 {
                    true => Ok(c as usize),
                    false => Err(bad(format!("circuit_data[{site:?}] holds {c}, not a channel"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            // A Python dict has each key once; only a made-up pickle repeats one.
            if circuit.iter().any(|(s, _): &(String, Vec<usize>)| s.as_str() == &**site) {
                return Err(bad(format!("circuit_data names {site:?} twice")));
            }
            circuit.push((site.to_string(), channels));
        }
        if circuit.is_empty() {
            return Err(bad("its `circuit_data` names no site with kept channels"));
        }
        let importances = get(root, "importances").unwrap_or(Value::None);
        let loss = self.scalar(get(&importances, "loss"))?.map(|l| l / STORED_LOSS_SCALE);
        let circuit_loss = self.scalar(get(&importances, "interv_loss"))?.map(|l| l / STORED_LOSS_SCALE);
        let config = items(&get(&importances, "beeg_model_config").unwrap_or(Value::None))
            .into_iter()
            .filter_map(|(k, v)| match (&k, &v) {
                (Value::Str(k), Value::Int(v)) => Some((k.to_string(), *v)),
                _ => None,
            })
            .collect();
        let mut channel_losses = Vec::new();
        let losses = get(&importances, "ch_interv_losses").unwrap_or(Value::None);
        for (site, _) in &circuit {
            let Some(values) = get(&losses, site) else { continue };
            let values = match &values {
                Value::Tensor(t) => self.numbers(t, &format!("ch_interv_losses[{site:?}]"))?,
                other => sequence(other)
                    .unwrap_or_default()
                    .iter()
                    .map(|v| self.scalar(Some(v.clone())).map(|n| n.unwrap_or(f64::NAN)))
                    .collect::<Result<_, _>>()?,
            };
            channel_losses.push((site.clone(), values.into_iter().map(|l| l / STORED_LOSS_SCALE).collect()));
        }
        let samples = match get(root, "samples") {
            Some(samples) => self.samples(&samples, &circuit)?,
            None => Vec::new(),
        };
        Ok(VizData { circuit, channel_losses, loss, circuit_loss, config, samples })
    }

    /// Every element of a tensor, as numbers.
    fn numbers(&mut self, tensor: &Rc<TensorRef>, what: &str) -> Result<Vec<f64>, ConvertError> {
        let dtype = tensor.storage.dtype;
        let mut out = Vec::new();
        self.archive.read_view(tensor, what, &mut |b| out.push(dtype.decode(b)))?;
        Ok(out)
    }

    /// A number stored as an int, a float or a tensor of one element.
    fn scalar(&mut self, value: Option<Value>) -> Result<Option<f64>, ConvertError> {
        Ok(match &value {
            Some(Value::Int(v)) => Some(*v as f64),
            Some(Value::Float(v)) => Some(*v),
            Some(Value::Tensor(t)) if t.shape.iter().all(|&d| d == 1) => self.numbers(t, "a loss")?.first().copied(),
            _ => None,
        })
    }

    /// The pretraining documents of the circuit's nodes (a node the file
    /// has none for is left out, as the viewer says "no samples").
    fn samples(&mut self, samples: &Value, circuit: &[(String, Vec<usize>)]) -> Result<Vec<NodeSamples>, ConvertError> {
        let mut out = Vec::new();
        for (site, channels) in circuit {
            let Some(by_channel) = get(samples, site) else { continue };
            for (key, buckets) in items(&by_channel) {
                // Channels are keyed by int, or by a one-element tensor (the viewer calls `.item()`).
                let Some(channel) = self.scalar(Some(key))? else { continue };
                let channel = channel as usize;
                // The first entry of a channel given twice, as a dict keeps one.
                if !channels.contains(&channel) || out.iter().any(|n: &NodeSamples| n.site == *site && n.channel == channel) {
                    continue;
                }
                let mut node = NodeSamples { site: site.clone(), channel, buckets: Vec::new() };
                for (fraction, sides) in items(&buckets) {
                    let Some(fraction) = self.scalar(Some(fraction))? else { continue };
                    let sides = sequence(&sides).unwrap_or_default();
                    let [bottom, top] = &sides[..] else {
                        return Err(bad(format!("samples[{site:?}][{channel}][{fraction}] is not [bottom, top]")));
                    };
                    let what = format!("samples[{site:?}][{channel}][{fraction}]");
                    let bottom = self.docs(bottom, &what)?;
                    let top = self.docs(top, &what)?;
                    node.buckets.push(SampleBucket { fraction, bottom, top });
                }
                node.buckets.sort_by(|a, b| a.fraction.total_cmp(&b.fraction));
                out.push(node);
            }
        }
        Ok(out)
    }

    /// The first [`DOCS_PER_BUCKET`] documents `(tokens, activations, position)`.
    fn docs(&mut self, docs: &Value, what: &str) -> Result<Vec<SampleDoc>, ConvertError> {
        let mut out = Vec::new();
        for doc in sequence(docs).unwrap_or_default().into_iter().take(DOCS_PER_BUCKET) {
            let fields = sequence(&doc).unwrap_or_default();
            let [Value::Tensor(tokens), Value::Tensor(values), position, ..] = &fields[..] else {
                return Err(bad(format!("{what}: a document is not (tokens, activations, position)")));
            };
            let tokens = self.numbers(tokens, what)?;
            let values = self.numbers(values, what)?;
            let position = self.scalar(Some(position.clone()))?.ok_or_else(|| bad(format!("{what}: a document without a position")))?;
            if tokens.len() != values.len() || position < 0.0 || position as usize >= tokens.len() {
                return Err(bad(format!(
                    "{what}: a document of {} tokens with {} activations, marked at {position}",
                    tokens.len(),
                    values.len()
                )));
            }
            let position = position as usize;
            let start = position.saturating_sub(DOC_CONTEXT);
            let end = (position + DOC_CONTEXT + 1).min(tokens.len());
            let token = |t: f64| match t >= 0.0 && t.fract() == 0.0 && t <= u32::MAX as f64 {
                true => Ok(t as u32),
                false => Err(bad(format!("{what}: token {t} is not a token id"))),
            };
            out.push(SampleDoc {
                tokens: tokens[start..end].iter().map(|&t| token(t)).collect::<Result<_, _>>()?,
                values: values[start..end].iter().map(|&v| v as f32).collect(),
                position: position - start,
            });
        }
        Ok(out)
    }
}
