//! Training a tokenizer in the release's format on a corpus: byte-level BPE
//! over the pieces of the release's split pattern, each merge the most
//! frequent adjacent pair, so the result loads and encodes through the same
//! [`Tokenizer`] code as the released `tinypython_2k`.

use std::collections::HashMap;

use super::pretokenize::pieces;
use super::tokenizer::{byte_order, char_of_byte, hf_parts, SPECIAL};
use super::{ModelError, Tokenizer};

/// `encoder.json` and `vocab.bpe`, as text.
pub struct TokenizerFiles {
    pub encoder_json: String,
    pub vocab_bpe: String,
}

impl TokenizerFiles {
    /// The release's files for the tokenizer of a Hugging Face
    /// `tokenizer.json`, after checking it as [`Tokenizer::from_hf_json`]
    /// does: the encoder in id order, the merges in rank order. They are
    /// checked as [`Tokenizer::from_files`] reads them too: they have no
    /// place for an added token other than `<|endoftext|>` that no merge makes.
    pub fn from_hf_json(json: &str) -> Result<TokenizerFiles, ModelError> {
        let parts = hf_parts(json)?;
        Tokenizer::from_parts(parts.clone())?;
        // The added tokens join the encoder; one that repeats a vocabulary
        // entry (checked to be the same text and id) is written once.
        let mut entries: Vec<(u32, String)> = parts.vocab.into_iter().chain(parts.added).map(|(text, id)| (id, text)).collect();
        entries.sort_unstable();
        entries.dedup();
        let entries: Vec<String> = entries
            .iter()
            .map(|(id, text)| format!("{}: {id}", serde_json::to_string(text).expect("strings serialize")))
            .collect();
        let mut vocab_bpe = String::from("#version: 0.2\n");
        for (_, pair) in parts.merges {
            let (a, b) = pair.expect("checked by from_parts");
            vocab_bpe.push_str(&format!("{a} {b}\n"));
        }
        let files = TokenizerFiles { encoder_json: format!("{{{}}}", entries.join(", ")), vocab_bpe };
        Tokenizer::from_files(&files.encoder_json, &files.vocab_bpe).map_err(|e| match e {
            ModelError::Tokenizer(e) => {
                ModelError::Tokenizer(format!("tokenizer.json cannot be written as encoder.json and vocab.bpe: {e}"))
            }
            e => e,
        })?;
        Ok(files)
    }
}

impl Tokenizer {
    /// Learns `vocab_size` ids from `text`: the 256 bytes, merges in order of
    /// discovery, and `<|endoftext|>` last (it separates documents and is
    /// never merged). Deterministic: ties go to the pair of lowest ids.
    pub fn train(text: &str, vocab_size: usize) -> Result<TokenizerFiles, ModelError> {
        if vocab_size < 257 {
            return Err(ModelError::Tokenizer(format!("a vocabulary of {vocab_size} cannot hold the 256 bytes and <|endoftext|>")));
        }
        let order = byte_order();
        let mut id_of_byte = [0u32; 256];
        for (id, &b) in order.iter().enumerate() {
            id_of_byte[b as usize] = id as u32;
        }
        // Each distinct piece once, with how often it occurs.
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for document in text.split(SPECIAL[0]) {
            for piece in pieces(document) {
                *counts.entry(piece).or_default() += 1;
            }
        }
        let mut words: Vec<(Vec<u32>, u64)> =
            counts.into_iter().map(|(p, n)| (p.bytes().map(|b| id_of_byte[b as usize]).collect(), n)).collect();
        words.sort(); // HashMap order is random: fix it
        let mut tokens: Vec<Vec<u8>> = order.iter().map(|&b| vec![b]).collect();
        let mut known: HashMap<Vec<u8>, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut merges: Vec<(u32, u32)> = Vec::new();
        while tokens.len() < vocab_size - 1 {
            let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
            for (symbols, n) in &words {
                for pair in symbols.windows(2) {
                    *pairs.entry((pair[0], pair[1])).or_default() += n;
                }
            }
            // The most frequent pair whose bytes are not a token yet.
            let best = pairs
                .into_iter()
                .filter(|&(_, n)| n >= 2)
                .filter(|&((a, b), _)| !known.contains_key(&[&tokens[a as usize][..], &tokens[b as usize][..]].concat()))
                .max_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(&x.0)));
            let Some(((a, b), _)) = best else { break };
            let id = tokens.len() as u32;
            let merged = [&tokens[a as usize][..], &tokens[b as usize][..]].concat();
            known.insert(merged.clone(), id);
            tokens.push(merged);
            merges.push((a, b));
            for (symbols, _) in &mut words {
                let mut i = 0;
                while i + 1 < symbols.len() {
                    if symbols[i] == a && symbols[i + 1] == b {
                        symbols[i] = id;
                        symbols.remove(i + 1);
                    }
                    i += 1;
                }
            }
        }
        let chars = char_of_byte();
        let text_of = |t: &[u8]| t.iter().map(|&b| chars[b as usize]).collect::<String>();
        let mut encoder = serde_json::Map::new();
        for (id, token) in tokens.iter().enumerate() {
            encoder.insert(text_of(token), id.into());
        }
        encoder.insert(SPECIAL[0].to_string(), tokens.len().into());
        let mut vocab_bpe = String::from("#version: 0.2\n");
        for (a, b) in merges {
            vocab_bpe.push_str(&format!("{} {}\n", text_of(&tokens[a as usize]), text_of(&tokens[b as usize])));
        }
        let encoder_json = serde_json::Value::Object(encoder).to_string();
        Ok(TokenizerFiles { encoder_json, vocab_bpe })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{corpus, Task};

    #[test]
    fn trains_a_loadable_tokenizer_that_round_trips_and_splits_tasks_cleanly() {
        let text = corpus(11, 300_000);
        let files = Tokenizer::train(&text, 512).unwrap();
        let again = Tokenizer::train(&text, 512).unwrap();
        assert_eq!(files.encoder_json, again.encoder_json, "deterministic");
        let tokenizer = Tokenizer::from_files(&files.encoder_json, &files.vocab_bpe).unwrap();
        assert_eq!(tokenizer.vocab_size(), 512);
        assert_eq!(tokenizer.encode("<|endoftext|>"), vec![511]);
        let sample = &text[..20_000.min(text.len())];
        let ids = tokenizer.encode(sample);
        assert_eq!(tokenizer.decode(&ids), sample);
        assert!(ids.len() * 2 < sample.len(), "merges compress the corpus: {} tokens for {} bytes", ids.len(), sample.len());
        for odd in ["naïve café ✓ 😀\r\n\t", "", "x  = 1"] {
            assert_eq!(tokenizer.decode(&tokenizer.encode(odd)), odd);
        }
        // Every task example: the prompt's tokens are a prefix of prompt +
        // answer's, and the two answers start with different tokens.
        for task in Task::ALL {
            for e in task.examples(5, 200) {
                let prompt = tokenizer.encode(&e.prompt);
                let right = tokenizer.encode(&(e.prompt.clone() + &e.correct));
                let wrong = tokenizer.encode(&(e.prompt.clone() + &e.wrong));
                assert!(right.starts_with(&prompt) && wrong.starts_with(&prompt), "{}: {e:?}", task.name());
                assert_ne!(right[prompt.len()], wrong[prompt.len()], "{}: {e:?}", task.name());
            }
        }
    }

    #[test]
    fn a_vocabulary_too_small_for_the_bytes_is_refused() {
        assert!(Tokenizer::train("abc", 200).is_err());
    }
}
