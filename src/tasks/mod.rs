//! The paper's kind of tasks, as data generators: binary next-token choices
//! on short Python snippets (a prompt, the right continuation and a wrong
//! one), and a pretraining corpus of generated Python-like code in which
//! these patterns occur among many others. Deterministic from a seed.

mod corpus;
mod eval;
mod vocab;

pub use corpus::corpus;
pub use eval::{choice, evaluate, logit_diff, Score};

use serde::{Deserialize, Serialize};

use crate::model::Tokenizer;
use crate::rng::SplitMix;
use vocab::{CLASSES, FUNCTIONS, METHODS, NAMES, WORDS};

/// One example: after `prompt`, `correct` continues it and `wrong` does not.
/// Only the first token of each continuation is compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub correct: String,
    pub wrong: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Close a string with the quote it was opened with: `"` or `'`.
    SingleDoubleQuote,
    /// Close a list nested one or two deep: `]` or `]]`.
    BracketCounting,
    /// Extend a variable made as `set()` with `.add(`, one made as a string with `+=`.
    SetOrString,
    /// Close a call with `)` and an index with `]`.
    BracketType,
    /// The first parameter of a method: `cls` under `@classmethod`, else `self`.
    SelfOrCls,
}

impl Task {
    pub const ALL: [Task; 5] =
        [Task::SingleDoubleQuote, Task::BracketCounting, Task::SetOrString, Task::BracketType, Task::SelfOrCls];

    pub fn name(self) -> &'static str {
        match self {
            Task::SingleDoubleQuote => "single_double_quote",
            Task::BracketCounting => "bracket_counting",
            Task::SetOrString => "set_or_string",
            Task::BracketType => "bracket_type",
            Task::SelfOrCls => "self_or_cls",
        }
    }

    pub fn parse(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The choice the model makes, in a few words.
    pub fn question(self) -> &'static str {
        match self {
            Task::SingleDoubleQuote => "close the string with \" or '?",
            Task::BracketCounting => "close the list with ] or ]]?",
            Task::SetOrString => "grow the variable with .add( or +=?",
            Task::BracketType => "close with ) or ]?",
            Task::SelfOrCls => "first parameter self or cls?",
        }
    }

    /// The task's two kinds of example, by their right answer, in a few
    /// words: what a node that helps choose tells apart.
    pub fn answer_classes(self) -> [&'static str; 2] {
        match self {
            Task::SingleDoubleQuote => ["closes with \"", "closes with '"],
            Task::BracketCounting => ["closes with ]", "closes with ]]"],
            Task::SetOrString => ["grows a set: .add(", "grows a string: +="],
            Task::BracketType => ["closes a call: )", "closes an index: ]"],
            Task::SelfOrCls => ["a method: self", "a classmethod: cls"],
        }
    }

    /// Which of [`Task::answer_classes`] `example` is (0 or 1).
    pub fn answer_class(self, example: &Example) -> usize {
        let first = match self {
            Task::SingleDoubleQuote => example.correct.starts_with('"'),
            Task::BracketCounting => !example.correct.starts_with("]]"),
            Task::SetOrString => example.correct.starts_with(".add("),
            Task::BracketType => example.correct.starts_with(')'),
            Task::SelfOrCls => example.correct.starts_with("(self"),
        };
        usize::from(!first)
    }

    /// `n` examples drawn from `seed`.
    pub fn examples(self, seed: u64, n: usize) -> Vec<Example> {
        // Each task draws from its own stream, so adding a task changes no other's data.
        let mut rng = SplitMix(seed ^ (0x5EED_0000 + self as u64));
        (0..n).map(|_| self.example(&mut rng)).collect()
    }

    fn example(self, rng: &mut SplitMix) -> Example {
        match self {
            Task::SingleDoubleQuote => single_double_quote(rng),
            Task::BracketCounting => bracket_counting(rng),
            Task::SetOrString => set_or_string(rng),
            Task::BracketType => bracket_type(rng),
            Task::SelfOrCls => self_or_cls(rng),
        }
    }
}

/// A task's example as a model folder lists it for the page (`tasks.json`,
/// a list of these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPrompt {
    pub task: String,
    #[serde(flatten)]
    pub example: Example,
}

/// A `TaskPrompt` ready to run: its prompt's token ids and the first tokens
/// of the right and the wrong answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskChoice {
    pub task: String,
    pub prompt: String,
    pub tokens: Vec<u32>,
    pub right: u32,
    pub wrong: u32,
}

