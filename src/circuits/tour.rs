//! Classroom tours: for each task of a model, a few steps through its
//! circuit (the prompt, the circuit, its first node, an ablation that breaks
//! the behaviour), each a view of the page ([`ViewLink`]) and a short text
//! whose figures are measured here, not written by hand.
//!
//! `circuitscope tours --model DIR` writes them to `DIR/tours.json`:
//!
//! ```json
//! {"tours": [{"task": "single_double_quote", "title": "…",
//!             "steps": [{"title": "…", "text": "…", "view": "v=1&model=…"}]}]}
//! ```

use serde::{Deserialize, Serialize};

use super::{all_nodes, candidates, remove, AblationKind, LinkModel, LoadedCircuit, Node, Ranking, Shown, SiteMeans, View, ViewLink};
use crate::model::{forward, forward_with_interventions, Model, Tokenizer};
use crate::tasks::{Task, TaskChoice};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tours {
    pub tours: Vec<Tour>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tour {
    pub task: String,
    pub title: String,
    pub steps: Vec<TourStep>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TourStep {
    pub title: String,
    pub text: String,
    /// The page's view for this step: a link fragment ([`ViewLink`]).
    pub view: String,
    /// The part of the page the step is about, scrolled into view.
    #[serde(default)]
    pub focus: Focus,
}

/// A part of the page a tour step points at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Focus {
    /// The prompt's tokens and the predictions.
    #[default]
    Prompt,
    /// The circuit graph.
    Circuit,
    /// The node inspector.
    Inspector,
    /// The predictions with the ablations, and the change they make.
    Ablation,
}

/// The logit of `right` minus that of `wrong` at the prompt's last token.
fn logit_difference(logits: &crate::model::Tensor, choice: &TaskChoice) -> f64 {
    let last = logits.row(choice.tokens.len() - 1);
    f64::from(last[choice.right as usize] - last[choice.wrong as usize])
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", 100.0 * fraction)
}

/// The logit difference a tour's prompt must have: the model gets it right, clearly.
pub const CLEAR_MARGIN: f64 = 1.0;

/// The logit difference of `choice` with `nodes` mean-ablated.
pub fn difference_without(model: &Model, means: &SiteMeans, choice: &TaskChoice, nodes: &[Node]) -> Result<f64, String> {
    let logits = forward_with_interventions(model, &choice.tokens, &remove(&model.config, means, nodes)?, &mut |_, _| {})
        .map_err(|e| e.to_string())?;
    Ok(logit_difference(&logits, choice))
}

/// The fewest of `ranked`'s first nodes whose removal flips `choice`, with
/// the logit difference then; `None` when even all of them do not.
fn first_flip(model: &Model, means: &SiteMeans, choice: &TaskChoice, ranked: &[Node]) -> Result<Option<(usize, f64)>, String> {
    for k in 1..=ranked.len() {
        let difference = difference_without(model, means, choice, &ranked[..k])?;
        if difference < 0.0 {
            return Ok(Some((k, difference)));
        }
    }
    Ok(None)
}

/// The tour of `circuit`'s task on `choice` (a prompt the model gets right
/// by at least [`CLEAR_MARGIN`]), through its nodes (most important first).
/// `model_id` names the model in the views.
pub fn task_tour(
    model: &Model,
    model_id: &str,
    tokenizer: &Tokenizer,
    means: &SiteMeans,
    choice: &TaskChoice,
    circuit: &LoadedCircuit,
) -> Result<Tour, String> {
    let task = Task::parse(&circuit.file.task).ok_or_else(|| format!("{:?} is not a task", circuit.file.task))?;
    let (nodes, circuit) = (&circuit.nodes[..], &circuit.file);
    let config = &model.config;
    let full = difference_without(model, means, choice, &[])?;
    if full < CLEAR_MARGIN {
        return Err(format!("the model does not get this {} prompt clearly right (logit difference {full:.2})", task.name()));
    }
    // An ablation that breaks the behaviour: the fewest of the circuit's
    // first nodes whose removal flips this prompt. When even the whole
    // circuit does not (the model has another way), the fewest nodes of the
    // model by their single-removal effect on this prompt.
    let circuit_flip = first_flip(model, means, choice, nodes)?;
    let (broken, after, by_effect) = match circuit_flip {
        Some((k, after)) => (nodes[..k].to_vec(), after, false),
        None => {
            let mut recording = crate::model::Recording::new();
            forward(model, &choice.tokens, &mut |site, acts| recording.push((site, acts.clone()))).map_err(|e| e.to_string())?;
            let mut ranked: Vec<(Node, f64)> = candidates(&recording, choice.tokens.len() - 1)
                .into_iter()
                .map(|n| difference_without(model, means, choice, &[n]).map(|d| (n, d)))
                .collect::<Result<_, _>>()?;
            ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            let ranked: Vec<Node> = ranked.into_iter().map(|(n, _)| n).collect();
            let (k, after) = first_flip(model, means, choice, &ranked)?
                .ok_or_else(|| format!("no ablation flips this {} prompt", task.name()))?;
            (ranked[..k].to_vec(), after, true)
        }
    };
    // Tokens as the page shows them: newlines as ↵, in backticks.
    let shown_token = |id: u32| format!("`{}`", tokenizer.decode(&[id]).replace('\n', "↵"));
    let (right, wrong) = (shown_token(choice.right), shown_token(choice.wrong));
    let f = &circuit.faithfulness;
    let view = |shown: Shown, ablations: Vec<(Node, AblationKind)>, selected: Option<Node>| {
        let view = View {
            position: Some(choice.tokens.len() - 1),
            target: Some(choice.right),
            contrast: Some(choice.wrong),
            shown,
            ablations,
            selected,
            ranking: Ranking::Effect,
            ..View::default()
        };
        let link = ViewLink { model: LinkModel::Bundled(model_id.to_string()), prompt: choice.prompt.clone(), view };
        link.to_fragment()
    };
    let shown = || Shown::Circuit(task.name().to_string());
    let steps = vec![
        TourStep {
            title: "The task".into(),
            text: format!(
                "{} The prompt stops where the model must choose. It puts {full:.1} more logit on {right} than on {wrong}. \
                 The graph shows the nodes with the largest effect on that difference at the last token.",
                capitalised(task.question())
            ),
            view: view(Shown::Ranked, Vec::new(), None),
            focus: Focus::Prompt,
        },
        TourStep {
            title: "Its circuit".into(),
            text: format!(
                "These {} nodes, of the model's {}, are the task's circuit. With every other node set to its mean, the model is still right on {} of {} held-out examples (the whole model: {}). \
                 Lines are the nonzero weights between them; blue and red are the sign of weight times activation.",
                nodes.len(),
                all_nodes(config).len(),
                percent(f.circuit.accuracy),
                f.examples,
                percent(f.full.accuracy)
            ),
            view: view(shown(), Vec::new(), None),
            focus: Focus::Circuit,
        },
        TourStep {
            title: "Its first node".into(),
            text: format!(
                "{} ranks first in the circuit. The inspector shows its activation at every token of the prompt and the weights into and out of it.",
                nodes.first().map_or_else(String::new, |n| n.label(config))
            ),
            view: view(shown(), Vec::new(), nodes.first().copied()),
            focus: Focus::Inspector,
        },
        TourStep {
            title: "Break it".into(),
            text: {
                let flipped = format!("the model now puts {:.1} more logit on {wrong} than on {right}: the behaviour is gone.", -after);
                let held_out = format!("Without its whole circuit, the model is right on {} of the held-out examples.", percent(f.without_circuit.accuracy));
                match broken.len() {
                    1 if !by_effect => format!("Set the circuit's first node to its mean, and {flipped} {held_out}"),
                    k if !by_effect => format!("Set the circuit's first {k} nodes to their mean, and {flipped} {held_out}"),
                    k => format!(
                        "Even with all {} nodes of its circuit set to their mean, the model gets this prompt right: it does this task in more than one way. {held_out} \
                         Set instead the {k} nodes whose removal alone costs this prompt the most, and {flipped}",
                        nodes.len()
                    ),
                }
            },
            view: view(shown(), broken.iter().map(|&n| (n, AblationKind::Mean)).collect(), None),
            focus: Focus::Ablation,
        },
    ];
    Ok(Tour { task: task.name().into(), title: format!("How the model decides: {}", task.question()), steps })
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}
