use super::{Config, ModelError, Tokenizer, MAX_RUN_BYTES};

/// Parses token ids written as `3,1,4` (commas and/or whitespace).
pub fn parse_token_list(text: &str) -> Result<Vec<u32>, ModelError> {
    let ids = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| ModelError::TokenList(format!("`{s}` is not a token id (a whole number from 0)")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(ModelError::NoTokens);
    }
    Ok(ids)
}

/// Checks that `tokens` can be run by a model with `config`.
pub fn check_tokens(config: &Config, tokens: &[u32]) -> Result<(), ModelError> {
    if tokens.is_empty() {
        return Err(ModelError::NoTokens);
    }
    if tokens.len() > config.block_size {
        return Err(ModelError::TooManyTokens { count: tokens.len(), block_size: config.block_size });
    }
    if let Some((position, &id)) = tokens.iter().enumerate().find(|(_, &id)| id as usize >= config.vocab_size) {
        return Err(ModelError::TokenOutOfRange { id: id.into(), position, vocab_size: config.vocab_size });
    }
    let bytes = config.run_bytes(tokens.len());
    if bytes > MAX_RUN_BYTES {
        return Err(ModelError::RunTooLarge { tokens: tokens.len(), megabytes: bytes >> 20, limit: MAX_RUN_BYTES >> 20 });
    }
    Ok(())
}

/// Checks that every id `tokenizer` can give is a token of a model with
/// `config`: a prompt, a task's answer or a sample is looked up in the
/// model's embedding and logits by these ids.
pub fn check_tokenizer(config: &Config, tokenizer: &Tokenizer) -> Result<(), ModelError> {
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(ModelError::Tokenizer(format!(
            "it has {} ids but the model's vocab_size is {}: it belongs to another model",
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commas_and_spaces() {
        assert_eq!(parse_token_list("3,1, 4\n1").unwrap(), vec![3, 1, 4, 1]);
        assert!(matches!(parse_token_list(" , "), Err(ModelError::NoTokens)));
        let e = parse_token_list("3,-1").unwrap_err().to_string();
        assert!(e.contains("`-1`"), "{e}");
        assert!(parse_token_list("99999999999").is_err());
    }
}
