//! The release's tokenizer format: GPT-2 style byte-level BPE from
//! `encoder.json` + `vocab.bpe` (tinypython_2k: 2048 ids, `<|endoftext|>` =
//! 2047), encoded like tiktoken: split by the release's pattern (`pretokenize`), then merge
//! each piece's bytes by lowest rank.

use std::collections::HashMap;

use super::pretokenize::pieces;
use super::ModelError;

/// Special tokens, encoded whole wherever they appear in the text.
pub(super) const SPECIAL: [&str; 1] = ["<|endoftext|>"];

pub struct Tokenizer {
    /// Byte sequence -> id (its merge rank).
    ranks: HashMap<Vec<u8>, u32>,
    /// id -> byte sequence.
    tokens: Vec<Vec<u8>>,
    special: Vec<(String, u32)>,
}

/// The bytes in the order of their ids (0 to 255) in GPT-2 style files:
/// printable Latin-1 bytes first, then the rest.
pub(super) fn byte_order() -> Vec<u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    (0..=255u8).filter(|&b| printable(b)).chain((0..=255u8).filter(|&b| !printable(b))).collect()
}

/// The character standing for each byte in `encoder.json` and `vocab.bpe`.
pub(super) fn char_of_byte() -> [char; 256] {
    let mut chars = ['\0'; 256];
    for (c, b) in byte_of_char() {
        chars[b as usize] = c;
    }
    chars
}

/// GPT-2's printable stand-ins for bytes in `encoder.json` and `vocab.bpe`:
/// printable Latin-1 bytes stand for themselves, the rest are shifted to 256+.
fn byte_of_char() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map: HashMap<char, u8> = (0..=255u8).filter(|&b| printable(b)).map(|b| (char::from(b), b)).collect();
    for (shifted, b) in (0..=255u8).filter(|&b| !printable(b)).enumerate() {
        map.insert(char::from_u32(256 + shifted as u32).expect("valid char"), b);
    }
    map
}

