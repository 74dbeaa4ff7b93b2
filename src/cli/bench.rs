//! `circuitscope bench`: the GPU engine and the CPU reference on a synthetic
//! model of the released 0.4B model's shape, medians of several runs.

use std::time::{Duration, Instant};

use clap::Args;

use crate::gpu::{Engine, GpuContext, Kernel, Record};
use crate::model::{forward, gradients, Ablation, Config, Intervention, Model, Objective, Site, SiteKind};

#[derive(Args)]
pub struct BenchArgs {
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Fraction of weights kept.
    #[arg(long, default_value_t = 0.001)]
    density: f64,
    /// Ablation variants in the batched run.
    #[arg(long, default_value_t = 32)]
    variants: usize,
    /// Only the circuit pruning's step (the rest takes minutes on a software adapter).
    #[arg(long)]
    prune_only: bool,
    /// Only the CPU's forward passes: the reference and the fast path.
    #[arg(long)]
    cpu_only: bool,
    /// Only the GPU's 64-token forward, and the time of each kernel in it.
    #[arg(long)]
    kernels: bool,
}

/// Prompts in the batched forward + backward row.
const BATCH: usize = 8;

/// The released model's shape (`openai/circuit-sparsity`, 0.4B parameters).
const RELEASED_SHAPE: &str = include_str!("released_shape.json");

