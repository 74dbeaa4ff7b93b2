//! Mutations: byte-level ones for any part (bit flips, interesting values,
//! inserted, deleted, duplicated and repeated ranges, splices with another
//! input), and cheap structure-aware ones where plain bytes would rarely get
//! past the first check: numbers and strings in JSON, nesting and memo
//! cycles in a pickle, the header length and header of a safetensors file,
//! and the entries of a `.pt` zip (rewritten with their checksums, which a
//! flipped byte would only break).

use std::io::{Cursor, Read, Write};

use crate::input::Input;

/// splitmix64: small, fast, and the same sequence on every machine, so a
/// seed replays a run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next() % n as u64) as usize
    }

    pub fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A size in `1..=max`, small ones far more often (about as often each
    /// power of two): most mutations should be small, a few huge.
    pub fn size(&mut self, max: usize) -> usize {
        let max = max.max(1);
        let bits = self.below(usize::BITS as usize - max.leading_zeros() as usize + 1);
        1 + self.below(max.min(1usize << bits.min(62)))
    }
}

/// What a part is, for the structure-aware mutations and the dictionary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Json,
    /// Free text (a prompt).
    Text,
    /// A `vocab.bpe`: lines of two tokens.
    Merges,
    /// A link's fragment.
    Link,
    Safetensors,
    /// A PyTorch `.pt`: a zip of a pickle and storages.
    Torch,
}

/// Mutates `input` in place with one to a few mutations, each on one part
/// (chosen by `weights`), keeping it under `max_len` bytes in all.
/// `corpus` gives the other inputs to splice with.
pub fn mutate(rng: &mut Rng, input: &mut Input, kinds: &[(Kind, usize)], corpus: &[Input], max_len: usize) {
    let mut count = 1;
    while count < 6 && rng.percent(50) {
        count += 1;
    }
    for _ in 0..count {
        if rng.percent(10) && number_everywhere(rng, input, kinds) {
            continue;
        }
        let index = weighted(rng, kinds.iter().map(|(_, w)| *w));
        let other = &rng.pick(corpus)[index];
        let room = max_len.saturating_sub(input.iter().map(Vec::len).sum::<usize>() - input[index].len());
        part(rng, kinds[index].0, &mut input[index], other, room);
    }
}

/// An index drawn with the given weights.
fn weighted(rng: &mut Rng, weights: impl Iterator<Item = usize> + Clone) -> usize {
    let mut roll = rng.below(weights.clone().sum());
    for (i, w) in weights.enumerate() {
        if roll < w {
            return i;
        }
        roll -= w;
    }
    0
}

/// One number changed everywhere it stands whole, in every JSON part and
/// safetensors header: a dimension of the config changes together with the
/// shapes that must agree with it (a file that passes the shape checks
/// with a huge dimension is what finds an allocation sized by the config).
fn number_everywhere(rng: &mut Rng, input: &mut Input, kinds: &[(Kind, usize)]) -> bool {
    // The JSON text of each part that has some: (part, start, end).
    let texts: Vec<(usize, usize, usize)> = kinds
        .iter()
        .enumerate()
        .filter_map(|(i, (kind, _))| match kind {
            Kind::Json => Some((i, 0, input[i].len())),
            Kind::Safetensors => header_end(&input[i]).map(|end| (i, 8, end)),
            _ => None,
        })
        .collect();
    if texts.is_empty() {
        return false;
    }
    // Most often a number of the config, whose dimensions the others follow.
    let configs: Vec<_> = texts.iter().copied().filter(|&(i, _, _)| kinds[i].0 == Kind::Json).collect();
    let (i, start, end) = match !configs.is_empty() && rng.percent(75) {
        true => *rng.pick(&configs),
        false => *rng.pick(&texts),
    };
    let numbers = number_spans(&input[i][start..end]);
    if numbers.is_empty() {
        return false;
    }
    let (s, e) = *rng.pick(&numbers);
    let old = input[i][start + s..start + e].to_vec();
    let new = new_number(rng, &old);
    for &(i, start, end) in &texts {
        let mut text = input[i][start..end].to_vec();
        for (s, e) in number_spans(&text).into_iter().rev() {
            if text[s..e] == old[..] {
                text.splice(s..e, new.bytes());
            }
        }
        let part = &mut input[i];
        *part = match kinds[i].0 {
            Kind::Safetensors => [&(text.len() as u64).to_le_bytes()[..], &text, &part[end..]].concat(),
            _ => text,
        };
    }
    true
}

