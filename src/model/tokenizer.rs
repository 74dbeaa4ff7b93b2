//! The release's tokenizer format: GPT-2 style byte-level BPE from
//! `encoder.json` + `vocab.bpe` (tinypython_2k: 2048 ids, `<|endoftext|>` =
//! 2047), or a Hugging Face `tokenizer.json` of the same kind. The text is
//! split by the release's pattern (`pretokenize`), then each piece's bytes
//! are merged as BPE defines it (GPT-2's `bpe()`, Hugging Face's
//! tokenizers): the adjacent pair listed earliest in the merges first, the
//! leftmost of equals, into the token of their bytes together.
//!
//! tiktoken, which made the release's reference encodings, ranks a pair by
//! the id of its merged bytes and takes a piece that is a token whole. On
//! files made by training, where ids follow the merges, that is the same;
//! a test compares the two on the release's files.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use super::pretokenize::pieces;
use super::ModelError;

/// Special tokens, encoded whole wherever they appear in the text.
pub(super) const SPECIAL: [&str; 1] = ["<|endoftext|>"];

/// More merges than a file could sensibly hold (GPT-2 has 50,000); a rank
/// fits in the 24 bits above a position in `Tokenizer::merge`'s heap.
const MAX_MERGES: usize = 1 << 24;

/// The bits of a position in a piece in `Tokenizer::merge`'s heap: a piece
/// is shorter than a terabyte.
const POSITION_BITS: u32 = 40;

pub struct Tokenizer {
    /// Which adjacent parts merge: (left id, right id) -> (rank, merged id),
    /// the rank being the merge's position in the merge list.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The id of each byte: the parts a piece starts as.
    byte_ids: [u32; 256],
    /// id -> byte sequence (empty for an id no token has).
    tokens: Vec<Vec<u8>>,
    special: Vec<(String, u32)>,
}

/// A tokenizer file's contents, as [`Tokenizer::from_parts`] checks them.
#[derive(Clone)]
pub(super) struct Parts {
    /// The file of the tokens (`encoder.json`, `tokenizer.json`), for messages.
    pub tokens_file: &'static str,
    /// The file of the merges (`vocab.bpe`, `tokenizer.json`), for messages.
    pub merges_file: &'static str,
    /// Byte-level BPE text and id of each token, specials included, in file
    /// order (a text given twice kept twice).
    pub vocab: Vec<(String, u32)>,
    /// Tokens a `tokenizer.json` adds: Hugging Face matches them in the
    /// text whole (`encode` only those of [`SPECIAL`]), so no merge needs to
    /// make them.
    pub added: Vec<(String, u32)>,
    /// The merges, in rank order.
    pub merges: Vec<NamedMerge>,
}

/// A merge as `from_parts` takes it: where it is named, and its two parts
/// (None when it is not two parts).
pub(super) type NamedMerge = (String, Option<(String, String)>);

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

