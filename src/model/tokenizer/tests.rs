//! The tokenizer against hand-checked encodings and hostile vocabularies.

use super::*;

fn release_files() -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    (read("encoder.json"), read("vocab.bpe"))
}

/// xorshift: the same cases every run.
fn random(seed: u64) -> impl FnMut(usize) -> usize {
    let mut state = seed;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    }
}

fn merged(tok: &Tokenizer, piece: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    tok.merge(piece, &mut ids);
    ids
}

/// Merging as the tokenizer did before it kept a heap: scan every
/// adjacent pair, join the lowest ranked (the leftmost of equals), again.
fn merged_by_scanning(tok: &Tokenizer, piece: &[u8]) -> Vec<u32> {
    let mut parts: Vec<u32> = piece.iter().map(|&b| tok.byte_ids[b as usize]).collect();
    loop {
        let best = (0..parts.len().saturating_sub(1))
            .filter_map(|i| tok.merge_of(parts[i], parts[i + 1]).map(|(rank, id)| (rank, i, id)))
            .min();
        let Some((_, i, id)) = best else { return parts };
        parts[i] = id;
        parts.remove(i + 1);
    }
}

/// Merging as tiktoken, which made the reference encodings, does: a
/// piece that is a token is that token; else scan every adjacent pair
/// and join the one whose bytes together are the token of the lowest
/// rank (here the rank of the merge in vocab.bpe that makes it).
fn merged_like_tiktoken(ranks: &HashMap<Vec<u8>, u32>, ids: &HashMap<Vec<u8>, u32>, piece: &[u8]) -> Vec<u32> {
    if let Some(&id) = ids.get(piece) {
        return vec![id];
    }
    let mut bounds: Vec<usize> = (0..=piece.len()).collect();
    while let Some((_, i)) = (0..bounds.len().saturating_sub(2))
        .filter_map(|i| ranks.get(&piece[bounds[i]..bounds[i + 2]]).map(|&rank| (rank, i)))
        .min()
    {
        bounds.remove(i + 1);
    }
    bounds.windows(2).map(|w| ids[&piece[w[0]..w[1]]]).collect()
}

/// On the release's files, for many random short pieces (runs of a few
/// tokens' bytes, slices of the reference texts, strings of code's
/// commonest characters): the heap gives what scanning gives, and what
/// tiktoken's way of ranking gives.
#[test]
fn merging_with_a_heap_matches_scanning_and_tiktoken_on_the_release_files() {
    let (encoder, vocab) = release_files();
    let tok = Tokenizer::from_files(&encoder, &vocab).unwrap();
    let ids: HashMap<Vec<u8>, u32> = tok.tokens.iter().enumerate().map(|(id, t)| (t.clone(), id as u32)).collect();
    let byte_of = byte_of_char();
    let bytes = |text: &str| text.chars().map(|c| byte_of[&c]).collect::<Vec<u8>>();
    let ranks: HashMap<Vec<u8>, u32> = vocab
        .lines()
        .skip(1)
        .enumerate()
        .map(|(rank, line)| (bytes(&line.replace(' ', "")), rank as u32))
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let texts: Vec<&[u8]> = cases.iter().map(|c| c["text"].as_str().unwrap().as_bytes()).filter(|t| !t.is_empty()).collect();
    let common = b" \n\t=_().,:-#'\"0123456789abcdefghijklmnopqrstuvwxyzAE";
    let tokens: Vec<&Vec<u8>> = tok.tokens.iter().filter(|t| !t.is_empty()).collect();
    let mut next = random(0x9E37_79B9_7F4A_7C15);
    for case in 0..30_000 {
        let piece: Vec<u8> = match case % 3 {
            0 => (0..1 + next(4)).flat_map(|_| tokens[next(tokens.len())].iter().copied()).collect(),
            1 => {
                let text = &texts[next(texts.len())];
                let start = next(text.len());
                text[start..(start + 1 + next(32)).min(text.len())].to_vec()
            }
            _ => (0..1 + next(40)).map(|_| common[next(common.len())]).collect(),
        };
        let got = merged(&tok, &piece);
        assert_eq!(got, merged_by_scanning(&tok, &piece), "case {case}: {piece:?}");
        assert_eq!(got, merged_like_tiktoken(&ranks, &ids, &piece), "case {case}: {piece:?}");
    }
}

/// Random merge lists over three letters, with ids in another order than
/// the merges and tokens that two merges make: the heap gives what
/// scanning gives on random pieces, runs of one letter among them.
#[test]
fn merging_with_a_heap_matches_scanning_on_random_merge_lists() {
    let chars = char_of_byte();
    let text = |bytes: &[u8]| bytes.iter().map(|&b| chars[b as usize]).collect::<String>();
    let mut next = random(0x2545_F491_4F6C_DD1D);
    for list in 0..200 {
        let mut tokens: Vec<Vec<u8>> = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        let mut merges: Vec<NamedMerge> = Vec::new();
        let mut pairs = HashSet::new();
        for _ in 0..next(40) {
            let (left, right) = (next(tokens.len()), next(tokens.len()));
            if !pairs.insert((left, right)) {
                continue;
            }
            let made = [&tokens[left][..], &tokens[right][..]].concat();
            if !tokens.contains(&made) {
                tokens.push(made);
            }
            let at = format!("merge {}", merges.len());
            merges.push((at, Some((text(&tokens[left]), text(&tokens[right])))));
        }
        // The 256 bytes, then the merged tokens under shuffled ids.
        let mut vocab: Vec<(String, u32)> = (0..=255u8).map(|b| (text(&[b]), b as u32)).collect();
        let mut ids: Vec<u32> = (256..256 + tokens.len() as u32 - 3).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, next(i + 1));
        }
        vocab.extend(tokens[3..].iter().zip(ids).map(|(t, id)| (text(t), id)));
        let parts = Parts { tokens_file: "encoder", merges_file: "merges", vocab, added: Vec::new(), merges };
        let tok = Tokenizer::from_parts(parts).unwrap();
        for case in 0..100 {
            let piece: Vec<u8> = match case % 4 {
                0 => vec![b"abc"[next(3)]; 1 + next(60)],
                _ => (0..1 + next(30)).map(|_| b"abc"[next(3)]).collect(),
            };
            assert_eq!(merged(&tok, &piece), merged_by_scanning(&tok, &piece), "list {list}, case {case}: {piece:?}");
        }
    }
}
