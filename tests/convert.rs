//! The checkpoint converter: real `torch.save` files (the golden
//! `model.pt`s) give the golden forward pass; bf16 and f16 checkpoints with
//! shared, transposed and strided storages (tests/fixtures/write_pt.py)
//! give the rounded weights; hostile and broken files are refused by name;
//! a model of the released 0.4B shape compacts to under 2% of its dense size.

mod common;

use std::io::{Cursor, Write};

use circuitscope::convert::{convert, convert_torch_by_ranges, Checkpoint, Converted, ConvertError, NodeSamples, SafetensorsFile, SampleBucket, SampleDoc, TorchFile, VizData};
use circuitscope::model::{f32_safetensors, forward, Config, Model, Recording};
use common::{assert_close, golden_cases, read_expected, read_tokens};

fn convert_file(path: &std::path::Path, config: &str) -> Result<Converted, ConvertError> {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut checkpoint: Box<dyn Checkpoint> = match path.extension().is_some_and(|e| e == "pt") {
        true => Box::new(TorchFile::open(file)?),
        false => Box::new(SafetensorsFile::open(file)?),
    };
    convert(config, checkpoint.as_mut(), &mut |_, _, _| {})
}

fn torch_bytes(bytes: Vec<u8>, config: &str) -> Result<Converted, ConvertError> {
    let mut checkpoint = TorchFile::open(Cursor::new(bytes))?;
    convert(config, &mut checkpoint, &mut |_, _, _| {})
}

#[test]
fn every_golden_checkpoint_converts_and_gives_the_golden_forward_pass() {
    let cases = golden_cases();
    assert!(cases.len() >= 4);
    for dir in cases {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let converted = convert_file(&dir.join("model.pt"), &config).unwrap_or_else(|e| panic!("{case}: {e}"));
        // The compact file is what the app and the CLI load.
        let model = Model::from_bytes(&config, &converted.compact()).unwrap();
        assert!(model == converted.model, "{case}");
        assert_eq!(model.weights_sha256(), Model::load_dir(&dir).unwrap().weights_sha256(), "{case}: weights differ from model.safetensors");
        for dropped in &converted.dropped {
            let expected = match dropped.name.as_str() {
                "lm_head.weight" => "tied: the same as transformer.wte.weight",
                name if name.starts_with("transformer.h.") && name.ends_with(".attn.bias") => "the causal-mask buffer",
                name => panic!("{case}: {name} left out"),
            };
            assert_eq!(dropped.why, expected, "{case}");
        }

        let mut recording = Recording::new();
        let logits = forward(&model, &read_tokens(&dir), &mut |site, acts| recording.push((site, acts.clone()))).unwrap();
        let expected = read_expected(&dir);
        assert_close(&format!("{case} logits"), &logits, &expected["logits"]);
        assert_eq!(recording.len() + 1, expected.len(), "{case}: recorded sites");
        for (site, acts) in &recording {
            assert_close(&format!("{case} {site}"), acts, &expected[&site.to_string()]);
        }
    }
}

#[test]
fn dense_safetensors_convert_to_the_same_weights() {
    for dir in golden_cases() {
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let from_pt = convert_file(&dir.join("model.pt"), &config).unwrap();
        let from_safetensors = convert_file(&dir.join("model.safetensors"), &config).unwrap();
        assert!(from_pt.model == from_safetensors.model, "{}", dir.display());
    }
}

