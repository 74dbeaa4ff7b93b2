//! The selected node over a task (`circuits::task_distributions`): its
//! value at the last token of each of the task's held-out examples, the two
//! answer classes drawn side by side, as `circuitscope inspect --task`
//! gives them. Every node of the graph is computed in one batched run of
//! the examples, so clicking through a circuit's nodes answers at once.

use std::sync::Arc;

use leptos::html::Canvas;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use web_sys::CanvasRenderingContext2d;

use super::page::{use_page, Page};
use crate::circuits::{task_distributions, Node, TaskDistribution, TaskExamples, DISTRIBUTION_EXAMPLES, HELD_OUT_SEED};
use crate::platform::{now_ms, sleep};
use crate::tasks::Task;

/// A task's examples run for the inspector's views stop after this long
/// (on a slow backend, at the released shape), once at least `AT_LEAST`
/// examples have run: the views say over how many they are.
const BUDGET_MS: f64 = 30_000.0;
const AT_LEAST: usize = 32;

/// Whether to run more of a task's examples, `done` of them since `started_ms`.
pub(super) fn within_budget(started_ms: f64, done: usize) -> bool {
    done < AT_LEAST || now_ms() - started_ms < BUDGET_MS
}

/// " (of 200: ...)" when the budget stopped a run of `all` examples at `done`.
pub(super) fn of_all(done: usize, all: usize) -> String {
    if done < all {
        format!(" (of {all}: the rest would take too long here)")
    } else {
        String::new()
    }
}

/// Bins of the drawn distributions, and the canvas' size in pixels.
const BINS: usize = 32;
const WIDTH: f64 = 300.0;
const HALF_HEIGHT: f64 = 48.0;
/// The two classes' colours.
const COLOURS: [&str; 2] = ["rgb(45, 105, 200)", "rgb(220, 130, 30)"];

/// The graph's nodes over one task, for the model open.
pub struct TaskValues {
    pub task: Task,
    pub distributions: Vec<TaskDistribution>,
}

impl TaskValues {
    pub fn of(&self, node: Node) -> Option<&TaskDistribution> {
        self.distributions.iter().find(|d| d.node == node)
    }
}

/// Where the task distributions are.
#[derive(Clone, Default)]
pub enum Distributions {
    #[default]
    None,
    Computing { task: Task, done: usize, of: usize },
    Ready(Arc<TaskValues>),
    Failed { task: Task, message: String },
}

impl Page {
    /// The task nodes are shown over: the one chosen in the inspector, else
    /// the drawn circuit's.
    pub fn distribution_task(self) -> Option<Task> {
        self.chosen_task.get().or_else(|| self.drawn.with(|c| c.as_ref().and_then(|c| Task::parse(&c.file.task))))
    }

    /// Runs the task's examples once a node is selected whose values over
    /// them are not in yet, recording every node of the graph.
    pub fn distributions_on_change(self) {
        Effect::new(move |_| {
            let (Some(node), Some(task)) = (self.selected.get(), self.distribution_task()) else { return };
            let known = self.distributions.with(|d| match d {
                Distributions::Ready(values) => values.task == task && values.of(node).is_some(),
                Distributions::Computing { task: t, .. } | Distributions::Failed { task: t, .. } => *t == task,
                Distributions::None => false,
            });
            let (Some(opened), Some(runner)) = (self.opened.get_untracked(), self.runner()) else { return };
            if known {
                return;
            }
            let Some(tokenizer) = opened.tokenizer.clone() else { return };
            let mut nodes: Vec<Node> = self.graph.with_untracked(|g| g.as_ref().map(|g| g.nodes.iter().map(|n| n.node).collect()).unwrap_or_default());
            if !nodes.contains(&node) {
                nodes.push(node);
            }
            // Nodes of another graph, run before over the same task, stay.
            let before = self.distributions.with_untracked(|d| match d {
                Distributions::Ready(values) if values.task == task => Some(values.clone()),
                _ => None,
            });
            self.distributions.set(Distributions::Computing { task, done: 0, of: DISTRIBUTION_EXAMPLES });
            spawn_local(async move {
                // After the run shown: both would share the runner.
                while self.running.get_untracked() {
                    sleep(50).await;
                }
                let current = move || self.opened.with_untracked(|o| o.as_ref().is_some_and(|o| Arc::ptr_eq(o, &opened))) && untrack(move || self.distribution_task()) == Some(task);
                let outcome = match TaskExamples::new(task, &tokenizer, HELD_OUT_SEED, DISTRIBUTION_EXAMPLES) {
                    Ok(examples) => {
                        let started = now_ms();
                        let mut progress = |done: usize, of: usize| {
                            if current() {
                                self.distributions.set(Distributions::Computing { task, done, of });
                            }
                            current() && within_budget(started, done)
                        };
                        task_distributions(&runner, &examples, &nodes, &mut progress).await
                    }
                    Err(message) => Err(format!("the model's tokenizer does not split {}'s examples as the task needs: {message}", task.name())),
                };
                if !current() {
                    return;
                }
                self.distributions.set(match outcome {
                    Ok(mut distributions) => {
                        if let Some(before) = before {
                            distributions.extend(before.distributions.iter().filter(|d| !nodes.contains(&d.node)).cloned());
                        }
                        Distributions::Ready(Arc::new(TaskValues { task, distributions }))
                    }
                    Err(message) => Distributions::Failed { task, message },
                });
            });
        });
    }
}

