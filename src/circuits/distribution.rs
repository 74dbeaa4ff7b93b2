//! A node over a task: its value at the last token of every example's
//! prompt (where the model chooses between the right and the wrong answer),
//! the examples split into classes by their right answer, as OpenAI's
//! viewer shows a circuit's nodes. A node that tells the classes apart
//! (e.g. fires when the string was opened with `"` and not with `'`) is
//! one the circuit can use to choose.

use super::{Choice, Node};
use crate::model::{Record, Site, Tokenizer};
use crate::tasks::Task;
use crate::runner::Runner;

/// Held-out examples of a task a node is shown over, in the page and by
/// `circuitscope inspect --task` (the faithfulness figures' count).
pub const DISTRIBUTION_EXAMPLES: usize = 200;

/// Prompts per batched run at most: a few thousand tokens, as the examples' batches.
const BATCH: usize = 64;

/// A task's examples as a node is shown over them.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskExamples {
    /// The two kinds of example ([`Task::answer_classes`]).
    pub names: [&'static str; 2],
    pub prompts: Vec<String>,
    pub choices: Vec<Choice>,
    /// Each example's kind: 0 or 1.
    pub classes: Vec<usize>,
}

impl TaskExamples {
    /// `n` examples of `task` drawn from `seed`, tokenized by `tokenizer`.
    pub fn new(task: Task, tokenizer: &Tokenizer, seed: u64, n: usize) -> Result<TaskExamples, String> {
        let examples = task.examples(seed, n);
        Ok(TaskExamples {
            names: task.answer_classes(),
            choices: Choice::of_examples(&examples, tokenizer)?,
            classes: examples.iter().map(|e| task.answer_class(e)).collect(),
            prompts: examples.into_iter().map(|e| e.prompt).collect(),
        })
    }
}

/// The examples of one kind: the node's value on each.
#[derive(Clone, Debug, PartialEq)]
pub struct AnswerClass {
    pub name: &'static str,
    /// The node's value on each example of the class: `[examples]`.
    pub values: Vec<f32>,
    /// Each value's example, as an index into the task's examples.
    pub examples: Vec<usize>,
}

impl AnswerClass {
    pub fn mean(&self) -> f32 {
        self.values.iter().sum::<f32>() / self.values.len().max(1) as f32
    }
}

/// One node's values over a task's examples, by answer class.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskDistribution {
    pub node: Node,
    /// The task's two classes.
    pub classes: [AnswerClass; 2],
}

impl TaskDistribution {
    /// The first class's mean minus the second's.
    pub fn difference(&self) -> f32 {
        self.classes[0].mean() - self.classes[1].mean()
    }

    /// How well the node alone tells two classes apart: the share of pairs
    /// (one example of each) in which the first class's value is the larger,
    /// ties counting half (the area under the ROC curve). 0.5: not at all;
    /// 0 or 1: perfectly. `None` when a class has no examples.
    pub fn separation(&self) -> Option<f64> {
        let [a, b] = &self.classes;
        if a.values.is_empty() || b.values.is_empty() {
            return None;
        }
        let mut above = 0.0;
        for &x in &a.values {
            for &y in &b.values {
                above += if x > y { 1.0 } else if x == y { 0.5 } else { 0.0 };
            }
        }
        Some(above / (a.values.len() * b.values.len()) as f64)
    }

    /// The smallest and largest value over every class.
    pub fn range(&self) -> (f32, f32) {
        let values = self.classes.iter().flat_map(|c| c.values.iter().copied());
        values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    }
}