/// Read by ranges, as the page reads a dropped file, a checkpoint converts
/// to the same model, loading little more than each storage at a time, even
/// when every read misses (256-byte chunks).
#[test]
fn checkpoints_read_by_ranges_convert_the_same() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<(std::path::PathBuf, String)> =
        golden_cases().into_iter().map(|dir| (dir.join("model.pt"), std::fs::read_to_string(dir.join("config.json")).unwrap())).collect();
    let gelu = std::fs::read_to_string(common::golden_dir().join("gpt2_ln_gelu/config.json")).unwrap();
    files.push((fixtures.join("gpt2_ln_gelu.bfloat16.pt"), gelu));
    for (path, config) in files {
        let bytes = std::fs::read(&path).unwrap();
        let whole = convert_file(&path, &config).unwrap();
        for chunk in [256, 1 << 20] {
            let (mut loads, mut largest) = (0u64, 0u64);
            let load = async |at: u64, count: u64| {
                loads += count;
                largest = largest.max(count);
                Ok(bytes[at as usize..(at + count) as usize].to_vec())
            };
            let mut tensors = 0;
            let converted = pollster::block_on(convert_torch_by_ranges(&config, bytes.len() as u64, chunk, load, &mut |_, total, _| tensors = total))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(converted.model == whole.model, "{}", path.display());
            assert_eq!(converted.dropped, whole.dropped);
            assert!(tensors > 0);
            if chunk == 256 {
                // Several loads, none much above a storage; all together a few times the file.
                assert!(largest < bytes.len() as u64 / 2, "{}: a load of {largest} bytes", path.display());
                assert!(loads < 4 * bytes.len() as u64, "{}: {loads} bytes loaded", path.display());
            }
        }
    }
    // A load that fails is named; bytes past the end are refused.
    let path = common::golden_dir().join("cat_pos_emb/model.pt");
    let config = std::fs::read_to_string(common::golden_dir().join("cat_pos_emb/config.json")).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    let failing = async |_: u64, _: u64| Err("the file was removed".to_string());
    let e = pollster::block_on(convert_torch_by_ranges(&config, len, 256, failing, &mut |_, _, _| {})).err().unwrap().to_string();
    assert!(e.contains("the file was removed"), "{e}");
}

/// bf16 and f16 checkpoints, with a tied storage, a transposed view, a
/// strided slice at an offset and a Parameter, give the golden weights
/// rounded to that format (to nearest, ties to even), exactly.
#[test]
fn half_precision_checkpoints_with_views_convert_exactly() {
    let dir = common::golden_dir().join("gpt2_ln_gelu");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let golden = Model::load_dir(&dir).unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    type Rounding = fn(f32) -> f32;
    let round: [(&str, Rounding); 2] = [
        ("bfloat16", |v| half::bf16::from_f32(v).to_f32()),
        ("float16", |v| half::f16::from_f32(v).to_f32()),
    ];
    for (dtype, round) in round {
        let rounded: Vec<(String, Vec<usize>, Vec<f32>)> = golden
            .dense_tensors()
            .into_iter()
            .map(|(name, shape, values)| (name, shape, values.into_iter().map(round).collect()))
            .collect();
        let expected = Model::from_bytes(&config, &f32_safetensors(rounded.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())))).unwrap();
        assert!(expected != golden, "{dtype}: rounding changes some weight, or the test shows nothing");
        let converted = convert_file(&fixtures.join(format!("gpt2_ln_gelu.{dtype}.pt")), &config).unwrap_or_else(|e| panic!("{dtype}: {e}"));
        assert!(converted.model == expected, "{dtype}: converted weights differ from the rounded golden weights");
        let mut dropped: Vec<&str> = converted.dropped.iter().map(|d| d.name.as_str()).collect();
        dropped.sort();
        assert_eq!(dropped, ["lm_head.weight", "transformer.h.0.attn.bias", "transformer.h.1.attn.bias"], "{dtype}");
    }
}

/// A zip laid out as torch writes it, with `pickle` as `model/data.pkl` and
/// `storages` as `model/data/<key>`.
fn torch_zip(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("model/data.pkl", stored).unwrap();
    zip.write_all(pickle).unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("model/data/{key}"), stored).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// `{name: tensor}` pickled as torch does (protocol 2), the tensor a view of