/// Where a safetensors file's JSON header ends, if its length fits the file.
fn header_end(data: &[u8]) -> Option<usize> {
    let len = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    usize::try_from(len).ok()?.checked_add(8).filter(|&end| end <= data.len())
}

/// One mutation of one part, which may grow to `max_len` bytes.
fn part(rng: &mut Rng, kind: Kind, data: &mut Vec<u8>, other: &[u8], max_len: usize) {
    let structured = match kind {
        Kind::Torch => 75,
        Kind::Safetensors => 60,
        _ => 50,
    };
    if rng.percent(structured) {
        let done = match kind {
            Kind::Json => json(rng, data, max_len),
            Kind::Text | Kind::Merges | Kind::Link => {
                let word = *rng.pick(dictionary(kind));
                insert(rng, data, word.as_bytes(), max_len);
                true
            }
            Kind::Safetensors => safetensors(rng, data, max_len),
            Kind::Torch => torch(rng, data, max_len),
        };
        if done {
            return;
        }
    }
    bytes(rng, data, other, kind, max_len);
}

/// Words worth inserting whole, per kind of part.
fn dictionary(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Json | Kind::Safetensors => &[
            "null", "true", "false", "[]", "{}", "0", "-1", "1e308", "\"\"", ",", ":", "\"relu\"", "\"gelu\"",
            "\"identity\"", "\"attn_in,attn_out,mlp_in,mlp_out\"", "\"F32\"", "\"F16\"", "\"BF16\"", "\"F64\"",
            "\"I64\"", "\"U8\"", "\"BOOL\"", "\"F8_E4M3\"", "\"__metadata__\"", "\"shape\"", "\"dtype\"",
            "\"data_offsets\"", "\"format\"", "\"nodes\"", "\"edges\"", "[0,0]", "[4294967296]",
            "\"0.mlp.post_act[3]\"", "\"final_resid[0]\"", "\"<|endoftext|>\"", "\"\\u0000\"", "\"\\ud800\"",
        ],
        Kind::Text | Kind::Merges => &[
            " ", "  ", "\n", "\r\n", "\t", "<|endoftext|>", "<|endoftext", "|>", "'s", "'t", "'re", "'ll", "é", "\u{0}",
            "\u{2028}", "\u{feff}", "🙂", "中文", "ﬀ", "0123456789", "    ", "\u{a0}", "Ġ", "Ċ", "ĠĠ", "#version: 0.2\n",
            "a b\n", "Ġ t\n", " \n",
        ],
        Kind::Link => &[
            "&", "=", "#", "v=1", "v=0", "v=2", "v=4294967296", "model=python_tasks", "model=../x", "url=https://example.com/m/",
            "url=http://", "sha256=", "prompt=", "at=", "out=", "vs=", "circuit=", "nodes=", "zero=", "mean=", "sel=",
            "rank=effect", "rank=activation", "per_site=", "zoom=", "zoom=1,0,0", "0.mlp.post_act:", "1.attn.k:",
            "0.attn.act_in:", "final_resid:", ":", ",", "-", "%", "%25", "%00", "%FF", "+", "zz", "k-2", "0-0", "NaN", "inf",
            "1e309", "18446744073709551616",
        ],
        Kind::Torch => &[],
    }
}

/// The prefixes `torch.compile` and `DistributedDataParallel` add to every name.
const WRAPPERS: [&str; 2] = ["module.", "_orig_mod."];

