//! The tinypython-format tokenizer against the reference encodings (tiktoken
//! with the release's split pattern) in tests/tokenizer, a copy of
//! shared/tokenizer.

use circuitscope::model::{Tokenizer, TokenizerFiles};

fn tokenizer() -> Tokenizer {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    Tokenizer::from_files(&read("encoder.json"), &read("vocab.bpe")).unwrap()
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn encodes_every_reference_text_exactly_and_decodes_back() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 2048);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert!(cases.len() >= 40);
    for (i, case) in cases.iter().enumerate() {
        let ids = tok.encode(&case.text);
        if ids != case.ids {
            let first = ids.iter().zip(&case.ids).position(|(a, b)| a != b).unwrap_or(ids.len().min(case.ids.len()));
            panic!(
                "case {i}: first difference at token {first}: ours {:?}, reference {:?} (text near {:?})",
                &ids[first..(first + 5).min(ids.len())],
                &case.ids[first..(first + 5).min(case.ids.len())],
                tok.decode(&case.ids[first.saturating_sub(3)..(first + 3).min(case.ids.len())])
            );
        }
        assert_eq!(tok.decode(&ids), case.text, "case {i}: round trip");
    }
}

#[test]
fn special_tokens_and_unicode() {
    let tok = tokenizer();
    let ids = tok.encode("x = 1<|endoftext|>y = 'é'\n");
    assert!(ids.contains(&2047));
    assert_eq!(tok.decode(&ids), "x = 1<|endoftext|>y = 'é'\n");
    assert_eq!(tok.encode(""), Vec::<u32>::new());
}

#[test]
fn inconsistent_files_are_named() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let encoder = std::fs::read_to_string(dir.join("encoder.json")).unwrap();
    let e = Tokenizer::from_files("[1, 2]", "#version: 0.2\n").err().unwrap().to_string();
    assert!(e.contains("encoder.json"), "{e}");
    let e = Tokenizer::from_files(&encoder, "#version: 0.2\nzz qq\n").err().unwrap().to_string();
    assert!(e.contains("vocab.bpe line 2"), "{e}");
}

/// The same tokenizer as a Hugging Face `tokenizer.json` (as `tokenizers`
/// writes it: the vocabulary without the special token, which is an added
/// token; merges as "a b" strings or, in newer files, as pairs).
fn hf_json(pairs: bool) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let mut vocab: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("encoder.json")).unwrap()).unwrap();
    let eot = vocab.remove("<|endoftext|>").unwrap();
    let merges: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("vocab.bpe"))
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| if pairs { serde_json::json!(l.split(' ').collect::<Vec<_>>()) } else { serde_json::json!(l) })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "added_tokens": [{"id": eot, "content": "<|endoftext|>", "special": true}],
        "pre_tokenizer": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
    })
    .to_string()
}

#[test]
fn a_hugging_face_tokenizer_json_gives_the_reference_ids() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for pairs in [false, true] {
        let tok = Tokenizer::from_hf_json(&hf_json(pairs)).unwrap();
        assert_eq!(tok.vocab_size(), 2048);
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(tok.encode(&case.text), case.ids, "case {i} (merges as pairs: {pairs})");
        }
        assert_eq!(tok.encode("<|endoftext|>"), vec![2047]);
    }
    let e = Tokenizer::from_hf_json(r#"{"model": {"type": "WordPiece", "vocab": {}, "merges": []}}"#).err().unwrap().to_string();
    assert!(e.contains("\"WordPiece\" model, not BPE"), "{e}");
    let broken = hf_json(false).replacen("\"merges\":[\"", "\"merges\":[\"zz qq\",\"", 1);
    let e = Tokenizer::from_hf_json(&broken).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json merge 0: the merge \"zz qq\" is not in tokenizer.json"), "{e}");
}

/// `convert --tokenizer tokenizer.json` writes the release's files from it:
/// they give the reference ids too, and are the release's files themselves
/// (the same encoder, the same merges in the same order).
#[test]
fn a_tokenizer_json_becomes_the_releases_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer");
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for pairs in [false, true] {
        let files = TokenizerFiles::from_hf_json(&hf_json(pairs)).unwrap();
        let tok = Tokenizer::from_files(&files.encoder_json, &files.vocab_bpe).unwrap();
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(tok.encode(&case.text), case.ids, "case {i} (merges as pairs: {pairs})");
        }
        let release_encoder: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("encoder.json")).unwrap()).unwrap();
        let ours: serde_json::Value = serde_json::from_str(&files.encoder_json).unwrap();
        assert_eq!(ours, release_encoder);
        let merges = |text: &str| text.lines().skip(1).filter(|l| !l.is_empty()).map(String::from).collect::<Vec<_>>();
        assert_eq!(merges(&files.vocab_bpe), merges(&std::fs::read_to_string(dir.join("vocab.bpe")).unwrap()));
    }
}