/// storage "0" (f32) with the given size, stride and offset.
fn one_tensor_pickle(name: &str, numel: u8, offset: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
    p.push(b'X');
    p.extend((name.len() as u32).to_le_bytes());
    p.extend(name.as_bytes());
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
    p.push(numel);
    p.extend(b"tQK");
    p.push(offset);
    let tuple = |p: &mut Vec<u8>, dims: &[u8]| {
        p.push(b'(');
        dims.iter().for_each(|&d| p.extend([b'K', d]));
        p.push(b't');
    };
    tuple(&mut p, size);
    tuple(&mut p, stride);
    p.extend(b"\x89ccollections\nOrderedDict\n)RtRu.");
    p
}

#[test]
fn hostile_pickles_are_refused_by_name() {
    let config = std::fs::read_to_string(common::golden_dir().join("gpt2_ln_gelu/config.json")).unwrap();
    let refused = |pickle: &[u8]| match torch_bytes(torch_zip(pickle, &[]), &config) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{pickle:?} was accepted"),
    };
    // os.system("echo owned") by GLOBAL + REDUCE, the classic.
    let message = refused(b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo owned\x85R.");
    assert!(message.contains("`os.system`") && message.contains("never runs code"), "{message}");
    // builtins.eval by STACK_GLOBAL (protocol 4).
    let message = refused(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.");
    assert!(message.contains("`builtins.eval`"), "{message}");
    // A torch name that is not on the list.
    let message = refused(b"\x80\x02ctorch.serialization\nload\n.");
    assert!(message.contains("`torch.serialization.load`"), "{message}");
    // INST and OBJ build objects of named classes: not in the subset at all.
    let message = refused(b"(ios\nsystem\nX\x02\x00\x00\x00ls.");
    assert!(message.contains("opcode 0x69"), "{message}");
    // An allowed class called with arguments it does not take.
    let message = refused(b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R.");
    assert!(message.contains("OrderedDict called with arguments"), "{message}");
}

#[test]
fn broken_checkpoints_are_named() {
    let config = std::fs::read_to_string(common::golden_dir().join("gpt2_ln_gelu/config.json")).unwrap();
    // Read as a converter would, tensor by tensor (a conversion refuses a
    // file that lacks the config's tensors before it reads any).
    let error = |bytes: Vec<u8>| {
        let read = |bytes: Vec<u8>| -> Result<(), ConvertError> {
            let mut file = TorchFile::open(Cursor::new(bytes))?;
            file.names().iter().try_for_each(|name| file.read(name).map(drop))
        };
        match read(bytes.clone()).and_then(|()| torch_bytes(bytes, &config).map(drop)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        }
    };
    let storage: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    // A view reaching past its storage: [3, 4] at offset 1 in 12 elements.
    let message = error(torch_zip(&one_tensor_pickle("w", 12, 1, &[3, 4], &[4, 1]), &[("0", &storage)]));
    assert!(message.contains("tensor `w`") && message.contains("reach past its storage"), "{message}");
    // A broadcast view (stride 0) of more elements than its storage.
    let message = error(torch_zip(&one_tensor_pickle("w", 12, 0, &[200, 200], &[0, 0]), &[("0", &storage)]));
    assert!(message.contains("more than its storage's 12"), "{message}");
    // A storage shorter than the pickle says.
    let message = error(torch_zip(&one_tensor_pickle("w", 12, 0, &[3, 4], &[4, 1]), &[("0", &storage[..40])]));
    assert!(message.contains("holds 40 bytes"), "{message}");
    // A missing storage entry.
    let message = error(torch_zip(&one_tensor_pickle("w", 12, 0, &[3, 4], &[4, 1]), &[]));
    assert!(message.contains("model/data/0"), "{message}");
    // A pickle cut short, and one with no state dict.
    let whole = one_tensor_pickle("w", 12, 0, &[3, 4], &[4, 1]);
    let message = error(torch_zip(&whole[..whole.len() / 2], &[]));
    assert!(message.contains("ends early"), "{message}");
    let message = error(torch_zip(b"\x80\x02K\x01.", &[]));
    assert!(message.contains("no dict of tensors"), "{message}");
    // Not a zip; a zip without data.pkl.
    assert!(error(b"PK\x03\x04 and then nothing".to_vec()).contains("not a zip archive"));
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file("notes.txt", zip::write::SimpleFileOptions::default()).unwrap();
    let message = error(zip.finish().unwrap().into_inner());
    assert!(message.contains("holds 0"), "{message}");
    // A good tensor under a name the config does not have: the model's own tensors are missing.
    let message = error(torch_zip(&one_tensor_pickle("w", 12, 0, &[3, 4], &[4, 1]), &[("0", &storage)]));
    assert!(message.contains("does not fit its config: tensor `transformer.wte.weight` is missing"), "{message}");
}

/// A config that says the unembedding is tied, over a checkpoint whose
/// lm_head is not wte, is refused: the model would silently be another.
#[test]
fn an_untied_lm_head_under_a_tied_config_is_refused() {
    let dir = common::golden_dir().join("all_sites_relu_untied");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let tied = config.replacen('{', r#"{"tied_unembed": true, "#, 1);
    let tied = tied.replace(r#""tied_unembed": false,"#, "");
    let message = match convert_file(&dir.join("model.pt"), &tied) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    assert!(message.contains("lm_head.weight differs from transformer.wte.weight"), "{message}");
    let message = match convert_file(&dir.join("model.pt"), "{\"n_layer\": \"two\"}") {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    assert!(message.starts_with("config.json:"), "{message}");
}

/// Every truncation of a real checkpoint gives an error, never a panic.
#[test]
fn truncated_checkpoints_give_errors() {
    let dir = common::golden_dir().join("cat_pos_emb");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join("model.pt")).unwrap();
    for len in (0..bytes.len()).step_by(997) {
        assert!(torch_bytes(bytes[..len].to_vec(), &config).is_err(), "truncated at {len}");
    }
}

/// The released 0.4B shape at 1 in 1000: its compact file is under 2% of
/// the dense size plus the dense bigram table, and holds the same weights.
#[test]
fn a_released_shape_model_compacts_below_two_percent() {
    let config_text = include_str!("../src/cli/released_shape.json");
    let model = Model::synthetic(Config::from_json(config_text).unwrap(), 0.001, 7);
    let dir = tempfile::tempdir().unwrap();
    let dense = dir.path().join("model.safetensors");
    model.write_safetensors(&dense).unwrap();
    let dense_bytes = std::fs::metadata(&dense).unwrap().len() as usize;
    let converted = convert_file(&dense, config_text).unwrap();
    let bigram = 4 * 2048 * 2048;
    assert!(
        (converted.compact().len() as f64) < 0.02 * dense_bytes as f64 + bigram as f64,
        "compact {} bytes, dense {dense_bytes}",
        converted.compact().len()
    );
    assert_eq!(converted.model.weights_sha256(), model.weights_sha256());
}

/// A state dict pickled as torch does (protocol 2), every tensor a view of
/// storage "0" (f32, `numel` elements): `(name, offset, shape)`, row-major.
fn views_pickle(numel: u32, views: &[(&str, u32, &[u32])]) -> Vec<u8> {
    let int = |p: &mut Vec<u8>, v: u32| {
        p.push(b'J');
        p.extend(v.to_le_bytes());
    };
    let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
    for (name, offset, shape) in views {
        p.push(b'X');
        p.extend((name.len() as u32).to_le_bytes());
        p.extend(name.as_bytes());
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu");
        int(&mut p, numel);
        p.extend(b"tQ");
        int(&mut p, *offset);
        p.push(b'(');
        shape.iter().for_each(|&d| int(&mut p, d));
        p.extend(b"t(");
        let mut strides = vec![1u32; shape.len()];
        for k in (0..shape.len().saturating_sub(1)).rev() {
            strides[k] = strides[k + 1] * shape[k + 1];
        }
        strides.iter().for_each(|&s| int(&mut p, s));
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend(b"u.");
    p
}

fn refused_checkpoint(bytes: Vec<u8>) -> String {
    let config = std::fs::read_to_string(common::golden_dir().join("gpt2_ln_gelu/config.json")).unwrap();
    match torch_bytes(bytes, &config) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    }
}

/// A pickle of a few MB can nest a value a million deep; dropping it must not
/// overflow the stack (each test thread has 2 MB of it).
#[test]
fn values_nested_a_million_deep_are_refused_without_overflowing_the_stack() {
    let depth = 1_000_000;
    // ((((...)))): a tuple of a tuple of ... an empty list.
    let mut tuples = b"\x80\x02]".to_vec();
    tuples.extend(std::iter::repeat_n(0x85u8, depth));
    tuples.push(b'.');
    // [[[[...]]]]: a MARK per level, each LIST wraps what is above its mark.
    let mut lists = b"\x80\x02".to_vec();
    lists.extend(std::iter::repeat_n(b'(', depth));
    lists.push(b']');
    lists.extend(std::iter::repeat_n(b'l', depth));
    lists.push(b'.');
    // A dict nested in a dict: {"a": {"a": ...}}.
    let mut dicts = b"\x80\x02}".to_vec();
    for _ in 0..depth / 4 {
        dicts.extend(b"X\x01\x00\x00\x00a\x01}");
    }
    dicts.extend(std::iter::repeat_n(b's', depth / 4));
    dicts.push(b'.');
    for (what, pickle) in [("tuples", tuples), ("lists", lists), ("dicts", dicts)] {
        let message = refused_checkpoint(torch_zip(&pickle, &[]));
        assert!(message.contains("no dict of tensors") || message.contains("pickle"), "{what}: {message}");
    }
}

/// A tensor of a million dimensions of size 1 is refused by its count of
/// dimensions, before anything walks them; so is one record of many
/// dimensions that a state dict names 20,000 times (each name was a copy).
#[test]
fn tensors_with_more_dimensions_than_torch_allows_are_refused() {
    let storage = 1.0f32.to_le_bytes();
    let ones: Vec<u32> = vec![1; 1_000_000];
    let message = refused_checkpoint(torch_zip(&views_pickle(1, &[("w", 0, &ones)]), &[("0", &storage)]));
    assert!(message.contains("1000000 dimensions") && message.contains("at most 64"), "{message}");

    // {"t0": record, "t1": memo[2], ...}: one memoised record of 100,000
    // dimensions, named 20,000 times (each name was a deep copy: 32 GB).
    let mut pickle = views_pickle(1, &[("t0", 0, &ones[..100_000])]);
    pickle.truncate(pickle.len() - 2); // before SETITEMS and STOP, the record on top
    pickle.extend(b"q\x02");
    for i in 1..20_000 {
        let name = format!("t{i}");
        pickle.push(b'X');
        pickle.extend((name.len() as u32).to_le_bytes());
        pickle.extend(name.as_bytes());
        pickle.extend(b"h\x02");
    }
    pickle.extend(b"u.");
    let message = refused_checkpoint(torch_zip(&pickle, &[("0", &storage)]));
    assert!(message.contains("100000 dimensions"), "{message}");
}

/// Two names that are one once the wrapper prefixes are removed, or one name
/// twice, are refused by name (they reached the writer, which panicked).
#[test]
fn colliding_and_repeated_tensor_names_are_refused_by_name() {
    let dir = common::golden_dir().join("gpt2_ln_gelu");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut tensors = Model::load_dir(&dir).unwrap().dense_tensors();
    let (name, shape, values) = tensors[0].clone();
    tensors.push((format!("_orig_mod.{name}"), shape, values));
    let file = f32_safetensors(tensors.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())));
    let mut checkpoint = SafetensorsFile::open(Cursor::new(file)).unwrap();
    let message = convert(&config, &mut checkpoint, &mut |_, _, _| {}).err().unwrap().to_string();
    let either = [format!("tensors `{name}` and `_orig_mod.{name}`"), format!("tensors `_orig_mod.{name}` and `{name}`")];
    assert!(either.iter().any(|m| message.contains(m)) && message.contains(&format!("are both `{name}`")), "{message}");

    let storage: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let pickle = views_pickle(12, &[("w", 0, &[3, 4]), ("w", 0, &[12])]);
    let message = refused_checkpoint(torch_zip(&pickle, &[("0", &storage)]));
    assert!(message.contains("tensor `w` appears twice"), "{message}");
}

/// Tensors the config's model does not have are never read nor staged: a
/// 36 MB file of thousands of tiny tensors with 10,000-character names (whose
/// staging header passed the format's 100 MB limit, and panicked) converts,
/// and 2,000 unused views of one 4 MB storage are not each read densely.
#[test]
fn tensors_the_model_does_not_have_are_left_unread() {
    let dir = common::golden_dir().join("gpt2_ln_gelu");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let golden = Model::load_dir(&dir).unwrap();
    let mut tensors = golden.dense_tensors();
    let params = tensors.len();
    let long = "x".repeat(10_000);
    tensors.extend((0..3_600).map(|i| (format!("{i:05}{long}"), vec![1, 2], vec![0.0, 0.0])));
    let file = f32_safetensors(tensors.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())));
    assert!(file.len() > 36_000_000);
    let mut checkpoint = SafetensorsFile::open(Cursor::new(file)).unwrap();
    let converted = convert(&config, &mut checkpoint, &mut |_, _, _| {}).unwrap();
    assert_eq!(converted.model.weights_sha256(), golden.weights_sha256());
    assert_eq!(converted.dropped.len(), 3_600);
    assert!(converted.dropped.iter().all(|d| d.why == "not a parameter of this config's model"));
    assert!(params > 10);

    // 2,000 views of one 4 MB storage under names the model lacks: never read.
    let numel = 1u32 << 20;
    let names: Vec<String> = (0..2_000).map(|i| format!("v{i}")).collect();
    let shape = [numel];
    let views: Vec<(&str, u32, &[u32])> = names.iter().map(|n| (n.as_str(), 0, &shape[..])).collect();
    let storage = vec![0u8; 4 << 20];
    let message = refused_checkpoint(torch_zip(&views_pickle(numel, &views), &[("0", &storage)]));
    assert!(message.contains("tensor `transformer.wte.weight` is missing"), "{message}");
    let mut with_model: Vec<String> = golden.dense_tensors().into_iter().map(|(n, _, _)| n).collect();
    with_model.extend(names);
    let mut converter = circuitscope::convert::Converter::new(&config, &with_model).unwrap();
    assert!(converter.wants("transformer.wte.weight") && !converter.wants("v17"));
}