impl Tokenizer {
    /// Builds the tokenizer from the text of `encoder.json` and `vocab.bpe`,
    /// checking that every merge in `vocab.bpe` names a token of the encoder.
    pub fn from_files(encoder_json: &str, vocab_bpe: &str) -> Result<Tokenizer, ModelError> {
        let encoder: HashMap<String, u32> = serde_json::from_str(encoder_json)
            .map_err(|e| ModelError::Tokenizer(format!("encoder.json is not a JSON object of ids: {e}")))?;
        // Line 1 is a version comment.
        let merges = vocab_bpe.lines().enumerate().skip(1).filter(|(_, l)| !l.trim().is_empty()).map(|(i, line)| {
            let merge = line.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()));
            (format!("vocab.bpe line {}", i + 1), merge)
        });
        Tokenizer::from_parts("encoder.json", &encoder, merges)
    }

    /// Builds the tokenizer from a Hugging Face `tokenizer.json` of a
    /// byte-level BPE (its `model.vocab`, `model.merges` as `"a b"` or
    /// `["a", "b"]`, and `added_tokens`).
    pub fn from_hf_json(json: &str) -> Result<Tokenizer, ModelError> {
        let (encoder, merges) = hf_parts(json)?;
        Tokenizer::from_parts("tokenizer.json", &encoder, merges.into_iter())
    }

    /// The tokenizer of `encoder` (byte-level BPE text -> id, specials
    /// included), checking that every merge (where it is named, and its two
    /// parts; `None` when it is not two parts) makes a token of the encoder.
    pub(super) fn from_parts(
        source: &str,
        encoder: &HashMap<String, u32>,
        merges: impl Iterator<Item = (String, Option<(String, String)>)>,
    ) -> Result<Tokenizer, ModelError> {
        let bad = |m: String| ModelError::Tokenizer(m);
        let byte_of = byte_of_char();
        let decode = |text: &str| -> Result<Vec<u8>, ModelError> {
            text.chars()
                .map(|c| byte_of.get(&c).copied().ok_or_else(|| bad(format!("{source}: {text:?} is not byte-level BPE text"))))
                .collect()
        };
        let n = encoder.values().max().map_or(0, |&m| m as usize + 1);
        if n > 1 << 20 {
            return Err(bad(format!("{source}: id {} is implausibly large", n - 1)));
        }
        let mut tokens = vec![Vec::new(); n];
        let mut ranks = HashMap::new();
        let mut special = Vec::new();
        for (text, &id) in encoder {
            if SPECIAL.contains(&text.as_str()) {
                special.push((text.clone(), id));
                continue;
            }
            let bytes = decode(text)?;
            tokens[id as usize] = bytes.clone();
            ranks.insert(bytes, id);
        }
        for b in 0..=255u8 {
            if !ranks.contains_key(&vec![b]) {
                return Err(bad(format!("{source} has no token for byte {b}")));
            }
        }
        for (at, merge) in merges {
            let (first, second) = merge.ok_or_else(|| bad(format!("{at}: not a merge of two tokens")))?;
            let merged = [decode(&first)?, decode(&second)?].concat();
            if !ranks.contains_key(&merged) {
                return Err(bad(format!("{at}: the merge \"{first} {second}\" is not in {source}")));
            }
        }
        Ok(Tokenizer { ranks, tokens, special })
    }

    /// The tokenizer of a model folder, if it has `encoder.json` and `vocab.bpe`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_dir(dir: &std::path::Path) -> Result<Option<Tokenizer>, ModelError> {
        let (encoder, vocab) = (dir.join("encoder.json"), dir.join("vocab.bpe"));
        if !encoder.exists() && !vocab.exists() {
            return Ok(None);
        }
        let read = |path: std::path::PathBuf| {
            std::fs::read_to_string(&path)
                .map_err(|e| ModelError::Io { path: path.display().to_string(), message: e.to_string() })
        };
        Tokenizer::from_files(&read(encoder)?, &read(vocab)?).map(Some)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Token ids of `text`; special tokens such as `<|endoftext|>` are allowed.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        loop {
            let next_special =
                self.special.iter().filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id))).min();
            match next_special {
                Some((at, len, id)) => {
                    self.encode_ordinary(&rest[..at], &mut ids);
                    ids.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_ordinary(rest, &mut ids);
                    return ids;
                }
            }
        }
    }

    fn encode_ordinary(&self, text: &str, ids: &mut Vec<u32>) {
        for piece in pieces(text) {
            let bytes = piece.as_bytes();
            match self.ranks.get(bytes) {
                Some(&id) => ids.push(id),
                None => self.merge(bytes, ids),
            }
        }
    }

    /// Byte-pair merging of one piece: repeatedly join the adjacent pair
    /// whose concatenation has the lowest rank.
    fn merge(&self, piece: &[u8], ids: &mut Vec<u32>) {
        // Boundaries of the current parts.
        let mut bounds: Vec<usize> = (0..=piece.len()).collect();
        loop {
            let best = (0..bounds.len().saturating_sub(2))
                .filter_map(|i| self.ranks.get(&piece[bounds[i]..bounds[i + 2]]).map(|&rank| (rank, i)))
                .min();
            match best {
                Some((_, i)) => {
                    bounds.remove(i + 1);
                }
                None => break,
            }
        }
        ids.extend(bounds.windows(2).map(|w| self.ranks[&piece[w[0]..w[1]]]));
    }

    /// The bytes of one token (empty for an unknown id).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        if let Some((text, _)) = self.special.iter().find(|(_, s)| *s == id) {
            return text.as_bytes();
        }
        self.tokens.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The text of `ids` (invalid UTF-8 shown as U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A merge as `from_parts` takes it: where it is named, and its two parts
/// (None when it is not two parts).
pub(super) type NamedMerge = (String, Option<(String, String)>);

/// The encoder (text -> id, added tokens included) and the merges of a
/// Hugging Face `tokenizer.json`.
pub(super) fn hf_parts(json: &str) -> Result<(HashMap<String, u32>, Vec<NamedMerge>), ModelError> {
    let bad = |m: String| ModelError::Tokenizer(format!("tokenizer.json: {m}"));
    #[derive(serde::Deserialize)]
    struct File {
        model: Bpe,
        #[serde(default)]
        added_tokens: Vec<Added>,
    }
    #[derive(serde::Deserialize)]
    struct Bpe {
        #[serde(rename = "type")]
        kind: Option<String>,
        vocab: HashMap<String, u32>,
        merges: Vec<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Added {
        id: u32,
        content: String,
    }
    let file: File = serde_json::from_str(json).map_err(|e| bad(format!("not a tokenizers file: {e}")))?;
    if file.model.kind.as_deref().is_some_and(|k| k != "BPE") {
        return Err(bad(format!("a {:?} model, not BPE", file.model.kind.unwrap_or_default())));
    }
    let mut encoder = file.model.vocab;
    encoder.extend(file.added_tokens.into_iter().map(|t| (t.content, t.id)));
    let merges = file
        .model
        .merges
        .into_iter()
        .enumerate()
        .map(|(i, merge)| {
            let pair = match merge {
                serde_json::Value::String(line) => line.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
                serde_json::Value::Array(pair) => match &pair[..] {
                    [serde_json::Value::String(a), serde_json::Value::String(b)] => Some((a.clone(), b.clone())),
                    _ => None,
                },
                _ => None,
            };
            (format!("tokenizer.json merge {i}"), pair)
        })
        .collect();
    Ok((encoder, merges))
}