/// Integers that sit at edges: sizes, signs, widths.
const INTERESTING: [u64; 21] = [
    0,
    1,
    2,
    7,
    8,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

/// A byte-level mutation.
fn bytes(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], kind: Kind, max_len: usize) {
    let len = data.len();
    match rng.below(12) {
        // Flip a bit.
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        // A byte to an interesting value.
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = *rng.pick(&[0, 0xff, 0x7f, 0x80, 1, b'0', b'9', b'\n', b'"', b'\\']);
        }
        2 if len > 0 => {
            let at = rng.below(len);
            data[at] = rng.next() as u8;
        }
        // A little-endian integer of 1, 2, 4 or 8 bytes to an interesting value.
        3 if len > 0 => {
            let width = *rng.pick(&[1, 2, 4, 8]);
            let at = rng.below(len);
            let value = match rng.percent(20) {
                true => len as u64,
                false => *rng.pick(&INTERESTING),
            };
            for (i, b) in value.to_le_bytes().iter().take(width).enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        // Insert random bytes.
        4 => {
            let new: Vec<u8> = (0..rng.size(16)).map(|_| rng.next() as u8).collect();
            insert(rng, data, &new, max_len);
        }
        // Delete a range.
        5 if len > 0 => {
            let at = rng.below(len);
            let n = rng.size(len - at);
            data.drain(at..at + n);
        }
        // Copy a range to another place.
        6 if len > 0 => {
            let at = rng.below(len);
            let n = rng.size(len - at);
            let chunk = data[at..at + n].to_vec();
            insert(rng, data, &chunk, max_len);
        }
        // Repeat a short range many times: deep nesting, long words, runs of one opcode.
        7 if len > 0 => {
            let at = rng.below(len);
            let n = rng.size((len - at).min(16));
            let times = rng.size(4096);
            let chunk = data[at..at + n].repeat(times);
            if len + chunk.len() <= max_len {
                data.splice(at..at, chunk);
            }
        }
        // Splice: this part's head with another input's tail.
        8 if !other.is_empty() => {
            let cut = rng.below(len + 1);
            let from = rng.below(other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..other.len().min(from + max_len.saturating_sub(cut))]);
        }
        // Insert a range of another input.
        9 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = rng.size(other.len() - from);
            insert(rng, data, &other[from..from + n], max_len);
        }
        10 if len > 0 => {
            data.truncate(rng.below(len));
        }
        // A dictionary word, where the kind has one.
        _ => match dictionary(kind) {
            [] => {
                if len > 0 {
                    let at = rng.below(len);
                    data[at] = !data[at];
                }
            }
            words => {
                let word = rng.pick(words).as_bytes();
                insert(rng, data, word, max_len);
            }
        },
    }
}

/// Inserts `new` at a random place (or overwrites there, one time in four).
fn insert(rng: &mut Rng, data: &mut Vec<u8>, new: &[u8], max_len: usize) {
    let at = rng.below(data.len() + 1);
    if rng.percent(25) && at + new.len() <= data.len() {
        data[at..at + new.len()].copy_from_slice(new);
    } else if data.len() + new.len() <= max_len {
        data.splice(at..at, new.iter().copied());
    }
}

/// Numbers and strings of JSON text: one changed, or a nest inserted.
/// False when there is nothing to change.
fn json(rng: &mut Rng, data: &mut Vec<u8>, max_len: usize) -> bool {
    match rng.below(4) {
        0 | 1 => {
            let numbers = number_spans(data);
            if numbers.is_empty() {
                return false;
            }
            let (start, end) = *rng.pick(&numbers);
            let new = new_number(rng, &data[start..end]);
            if data.len() - (end - start) + new.len() <= max_len {
                data.splice(start..end, new.into_bytes());
            }
            true
        }
        2 => {
            let strings = string_spans(data);
            if strings.is_empty() {
                return false;
            }
            let (start, end) = *rng.pick(&strings);
            let new: Vec<u8> = match rng.below(5) {
                0 => Vec::new(),
                // The prefixes wrappers add: `module.x` beside `x` is one tensor twice.
                4 => [rng.pick(&WRAPPERS).as_bytes(), &data[start..end]].concat(),
                1 => rng.pick(dictionary(Kind::Json)).trim_matches('"').as_bytes().to_vec(),
                // Another string of the same file: a name where a value was, a key twice.
                2 => {
                    let (s, e) = *rng.pick(&strings);
                    data[s..e].to_vec()
                }
                _ => data[start..end].repeat(rng.size(1000)),
            };
            if data.len() - (end - start) + new.len() <= max_len {
                data.splice(start..end, new);
            }
            true
        }
        _ => {
            // Deep nesting: `[[[[…]]]]` in place of a value.
            let depth = rng.size(100_000);
            let (open, close) = *rng.pick(&[("[", "]"), ("{\"a\":", "}")]);
            let nest = [open.repeat(depth), close.repeat(depth)].concat();
            insert(rng, data, nest.as_bytes(), max_len);
            true
        }
    }
}

/// A number to put in place of `old`: one at an edge, or `old` scaled.
fn new_number(rng: &mut Rng, old: &[u8]) -> String {
    let old: f64 = std::str::from_utf8(old).ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    match rng.below(3) {
        0 => rng.pick(&INTERESTING).to_string(),
        1 => rng
            .pick(&["-1", "-0", "0.5", "1e308", "-1e308", "1e-320", "1e400", "16777216", "16777217", "9007199254740993", "1048577", "100000000", "3e9", "18446744073709551616", "-9223372036854775809"])
            .to_string(),
        _ => {
            let factor = *rng.pick(&[2.0, 10.0, 1000.0, 1e6, -1.0, 0.5, 0.0]);
            let v = old * factor + *rng.pick(&[0.0, 1.0, -1.0]);
            match v.fract() == 0.0 && v.abs() < 1e18 {
                true => format!("{}", v as i64),
                false => format!("{v}"),
            }
        }
    }
}