/// Read by ranges, a checkpoint whose tensors are consecutive views of one
/// storage converts like the whole file (a miss carried from one tensor to
/// the next was taken for a read that loading cannot help).
#[test]
fn consecutive_views_of_one_storage_convert_by_ranges() {
    let config = r#"{"n_layer": 1, "d_model": 2, "n_head": 1, "d_head": 2, "d_mlp": 2, "vocab_size": 3, "block_size": 2, "bias": false, "rms_norm": true}"#;
    let params = Config::from_json(config).unwrap().parameters();
    let mut offset = 0;
    let mut views = Vec::new();
    for p in &params {
        if p.required {
            let shape: Vec<u32> = p.shape.iter().map(|&d| d as u32).collect();
            views.push((p.name.as_str(), offset, shape));
            offset += p.shape.iter().product::<usize>() as u32;
        }
    }
    let views: Vec<(&str, u32, &[u32])> = views.iter().map(|(n, o, s)| (*n, *o, s.as_slice())).collect();
    assert!(views.len() >= 3);
    let storage: Vec<u8> = (0..offset).flat_map(|i| (0.25 * (i + 1) as f32).to_le_bytes()).collect();
    let bytes = torch_zip(&views_pickle(offset, &views), &[("0", &storage)]);
    let whole = torch_bytes(bytes.clone(), config).unwrap();
    for chunk in [64, 256, 1 << 20] {
        let load = async |at: u64, count: u64| Ok(bytes[at as usize..(at + count) as usize].to_vec());
        let ranged = pollster::block_on(convert_torch_by_ranges(config, bytes.len() as u64, chunk, load, &mut |_, _, _| {}))
            .unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
        assert!(ranged.model == whole.model, "chunk {chunk}");
    }
}