/// `tasks.json` checked against the model's tokenizer: every prompt must
/// split cleanly before both answers, and they must differ in their first token.
pub fn parse_task_prompts(json: &str, tokenizer: &Tokenizer) -> Result<Vec<TaskChoice>, String> {
    let prompts: Vec<TaskPrompt> =
        serde_json::from_str(json).map_err(|e| format!("tasks.json is not a list of task prompts: {e}"))?;
    prompts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let (tokens, right, wrong) = choice(tokenizer, &p.example).map_err(|e| format!("tasks.json, prompt {i}: {e}"))?;
            Ok(TaskChoice { task: p.task, prompt: p.example.prompt, tokens, right, wrong })
        })
        .collect()
}

/// Some lines of unrelated code that come before a task's snippet, so the
/// model must find what matters in context.
fn preamble(rng: &mut SplitMix) -> String {
    let mut out = String::new();
    for _ in 0..rng.between(0, 2) {
        out.push_str(&corpus::simple_statement(rng, ""));
    }
    out
}

/// Text of a few words that ends in a letter (so the prompt ends where a
/// token must end).
pub(crate) fn words(rng: &mut SplitMix) -> String {
    let n = rng.between(1, 3);
    (0..n).map(|_| *rng.pick(WORDS)).collect::<Vec<_>>().join(" ")
}

fn single_double_quote(rng: &mut SplitMix) -> Example {
    let (quote, other) = if rng.chance(0.5) { ('"', '\'') } else { ('\'', '"') };
    let text = words(rng);
    let (start, tail) = match rng.below(4) {
        0 => (format!("{} = {quote}{text}", rng.pick(NAMES)), "\n"),
        1 => (format!("print({quote}{text}"), ")\n"),
        2 => (format!("{}({}, {quote}{text}", rng.pick(FUNCTIONS), rng.pick(NAMES)), ")\n"),
        _ => (format!("    return {quote}{text}"), "\n"),
    };
    Example { prompt: preamble(rng) + &start, correct: format!("{quote}{tail}"), wrong: format!("{other}{tail}") }
}

fn bracket_counting(rng: &mut SplitMix) -> Example {
    let element = |rng: &mut SplitMix| rng.between(0, 99).to_string();
    let row = |rng: &mut SplitMix| (0..rng.between(1, 3)).map(|_| element(rng)).collect::<Vec<_>>().join(", ");
    let nested = rng.chance(0.5);
    let list = if nested {
        let rows: Vec<String> = (0..rng.between(1, 3)).map(|_| format!("[{}", row(rng))).collect();
        format!("[{}", rows.join("], "))
    } else {
        format!("[{}", row(rng))
    };
    let (right, wrong) = if nested { ("]]\n", "]\n") } else { ("]\n", "]]\n") };
    let prompt = format!("{}{} = {list}", preamble(rng), rng.pick(NAMES));
    Example { prompt, correct: right.into(), wrong: wrong.into() }
}

fn set_or_string(rng: &mut SplitMix) -> Example {
    let var = *rng.pick(NAMES);
    let item = *rng.pick(&["word", "item", "line", "key", "part"]);
    let source = *rng.pick(&["words", "items", "lines", "keys", "parts"]);
    let is_set = rng.chance(0.5);
    let made = if is_set { "set()".to_string() } else { rng.pick(&["\"\"", "''"]).to_string() };
    let mut prompt = format!("{}{var} = {made}\n", preamble(rng));
    for _ in 0..rng.between(0, 1) {
        prompt.push_str(&corpus::simple_statement(rng, ""));
    }
    prompt.push_str(&format!("for {item} in {source}:\n    {var}"));
    let add = format!(".add({item})\n");
    let append = format!(" += {item}\n");
    let (correct, wrong) = if is_set { (add, append) } else { (append, add) };
    Example { prompt, correct, wrong }
}

fn bracket_type(rng: &mut SplitMix) -> Example {
    let (a, b) = (*rng.pick(NAMES), *rng.pick(NAMES));
    let call = rng.chance(0.5);
    let start = if call {
        format!("{} = {}({a}, {b}", rng.pick(NAMES), rng.pick(FUNCTIONS))
    } else {
        format!("{} = {a}[{b}", rng.pick(NAMES))
    };
    let (correct, wrong) = if call { (")\n", "]\n") } else { ("]\n", ")\n") };
    Example { prompt: preamble(rng) + &start, correct: correct.into(), wrong: wrong.into() }
}

