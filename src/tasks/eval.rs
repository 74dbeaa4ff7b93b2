//! How well a model does a task: on each example, whether the logit of the
//! right continuation's first token beats the wrong one's, and by how much.

use super::Example;
use crate::model::{forward, Model, Tokenizer};

/// A task's score over a set of examples.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub examples: usize,
    /// Fraction with logit(right) > logit(wrong).
    pub accuracy: f64,
    /// Mean of logit(right) - logit(wrong).
    pub mean_logit_diff: f64,
}

/// The prompt's token ids and the first tokens of the right and the wrong
/// continuation; an error when the tokenizer splits the prompt differently
/// with a continuation appended, or both continuations start alike.
pub fn choice(tokenizer: &Tokenizer, example: &Example) -> Result<(Vec<u32>, u32, u32), String> {
    let prompt = tokenizer.encode(&example.prompt);
    let first = |continuation: &str| {
        let all = tokenizer.encode(&(example.prompt.clone() + continuation));
        match all.get(prompt.len()) {
            Some(&token) if all.starts_with(&prompt) => Ok(token),
            _ => Err(format!("the tokenizer does not split {:?} + {continuation:?} after the prompt", example.prompt)),
        }
    };
    let (right, wrong) = (first(&example.correct)?, first(&example.wrong)?);
    if right == wrong {
        return Err(format!("{:?} and {:?} start with the same token", example.correct, example.wrong));
    }
    Ok((prompt, right, wrong))
}

/// logit(right) - logit(wrong) after `example`'s prompt, by the CPU
/// reference forward pass.
pub fn logit_diff(model: &Model, tokenizer: &Tokenizer, example: &Example) -> Result<f64, String> {
    let (prompt, right, wrong) = choice(tokenizer, example)?;
    let logits = forward(model, &prompt, &mut |_, _| {}).map_err(|e| e.to_string())?;
    let last = logits.row(prompt.len() - 1);
    Ok(f64::from(last[right as usize] - last[wrong as usize]))
}

impl Score {
    /// The score of examples whose logit(right) - logit(wrong) are `diffs`.
    pub fn of(diffs: &[f64]) -> Score {
        let n = diffs.len().max(1) as f64;
        let right = diffs.iter().filter(|&&d| d > 0.0).count();
        Score { examples: diffs.len(), accuracy: right as f64 / n, mean_logit_diff: diffs.iter().sum::<f64>() / n }
    }
}

/// Scores `model` on `examples`.
pub fn evaluate(model: &Model, tokenizer: &Tokenizer, examples: &[Example]) -> Result<Score, String> {
    let diffs = examples.iter().map(|e| logit_diff(model, tokenizer, e)).collect::<Result<Vec<_>, _>>()?;
    Ok(Score::of(&diffs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;
    use crate::tasks::{corpus, Task};

    #[test]
    fn scores_are_the_logit_differences_of_the_first_tokens() {
        let files = Tokenizer::train(&corpus(2, 100_000), 320).unwrap();
        let tokenizer = Tokenizer::from_files(&files.encoder_json, &files.vocab_bpe).unwrap();
        let config = Config::from_json(
            r#"{"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_mlp": 32, "vocab_size": 320, "block_size": 128}"#,
        )
        .unwrap();
        let model = Model::synthetic(config, 0.2, 1);
        let examples = Task::SingleDoubleQuote.examples(3, 20);
        let score = evaluate(&model, &tokenizer, &examples).unwrap();
        let mut diffs = Vec::new();
        for e in &examples {
            let (prompt, right, wrong) = choice(&tokenizer, e).unwrap();
            assert_eq!(tokenizer.decode(&[right]).chars().next(), e.correct.chars().next());
            let logits = forward(&model, &prompt, &mut |_, _| {}).unwrap();
            let last = logits.row(prompt.len() - 1);
            diffs.push(f64::from(last[right as usize] - last[wrong as usize]));
        }
        assert_eq!(score.examples, 20);
        assert!((score.mean_logit_diff - diffs.iter().sum::<f64>() / 20.0).abs() < 1e-9);
        assert_eq!(score.accuracy, diffs.iter().filter(|&&d| d > 0.0).count() as f64 / 20.0);

        let same = Example { prompt: "x = ".into(), correct: "1".into(), wrong: "1".into() };
        assert!(evaluate(&model, &tokenizer, &[same]).unwrap_err().contains("same token"));
    }
}