/// Byte ranges of the numbers in JSON-like text (also inside strings:
/// `transformer.h.0.attn` is worth changing too).
fn number_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < data.len() && spans.len() < 4096 {
        let c = data[i];
        let starts = c.is_ascii_digit() || (c == b'-' && data.get(i + 1).is_some_and(u8::is_ascii_digit));
        let after_word = i > 0 && (data[i - 1].is_ascii_alphanumeric() || data[i - 1] == b'_');
        if starts && !after_word {
            let end = (i + 1..data.len()).find(|&j| !matches!(data[j], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')).unwrap_or(data.len());
            spans.push((i, end));
            i = end;
        } else {
            i += 1;
        }
    }
    spans
}

/// Byte ranges of the contents of JSON strings (between their quotes).
fn string_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < data.len() && spans.len() < 4096 {
        if data[i] == b'"' {
            let mut j = i + 1;
            while j < data.len() && data[j] != b'"' {
                j += if data[j] == b'\\' { 2 } else { 1 };
            }
            if j >= data.len() {
                break;
            }
            spans.push((i + 1, j));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    spans
}

/// A safetensors file: its 8-byte header length, or its JSON header
/// (rewritten with the length it then has), or where its data ends.
fn safetensors(rng: &mut Rng, data: &mut Vec<u8>, max_len: usize) -> bool {
    if data.len() < 8 {
        return false;
    }
    let header_len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let header_end = header_end(data);
    match (rng.below(4), header_end) {
        (0, _) => {
            let file = data.len() as u64;
            let new = *rng.pick(&[
                0,
                1,
                2,
                7,
                8,
                header_len.wrapping_sub(1),
                header_len.wrapping_add(1),
                file - 8,
                file.wrapping_sub(7),
                file,
                100_000_000,
                100_000_001,
                u32::MAX as u64,
                u64::MAX,
                1 << 63,
            ]);
            data[..8].copy_from_slice(&new.to_le_bytes());
            true
        }
        (1 | 2, Some(end)) => {
            let mut header = data[8..end].to_vec();
            let room = max_len.saturating_sub(data.len() - header.len());
            if rng.percent(25) {
                return wrapped_twice(rng, data, end, max_len);
            }
            if !json(rng, &mut header, room) {
                return false;
            }
            let mut out = (header.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&header);
            out.extend_from_slice(&data[end..]);
            *data = out;
            true
        }
        (3, Some(end)) => {
            // The data one byte short or long, or cut to nothing.
            match rng.below(3) {
                0 => data.truncate(data.len() - 1),
                1 if data.len() < max_len => data.push(0),
                _ => data.truncate(end),
            }
            true
        }
        _ => false,
    }
}

/// A tensor of a safetensors file stored again under a wrapper's prefix
/// (`module.x` beside `x`: one tensor twice once the prefix is removed),
/// its bytes copied to the end, where the format wants the next tensor.
fn wrapped_twice(rng: &mut Rng, data: &mut Vec<u8>, header_end: usize, max_len: usize) -> bool {
    let Ok(serde_json::Value::Object(mut tensors)) = serde_json::from_slice(&data[8..header_end]) else { return false };
    let names: Vec<String> = tensors.keys().filter(|k| *k != "__metadata__").cloned().collect();
    if names.is_empty() {
        return false;
    }
    let name = rng.pick(&names);
    let mut info = tensors[name].clone();
    let offsets = info["data_offsets"].as_array().and_then(|o| Some((o.first()?.as_u64()? as usize, o.get(1)?.as_u64()? as usize)));
    let fits = |&(s, e): &(usize, usize)| s <= e && e <= data.len() - header_end && data.len() + (e - s) + 1024 <= max_len;
    let Some((start, end)) = offsets.filter(fits) else { return false };
    let stored = data.len() - header_end;
    info["data_offsets"] = serde_json::json!([stored, stored + end - start]);
    tensors.insert(format!("{}{name}", rng.pick(&WRAPPERS)), info);
    let header = serde_json::to_vec(&tensors).expect("JSON");
    let bytes = &data[header_end..];
    *data = [&(header.len() as u64).to_le_bytes()[..], &header, bytes, &bytes[start..end]].concat();
    true
}

/// The opcodes of every pickle protocol.
const OPCODES: &[u8] = b"(.0123FGIJKLMNPQRSTUVXabcdeghijlopqrstu}]\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98";

/// Snippets of pickle worth inserting whole: globals a checkpoint may or
/// must not name, and objects that contain themselves (through the memo).
const PICKLE_SNIPPETS: &[&[u8]] = &[
    b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch._utils\n_rebuild_parameter\n",
    b"ctorch\nFloatStorage\n",
    b"ctorch\nBFloat16Storage\n",
    b"ctorch\nHalfStorage\n",
    b"ctorch\nDoubleStorage\n",
    b"ctorch\nLongStorage\n",
    b"ccollections\nOrderedDict\n",
    b"cposix\nsystem\n",
    b"c__builtin__\nset\n",
    // A list that holds itself.
    b"]q\x00h\x00a",
    // A dict that holds itself.
    b"}q\x01X\x01\x00\x00\x00ah\x01s",
    // A list that holds itself four times.
    b"(]q\x02h\x02h\x02h\x02h\x02e",
    b"X\x05\x00\x00\x00model",
    b"X\x17\x00\x00\x00transformer.wte.weight",
    b"\x8c\x07storage",
    b"K\x00",
    b"J\xff\xff\xff\x7f",
    b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"Q",
];

/// A mutation of a pickle's bytes.
fn pickle(rng: &mut Rng, data: &mut Vec<u8>, max_len: usize) {
    match rng.below(7) {
        5 if rename(rng, data, max_len) => return,
        6 if !data.is_empty() => {
            // A long run of a few bytes: a shape of a million dimensions, a
            // list of a million items.
            let at = rng.below(data.len());
            let n = rng.size((data.len() - at).min(8));
            let times = rng.size(500_000).min(max_len.saturating_sub(data.len()) / n);
            let run = data[at..at + n].repeat(times);
            data.splice(at..at, run);
            return;
        }
        _ => {}
    }
    // Before the final STOP, where a value is most likely still used.
    let at = match rng.percent(50) {
        true => data.len().saturating_sub(1),
        false => rng.below(data.len() + 1),
    };
    let room = max_len.saturating_sub(data.len());
    let mut snippet = match rng.below(5) {
        // Deep nesting: k tuples, lists or dicts, each inside the next.
        0 => {
            let k = rng.size(200_000).min(room / 8);
            match rng.below(4) {
                0 => [b"N".to_vec(), vec![0x85; k]].concat(),
                1 => [vec![b']'; k], vec![b'a'; k.saturating_sub(1)]].concat(),
                2 => [vec![b'('; k], vec![b't'; k]].concat(),
                _ => [b"}X\x01\x00\x00\x00a".repeat(k.saturating_sub(1)), b"}".to_vec(), vec![b's'; k.saturating_sub(1)]].concat(),
            }
        }
        // Sharing: (x, x) of (x, x) of …, 2^k paths through k objects.
        1 => [b"N".to_vec(), b"q\x00h\x00\x86".repeat(rng.size(64))].concat(),
        2 => rng.pick(PICKLE_SNIPPETS).to_vec(),
        // One opcode with a few random argument bytes.
        _ => {
            let mut op = vec![*rng.pick(OPCODES)];
            op.extend((0..rng.below(9)).map(|_| rng.next() as u8));
            op
        }
    };
    snippet.truncate(room);
    data.splice(at..at, snippet);
}

/// A string of a pickle (BINUNICODE `X` or SHORT_BINUNICODE `\x8c`, with
/// its length) renamed: a wrapper prefix added (`module.x` beside `x`),
/// another string's name taken (one key twice), or a letter added.
fn rename(rng: &mut Rng, data: &mut Vec<u8>, max_len: usize) -> bool {
    let strings = pickle_strings(data);
    if strings.is_empty() {
        return false;
    }
    let (op, start, end) = *rng.pick(&strings);
    let name = &data[start..end];
    let new = match rng.below(3) {
        0 => [rng.pick(&WRAPPERS).as_bytes(), name].concat(),
        1 => {
            let (_, s, e) = *rng.pick(&strings);
            data[s..e].to_vec()
        }
        _ => [name, b"x"].concat(),
    };
    // Written as BINUNICODE, whichever it was.
    let mut string = vec![b'X'];
    string.extend_from_slice(&(new.len() as u32).to_le_bytes());
    string.extend_from_slice(&new);
    if data.len() - (end - op) + string.len() > max_len {
        return false;
    }
    data.splice(op..end, string);
    true
}

/// The strings of a pickle that look like names: (opcode, start, end).
fn pickle_strings(data: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut strings = Vec::new();
    for i in 0..data.len() {
        let (start, len) = match data[i] {
            b'X' if i + 5 <= data.len() => (i + 5, u32::from_le_bytes(data[i + 1..i + 5].try_into().expect("4 bytes")) as usize),
            0x8c if i + 2 <= data.len() => (i + 2, data[i + 1] as usize),
            _ => continue,
        };
        let name = data.get(start..start.saturating_add(len));
        if len > 0 && len <= 256 && name.is_some_and(|n| n.iter().all(|b| b.is_ascii_graphic())) {
            strings.push((i, start, start + len));
        }
        if strings.len() >= 4096 {
            break;
        }
    }
    strings
}

/// A `.pt`: its entries read, one changed (most often the pickle), and the
/// zip written again (stored, as torch writes it) with right checksums.
/// False when the zip does not read.
fn torch(rng: &mut Rng, data: &mut Vec<u8>, max_len: usize) -> bool {
    // The zip crate reads the mutated files the targets refused: a panic
    // there is not the harness's to report (the target hits it first).
    let Some(mut entries) = std::panic::catch_unwind(|| zip_entries(data, max_len)).ok().flatten() else { return false };
    if entries.is_empty() {
        return false;
    }
    let pickle_at = entries.iter().position(|(name, _)| name.ends_with("data.pkl"));
    let size: usize = entries.iter().map(|(_, d)| d.len()).sum();
    let room = |len: usize| max_len.saturating_sub(size - len + 1024);
    match (rng.below(10), pickle_at) {
        (0..=4, Some(i)) => {
            let room = room(entries[i].1.len());
            match rng.percent(60) {
                true => pickle(rng, &mut entries[i].1, room),
                false => bytes(rng, &mut entries[i].1, &[], Kind::Torch, room),
            }
        }
        (5, _) => {
            // Another entry: a storage cut short or grown, or the byte order.
            let i = rng.below(entries.len());
            let room = room(entries[i].1.len());
            match entries[i].0.ends_with("byteorder") && rng.percent(50) {
                true => entries[i].1 = rng.pick(&[&b"big"[..], b"", b"little\n", b"\xff"]).to_vec(),
                false => bytes(rng, &mut entries[i].1, &[], Kind::Torch, room),
            }
        }
        (6, _) => {
            // A new name: another folder, a storage key, a second data.pkl.
            let i = rng.below(entries.len());
            let name = &entries[i].0;
            let new = match rng.below(4) {
                0 => format!("other/{}", name.rsplit('/').next().unwrap_or_default()),
                1 => format!("{name}0"),
                2 => name.replacen('/', "/a/", 1),
                _ => name.rsplit('/').next().unwrap_or_default().to_string(),
            };
            entries[i].0 = new;
        }
        (7, _) if entries.len() > 1 => {
            entries.remove(rng.below(entries.len()));
        }
        (8, _) => {
            // An entry twice, the second in another folder.
            let i = rng.below(entries.len());
            let (name, data) = entries[i].clone();
            entries.push((format!("copy/{}", name.rsplit('/').next().unwrap_or_default()), data));
        }
        _ => {
            // Two entries' contents swapped.
            let (i, j) = (rng.below(entries.len()), rng.below(entries.len()));
            let (a, b) = (entries[i].1.clone(), entries[j].1.clone());
            entries[i].1 = b;
            entries[j].1 = a;
        }
    }
    match write_zip(&entries) {
        Some(zip) => {
            *data = zip;
            true
        }
        None => false,
    }
}

/// The entries of a zip, unless it does not read or holds more than `max_len` bytes.
fn zip_entries(data: &[u8], max_len: usize) -> Option<Vec<(String, Vec<u8>)>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(data)).ok()?;
    let mut entries = Vec::new();
    let mut total = 0u64;
    for i in 0..zip.len().min(1000) {
        let mut entry = zip.by_index(i).ok()?;
        total += entry.size();
        if total > max_len as u64 {
            return None;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).ok()?;
        entries.push((entry.name().to_string(), bytes));
    }
    Some(entries)
}

fn write_zip(entries: &[(String, Vec<u8>)]) -> Option<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(name.as_str(), options).ok()?;
        zip.write_all(data).ok()?;
    }
    Some(zip.finish().ok()?.into_inner())
}