pub fn run(args: &BenchArgs) -> Result<(), String> {
    let reps = args.reps.max(1);
    let config = Config::from_json(RELEASED_SHAPE).map_err(|e| e.to_string())?;
    eprintln!("generating the synthetic model (density {})...", args.density);
    let model = Model::synthetic(config, args.density, 1);
    let stats = model.weight_stats();
    let params: usize = stats.iter().map(|s| s.numel()).sum();
    let nnz: usize = stats.iter().map(|s| s.nnz).sum();
    let bigram_bytes = model.params.bigram_table.as_ref().map_or(0, |t| 4 * t.data.len());
    let cpu_bytes: usize = stats.iter().map(|s| s.bytes).sum();

    if args.cpu_only {
        print_header("none (CPU only)", params, nnz);
        return [64, 256].iter().try_for_each(|&t| cpu_forward_rows(&model, t, reps));
    }
    pollster::block_on(async {
        if args.prune_only {
            return prune_step(&model, reps).await;
        }
        let ctx = GpuContext::new().await.map_err(|e| e.to_string())?;
        let adapter = ctx.describe();
        let mut engine = Engine::new(ctx, &model).map_err(|e| e.to_string())?;
        let gpu_bytes = engine.weight_bytes();
        let mut upload = Vec::new();
        for _ in 0..reps {
            let ctx = GpuContext::new().await.map_err(|e| e.to_string())?;
            let start = Instant::now();
            let fresh = Engine::new(ctx, &model).map_err(|e| e.to_string())?;
            upload.push(start.elapsed());
            drop(fresh);
        }

        print_header(&adapter, params, nnz);
        if args.kernels {
            return kernel_rows(&mut engine, model.config.d_head as u32, reps).await;
        }
        let dense = 4 * params;
        println!(
            "| weights on the GPU | {:.2} MB = {:.3}% of dense f32 ({:.1} MB); without the dense bigram table {:.2} MB = {:.3}% |",
            mb(gpu_bytes as usize),
            100.0 * gpu_bytes as f64 / dense as f64,
            mb(dense),
            mb(gpu_bytes as usize - bigram_bytes),
            100.0 * (gpu_bytes as usize - bigram_bytes) as f64 / (dense - bigram_bytes) as f64
        );
        println!("| weights in memory (CPU) | {:.2} MB |", mb(cpu_bytes));
        println!("| upload to the GPU | {} |", ms(median(upload)));

        for t in [64usize, 256] {
            let tokens: Vec<u32> = (0..t as u32).map(|i| (i * 7919) % 2048).collect();
            for (label, record) in [("all sites", Record::All), ("logits only", Record::LogitsOnly)] {
                let mut times = Vec::new();
                let mut first = Vec::new();
                for _ in 0..reps + 1 {
                    let start = Instant::now();
                    let mut first_layer = None;
                    engine
                        .run(&tokens, &[], &record, &mut |_| {
                            first_layer.get_or_insert_with(|| start.elapsed());
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    times.push(start.elapsed());
                    first.extend(first_layer);
                }
                // The first run of a shape builds buffers: leave it out.
                times.remove(0);
                if !first.is_empty() {
                    first.remove(0);
                }
                println!("| GPU forward, {t} tokens, {label} | {} |", ms(median(times)));
                if !first.is_empty() {
                    println!("| GPU time to the first streamed layer, {t} tokens | {} |", ms(median(first)));
                }
            }
            cpu_forward_rows(&model, t, reps)?;
            let cpu_reps = if t > 64 { reps.min(3) } else { reps };

            // Forward (every site recorded) and backward: the gradient of a logit
            // difference at the last position at every site (attribution's cost).
            let objective = Objective::LogitDifference { position: t - 1, target: 1, contrast: Some(2) };
            // Each timed right after a forward pass recording every site, for
            // a ratio that this machine's drift over minutes does not skew.
            let (mut gpu, mut forwards) = (Vec::new(), Vec::new());
            for _ in 0..reps + 1 {
                let start = Instant::now();
                engine.forward(&tokens, &Record::All).await.map_err(|e| e.to_string())?;
                forwards.push(start.elapsed());
                let start = Instant::now();
                engine.gradients(&tokens, &objective).await.map_err(|e| e.to_string())?;
                gpu.push(start.elapsed());
            }
            gpu.remove(0);
            forwards.remove(0);
            let one = median(gpu);
            println!(
                "| GPU forward + backward (gradient at every site), {t} tokens | {} ({:.1}x the forward recording every site, timed in turn with it) |",
                ms(one),
                one.as_secs_f64() / median(forwards).as_secs_f64()
            );
            if t == 64 {
                // A task's examples: prompts of their own, an objective each,
                // in one forward and one backward pass.
                let examples: Vec<(Vec<u32>, Objective)> = (0..BATCH as u32)
                    .map(|b| ((0..t as u32).map(|i| (i * 7919 + b * 131) % 2048).collect(), objective.clone()))
                    .collect();
                let mut batched = Vec::new();
                for _ in 0..reps + 1 {
                    let start = Instant::now();
                    engine.gradients_batch(&examples).await.map_err(|e| e.to_string())?;
                    batched.push(start.elapsed());
                }
                batched.remove(0);
                let batched = median(batched);
                println!(
                    "| GPU forward + backward, a batch of {BATCH} prompts x {t} tokens in one pass | {} ({:.2}x one prompt's, per prompt) |",
                    ms(batched),
                    batched.as_secs_f64() / BATCH as f64 / one.as_secs_f64()
                );
            }
            let (mut cpu, mut cpu_forwards) = (Vec::new(), Vec::new());
            for _ in 0..cpu_reps {
                let start = Instant::now();
                forward(&model, &tokens, &mut |_, _| {}).map_err(|e| e.to_string())?;
                cpu_forwards.push(start.elapsed());
                let start = Instant::now();
                gradients(&model, &tokens, &objective).map_err(|e| e.to_string())?;
                cpu.push(start.elapsed());
            }
            let cpu_both = median(cpu);
            println!(
                "| CPU reference forward + backward, {t} tokens | {} ({:.1}x the forward, timed in turn with it) |",
                ms(cpu_both),
                cpu_both.as_secs_f64() / median(cpu_forwards).as_secs_f64()
            );
        }

        // A batch of ablation variants of one 64-token prompt: each zero-ablates
        // 16 MLP neurons of its own in layer 3.
        let tokens: Vec<u32> = (0..64u32).map(|i| (i * 7919) % 2048).collect();
        let variants: Vec<Vec<Intervention>> = (0..args.variants)
            .map(|v| {
                vec![Intervention {
                    site: Site::Layer(3, SiteKind::MlpPostAct),
                    positions: vec![],
                    channels: (0..16).map(|i| (v * 16 + i) % 8192).collect(),
                    ablation: Ablation::Zero,
                }]
            })
            .collect();
        let mut batch = Vec::new();
        for _ in 0..reps + 1 {
            let start = Instant::now();
            engine.run(&tokens, &variants, &Record::LogitsOnly, &mut |_| {}).await.map_err(|e| e.to_string())?;
            batch.push(start.elapsed());
        }
        batch.remove(0);
        let batch = median(batch);
        println!(
            "| GPU batch of {} ablation variants, 64 tokens, logits only | {} ({} per variant) |",
            args.variants,
            ms(batch),
            ms(batch / args.variants.max(1) as u32)
        );
        drop(engine);
        prune_step(&model, reps).await
    })
}

fn print_header(adapter: &str, params: usize, nnz: usize) {
    println!("# circuitscope bench");
    println!();
    println!("machine: {} ({} cores); GPU adapter: {adapter}", cpu_name(), std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!(
        "model: synthetic, released 0.4B shape (8 layers, d_model 2048, 128 heads x 16, d_mlp 8192, vocab 2048), {params} parameters, {nnz} nonzero ({:.3}%)",
        100.0 * nnz as f64 / params as f64
    );
    println!();
    println!("| measure | median |");
    println!("|---|---|");
}

/// The CPU reference's forward pass of `t` tokens and the fast path's,
/// timed in turn, and the ratio.
fn cpu_forward_rows(model: &Model, t: usize, reps: usize) -> Result<(), String> {
    let tokens: Vec<u32> = (0..t as u32).map(|i| (i * 7919) % 2048).collect();
    let reps = if t > 64 { reps.min(3) } else { reps };
    let (mut reference, mut fast) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let start = Instant::now();
        forward(model, &tokens, &mut |_, _| {}).map_err(|e| e.to_string())?;
        reference.push(start.elapsed());
        let start = Instant::now();
        crate::cpu::run(model, &tokens, &[], &Record::LogitsOnly).map_err(|e| e.to_string())?;
        fast.push(start.elapsed());
    }
    // Then back to back, as the pruner, the effect checks and the page run
    // it: the caches and the threads are warm (after each reference pass
    // the fast path's first layers find neither).
    let mut warm = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        crate::cpu::run(model, &tokens, &[], &Record::LogitsOnly).map_err(|e| e.to_string())?;
        warm.push(start.elapsed());
    }
    let (reference, fast, warm) = (median(reference), median(fast), median(warm));
    println!("| CPU reference forward, {t} tokens (one core) | {} |", ms(reference));
    println!(
        "| CPU fast path forward, {t} tokens ({} threads) | {} ({:.1}x faster than the reference, timed in turn with it) |",
        crate::platform::spare_cores(),
        ms(fast),
        reference.as_secs_f64() / fast.as_secs_f64()
    );
    println!(
        "| CPU fast path forward, {t} tokens, passes back to back | {} ({:.1}x faster than the reference) |",
        ms(warm),
        reference.as_secs_f64() / warm.as_secs_f64()
    );
    Ok(())
}

/// Dispatches of each kernel added per step to time it: enough extra work
/// to stand out of this machine's noise (about 20% from run to run).
const KERNEL_REPEATS: u32 = 4;

/// The 64-token logits-only forward on the GPU, and each kernel's part of
/// it: the time a run gains when every dispatch of that kernel is made
/// [`KERNEL_REPEATS`] times more, divided by them. Runs of each kind take
/// turns, so that the machine's drift falls on all of them.
async fn kernel_rows(engine: &mut Engine, d_head: u32, reps: usize) -> Result<(), String> {
    let kernels = [Kernel::TopK, Kernel::SparseMatmul, Kernel::Attention { d_head }, Kernel::Norm, Kernel::Embed];
    let tokens: Vec<u32> = (0..64u32).map(|i| (i * 7919) % 2048).collect();
    let mut base = Vec::new();
    let mut repeated = vec![Vec::new(); kernels.len()];
    for rep in 0..reps + 1 {
        for (which, kernel) in std::iter::once(None).chain(kernels.iter().copied().map(Some)).enumerate() {
            engine.repeat_kernel(kernel.map(|k| (k, KERNEL_REPEATS))).map_err(|e| e.to_string())?;
            let start = Instant::now();
            engine.run(&tokens, &[], &Record::LogitsOnly, &mut |_| {}).await.map_err(|e| e.to_string())?;
            // The first round builds buffers and compiles: leave it out.
            if rep > 0 {
                match which {
                    0 => base.push(start.elapsed()),
                    k => repeated[k - 1].push(start.elapsed()),
                }
            }
        }
    }
    engine.repeat_kernel(None).map_err(|e| e.to_string())?;
    let base = median(base);
    println!("| GPU forward, 64 tokens, logits only | {} |", ms(base));
    for (kernel, times) in kernels.iter().zip(repeated) {
        let per = (median(times).as_secs_f64() - base.as_secs_f64()).max(0.0) / f64::from(KERNEL_REPEATS);
        println!("| of which {} (all its dispatches) | {:.1} ms ({:.0}%) |", kernel.label(), 1e3 * per, 100.0 * per / base.as_secs_f64());
    }
    Ok(())
}

/// One step of the circuit pruning's mask optimisation (`circuits::prune`)
/// at the released shape: a batch of 64-token examples, each gated run made
/// and reduced to gate gradients, on the GPU (in chunks, as the page does)
/// and on the CPU reference (an example per core).
async fn prune_step(model: &Model, reps: usize) -> Result<(), String> {
    use crate::circuits::{Choice, MaskLearner, MaskSettings, SiteMeans};
    use crate::runner::{Runner, Want};
    let settings = MaskSettings::default();
    let t = 64u32;
    let choices: Vec<Choice> =
        (0..64u32).map(|b| Choice { tokens: (0..t).map(|i| (i * 7919 + b * 131) % 2048).collect(), right: 1 + b % 7, wrong: 9 + b % 5 }).collect();
    let mut means = SiteMeans::default();
    for choice in &choices[..4] {
        let mut recording = crate::model::Recording::new();
        forward(model, &choice.tokens, &mut |site, acts| recording.push((site, acts.clone()))).map_err(|e| e.to_string())?;
        means.add(&recording);
    }
    let mut learner = MaskLearner::new(&model.config, &means, &settings).map_err(|e| e.to_string())?;
    let batch = learner.next_batch(&choices);
    let gates = learner.gates();
    let model = std::sync::Arc::new(model.clone());
    for (want, name, reps) in [(Want::Gpu, "GPU", reps), (Want::Cpu, "CPU reference", reps.min(2))] {
        let runner = Runner::new(model.clone(), want, Box::new(|_| {})).await?;
        let mut times = Vec::new();
        // The GPU's first step builds its buffers: left out.
        for _ in 0..reps + usize::from(want == Want::Gpu) {
            let start = Instant::now();
            let step = runner.gate_gradients(&batch, &gates).await?;
            learner.clone().update(&step)?;
            times.push(start.elapsed());
        }
        if want == Want::Gpu {
            times.remove(0);
        }
        println!(
            "| {name}: one step of the circuit pruning's masks, {} examples x {t} tokens (gated forward + backward, gate gradients) | {} |",
            settings.batch,
            ms(median(times))
        );
    }
    Ok(())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