fn release_file(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer").join(name)).unwrap()
}

/// GPT-2's printable stand-in for a byte in encoder.json and vocab.bpe.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        char::from(b)
    } else {
        char::from_u32(256 + (0..b).filter(|&c| !printable(c)).count() as u32).unwrap()
    }
}

/// A vocabulary of the 256 bytes (id = the byte) and `extra`, as JSON.
fn vocab_of(extra: &[(&str, u32)]) -> serde_json::Map<String, serde_json::Value> {
    let mut vocab: serde_json::Map<String, serde_json::Value> = (0..=255u8).map(|b| (byte_char(b).to_string(), b.into())).collect();
    vocab.extend(extra.iter().map(|&(text, id)| (text.to_string(), id.into())));
    vocab
}

/// "ab" has the lower id, but "b c" is the earlier merge: BPE joins b and c
/// first, and "abc" is (a, bc) as Hugging Face's tokenizers and GPT-2's
/// bpe() make it. With the merges the other way round it is (ab, c).
#[test]
fn merges_follow_the_merge_list_order_not_the_ids() {
    let vocab = serde_json::Value::Object(vocab_of(&[("ab", 256), ("bc", 257)]));
    for (merges, expected) in [(["b c", "a b"], [97, 257]), (["a b", "b c"], [256, 99])] {
        let json = serde_json::json!({"model": {"type": "BPE", "vocab": vocab, "merges": merges}}).to_string();
        assert_eq!(Tokenizer::from_hf_json(&json).unwrap().encode("abc"), expected, "tokenizer.json, merges {merges:?}");
        let vocab_bpe = format!("#version: 0.2\n{}\n{}\n", merges[0], merges[1]);
        let tok = Tokenizer::from_files(&vocab.to_string(), &vocab_bpe).unwrap();
        assert_eq!(tok.encode("abc"), expected, "vocab.bpe, merges {merges:?}");
        assert_eq!(tok.decode(&expected), "abc");
    }
}

/// Reversed, the release's merges each come before the merges of their
/// parts; emptied or cut short, they make none or not all of the encoder's
/// tokens. Either way they would encode otherwise than the files were
/// trained to: refused, naming the line or the token.
#[test]
fn a_reversed_or_missing_merge_list_is_refused_naming_the_merge_or_token() {
    let (encoder, vocab) = (release_file("encoder.json"), release_file("vocab.bpe"));
    let lines: Vec<&str> = vocab.lines().skip(1).filter(|l| !l.is_empty()).collect();
    let reversed = format!("#version: 0.2\n{}\n", lines.iter().rev().copied().collect::<Vec<_>>().join("\n"));
    let e = Tokenizer::from_files(&encoder, &reversed).err().unwrap().to_string();
    assert!(e.contains(&format!("vocab.bpe line 2: the merge \"{}\" uses", lines[lines.len() - 1])), "{e}");
    assert!(e.contains("which no byte or earlier merge makes"), "{e}");

    let e = Tokenizer::from_files(&encoder, "#version: 0.2\n").err().unwrap().to_string();
    assert!(e.contains("encoder.json: \"ĠĠ\" (id 256) is made by no merge in vocab.bpe"), "{e}");
    let cut = format!("#version: 0.2\n{}\n", lines[..lines.len() - 1].join("\n"));
    let e = Tokenizer::from_files(&encoder, &cut).err().unwrap().to_string();
    assert!(e.contains("(id 2046) is made by no merge in vocab.bpe"), "{e}");

    // The same in a tokenizer.json, its merges named by their index.
    let mut json: serde_json::Value = serde_json::from_str(&hf_json(false)).unwrap();
    json["model"]["merges"].as_array_mut().unwrap().reverse();
    let e = Tokenizer::from_hf_json(&json.to_string()).err().unwrap().to_string();
    assert!(e.contains(&format!("tokenizer.json merge 0: the merge \"{}\" uses", lines[lines.len() - 1])), "{e}");
}

