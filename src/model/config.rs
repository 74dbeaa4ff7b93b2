//! `config.json`: the model's hyperparameters in the release's format.
//!
//! Keys and defaults follow the reference `GPTConfig`; unknown keys are
//! ignored and the old key `n_mlp` means `d_mlp`.

use serde::Deserialize;

use super::params::Leaf;
use super::ModelError;

/// Where an AbsTopK activation-sparsity step may run (`afrac_loctypes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopkSite {
    AttnIn,
    AttnQ,
    AttnK,
    AttnV,
    AttnOut,
    MlpIn,
    MlpNeuron,
    MlpOut,
    ResidPostAttn,
    ResidPostMlp,
}

impl TopkSite {
    pub const ALL: [TopkSite; 10] = [
        TopkSite::AttnIn,
        TopkSite::AttnQ,
        TopkSite::AttnK,
        TopkSite::AttnV,
        TopkSite::AttnOut,
        TopkSite::MlpIn,
        TopkSite::MlpNeuron,
        TopkSite::MlpOut,
        TopkSite::ResidPostAttn,
        TopkSite::ResidPostMlp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TopkSite::AttnIn => "attn_in",
            TopkSite::AttnQ => "attn_q",
            TopkSite::AttnK => "attn_k",
            TopkSite::AttnV => "attn_v",
            TopkSite::AttnOut => "attn_out",
            TopkSite::MlpIn => "mlp_in",
            TopkSite::MlpNeuron => "mlp_neuron",
            TopkSite::MlpOut => "mlp_out",
            TopkSite::ResidPostAttn => "resid_post_attn",
            TopkSite::ResidPostMlp => "resid_post_mlp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU, PyTorch's `approximate='none'`.
    Gelu,
    Relu,
}

/// The validated configuration, with every default resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub block_size: usize,
    pub vocab_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_head: usize,
    pub d_model: usize,
    pub d_mlp: usize,
    /// Biases in the linear layers.
    pub bias: bool,
    /// Bias in LayerNorm (RMSNorm never has one).
    pub ln_bias: bool,
    pub rms_norm: bool,
    pub residual_relu: bool,
    pub activation: Activation,
    /// Fraction of activations kept by AbsTopK, and where.
    pub afrac: Option<f64>,
    pub topk_sites: Vec<TopkSite>,
    pub tied_unembed: bool,
    pub enable_bigram_table: bool,
    /// Set: position embeddings are concatenated to every attention and MLP
    /// input instead of added to the residual stream.
    pub d_pos_emb: Option<usize>,
    pub sink: bool,
}

/// The file as written: every key optional, unknown keys ignored.
#[derive(Deserialize)]
struct RawConfig {
    block_size: Option<usize>,
    vocab_size: Option<usize>,
    n_layer: Option<usize>,
    n_head: Option<usize>,
    d_head: Option<usize>,
    d_model: Option<usize>,
    #[serde(alias = "n_mlp")]
    d_mlp: Option<usize>,
    bias: Option<bool>,
    ln_bias: Option<bool>,
    rms_norm: Option<bool>,
    residual_activation_type: Option<String>,
    activation_type: Option<String>,
    afrac: Option<f64>,
    afrac_loctypes: Option<String>,
    tied_unembed: Option<bool>,
    enable_bigram_table: Option<bool>,
    d_pos_emb: Option<usize>,
    sink: Option<bool>,
}

/// Dimensions above this are refused: they are far beyond any released model
/// and would only make later size arithmetic overflow.
const MAX_DIM: usize = 1 << 24;
/// More layers than any model has (GPT-3 has 96); a config's list of
/// parameters grows with them, so they are bounded before it is made.
const MAX_LAYERS: usize = 1024;