/// A big-endian checkpoint is refused read whole or by ranges alike (read
/// by ranges, the byteorder entry was not loaded and its check skipped).
#[test]
fn big_endian_checkpoints_are_refused_whole_and_by_ranges() {
    let config = r#"{"n_layer": 1, "d_model": 2, "n_head": 1, "d_head": 2, "d_mlp": 2, "vocab_size": 3, "block_size": 2, "bias": false, "rms_norm": true}"#;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("model/byteorder", stored).unwrap();
    zip.write_all(b"big").unwrap();
    zip.start_file("model/data.pkl", stored).unwrap();
    zip.write_all(&views_pickle(4, &[("w", 0, &[4])])).unwrap();
    zip.start_file("model/data/0", stored).unwrap();
    zip.write_all(&[0; 16]).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let whole = torch_bytes(bytes.clone(), config).err().unwrap().to_string();
    assert!(whole.contains(r#"its storages are "big"-endian"#), "{whole}");
    for chunk in [16, 1 << 20] {
        let load = async |at: u64, count: u64| Ok(bytes[at as usize..(at + count) as usize].to_vec());
        let ranged = pollster::block_on(convert_torch_by_ranges(config, bytes.len() as u64, chunk, load, &mut |_, _, _| {}));
        assert_eq!(ranged.err().unwrap().to_string(), whole, "chunk {chunk}");
    }
}

/// The release's mirror writes `final_model.pt` with the project's own
/// writer; read back, it is the same model (the reader itself is checked
/// against files torch wrote, above).
#[test]
fn a_model_written_as_final_model_pt_converts_back_to_the_same_weights() {
    for dir in golden_cases() {
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let model = Model::load_dir(&dir).unwrap();
        let pt = circuitscope::convert::write::write_model_pt(&model, Cursor::new(Vec::new())).unwrap().into_inner();
        let converted = torch_bytes(pt, &config).unwrap();
        assert!(converted.model == model, "{}", dir.display());
    }
}

fn viz_fixture() -> VizData {
    let doc = |shift: u32| SampleDoc { tokens: (0..7).map(|t| t + shift).collect(), values: vec![0.5, -1.0, 2.0, 0.0, 1.5, 3.25, -0.125], position: 3 };
    VizData {
        circuit: vec![("0.attn.q".into(), vec![3, 17]), ("1.mlp.post_act".into(), vec![40])],
        channel_losses: vec![("0.attn.q".into(), vec![0.25, 0.5]), ("1.mlp.post_act".into(), vec![1.5])],
        loss: Some(0.0625),
        circuit_loss: Some(0.125),
        config: vec![("n_layer".into(), 2), ("d_model".into(), 256)],
        samples: vec![NodeSamples {
            site: "0.attn.q".into(),
            channel: 17,
            buckets: vec![
                SampleBucket { fraction: 0.001, bottom: vec![doc(0)], top: vec![doc(10), doc(20)] },
                SampleBucket { fraction: 0.5, bottom: vec![], top: vec![doc(30)] },
            ],
        }],
    }
}

#[test]
fn viz_data_written_as_openai_stores_it_reads_back_the_same() {
    let viz = viz_fixture();
    let bytes = circuitscope::convert::write::write_viz_data(&viz).unwrap();
    assert_eq!(VizData::from_bytes(&bytes).unwrap(), viz);
    assert_eq!(viz.nodes(), 3);
}

/// What torch itself writes differs from our writer: the memo (BINPUT,
/// BINGET) for every container, a channel keyed by a 0-d tensor (the viewer
/// calls `.item()` on them), `prune_config` beside the sites, tuples of
/// documents in a list, losses as 0-d float tensors.
#[test]
fn viz_data_as_torch_pickles_it_reads_the_kept_channels_losses_and_documents() {
    // Storage 0: channels [5, 9] (int64); 1: the channel key 9 (int64, 0-d);
    // 2: the loss 0.5 (f32, 0-d); 3: tokens [1, 2, 3]; 4: activations.
    let mut p = b"\x80\x02}q\x00(X\x0c\x00\x00\x00circuit_dataq\x01}q\x02(X\x0c\x00\x00\x000.mlp.act_inq\x03".to_vec();
    let tensor = |p: &mut Vec<u8>, class: &str, key: &str, numel: u8, size: &[u8]| {
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n");
        p.extend(class.as_bytes());
        p.extend(b"\nX\x01\x00\x00\x00");
        p.extend(key.as_bytes());
        p.extend(b"X\x03\x00\x00\x00cpuK");
        p.push(numel);
        p.extend(b"tQK\x00(");
        size.iter().for_each(|&d| p.extend([b'K', d]));
        p.extend(b"t(");
        size.iter().for_each(|_| p.extend(b"K\x01"));
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
    };
    tensor(&mut p, "LongStorage", "0", 2, &[2]);
    p.extend(b"X\x0c\x00\x00\x00prune_config}X\x01\x00\x00\x00kK\x02su");
    p.extend(b"X\x0b\x00\x00\x00importances}(X\x04\x00\x00\x00loss");
    tensor(&mut p, "FloatStorage", "2", 1, &[]);
    p.extend(b"X\x0b\x00\x00\x00interv_lossG\x3f\xf0\x00\x00\x00\x00\x00\x00u");
    // samples["0.mlp.act_in"][tensor(9)][0.01] = [[], [(tokens, acts, 1)]]
    p.extend(b"X\x07\x00\x00\x00samples}X\x0c\x00\x00\x000.mlp.act_in}");
    tensor(&mut p, "LongStorage", "1", 1, &[]);
    p.extend(b"}G\x3f\x84\x7a\xe1\x47\xae\x14\x7b](]q\x05](");
    tensor(&mut p, "LongStorage", "3", 3, &[3]);
    tensor(&mut p, "FloatStorage", "4", 3, &[3]);
    p.extend(b"K\x01tae");
    p.extend(b"sssu.");
    let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let storages = [
        ("0", i64s(&[5, 9])),
        ("1", i64s(&[9])),
        ("2", f32s(&[0.5])),
        ("3", i64s(&[1, 2, 3])),
        ("4", f32s(&[0.25, 4.0, -1.0])),
    ];
    let storages: Vec<(&str, &[u8])> = storages.iter().map(|(k, b)| (*k, b.as_slice())).collect();
    let viz = VizData::from_bytes(&torch_zip(&p, &storages)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(viz.circuit, [("0.mlp.act_in".to_string(), vec![5, 9])]);
    assert_eq!((viz.loss, viz.circuit_loss), (Some(0.25), Some(0.5)), "stored losses are twice the task loss");
    let doc = SampleDoc { tokens: vec![1, 2, 3], values: vec![0.25, 4.0, -1.0], position: 1 };
    let bucket = SampleBucket { fraction: 0.01, bottom: vec![], top: vec![doc] };
    assert_eq!(viz.samples, [NodeSamples { site: "0.mlp.act_in".into(), channel: 9, buckets: vec![bucket] }]);
}

#[test]
fn broken_viz_data_is_named() {
    let message = |bytes: &[u8]| VizData::from_bytes(bytes).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message(b"not a zip").contains("not a zip archive"), "{}", message(b"not a zip"));
    let no_circuit = torch_zip(b"\x80\x02}.", &[]);
    assert!(message(&no_circuit).contains("no `circuit_data`"), "{}", message(&no_circuit));
    // A channel that is not a whole number, and a code-running pickle.
    let mut viz = viz_fixture();
    viz.samples[0].buckets[0].top[0].position = 99;
    let bytes = circuitscope::convert::write::write_viz_data(&viz).unwrap();
    assert!(message(&bytes).contains("marked at 99"), "{}", message(&bytes));
    let hostile = torch_zip(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.", &[]);
    assert!(message(&hostile).contains("`os.system`"), "{}", message(&hostile));
}
