//! The runner (the one place that chooses between the CPU and the GPU) on
//! the bundled model: a GPU lost in the middle of a circuit search hands the
//! rest of the search to the CPU, which finds the same circuit; batches of
//! variants agree across backends.
#![cfg(feature = "gpu")]

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use circuitscope::circuits::{
    ablation_search, learn_masks, parse_samples, Choice, Evaluate, MaskSettings, RunnerEval, SearchSettings, SiteMeans, TaskLoss,
};
use circuitscope::model::{forward, ColumnSummary, Intervention, Model, Objective, Record, Recording, Site, Tokenizer};
use circuitscope::runner::{Backend, Place, Runner, Want};
use circuitscope::tasks::Task;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/models/python_tasks");

fn bundled() -> (Arc<Model>, Tokenizer, SiteMeans) {
    let dir = Path::new(MODEL);
    let model = Model::load_dir(dir).unwrap();
    let tokenizer = Tokenizer::load_dir(dir).unwrap().unwrap();
    let mut means = SiteMeans::default();
    let samples = std::fs::read_to_string(dir.join("samples.json")).unwrap();
    for tokens in parse_samples(&samples, &model.config, Some(&tokenizer)).unwrap() {
        let mut recording = Recording::new();
        forward(&model, &tokens, &mut |site, acts| recording.push((site, acts.clone()))).unwrap();
        means.add(&recording);
    }
    (Arc::new(model), tokenizer, means)
}

/// A runner that reports its backend changes into `heard`.
fn runner(model: &Arc<Model>, want: Want, heard: &Rc<RefCell<Vec<Backend>>>) -> Runner {
    let heard = heard.clone();
    pollster::block_on(Runner::new(model.clone(), want, Box::new(move |b| heard.borrow_mut().push(b.clone())))).unwrap()
}

/// An evaluator that destroys the runner's GPU device before its `at`-th call.
struct LosesTheGpu<'a> {
    eval: RunnerEval<'a>,
    calls: usize,
    at: usize,
}

impl Evaluate for LosesTheGpu<'_> {
    async fn losses(&mut self, variants: &[Vec<Intervention>]) -> Result<Vec<TaskLoss>, String> {
        self.calls += 1;
        if self.calls == self.at {
            self.eval.runner.lose_gpu().await;
        }
        self.eval.losses(variants).await
    }
}

#[test]
fn a_gpu_lost_in_the_middle_of_a_circuit_search_hands_the_rest_to_the_cpu_and_the_circuit_is_the_same() {
    let (model, tokenizer, means) = bundled();
    let choices = Choice::of_task(Task::SingleDoubleQuote, &tokenizer, 3_000_017, 8).unwrap();
    let settings = SearchSettings::default();

    let heard = Rc::new(RefCell::new(Vec::new()));
    let on_cpu = runner(&model, Want::Cpu, &heard);
    let mut eval = RunnerEval { runner: &on_cpu, choices: &choices };
    let expected = pollster::block_on(ablation_search(&mut eval, &model.config, &means, &settings, &mut |_| {}, &|| false))
        .unwrap()
        .unwrap();

    // Forced onto the GPU, so that the search is there when the device goes.
    let gpu = runner(&model, Want::Gpu, &heard);
    assert!(matches!(gpu.backend(), Backend::Gpu(_)), "{:?}", gpu.backend());
    let mut eval = LosesTheGpu { eval: RunnerEval { runner: &gpu, choices: &choices }, calls: 0, at: 4 };
    let found = pollster::block_on(ablation_search(&mut eval, &model.config, &means, &settings, &mut |_| {}, &|| false))
        .unwrap()
        .unwrap();
    assert!(eval.calls > 4, "the search went on after the loss ({} calls)", eval.calls);
    match &heard.borrow()[..] {
        [Backend::Cpu(why)] => assert!(why.contains("the GPU failed"), "{why}"),
        other => panic!("the runner should have said once that it moved to the CPU: {other:?}"),
    }
    assert_eq!(gpu.backend(), heard.borrow()[0]);
    assert_eq!(found.nodes, expected.nodes, "the circuit");
    assert_eq!(found.variants, expected.variants);
    assert!((found.loss.loss - expected.loss.loss).abs() < 1e-4, "{:?} vs {:?}", found.loss, expected.loss);
}

