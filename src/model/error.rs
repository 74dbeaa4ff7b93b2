use thiserror::Error;

/// Everything that can be wrong with a model, its files or its input. Each
/// message names the file, tensor or value at fault.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    #[error("config.json: {0}")]
    Config(String),
    #[error("model.safetensors: {0}")]
    File(String),
    #[error("model.safetensors: tensor `{name}` is missing, but the config needs it")]
    MissingTensor { name: String },
    #[error("model.safetensors: tensor `{name}` has dtype {dtype}, but only F32 is supported")]
    Dtype { name: String, dtype: String },
    #[error("model.safetensors: tensor `{name}` has shape {found:?}, but the config implies {expected:?}")]
    Shape { name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("token id {id} at position {position} is out of range: vocab_size is {vocab_size}")]
    TokenOutOfRange { id: u64, position: usize, vocab_size: usize },
    #[error("{count} tokens are more than the model's block_size of {block_size}")]
    TooManyTokens { count: usize, block_size: usize },
    #[error("a run of {tokens} tokens would need {megabytes} MB for its activations, more than the {limit} MB a run may use: give fewer tokens")]
    RunTooLarge { tokens: usize, megabytes: u64, limit: u64 },
    #[error("no tokens to run: give at least one token id")]
    NoTokens,
    #[error("token list: {0}")]
    TokenList(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("objective: {0}")]
    Objective(String),
    #[error("intervention {0}")]
    Intervention(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}