impl Config {
    pub fn from_json(text: &str) -> Result<Config, ModelError> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("not a valid config: {e}")))?;
        let d_model = raw.d_model.unwrap_or(768);
        let n_head = raw.n_head.unwrap_or(12);
        if n_head == 0 {
            return Err(ModelError::Config("n_head must be at least 1".into()));
        }
        let config = Config {
            block_size: raw.block_size.unwrap_or(1024),
            vocab_size: raw.vocab_size.unwrap_or(50304),
            n_layer: raw.n_layer.unwrap_or(12),
            n_head,
            d_head: raw.d_head.unwrap_or(d_model / n_head),
            d_model,
            d_mlp: raw.d_mlp.unwrap_or(d_model.saturating_mul(4)),
            bias: raw.bias.unwrap_or(true),
            ln_bias: raw.ln_bias.unwrap_or(true),
            rms_norm: raw.rms_norm.unwrap_or(false),
            residual_relu: match raw.residual_activation_type.as_deref().unwrap_or("identity") {
                "identity" => false,
                "relu" => true,
                other => {
                    return Err(ModelError::Config(format!(
                        "residual_activation_type {other:?} is not one of \"identity\", \"relu\""
                    )))
                }
            },
            activation: match raw.activation_type.as_deref().unwrap_or("gelu") {
                "gelu" => Activation::Gelu,
                "relu" => Activation::Relu,
                other => {
                    return Err(ModelError::Config(format!(
                        "activation_type {other:?} is not one of \"gelu\", \"relu\""
                    )))
                }
            },
            afrac: raw.afrac,
            topk_sites: parse_loctypes(
                raw.afrac_loctypes.as_deref().unwrap_or("attn_in,attn_out,mlp_in,mlp_out"),
            )?,
            tied_unembed: raw.tied_unembed.unwrap_or(true),
            enable_bigram_table: raw.enable_bigram_table.unwrap_or(false),
            d_pos_emb: raw.d_pos_emb,
            sink: raw.sink.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let dims = [
            ("block_size", self.block_size),
            ("vocab_size", self.vocab_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("d_head", self.d_head),
            ("d_model", self.d_model),
            ("d_mlp", self.d_mlp),
            ("d_pos_emb", self.d_pos_emb.unwrap_or(1)),
        ];
        for (name, value) in dims {
            if value == 0 || value > MAX_DIM {
                return Err(ModelError::Config(format!("{name} = {value} is out of range 1..={MAX_DIM}")));
            }
        }
        if self.n_layer > MAX_LAYERS {
            return Err(ModelError::Config(format!("n_layer = {} is out of range 1..={MAX_LAYERS}", self.n_layer)));
        }
        if self.n_head.checked_mul(self.d_head).is_none_or(|width| width > MAX_DIM) {
            return Err(ModelError::Config("n_head * d_head is too large".into()));
        }
        if let Some(afrac) = self.afrac {
            if !(0.0..=1.0).contains(&afrac) {
                return Err(ModelError::Config(format!("afrac = {afrac} is not in [0, 1]")));
            }
        }
        Ok(())
    }

    /// Width of every attention and MLP input: the residual, plus the
    /// concatenated position embedding when there is one.
    pub fn d_in(&self) -> usize {
        self.d_model + self.d_pos_emb.unwrap_or(0)
    }

    /// Width of q, k, v and the attention output y (all heads).
    pub fn d_attn(&self) -> usize {
        self.n_head * self.d_head
    }

    /// How many entries AbsTopK keeps at `site` for a vector of `width`, or
    /// None when the site is not sparsified. Like the reference, a plain
    /// truncation of `afrac * width` in double precision.
    pub fn topk_k(&self, site: TopkSite, width: usize) -> Option<usize> {
        let afrac = self.afrac?;
        self.topk_sites.contains(&site).then_some((afrac * width as f64) as usize)
    }
}

/// One parameter a model of a config has, as `Model::from_bytes` reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// The PyTorch name.
    pub name: String,
    pub shape: Vec<usize>,
    /// Kept by its nonzeros (a weight matrix or embedding), or dense.
    pub sparse: bool,
    /// False for the one parameter a file may leave out (`final_logits_bias`, zeros).
    pub required: bool,
}

/// Memory a model may need beyond what its file could hold: some slack for
/// the row pointers of small sparse matrices (the released 0.4B shape needs
/// well under 1 MB of them).
const MODEL_SLACK_BYTES: u64 = 16 << 20;

/// The most memory one run's activations may take: wasm32 has 4 GB in all.
pub const MAX_RUN_BYTES: u64 = 2 << 30;