/// Files converted from tiktoken list every split of a token at its rank,
/// some before the merges of their parts ("a bc" here comes before "b c").
/// The token is also made in order ("ab c"), so the list is not out of
/// order: the early merge is kept, and joins a and bc once bc is made.
#[test]
fn a_merge_listed_before_its_parts_is_kept_when_its_token_is_also_made_in_order() {
    let vocab = serde_json::Value::Object(vocab_of(&[("ab", 256), ("bc", 257), ("abc", 258)]));
    let json = |merges: &[&str]| serde_json::json!({"model": {"type": "BPE", "vocab": vocab, "merges": merges}}).to_string();
    let tok = Tokenizer::from_hf_json(&json(&["a bc", "b c", "a b", "ab c"])).unwrap();
    assert_eq!(tok.encode("abc"), [258]);
    assert_eq!(tok.encode("bcab"), [257, 256]);
    // Without "ab c", only the early merge makes "abc": refused.
    let e = Tokenizer::from_hf_json(&json(&["a bc", "b c", "a b"])).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json merge 0: the merge \"a bc\" uses \"bc\", which no byte or earlier merge makes"), "{e}");
}

/// A merge given twice has two ranks: which one would be meant?
#[test]
fn a_merge_listed_twice_is_refused() {
    let vocab = release_file("vocab.bpe") + "Ġ Ġ\n";
    let e = Tokenizer::from_files(&release_file("encoder.json"), &vocab).err().unwrap().to_string();
    assert!(e.contains("vocab.bpe line 1793: the merge \"Ġ Ġ\" repeats vocab.bpe line 2"), "{e}");
}

/// Two texts with one id: the id would decode as one of them, whichever the
/// map kept. One text with two ids: one of them would never be given.
#[test]
fn an_id_of_two_texts_or_a_text_of_two_ids_is_refused_naming_both() {
    let encoder: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&release_file("encoder.json")).unwrap();
    let vocab = release_file("vocab.bpe");
    let text_of = |id: u64| encoder.iter().find(|(_, v)| v.as_u64() == Some(id)).unwrap().0.clone();
    for (text, id) in [("<|endoftext|>", 2046), (text_of(2045).as_str(), 2046)] {
        let mut clashing = encoder.clone();
        clashing.insert(text.to_string(), id.into());
        let e = Tokenizer::from_files(&serde_json::Value::Object(clashing).to_string(), &vocab).err().unwrap().to_string();
        let (a, b) = (format!("{:?}", text), format!("{:?}", text_of(2046)));
        assert!(e.contains(&a) && e.contains(&b) && e.contains("both have id 2046"), "{e}");
    }
    // A JSON object may give a text twice; a map would keep the last.
    let twice = release_file("encoder.json").replacen('{', "{\"ĠĠ\": 3000, ", 1);
    let e = Tokenizer::from_files(&twice, &vocab).err().unwrap().to_string();
    assert!(e.contains("encoder.json: \"ĠĠ\" has two ids, 3000 and 256"), "{e}");
}

/// In a tokenizer.json the added tokens join the vocabulary: one that
/// repeats a vocabulary entry (Hugging Face writes <|endoftext|> in both) is
/// that entry; one that takes another's id or gives its text another id is
/// refused.
#[test]
fn a_tokenizer_jsons_added_tokens_must_agree_with_its_vocabulary() {
    let json: serde_json::Value = serde_json::from_str(&hf_json(false)).unwrap();
    let with_added = |content: &str, id: u32, eot_in_vocab: bool| {
        let mut json = json.clone();
        json["added_tokens"] = serde_json::json!([{"id": id, "content": content, "special": true}]);
        if eot_in_vocab {
            json["model"]["vocab"]["<|endoftext|>"] = 2047.into();
        }
        json.to_string()
    };
    let tok = Tokenizer::from_hf_json(&with_added("<|endoftext|>", 2047, true)).unwrap();
    assert_eq!(tok.encode("x<|endoftext|>"), vec![tok.encode("x")[0], 2047]);
    let files = TokenizerFiles::from_hf_json(&with_added("<|endoftext|>", 2047, true)).unwrap();
    assert_eq!(files.encoder_json.matches("<|endoftext|>").count(), 1);

    let e = Tokenizer::from_hf_json(&with_added("<|endoftext|>", 2048, true)).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json: \"<|endoftext|>\" has two ids, 2047 and 2048"), "{e}");
    let e = Tokenizer::from_hf_json(&with_added("<|endoftext|>", 2046, false)).err().unwrap().to_string();
    assert!(e.contains("\"<|endoftext|>\" both have id 2046"), "{e}");
}