/// Every node of `nodes` over a task's examples: each prompt run once by `runner`
/// (batched) with the nodes' sites recorded, each node read at the prompt's
/// last token. `progress` hears of each batch (examples done, of all);
/// returning false stops there, and the distributions cover the examples
/// run so far.
pub async fn task_distributions(
    runner: &Runner,
    task: &TaskExamples,
    nodes: &[Node],
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<TaskDistribution>, String> {
    let mut sites: Vec<Site> = nodes.iter().map(|n| n.site).collect();
    sites.sort();
    sites.dedup();
    let choices = &task.choices;
    // Prompts per batch: up to BATCH, and the recorded sites of a batch
    // under 64 MB (at the released shape a node site is up to 8192 wide).
    let config = &runner.model().config;
    let longest = choices.iter().map(|c| c.tokens.len()).max().unwrap_or(1);
    let batch_bytes = sites.iter().map(|&s| config.site_width(s)).sum::<usize>() * longest * 4;
    let batch = BATCH.min(((64 << 20) / batch_bytes.max(1)).max(1));
    let record = Record::Sites(sites);
    if let Some(first) = choices.first() {
        runner.time_backends(&first.tokens).await?;
    }
    // values[node][example]
    let mut values = vec![Vec::with_capacity(choices.len()); nodes.len()];
    for start in (0..choices.len()).step_by(batch) {
        if !progress(start, choices.len()) {
            break;
        }
        let prompts: Vec<Vec<u32>> = choices[start..(start + batch).min(choices.len())].iter().map(|c| c.tokens.clone()).collect();
        for (_, recording) in runner.record_batch(&prompts, &record).await? {
            for (node, values) in nodes.iter().zip(&mut values) {
                let acts = &recording.iter().find(|(s, _)| *s == node.site).ok_or_else(|| format!("the run did not record {}", node.site))?.1;
                values.push(acts.row(acts.rows - 1).get(node.channel).copied().unwrap_or(0.0));
            }
        }
    }
    let done = values.first().map_or(0, Vec::len);
    progress(done, choices.len());
    Ok(nodes
        .iter()
        .zip(values)
        .map(|(&node, values)| {
            let class = |c: usize| {
                let examples: Vec<usize> = (0..values.len()).filter(|&i| task.classes[i] == c).collect();
                AnswerClass { name: task.names[c], values: examples.iter().map(|&i| values[i]).collect(), examples }
            };
            TaskDistribution { node, classes: [class(0), class(1)] }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{forward, SiteKind};
    use std::sync::Arc;

    #[test]
    fn each_value_is_the_nodes_activation_at_the_last_token_of_its_own_run() {
        let (model, _, choices) = crate::circuits::test_task();
        let model = Arc::new(model);
        let runner = crate::runner::Runner::at_once(model.clone(), crate::runner::Want::Cpu, Box::new(|_| {}));
        let classes = choices.iter().map(|c| (c.right % 2) as usize).collect();
        let task = TaskExamples { names: ["even", "odd"], prompts: vec![String::new(); choices.len()], choices: choices.clone(), classes };
        let nodes = [Node::new(1, SiteKind::MlpPostAct, 5), Node::new(0, SiteKind::AttnQ, 3), Node::new(1, SiteKind::MlpPostAct, 9)];
        let mut calls = 0;
        let found = pollster::block_on(task_distributions(&runner, &task, &nodes, &mut |_, _| {
            calls += 1;
            true
        }))
        .unwrap();
        assert!(calls >= 2, "progress before the batch and at the end");
        for (distribution, node) in found.iter().zip(nodes) {
            assert_eq!(distribution.node, node);
            let in_classes: usize = distribution.classes.iter().map(|c| c.examples.len()).sum();
            assert_eq!(in_classes, choices.len(), "every example in one class");
            for class in &distribution.classes {
                for (&i, &value) in class.examples.iter().zip(&class.values) {
                    assert_eq!(task.names[task.classes[i]], class.name);
                    let mut last = None;
                    forward(&model, &choices[i].tokens, &mut |site, acts| {
                        if site == node.site {
                            last = Some(acts.row(acts.rows - 1)[node.channel]);
                        }
                    })
                    .unwrap();
                    assert!((last.unwrap() - value).abs() < 1e-4, "{node} on example {i}: {value} vs {last:?}");
                }
            }
        }
        // Stopped before the first batch: over no examples.
        let stopped = pollster::block_on(task_distributions(&runner, &task, &nodes, &mut |_, _| false)).unwrap();
        assert!(stopped.iter().all(|d| d.classes.iter().all(|c| c.values.is_empty())));
    }

    #[test]
    fn separation_is_the_share_of_pairs_the_first_class_wins() {
        let class = |name, values: Vec<f32>| AnswerClass { name, examples: (0..values.len()).collect(), values };
        let node = Node::new(0, SiteKind::AttnV, 0);
        let apart = TaskDistribution { node, classes: [class("a", vec![2.0, 3.0]), class("b", vec![0.0, 1.0])] };
        assert_eq!((apart.separation(), apart.difference(), apart.range()), (Some(1.0), 2.0, (0.0, 3.0)));
        let tied = TaskDistribution { node, classes: [class("a", vec![1.0]), class("b", vec![1.0, 0.0])] };
        assert_eq!(tied.separation(), Some(0.75));
        let one = TaskDistribution { node, classes: [class("a", vec![1.0]), class("b", vec![])] };
        assert_eq!(one.separation(), None);
    }
}