/// The selected node over a task: a choice of task, then its two answer
/// classes' values drawn one above the other on a shared axis, with their
/// means and how well the node separates them.
#[component]
pub fn TaskDistributionView(node: Node) -> impl IntoView {
    let page = use_page();
    let has_tokenizer = page.tokenizer().is_some();
    let choose = move |ev| {
        let name = event_target_value(&ev);
        page.chosen_task.set(Task::parse(&name));
    };
    let options = move || {
        let shown = page.distribution_task();
        Task::ALL
            .into_iter()
            .map(|task| view! { <option value=task.name() selected=shown == Some(task)>{task.name()}</option> })
            .collect_view()
    };
    let body = move || {
        let Some(task) = page.distribution_task() else {
            return view! { <p class="hint">"Choose a task to see this node at the last token of each of its examples."</p> }.into_any();
        };
        match page.distributions.get() {
            Distributions::Computing { done, of, .. } => view! {
                <p class="status loading" data-testid="distribution-progress">
                    <progress max=of.max(1) value=done></progress>
                    {format!(" Running {of} examples of {}: {done} done", task.name())}
                </p>
            }
            .into_any(),
            Distributions::Failed { message, .. } => view! { <p class="hint">{message}</p> }.into_any(),
            Distributions::Ready(values) => match values.of(node).filter(|_| values.task == task) {
                Some(distribution) => view! { <DistributionPlot distribution=distribution.clone() task=task /> }.into_any(),
                None => view! { <p class="status loading">"Running the task's examples..."</p> }.into_any(),
            },
            Distributions::None => view! { <p class="status loading">"Running the task's examples..."</p> }.into_any(),
        }
    };
    has_tokenizer.then(|| {
        view! {
            <section data-testid="task-distribution">
                <h3>"Over a task's examples"</h3>
                <label class="hint">
                    "Task "
                    <select data-testid="distribution-task" on:change=choose>
                        <option value="" selected=move || page.distribution_task().is_none()>"(none)"</option>
                        {options}
                    </select>
                </label>
                {body}
            </section>
        }
    })
}

/// Two histograms on one axis, the first class above the line and the
/// second below, each scaled to its own count; the means marked.
#[component]
fn DistributionPlot(distribution: TaskDistribution, task: Task) -> impl IntoView {
    let canvas = NodeRef::<Canvas>::new();
    let drawn = distribution.clone();
    Effect::new(move |_| {
        if let Some(canvas) = canvas.get() {
            draw_distribution(&canvas, &drawn);
        }
    });
    let (lo, hi) = axis(&distribution);
    let classes = distribution
        .classes
        .iter()
        .zip(COLOURS)
        .map(|(class, colour)| {
            view! {
                <li data-testid="answer-class" data-name=class.name data-mean=class.mean() data-count=class.values.len()>
                    <span class="swatch" style=format!("background: {colour}")></span>
                    {format!("{}: mean {:+.3} over {} examples", class.name, class.mean(), class.values.len())}
                </li>
            }
        })
        .collect_view();
    let examples: usize = distribution.classes.iter().map(|c| c.values.len()).sum();
    let fewer = of_all(examples, DISTRIBUTION_EXAMPLES);
    let separation = distribution.separation().map(|s| format!("; the first is the larger in {:.0}% of pairs", 100.0 * s)).unwrap_or_default();
    view! {
        <p class="hint" data-testid="distribution-examples" data-examples=examples>
            {format!("Its value at the last token of {examples}{fewer} held-out examples of {}, where the model chooses: {}", task.name(), task.question())}
        </p>
        <canvas node_ref=canvas class="distribution" data-testid="distribution-plot"></canvas>
        <p class="axis hint">{format!("{lo:+.3} ... {hi:+.3}")}</p>
        <ul class="answer-classes">{classes}</ul>
        <p class="hint" data-testid="distribution-difference" data-difference=distribution.difference()>
            {format!("Difference of means {:+.3}{separation}", distribution.difference())}
        </p>
    }
}

/// The plotted range: every value, and zero.
fn axis(distribution: &TaskDistribution) -> (f32, f32) {
    let (lo, hi) = distribution.range();
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if hi - lo > 1e-6 { (lo, hi) } else { (lo - 0.5, hi + 0.5) }
}

fn draw_distribution(canvas: &web_sys::HtmlCanvasElement, distribution: &TaskDistribution) {
    let Some(ctx) = canvas.get_context("2d").ok().flatten().and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok()) else {
        return;
    };
    canvas.set_width(WIDTH as u32);
    canvas.set_height((2.0 * HALF_HEIGHT) as u32);
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, WIDTH, 2.0 * HALF_HEIGHT);
    let (lo, hi) = axis(distribution);
    let x_of = |v: f32| f64::from((v - lo) / (hi - lo)) * (WIDTH - 1.0);
    let bin_width = WIDTH / BINS as f64;
    for (side, (class, colour)) in distribution.classes.iter().zip(COLOURS).enumerate() {
        let mut counts = [0usize; BINS];
        for &v in &class.values {
            counts[((x_of(v) / bin_width) as usize).min(BINS - 1)] += 1;
        }
        let most = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
        ctx.set_fill_style_str(colour);
        for (b, &count) in counts.iter().enumerate() {
            let h = (HALF_HEIGHT - 4.0) * count as f64 / most;
            let y = if side == 0 { HALF_HEIGHT - h } else { HALF_HEIGHT };
            ctx.fill_rect(b as f64 * bin_width + 0.5, y, bin_width - 1.0, h);
        }
        // The class's mean: a dark tick across its half.
        ctx.set_fill_style_str("#111111");
        let y = if side == 0 { 0.0 } else { HALF_HEIGHT };
        ctx.fill_rect(x_of(class.mean()) - 1.0, y, 2.0, HALF_HEIGHT);
    }
    ctx.set_fill_style_str("#888888");
    ctx.fill_rect(0.0, HALF_HEIGHT - 0.5, WIDTH, 1.0);
    ctx.fill_rect(x_of(0.0) - 0.5, 0.0, 1.0, 2.0 * HALF_HEIGHT);
}