fn self_or_cls(rng: &mut SplitMix) -> Example {
    let class = *rng.pick(CLASSES);
    let classmethod = rng.chance(0.5);
    let mut prompt = format!("{}class {class}:\n", preamble(rng));
    if rng.chance(0.5) {
        // Another method first, of the other kind, as a distraction.
        prompt.push_str(&corpus::method(rng, !classmethod));
    }
    if classmethod {
        prompt.push_str("    @classmethod\n");
    }
    // The prompt stops before `(`: the split pattern makes `(self` and
    // `(cls` one piece each, so the choice is between those tokens.
    prompt.push_str(&format!("    def {}", rng.pick(METHODS)));
    let arg = *rng.pick(NAMES);
    let (correct, wrong) = if classmethod { ("cls", "self") } else { ("self", "cls") };
    Example { prompt, correct: format!("({correct}, {arg}):\n"), wrong: format!("({wrong}, {arg}):\n") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_deterministic_balanced_and_differ_in_their_continuation() {
        for task in Task::ALL {
            let examples = task.examples(7, 400);
            assert_eq!(examples, task.examples(7, 400), "{}", task.name());
            assert_ne!(examples, task.examples(8, 400));
            assert_eq!(Task::parse(task.name()), Some(task));
            let mut first_correct = std::collections::HashMap::new();
            for e in &examples {
                assert_ne!(e.correct, e.wrong);
                assert_ne!(e.correct.chars().next(), None);
                *first_correct.entry(e.correct.clone()).or_insert(0) += 1;
            }
            // Neither answer dominates: a model cannot pass by always giving one.
            let most = first_correct.values().max().unwrap();
            assert!(*most < 400 * 7 / 10, "{}: {first_correct:?}", task.name());
        }
    }

    #[test]
    fn the_right_answer_depends_on_the_prompt() {
        for e in Task::SingleDoubleQuote.examples(1, 50) {
            let opened = e.prompt.rfind(['"', '\'']).map(|i| &e.prompt[i..i + 1]).unwrap();
            assert!(e.correct.starts_with(opened), "{e:?}");
        }
        for e in Task::BracketCounting.examples(1, 50) {
            let line = e.prompt.lines().last().unwrap();
            let depth = line.matches('[').count() - line.matches(']').count();
            assert_eq!(e.correct.trim_end(), "]".repeat(depth), "{e:?}");
        }
        for e in Task::SetOrString.examples(1, 50) {
            let var = e.prompt.rsplit(' ').next().unwrap();
            assert_eq!(e.prompt.contains(&format!("{var} = set()")), e.correct.starts_with(".add("), "{e:?}");
        }
        for e in Task::SelfOrCls.examples(1, 50) {
            let last_def = e.prompt.rfind("    def ").unwrap();
            let decorated = e.prompt[..last_def].ends_with("@classmethod\n");
            assert_eq!(decorated, e.correct.starts_with("(cls"), "{e:?}");
        }
    }

    #[test]
    fn each_task_has_examples_of_both_answer_classes_and_the_class_follows_the_answer() {
        for task in Task::ALL {
            let examples = task.examples(5, 100);
            let second = examples.iter().filter(|e| task.answer_class(e) == 1).count();
            assert!((20..=80).contains(&second), "{}: {second} of 100", task.name());
            for e in &examples {
                // Swapping the answers swaps the class.
                let swapped = Example { correct: e.wrong.clone(), wrong: e.correct.clone(), ..e.clone() };
                assert_ne!(task.answer_class(e), task.answer_class(&swapped), "{}: {e:?}", task.name());
            }
        }
    }

    #[test]
    fn task_prompts_round_trip_through_json_and_bad_ones_are_named() {
        let files = Tokenizer::train(&corpus(4, 400_000), 512).unwrap();
        let tokenizer = Tokenizer::from_files(&files.encoder_json, &files.vocab_bpe).unwrap();
        let prompts: Vec<TaskPrompt> = Task::ALL
            .iter()
            .flat_map(|t| t.examples(2, 2).into_iter().map(|example| TaskPrompt { task: t.name().into(), example }))
            .collect();
        let json = serde_json::to_string(&prompts).unwrap();
        let parsed = parse_task_prompts(&json, &tokenizer).unwrap();
        assert_eq!(parsed.len(), 10);
        for (choice, prompt) in parsed.iter().zip(&prompts) {
            assert_eq!(choice.task, prompt.task);
            assert_eq!((choice.tokens.clone(), choice.right, choice.wrong), super::choice(&tokenizer, &prompt.example).unwrap());
        }
        assert!(parse_task_prompts("{\"task\": 1}", &tokenizer).unwrap_err().contains("not a list of task prompts"));
        let same = r#"[{"task": "t", "prompt": "x = ", "correct": "1", "wrong": "1"}]"#;
        assert!(parse_task_prompts(same, &tokenizer).unwrap_err().contains("tasks.json, prompt 0"));
    }
}