#[test]
fn a_batch_of_variants_gives_the_same_logits_on_either_backend_and_the_probe_times_both() {
    let (model, tokenizer, _) = bundled();
    let tokens = tokenizer.encode("print(\"hello\")");
    let nodes = circuitscope::circuits::all_nodes(&model.config);
    let variants: Vec<Vec<Intervention>> = nodes.iter().step_by(nodes.len() / 100).map(|n| vec![n.zero_ablation()]).collect();
    let heard = Rc::new(RefCell::new(Vec::new()));
    let cpu = runner(&model, Want::Cpu, &heard);
    let fastest = runner(&model, Want::Fastest, &heard);
    assert_eq!(fastest.batch_place(), None, "nothing is timed before the first batch");
    assert_eq!(fastest.estimate_ms(tokens.len(), 100), None);
    let on_cpu = pollster::block_on(cpu.logits(&tokens, &variants)).unwrap();
    let anywhere = pollster::block_on(fastest.logits(&tokens, &variants)).unwrap();
    assert_eq!(on_cpu.len(), variants.len());
    assert_eq!(anywhere.len(), variants.len());
    for (c, a) in on_cpu.iter().zip(&anywhere) {
        let worst = c.data.iter().zip(&a.data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "logits differ by {worst}");
    }
    // More than one GPU batch: both were timed, and the faster one is where the next batches go.
    assert!(variants.len() > 64);
    assert!(matches!(fastest.batch_place(), Some(Place::Cpu | Place::Gpu)));
    assert!(fastest.estimate_ms(tokens.len(), 100).is_some_and(|ms| ms > 0.0));
    assert!(heard.borrow().is_empty(), "no backend changed: {:?}", heard.borrow());
}

#[test]
fn a_runner_answers_on_the_cpu_at_once_and_moves_to_the_gpu_once_it_is_ready() {
    use circuitscope::model::Record;
    let (model, tokenizer, _) = bundled();
    let heard = Rc::new(RefCell::new(Vec::new()));
    let told = heard.clone();
    let runner = Runner::at_once(model.clone(), Want::Fastest, Box::new(move |b| told.borrow_mut().push(b.clone())));
    assert_eq!(runner.backend(), Backend::Looking);
    let tokens = tokenizer.encode("x = f(a, b");
    let (on_cpu, sites) = pollster::block_on(runner.run(&tokens, &[], &Record::All, &mut |_, _| {})).unwrap();
    assert_eq!(sites.len(), model.config.n_layer * 11 + 1, "every site recorded");
    // While the GPU is readied, batches go to the CPU a probe at a time and nothing is estimated.
    assert_eq!((runner.batch_place(), runner.probing()), (None, Some(Place::Cpu)));
    pollster::block_on(runner.attach_gpu());
    assert!(matches!(&heard.borrow()[..], [Backend::Gpu(_)]), "{:?}", heard.borrow());
    assert_eq!(runner.probing(), Some(Place::Gpu), "the GPU is timed next");
    let (on_gpu, _) = pollster::block_on(runner.run(&tokens, &[], &Record::LogitsOnly, &mut |_, _| {})).unwrap();
    let worst = on_cpu.data.iter().zip(&on_gpu.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "logits differ by {worst}");
}

/// Gradients (alone and batched) go to the GPU with `Want::Gpu` and agree
/// with the CPU's; a GPU lost before the next call hands them to the CPU,
/// with the same result.
#[test]
fn gradients_agree_on_either_backend_and_a_lost_gpu_hands_them_to_the_cpu() {
    let (model, tokenizer, _) = bundled();
    let tokens = tokenizer.encode("x = 'hello");
    let objective = Objective::LogitDifference { position: tokens.len() - 1, target: 6, contrast: Some(7) };
    let heard = Rc::new(RefCell::new(Vec::new()));
    let on_gpu = runner(&model, Want::Gpu, &heard);
    let on_cpu = runner(&model, Want::Cpu, &heard);
    let gpu = pollster::block_on(on_gpu.gradients(&tokens, &objective)).unwrap();
    let cpu = pollster::block_on(on_cpu.gradients(&tokens, &objective)).unwrap();
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()));
    assert_eq!(gpu.gradients.len(), cpu.gradients.len());
    for ((site, g), (_, c)) in gpu.gradients.iter().zip(&cpu.gradients) {
        assert!(close(&g.data, &c.data), "d/d {site} differs between the GPU and the CPU");
    }
    // A batch: the prompt with another of its own, on each backend.
    let other = tokenizer.encode("if (a[0]");
    let examples = [(tokens.clone(), objective.clone()), (other.clone(), Objective::TaskLoss { position: other.len() - 1, right: 6, wrong: 7, scale: 0.5 })];
    let gpu_batch = pollster::block_on(on_gpu.gradients_batch(&examples)).unwrap();
    let cpu_batch = pollster::block_on(on_cpu.gradients_batch(&examples)).unwrap();
    for (b, (g, c)) in gpu_batch.iter().zip(&cpu_batch).enumerate() {
        for ((site, g), (_, c)) in g.gradients.iter().zip(&c.gradients) {
            assert!(close(&g.data, &c.data), "prompt {b} of the batch: d/d {site} differs between the GPU and the CPU");
        }
    }
    assert!(heard.borrow().is_empty(), "no change of backend yet: {:?}", heard.borrow());
    pollster::block_on(on_gpu.lose_gpu());
    let after = pollster::block_on(on_gpu.gradients(&tokens, &objective)).unwrap();
    assert!(matches!(on_gpu.backend(), Backend::Cpu(_)), "{:?}", on_gpu.backend());
    for ((site, a), (_, c)) in after.gradients.iter().zip(&cpu.gradients) {
        assert_eq!(a.data, c.data, "d/d {site}: the CPU fallback is the CPU's pass");
    }
}