/// A JSON object of ids, its entries in file order. A map would keep only
/// the last id of a text given twice and hide the other.
struct Entries(Vec<(String, u32)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Entries, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of token ids")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl Tokenizer {
    /// Builds the tokenizer from the text of `encoder.json` and `vocab.bpe`,
    /// checking them as `Tokenizer::from_parts` does.
    pub fn from_files(encoder_json: &str, vocab_bpe: &str) -> Result<Tokenizer, ModelError> {
        let Entries(vocab) = serde_json::from_str(encoder_json)
            .map_err(|e| ModelError::Tokenizer(format!("encoder.json is not a JSON object of ids: {e}")))?;
        // Line 1 is a version comment.
        let merges = vocab_bpe
            .lines()
            .enumerate()
            .skip(1)
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                let merge = line.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()));
                (format!("vocab.bpe line {}", i + 1), merge)
            })
            .collect();
        Tokenizer::from_parts(Parts { tokens_file: "encoder.json", merges_file: "vocab.bpe", vocab, added: Vec::new(), merges })
    }

    /// Builds the tokenizer from a Hugging Face `tokenizer.json` of a
    /// byte-level BPE (its `model.vocab`, `model.merges` as `"a b"` or
    /// `["a", "b"]`, and `added_tokens`), checking it as
    /// `Tokenizer::from_parts` does.
    pub fn from_hf_json(json: &str) -> Result<Tokenizer, ModelError> {
        Tokenizer::from_parts(hf_parts(json)?)
    }

    /// The tokenizer of `parts`, refusing files it would read wrongly or
    /// that were not made as BPE makes them, each refusal naming the file and
    /// the merge or token:
    /// - a text with two ids, or an id with two texts (it would decode as
    ///   one of them);
    /// - a byte without a token;
    /// - a merge that is not two tokens making a token, or that repeats an
    ///   earlier one (which rank would it have?). Two merges may make one
    ///   token from different pairs: files converted from tiktoken list
    ///   every split of a token;
    /// - a token made only by merges listed before a merge that makes one of
    ///   their parts (a reversed or shuffled merge list). Training lists a
    ///   merge after its parts'; a conversion from tiktoken may list other
    ///   splits of the token earlier, which is fine;
    /// - a token of several bytes that no merge makes (an empty or cut
    ///   merge list), other than special and added tokens.
    pub(super) fn from_parts(parts: Parts) -> Result<Tokenizer, ModelError> {
        let Parts { tokens_file, merges_file, vocab, added, merges } = parts;
        let bad = |m: String| ModelError::Tokenizer(m);
        let byte_of = byte_of_char();
        let decode = |text: &str| -> Result<Vec<u8>, ModelError> {
            text.chars()
                .map(|c| byte_of.get(&c).copied().ok_or_else(|| bad(format!("{tokens_file}: {text:?} is not byte-level BPE text"))))
                .collect()
        };

        // One text, one id. An entry given again as it was (an added token
        // that is also in the vocabulary, as Hugging Face often writes
        // <|endoftext|>) is the same token.
        let mut text_of_id: HashMap<u32, &str> = HashMap::new();
        let mut id_of_text: HashMap<&str, u32> = HashMap::new();
        for &(ref text, id) in vocab.iter().chain(&added) {
            if let Some(&other) = text_of_id.get(&id).filter(|&&other| other != text) {
                return Err(bad(format!("{tokens_file}: {other:?} and {text:?} both have id {id}")));
            }
            if let Some(&other) = id_of_text.get(text.as_str()).filter(|&&other| other != id) {
                return Err(bad(format!("{tokens_file}: {text:?} has two ids, {other} and {id}")));
            }
            text_of_id.insert(id, text);
            id_of_text.insert(text, id);
        }
        let n = text_of_id.keys().max().map_or(0, |&m| m as usize + 1);
        if n > 1 << 20 {
            return Err(bad(format!("{tokens_file}: id {} is implausibly large", n - 1)));
        }
        // In id order, so that the first problem named is the same each time.
        let mut entries: Vec<(u32, &str)> = text_of_id.into_iter().collect();
        entries.sort_unstable();

        let mut tokens = vec![Vec::new(); n];
        let mut id_of_bytes: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut special = Vec::new();
        for &(id, text) in &entries {
            if SPECIAL.contains(&text) {
                special.push((text.to_string(), id));
                continue;
            }
            let bytes = decode(text)?;
            id_of_bytes.insert(bytes.clone(), id);
            tokens[id as usize] = bytes;
        }
        let mut byte_ids = [0; 256];
        for b in 0..=255u8 {
            byte_ids[b as usize] =
                *id_of_bytes.get(&[b][..]).ok_or_else(|| bad(format!("{tokens_file} has no token for byte {b}")))?;
        }

        if merges.len() > MAX_MERGES {
            return Err(bad(format!("{merges_file}: {} merges are implausibly many", merges.len())));
        }
        let mut table: HashMap<(u32, u32), (u32, u32)> = HashMap::with_capacity(merges.len());
        // The tokens made in order: by merges of bytes or of tokens made by
        // earlier merges, as training makes them.
        let mut made: HashSet<u32> = byte_ids.iter().copied().collect();
        // Merges listed before one of their parts is made: (rank, merged id, the part).
        let mut early: Vec<(usize, u32, u32)> = Vec::new();
        for (rank, (at, merge)) in merges.iter().enumerate() {
            let (first, second) = merge.as_ref().ok_or_else(|| bad(format!("{at}: not a merge of two tokens")))?;
            let (left, right) = (decode(first)?, decode(second)?);
            let merged = [&left[..], &right[..]].concat();
            let Some(&id) = id_of_bytes.get(&merged) else {
                return Err(bad(format!("{at}: the merge \"{first} {second}\" is not in {tokens_file}")));
            };
            let part = |bytes: &[u8], text: &str| {
                id_of_bytes.get(bytes).copied().ok_or_else(|| {
                    bad(format!("{at}: {text:?} of the merge \"{first} {second}\" is not a token of {tokens_file}"))
                })
            };
            let pair = (part(&left, first)?, part(&right, second)?);
            if let Some(&(earlier, _)) = table.get(&pair) {
                return Err(bad(format!("{at}: the merge \"{first} {second}\" repeats {}", merges[earlier as usize].0)));
            }
            table.insert(pair, (rank as u32, id));
            match [pair.0, pair.1].into_iter().find(|p| !made.contains(p)) {
                None => {
                    made.insert(id);
                }
                Some(missing) => early.push((rank, id, missing)),
            }
        }
        let text_of = |id: u32| entries.binary_search_by_key(&id, |&(i, _)| i).map_or("", |at| entries[at].1);
        if let Some(&(rank, _, missing)) = early.iter().find(|&&(_, id, _)| !made.contains(&id)) {
            let (at, merge) = &merges[rank];
            let (first, second) = merge.as_ref().expect("checked above");
            return Err(bad(format!(
                "{at}: the merge \"{first} {second}\" uses {:?}, which no byte or earlier merge makes (are the merges out of order?)",
                text_of(missing)
            )));
        }
        let merged: HashSet<u32> = table.values().map(|&(_, id)| id).collect();
        let added: HashSet<&str> = added.iter().map(|(text, _)| text.as_str()).collect();
        let unmade = entries.iter().find(|&&(id, text)| {
            tokens[id as usize].len() > 1 && !merged.contains(&id) && !added.contains(text) && !SPECIAL.contains(&text)
        });
        if let Some((id, text)) = unmade {
            return Err(bad(format!("{tokens_file}: {text:?} (id {id}) is made by no merge in {merges_file}")));
        }
        Ok(Tokenizer { merges: table, byte_ids, tokens, special })
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
        // Where each special token next occurs, at or after `start`. One is
        // searched for again only once `start` has passed it, so the text is
        // scanned once per special however many it holds.
        let find = |special: &str, from: usize| text[from..].find(special).map(|at| from + at);
        let mut next: Vec<Option<usize>> = self.special.iter().map(|(s, _)| find(s, 0)).collect();
        let mut start = 0;
        loop {
            let first = self.special.iter().zip(&next).filter_map(|((s, id), at)| at.map(|at| (at, s.len(), *id))).min();
            let Some((at, len, id)) = first else {
                self.encode_ordinary(&text[start..], &mut ids);
                return ids;
            };
            self.encode_ordinary(&text[start..at], &mut ids);
            ids.push(id);
            start = at + len;
            for ((s, _), at) in self.special.iter().zip(&mut next) {
                if at.is_some_and(|at| at < start) {
                    *at = find(s, start);
                }
            }
        }
    }

    fn encode_ordinary(&self, text: &str, ids: &mut Vec<u32>) {
        for piece in pieces(text) {
            self.merge(piece.as_bytes(), ids);
        }
    }

    /// The rank and merged id of two adjacent parts, if they merge.
    fn merge_of(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.merges.get(&(left, right)).copied()
    }

    /// Byte-pair merging of one piece: repeatedly join the adjacent pair
    /// listed earliest in the merges, the leftmost of equals. Candidate pairs
    /// wait in a heap, so a piece of n bytes takes O(n log n): scanning every
    /// pair at every step took seconds for a long run of spaces.
    fn merge(&self, piece: &[u8], ids: &mut Vec<u32>) {
        if piece.len() < 2 {
            ids.extend(piece.iter().map(|&b| self.byte_ids[b as usize]));
            return;
        }
        // The parts, as a list linked over the positions of their first
        // bytes, each with its merge (rank, merged id) with the part after
        // it, if they merge.
        struct Part {
            id: u32,
            prev: usize,
            next: usize,
            merge: Option<(u32, u32)>,
        }
        const NONE: usize = usize::MAX;
        let n = piece.len();
        debug_assert!((n as u64) < 1 << POSITION_BITS);
        let mut parts: Vec<Part> = piece
            .iter()
            .enumerate()
            .map(|(i, &b)| Part {
                id: self.byte_ids[b as usize],
                prev: i.checked_sub(1).unwrap_or(NONE),
                next: if i + 1 < n { i + 1 } else { NONE },
                merge: None,
            })
            .collect();
        for i in 0..n - 1 {
            parts[i].merge = self.merge_of(parts[i].id, parts[i + 1].id);
        }
        // Candidate pairs by rank, then position of the left part, in one
        // u64 (half the memory of a tuple, and faster to compare): the lowest
        // rank, then the leftmost, comes out first. A merge beside a
        // candidate changes its pair; rather than be removed, the candidate
        // is skipped when it comes out, its part's merge no longer having its
        // rank (a rank is one pair).
        let key = |rank: u32, at: usize| Reverse(u64::from(rank) << POSITION_BITS | at as u64);
        let mut candidates: BinaryHeap<Reverse<u64>> =
            parts.iter().enumerate().filter_map(|(i, part)| part.merge.map(|(rank, _)| key(rank, i))).collect();
        while let Some(Reverse(k)) = candidates.pop() {
            let (rank, at) = ((k >> POSITION_BITS) as u32, (k & ((1 << POSITION_BITS) - 1)) as usize);
            let Some((_, merged)) = parts[at].merge.filter(|&(r, _)| r == rank) else { continue };
            let right = parts[at].next;
            let after = parts[right].next;
            parts[right].merge = None;
            parts[at].id = merged;
            parts[at].next = after;
            parts[at].merge = None;
            if after != NONE {
                parts[after].prev = at;
                parts[at].merge = self.merge_of(merged, parts[after].id);
                if let Some((rank, _)) = parts[at].merge {
                    candidates.push(key(rank, at));
                }
            }
            let before = parts[at].prev;
            if before != NONE {
                parts[before].merge = self.merge_of(parts[before].id, merged);
                if let Some((rank, _)) = parts[before].merge {
                    candidates.push(key(rank, before));
                }
            }
        }
        let mut at = 0;
        while at != NONE {
            ids.push(parts[at].id);
            at = parts[at].next;
        }
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

/// The parts of a Hugging Face `tokenizer.json`.
pub(super) fn hf_parts(json: &str) -> Result<Parts, ModelError> {
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
        vocab: Entries,
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
    Ok(Parts {
        tokens_file: "tokenizer.json",
        merges_file: "tokenizer.json",
        vocab: file.model.vocab.0,
        added: file.added_tokens.into_iter().map(|t| (t.content, t.id)).collect(),
        merges,
    })
}

#[cfg(test)]
mod tests;