/// An added token other than <|endoftext|> is read whole by Hugging Face,
/// but encoder.json + vocab.bpe have no place for it: it would be a token
/// that no merge makes. Converting says so rather than writing files that
/// do not load.
#[test]
fn an_added_token_the_releases_files_cannot_hold_is_refused_when_converting() {
    let mut json: serde_json::Value = serde_json::from_str(&hf_json(false)).unwrap();
    json["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({"id": 2048, "content": "<|pad|>", "special": true}));
    let json = json.to_string();
    assert_eq!(Tokenizer::from_hf_json(&json).unwrap().vocab_size(), 2049);
    let e = TokenizerFiles::from_hf_json(&json).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json cannot be written as encoder.json and vocab.bpe"), "{e}");
    assert!(e.contains("\"<|pad|>\" (id 2048) is made by no merge in vocab.bpe"), "{e}");
}

/// GPT-2's bpe() on one piece in byte-level text: join every occurrence of
/// the earliest listed pair, left to right, again and again. A handful of
/// passes for a run of one character, however long.
fn gpt2_bpe(piece: &str, ranks: &std::collections::HashMap<(String, String), usize>) -> Vec<String> {
    let mut parts: Vec<String> = piece.chars().map(String::from).collect();
    loop {
        let earliest = parts
            .windows(2)
            .filter_map(|w| ranks.get(&(w[0].clone(), w[1].clone())).map(|&rank| (rank, w[0].clone(), w[1].clone())))
            .min();
        let Some((_, first, second)) = earliest else { return parts };
        let mut joined = Vec::with_capacity(parts.len());
        let mut i = 0;
        while i < parts.len() {
            if i + 1 < parts.len() && parts[i] == first && parts[i + 1] == second {
                joined.push(format!("{first}{second}"));
                i += 2;
            } else {
                joined.push(parts[i].clone());
                i += 1;
            }
        }
        parts = joined;
    }
}

/// A run of 100,000 of one character is one piece: merged as GPT-2's bpe()
/// merges it (spaces and dashes have many merges, newlines some, 'a' none),
/// and decoded back. Scanning every pair at every step took minutes here.
#[test]
fn long_runs_of_one_character_encode_as_bpe_defines_them() {
    let tok = tokenizer();
    let encoder: std::collections::HashMap<String, u32> = serde_json::from_str(&release_file("encoder.json")).unwrap();
    let ranks: std::collections::HashMap<(String, String), usize> = release_file("vocab.bpe")
        .lines()
        .skip(1)
        .enumerate()
        .map(|(rank, line)| {
            let (a, b) = line.split_once(' ').unwrap();
            ((a.to_string(), b.to_string()), rank)
        })
        .collect();
    for c in [' ', '-', '\n', 'a', '='] {
        let text = c.to_string().repeat(100_000);
        let ids = tok.encode(&text);
        let expected: Vec<u32> = gpt2_bpe(&byte_char(c as u8).to_string().repeat(100_000), &ranks).iter().map(|t| encoder[t]).collect();
        assert_eq!(ids, expected, "100,000 of {c:?}");
        assert_eq!(tok.decode(&ids), text, "100,000 of {c:?}");
    }
}

/// Many special tokens, and a long text with none: each special is found
/// once, in order, with the text between encoded as usual.
#[test]
fn many_special_tokens_are_each_encoded_whole() {
    let tok = tokenizer();
    let text = "x = 1<|endoftext|>".repeat(20_000);
    let ids = tok.encode(&text);
    let one = tok.encode("x = 1<|endoftext|>");
    assert_eq!(one.last(), Some(&2047));
    assert_eq!(ids, one.repeat(20_000));
    let plain = "x = 1\n".repeat(50_000);
    assert_eq!(tok.encode(&plain), tok.encode("x = 1\n").repeat(50_000));
}

/// Timings, not a check: `cargo test --test tokenizer -- --ignored
/// --nocapture` (the dev profile, opt-level 1; `--release` for release).
#[test]
#[ignore]
fn time_a_megabyte_of_each_kind_of_text() {
    let tok = tokenizer();
    let mb = 1 << 20;
    let python = circuitscope::tasks::corpus(0, mb);
    let inputs = [
        ("spaces", " ".repeat(mb)),
        ("'a'", "a".repeat(mb)),
        ("'-'", "-".repeat(mb)),
        ("'('", "(".repeat(mb)),
        ("newlines", "\n".repeat(mb)),
        ("digits", "0123456789".repeat(mb / 10)),
        ("mixed Python", python),
        ("<|endoftext|>", "<|endoftext|>".repeat(mb / 13)),
    ];
    for (name, text) in inputs {
        let started = std::time::Instant::now();
        let ids = tok.encode(&text);
        println!("{name}: {} bytes, {} tokens in {:.3} s", text.len(), ids.len(), started.elapsed().as_secs_f64());
    }
}
