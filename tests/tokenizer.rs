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