/// The paper's pruning learns the same masks on the GPU as on the CPU: the
/// same task losses and kept nodes step by step, the same taus at the end,
/// to float error.
#[test]
fn the_gpu_and_the_cpu_pruners_agree() {
    let (model, tokenizer, means) = bundled();
    let choices = Choice::of_task(Task::SingleDoubleQuote, &tokenizer, 3, 48).unwrap();
    let settings = MaskSettings { steps: 20, batch: 8, ..MaskSettings::default() };
    let heard = Rc::new(RefCell::new(Vec::new()));
    let learn = |want: Want| {
        let runner = runner(&model, want, &heard);
        let mut steps = Vec::new();
        let ranking = pollster::block_on(learn_masks(&runner, &means, &choices, &settings, &mut |p| steps.push(p), &|| false)).unwrap().unwrap();
        (steps, ranking)
    };
    let (gpu_steps, gpu) = learn(Want::Gpu);
    let (cpu_steps, cpu) = learn(Want::Cpu);
    assert!(heard.borrow().is_empty(), "no change of backend: {:?}", heard.borrow());
    // A tau that lands within float error of 0 can be kept on one backend
    // and not the other for a step (measured: one node of 2,366, once).
    for (g, c) in gpu_steps.iter().zip(&cpu_steps) {
        assert!(g.kept.abs_diff(c.kept) <= 2 + c.kept / 1000, "step {}: {} nodes kept on the GPU, {} on the CPU", c.step, g.kept, c.kept);
        let close = (g.task_loss - c.task_loss).abs() <= 1e-3 * c.task_loss.abs() + 1e-6;
        assert!(close, "step {}: task loss {} on the GPU, {} on the CPU", c.step, g.task_loss, c.task_loss);
    }
    assert!(cpu_steps.last().unwrap().kept < cpu_steps[0].kept / 2, "the masks drop nodes");
    let tau_of = |ranking: &[circuitscope::circuits::NodeScore], node| ranking.iter().find(|s| s.node == node).unwrap().tau;
    let worst = cpu.iter().map(|s| (s.tau - tau_of(&gpu, s.node)).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-3, "taus differ by up to {worst} (measured: 1.2e-7)");
    let flipped = cpu.iter().filter(|s| (s.tau > 0.0) != (tau_of(&gpu, s.node) > 0.0)).count();
    assert!(flipped <= cpu.len() / 1000, "{flipped} of {} nodes kept on one backend only", cpu.len());
}

/// With both backends open, the pruner's first step times each at gated
/// passes on that step's own examples (its shortest on the CPU, the rest on
/// the GPU) and later steps go to the faster; every step learns what the
/// CPU alone learns.
#[test]
fn the_first_pruning_step_times_both_backends_on_its_own_examples_and_the_masks_are_the_cpus() {
    let (model, tokenizer, means) = bundled();
    let choices = Choice::of_task(Task::SingleDoubleQuote, &tokenizer, 5, 16).unwrap();
    let settings = MaskSettings { steps: 3, batch: 8, ..MaskSettings::default() };
    let heard = Rc::new(RefCell::new(Vec::new()));
    let fastest = runner(&model, Want::Fastest, &heard);
    let on_cpu = runner(&model, Want::Cpu, &heard);
    assert_eq!(fastest.gradients_place(), None, "nothing is timed before the first step");
    assert_eq!(on_cpu.gradients_place(), Some(Place::Cpu));
    let mut places = Vec::new();
    let mut steps = Vec::new();
    pollster::block_on(learn_masks(&fastest, &means, &choices, &settings, &mut |p| { steps.push(p); places.push(fastest.gradients_place()); }, &|| false)).unwrap().unwrap();
    assert!(places.iter().all(|p| matches!(p, Some(Place::Cpu | Place::Gpu))), "timed by the first step: {places:?}");
    assert!(places.windows(2).all(|w| w[0] == w[1]), "and kept: {places:?}");
    let mut cpu_steps = Vec::new();
    pollster::block_on(learn_masks(&on_cpu, &means, &choices, &settings, &mut |p| cpu_steps.push(p), &|| false)).unwrap().unwrap();
    for (f, c) in steps.iter().zip(&cpu_steps) {
        assert!(f.kept.abs_diff(c.kept) <= 2 + c.kept / 1000, "step {}: {} nodes kept, {} on the CPU alone", c.step, f.kept, c.kept);
        assert!((f.task_loss - c.task_loss).abs() <= 1e-3 * c.task_loss.abs() + 1e-6, "step {}: task loss {} vs {} on the CPU alone", c.step, f.task_loss, c.task_loss);
    }
    assert!(heard.borrow().is_empty(), "no change of backend: {:?}", heard.borrow());
}

