//! `circuitscope convert`: a released checkpoint (`final_model.pt` with its
//! `beeg_config.json`, or a dense safetensors file) to a compact model
//! folder the app and the CLI load, with sizes before and after.

use std::io::{BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use super::write_folder;
use crate::convert::{convert, Checkpoint, SafetensorsFile, TorchFile};
use crate::model::{check_tokenizer, Config, Tokenizer, TokenizerFiles};

#[derive(Args)]
pub struct ConvertArgs {
    /// The checkpoint: a PyTorch .pt (zip) or a safetensors file, f32, bf16 or f16.
    #[arg(long = "in")]
    input: PathBuf,
    /// The model's config [default: beeg_config.json or config.json beside the checkpoint].
    #[arg(long)]
    config: Option<PathBuf>,
    /// The tokenizer: a folder with encoder.json and vocab.bpe, or a Hugging Face tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The model folder to write (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &ConvertArgs) -> Result<(), String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let config_path = match &args.config {
        Some(path) => path.clone(),
        None => {
            let beside = args.input.parent().unwrap_or(Path::new("."));
            ["beeg_config.json", "config.json"]
                .iter()
                .map(|name| beside.join(name))
                .find(|path| path.exists())
                .ok_or_else(|| format!("no beeg_config.json or config.json beside {}; name one with --config", args.input.display()))?
        }
    };
    let config = String::from_utf8(read(&config_path)?).map_err(|_| format!("{} is not UTF-8 text", config_path.display()))?;
    let tokenizer = args.tokenizer.as_deref().map(tokenizer_files).transpose()?;
    // A tokenizer with ids past the model's vocabulary belongs to another model.
    if let (Some((_, ids)), Ok(model_config)) = (&tokenizer, Config::from_json(&config)) {
        check_tokenizer(&model_config, ids).map_err(|e| e.to_string())?;
    }
    let tokenizer = tokenizer.map(|(files, _)| files);

    let file = std::fs::File::open(&args.input).map_err(|e| format!("cannot read {}: {e}", args.input.display()))?;
    let input_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 4];
    let zip = reader.read_exact(&mut magic).is_ok() && &magic == b"PK\x03\x04";
    let reader = BufReader::new(reader.into_inner());
    let at = |e: crate::convert::ConvertError| format!("{}: {e}", args.input.display());
    let mut checkpoint: Box<dyn Checkpoint> = match zip {
        true => Box::new(TorchFile::open(reader).map_err(at)?),
        false if magic[0] == 0x80 => {
            return Err(format!(
                "{}: a PyTorch file in the legacy (before 1.6) format; load and save it again with a recent torch",
                args.input.display()
            ))
        }
        false => Box::new(SafetensorsFile::open(reader).map_err(at)?),
    };
    // One line, rewritten per tensor, where someone watches it.
    let terminal = std::io::stderr().is_terminal();
    let mut progress = |done: usize, total: usize, name: &str| {
        if terminal {
            eprint!("\r\x1b[2Kreading tensor {done}/{total} {name}");
            let _ = std::io::stderr().flush();
        }
    };
    let converted = convert(&config, checkpoint.as_mut(), &mut progress).map_err(at);
    if terminal {
        eprintln!();
    }
    let converted = converted?;

    let mut files = vec![("config.json", config.into_bytes()), ("model.safetensors", converted.compact())];
    if let Some(tokenizer) = tokenizer {
        files.push(("encoder.json", tokenizer.encoder_json.into_bytes()));
        files.push(("vocab.bpe", tokenizer.vocab_bpe.into_bytes()));
    }
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(name, bytes)| (*name, bytes.as_slice())).collect();
    write_folder(&args.out, &borrowed)?;

    let compact = files[1].1.len();
    let mb = |bytes: usize| bytes as f64 / 1e6;
    let stats = converted.model.weight_stats();
    let nnz: usize = stats.iter().filter(|s| s.name != "bigram_table").map(|s| s.nnz).sum();
    let bigram = stats.iter().find(|s| s.name == "bigram_table").map_or(0, |s| s.bytes);
    println!("read {} ({:.1} MB); its weights are {:.1} MB as dense f32", args.input.display(), input_bytes as f64 / 1e6, mb(converted.dense_bytes));
    println!(
        "wrote {}: model.safetensors {:.2} MB = {:.3}% of dense f32, {nnz} nonzero weights{}",
        args.out.display(),
        mb(compact),
        100.0 * compact as f64 / converted.dense_bytes as f64,
        match bigram {
            0 => String::new(),
            bytes => format!(" (and the dense bigram table, {:.1} MB)", mb(bytes)),
        }
    );
    if !converted.dropped.is_empty() {
        let dropped: Vec<String> = converted.dropped.iter().map(|d| format!("{} ({})", d.name, d.why)).collect();
        println!("left out {} tensors: {}", dropped.len(), dropped.join(", "));
    }
    Ok(())
}

/// The tokenizer's files in the release's format, from a folder holding
/// them or from a Hugging Face tokenizer.json, and the tokenizer they load as.
fn tokenizer_files(path: &Path) -> Result<(TokenizerFiles, Tokenizer), String> {
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let files = match path.is_dir() {
        true => TokenizerFiles { encoder_json: read(&path.join("encoder.json"))?, vocab_bpe: read(&path.join("vocab.bpe"))? },
        false => TokenizerFiles::from_hf_json(&read(path)?).map_err(|e| e.to_string())?,
    };
    let tokenizer = Tokenizer::from_files(&files.encoder_json, &files.vocab_bpe).map_err(|e| e.to_string())?;
    Ok((files, tokenizer))
}