impl Config {
    /// Every parameter of a model of this config, in the order
    /// `Model::weight_stats` lists them.
    pub fn parameters(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        self.tree().for_each(|name, leaf| {
            let (Leaf::Matrix(spec) | Leaf::Vector(spec) | Leaf::Table(spec)) = leaf;
            out.push(ParamSpec {
                name: name.to_string(),
                shape: spec.shape.clone(),
                sparse: spec.role.sparse(),
                required: spec.role.required(),
            });
        });
        out
    }

    /// Bytes a model of this config takes in memory besides its nonzeros:
    /// every dense parameter, and a row pointer per row of each sparse one.
    pub fn model_bytes(&self) -> u64 {
        self.parameters()
            .iter()
            .map(|p| match p.sparse {
                true => 4 * (p.shape[0] as u64 + 1),
                false => 4 * p.shape.iter().map(|&d| d as u64).product::<u64>(),
            })
            .sum()
    }

    /// Refuses a config whose model would take far more memory than a file
    /// of `file_bytes` can describe: a dense parameter is stored whole (or
    /// its nonzeros, which a hostile file could leave empty), so a config
    /// that promises gigabytes over a file of kilobytes is a memory bomb.
    pub fn check_model_fits(&self, file_bytes: u64) -> Result<(), ModelError> {
        let needed = self.model_bytes();
        let budget = file_bytes.saturating_mul(2).saturating_add(MODEL_SLACK_BYTES);
        if needed > budget {
            return Err(ModelError::Config(format!(
                "its dimensions need {} of memory, but a model file of {} can describe at most {}: the config does not belong to this file",
                megabytes(needed),
                megabytes(file_bytes),
                megabytes(budget)
            )));
        }
        Ok(())
    }

    /// Bytes of activations a run of `tokens` tokens allocates at most:
    /// every recorded site and the logits per token, and one head's scores.
    pub fn run_bytes(&self, tokens: usize) -> u64 {
        let (d, d_in, d_attn, d_mlp) = (self.d_model as u64, self.d_in() as u64, self.d_attn() as u64, self.d_mlp as u64);
        // Per layer: the residual in, mid and out, the two deltas, both
        // normalised inputs, q, k, v and y, the MLP's pre and post activations.
        let per_layer = 5 * d + 2 * d_in + 4 * d_attn + 2 * d_mlp;
        let per_token = self.n_layer as u64 * per_layer + 2 * d + 2 * self.vocab_size as u64;
        let t = tokens as u64;
        4 * (t * per_token + t * t)
    }
}

fn megabytes(bytes: u64) -> String {
    match bytes {
        b if b >= 10 << 20 => format!("{} MB", b >> 20),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1 << 20) as f64),
        b => format!("{b} bytes"),
    }
}

fn parse_loctypes(text: &str) -> Result<Vec<TopkSite>, ModelError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            TopkSite::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
                ModelError::Config(format!("afrac_loctypes names an unknown site {name:?}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_alias_and_unknown_keys() {
        let c = Config::from_json(r#"{"d_model": 64, "n_head": 4, "n_mlp": 100, "pfrac": 0.1}"#).unwrap();
        assert_eq!(c.d_head, 16);
        assert_eq!(c.d_mlp, 100);
        assert!(c.bias && c.ln_bias && c.tied_unembed && !c.rms_norm);
        assert_eq!(c.topk_sites.len(), 4);
        assert_eq!(c.topk_k(TopkSite::AttnIn, 64), None, "afrac unset: no top-k");
    }

    #[test]
    fn topk_k_truncates_like_python_int() {
        let c = Config::from_json(r#"{"afrac": 0.29, "afrac_loctypes": "attn_in"}"#).unwrap();
        assert_eq!(c.topk_k(TopkSite::AttnIn, 100), Some(28));
        assert_eq!(c.topk_k(TopkSite::MlpIn, 100), None);
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_json(r#"{"activation_type": "swish"}"#).unwrap_err().to_string();
        assert!(e.contains("swish"), "{e}");
        let e = Config::from_json(r#"{"afrac_loctypes": "attn_in,bogus"}"#).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Config::from_json(r#"{"n_head": 0}"#).unwrap_err().to_string();
        assert!(e.contains("n_head"), "{e}");
        let e = Config::from_json(r#"{"n_layer": 1500000}"#).unwrap_err().to_string();
        assert!(e.contains("n_layer = 1500000 is out of range 1..=1024"), "{e}");
        assert!(Config::from_json("[1,2]").is_err());
    }
}