/// A run kept where it was computed hands over each layer's summary as it
/// goes, and reads back exactly the rows asked for: on the GPU, where its
/// sites stay, as on the CPU, which holds them; its gradients are those of
/// the run recorded in full; a newer run makes an older one's rows an error,
/// and so does a lost GPU, never a wrong answer.
#[test]
fn a_kept_run_reads_back_only_what_is_asked_and_agrees_with_the_run_recorded_in_full() {
    let (model, tokenizer, _) = bundled();
    let tokens = tokenizer.encode("x = 'hello' + y[0]");
    let t = tokens.len();
    let heard = Rc::new(RefCell::new(Vec::new()));
    let (on_gpu, on_cpu) = (runner(&model, Want::Gpu, &heard), runner(&model, Want::Cpu, &heard));
    let (logits, recording) = pollster::block_on(on_cpu.run(&tokens, &[], &Record::All, &mut |_, _| {})).unwrap();
    let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()));
    let objective = Objective::LogitDifference { position: t - 1, target: 6, contrast: Some(7) };
    let expected_gradients = pollster::block_on(on_cpu.gradients_of_run(&logits, &recording, &objective)).unwrap();
    for runner in [&on_gpu, &on_cpu] {
        let mut layers = Vec::new();
        let (kept_logits, kept, summaries) = pollster::block_on(runner.run_kept(&tokens, &mut |layer, sites| layers.push((layer, sites.len())))).unwrap();
        assert!(close(&kept_logits.data, &logits.data));
        let n_layer = model.config.n_layer;
        assert_eq!(layers.iter().map(|(l, _)| *l).collect::<Vec<_>>(), (0..=n_layer).collect::<Vec<_>>(), "every layer in order, then final_resid");
        assert_eq!(layers.iter().map(|(_, n)| n).sum::<usize>(), recording.len());
        for ((site, summary), (_, acts)) in summaries.iter().zip(&recording) {
            let host = ColumnSummary::of(acts);
            assert!(close(&summary.sum_sq, &host.sum_sq), "{site}: sums of squares");
            // A value near zero may round to zero on one backend only.
            let differ = summary.first_nonzero.iter().zip(&host.first_nonzero).filter(|(a, b)| a != b).count();
            assert!(differ * 100 <= host.first_nonzero.len(), "{site}: first nonzero rows differ in {differ} channels");
        }
        let wanted: Vec<(Site, std::ops::Range<usize>)> = recording.iter().map(|(site, _)| (*site, 2..3)).chain([(recording[5].0, 0..t)]).collect();
        let rows = pollster::block_on(runner.read_kept(&kept, &wanted)).unwrap();
        assert_eq!(rows.len(), wanted.len());
        for ((site, got), (want_site, range)) in rows.iter().zip(&wanted) {
            let acts = &recording.iter().find(|(s, _)| s == want_site).unwrap().1;
            assert_eq!(site, want_site);
            assert!(close(&got.data, &acts.data[range.start * acts.cols..range.end * acts.cols]), "{site} rows {range:?}");
        }
        let all = pollster::block_on(runner.read_all_kept(&kept)).unwrap();
        assert_eq!(all.len(), recording.len());
        for (site, acts) in &recording {
            let got = &all.iter().find(|(s, _)| s == site).unwrap().1;
            assert!(close(&got.data, &acts.data), "{site}, read back whole");
        }
        let gradients = pollster::block_on(runner.gradients_of_kept(&kept, &kept_logits, &objective)).unwrap();
        assert_eq!(gradients.gradients.len(), expected_gradients.gradients.len());
        for (site, e) in &expected_gradients.gradients {
            assert!(close(&gradients.at(*site).unwrap().data, &e.data), "d/d {site} of the kept run");
        }
        let (_, newer, _) = pollster::block_on(runner.run_kept(&tokens[..t - 1], &mut |_, _| {})).unwrap();
        let stale = pollster::block_on(runner.read_kept(&kept, &wanted[..1]));
        if runner.backend() == Backend::Cpu("asked for".into()) {
            assert!(stale.is_ok(), "the CPU's runs hold their own sites");
        } else {
            assert!(stale.unwrap_err().contains("no longer kept"));
            pollster::block_on(runner.lose_gpu());
            let gone = pollster::block_on(runner.read_kept(&newer, &wanted[..1])).unwrap_err();
            assert!(gone.contains("run the prompt again"), "{gone}");
        }
    }
}
