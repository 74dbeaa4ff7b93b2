//! The release's split pattern, scanned by hand:
//!
//! ```text
//! [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3} | ?[^\s\p{L}\p{N}]+[\r\n/]* | \s*[\r\n]+ | \s+(?!\S) | \s+
//! ```
//!
//! A regex engine with Unicode tables and look-ahead would add more than a
//! megabyte to the page's wasm for this one pattern. The scanner follows the
//! regex's leftmost-first semantics alternative by alternative; a test checks
//! it against fancy-regex on the pattern itself.

use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// The pattern as a regex, for the test that checks the scanner against it.
#[cfg(test)]
const SPLIT_PATTERN: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn letter(c: char) -> bool {
    c.general_category_group() == GeneralCategoryGroup::Letter
}

fn number(c: char) -> bool {
    c.general_category_group() == GeneralCategoryGroup::Number
}

fn newline(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// `[^\s\p{L}\p{N}]`
fn other(c: char) -> bool {
    !c.is_whitespace() && !letter(c) && !number(c)
}

/// The pieces of `text` the pattern splits it into, in order; together they
/// are all of `text`.
pub fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let len = piece_len(rest)?;
        let (piece, tail) = rest.split_at(len);
        rest = tail;
        Some(piece)
    })
}

/// Byte length of the pattern's match at the start of `s` (`None` when `s`
/// is empty: every non-empty string starts with a match).
fn piece_len(s: &str) -> Option<usize> {
    let mut chars = s.char_indices().peekable();
    let (_, first) = *chars.peek()?;
    // Byte offset after the run of chars from `at` that satisfy `f`.
    let run_end = |at: usize, f: fn(char) -> bool| at + s[at..].find(|c: char| !f(c)).map_or(s.len() - at, |n| n);
    let after_first = first.len_utf8();
    let second = s[after_first..].chars().next();

    // [^\r\n\p{L}\p{N}]?\p{L}+
    if letter(first) {
        return Some(run_end(0, letter));
    }
    if !newline(first) && !number(first) && second.is_some_and(letter) {
        return Some(run_end(after_first, letter));
    }
    // \p{N}{1,3}
    if number(first) {
        return s.char_indices().take(3).take_while(|&(_, c)| number(c)).map(|(i, c)| i + c.len_utf8()).last();
    }
    // ' '?[^\s\p{L}\p{N}]+[\r\n/]*
    let other_start = if first == ' ' && second.is_some_and(other) {
        Some(after_first)
    } else if other(first) {
        Some(0)
    } else {
        None
    };
    if let Some(start) = other_start {
        let end = run_end(start, other);
        return Some(run_end(end, |c| newline(c) || c == '/'));
    }
    // Only whitespace is left. \s*[\r\n]+: up to the last newline of the run.
    let run = run_end(0, char::is_whitespace);
    if let Some(last_newline) = s[..run].rfind(newline) {
        return Some(last_newline + 1);
    }
    // \s+(?!\S): the run, or all but its last char when a non-space follows; else \s+.
    if run == s.len() {
        return Some(run);
    }
    let last = s[..run].chars().next_back().map_or(0, char::len_utf8);
    Some(if run > last { run - last } else { run })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scanner against the pattern itself, on many random strings drawn
    /// from the characters where the alternatives differ.
    #[test]
    fn scans_like_the_regex() {
        let regex = fancy_regex::Regex::new(SPLIT_PATTERN).unwrap();
        let alphabet: Vec<char> = "aZé中ßǅʰ\u{0345}\u{0301}\u{05B0}Ⓐ07٣Ⅻ½ \t\r\n\u{a0}\u{2028}\u{3000}/'\"([]{}.,:#_-+=*!?€😀"
            .chars()
            .collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for case in 0..20_000 {
            let len = 1 + next(24);
            let text: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            let expected: Vec<&str> = regex.find_iter(&text).map(|m| m.unwrap().as_str()).collect();
            let got: Vec<&str> = pieces(&text).collect();
            assert_eq!(got, expected, "case {case}: {text:?}");
        }
    }

    /// Long runs, where a scanner that looked back or ahead too far would
    /// be slow (1 MB of any of these takes well under a second): split as
    /// the regex splits them.
    #[test]
    fn long_runs_split_like_the_regex() {
        let regex = fancy_regex::Regex::new(SPLIT_PATTERN).unwrap();
        let run = |s: &str| s.repeat(20_000);
        for text in [
            run(" ") + "x",
            "\n".to_string() + &run(" ") + "x",
            run(" \n") + "  x",
            run("\t") + "1",
            run("(") + "\n\n",
            run("a\u{301}"),
            run("12"),
        ] {
            let expected: Vec<&str> = regex.find_iter(&text).map(|m| m.unwrap().as_str()).collect();
            assert_eq!(pieces(&text).collect::<Vec<_>>(), expected, "{:?}...", text.chars().take(4).collect::<String>());
        }
    }

    #[test]
    fn python_pieces() {
        let got: Vec<&str> = pieces("def f(x):\n    return x  + 1234\n\n").collect();
        assert_eq!(got, ["def", " f", "(x", "):\n", "   ", " return", " x", " ", " +", " ", "123", "4", "\n\n"]);
    }
}
