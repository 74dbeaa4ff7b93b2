//! An input: one or more parts (a config and a checkpoint, an encoder, its
//! merges and a text), written to a file as the parts one after another,
//! each after a line with its length, so a saved failure replays as it ran.
//!
//! ```text
//! circuitscope-fuzz 2
//! 512
//! <512 bytes>
//! 8042
//! <8042 bytes>
//! ```
//!
//! A file without the first line is one part as it is: a single-part
//! target's seed can be the plain file (a link, a circuit file).

pub type Input = Vec<Vec<u8>>;

const MAGIC: &[u8] = b"circuitscope-fuzz ";

pub fn encode(input: &Input) -> Vec<u8> {
    let mut out = format!("circuitscope-fuzz {}\n", input.len()).into_bytes();
    for part in input {
        out.extend_from_slice(format!("{}\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.push(b'\n');
    }
    out
}

/// The parts of a file written by [`encode`], or the file as one part.
pub fn decode(bytes: &[u8]) -> Result<Input, String> {
    let Some(rest) = bytes.strip_prefix(MAGIC) else { return Ok(vec![bytes.to_vec()]) };
    let mut at = 0;
    let line = |at: &mut usize| -> Result<usize, String> {
        let end = rest[*at..].iter().position(|&b| b == b'\n').ok_or("a length line has no end")? + *at;
        let number = std::str::from_utf8(&rest[*at..end]).ok().and_then(|s| s.parse().ok()).ok_or("a length is not a number")?;
        *at = end + 1;
        Ok(number)
    };
    let count = line(&mut at)?;
    let mut parts = Vec::new();
    for _ in 0..count {
        let len = line(&mut at)?;
        let part = rest.get(at..at.saturating_add(len)).ok_or("a part is cut short")?;
        parts.push(part.to_vec());
        at += len + 1;
    }
    Ok(parts)
}

/// FNV-1a: names saved failures by what they are.
pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}
