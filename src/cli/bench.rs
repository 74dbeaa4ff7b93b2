//! `circuitscope bench`: the GPU engine and the CPU reference on a synthetic
//! model of the released 0.4B model's shape, medians of several runs.

use std::time::{Duration, Instant};

use clap::Args;

use crate::gpu::{Engine, GpuContext, Record};
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
    /// Only the GPU's forward (64 and 256 tokens), the time of each kernel
    /// in it, and every site kept on the GPU and read back.
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
            profile_rows(&mut engine, reps).await?;
            for t in [64, 256] {
                forward_rows(&mut engine, t, reps).await?;
                kept_rows(&mut engine, t, reps).await?;
            }
            // The size of every site of 256 tokens, or the largest binding.
            let bytes = (237u64 << 20).min(engine.context().max_binding());
            return readback_rows(engine.context(), bytes, reps).await;
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
            let tokens = prompt(t);
            forward_rows(&mut engine, t, reps).await?;
            kept_rows(&mut engine, t, reps).await?;
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
        let tokens = prompt(64);
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
    let tokens = prompt(t);
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

/// The GPU forward of `t` tokens reading back every site, and the logits
/// only; with every site, the time to the first streamed layer.
async fn forward_rows(engine: &mut Engine, t: usize, reps: usize) -> Result<(), String> {
    let tokens = prompt(t);
    warm_up(engine, &tokens).await?;
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
    Ok(())
}

/// Runs `tokens` forward for a quarter of a second untimed: an idle GPU
/// clocks down (an H200 idled at 345 MHz), and after the CPU's rows the
/// first timed runs found it so (256-token logits 8.3 ms against 2.8 ms).
async fn warm_up(engine: &mut Engine, tokens: &[u32]) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(250) {
        engine.run(tokens, &[], &Record::LogitsOnly, &mut |_| {}).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A forward pass of `t` tokens keeping every site on the GPU (the logits
/// read back), and reading all of it back afterwards (what an export does):
/// its rate in GB/s.
async fn kept_rows(engine: &mut Engine, t: usize, reps: usize) -> Result<(), String> {
    let tokens = prompt(t);
    let (mut runs, mut reads) = (Vec::new(), Vec::new());
    warm_up(engine, &tokens).await?;
    let mut bytes = 0;
    let mut kept = None;
    for _ in 0..reps + 1 {
        let start = Instant::now();
        let (_, run) = engine.forward_kept(&tokens, kept.take(), None).await.map_err(|e| e.to_string())?;
        runs.push(start.elapsed());
        let start = Instant::now();
        let recording = engine.read_kept(&run).await.map_err(|e| e.to_string())?;
        kept = Some(run);
        reads.push(start.elapsed());
        bytes = recording.iter().map(|(_, values)| 4 * values.data.len()).sum::<usize>();
    }
    runs.remove(0);
    reads.remove(0);
    let read = median(reads);
    println!("| GPU forward, {t} tokens, every site kept on the GPU (logits read back) | {} |", ms(median(runs)));
    println!(
        "| reading every kept site back, {t} tokens ({:.1} MB) | {} = {:.2} GB/s |",
        mb(bytes),
        ms(read),
        bytes as f64 / read.as_secs_f64() / 1e9
    );
    Ok(())
}

/// Where a large readback's time goes: the GPU's copy of one buffer of
/// `bytes` into a mappable buffer and the wait for its mapping, then the
/// host's copy out of the mapped memory, on one core and on every core;
/// with a new mappable buffer each time and with one reused.
async fn readback_rows(ctx: &GpuContext, bytes: u64, reps: usize) -> Result<(), String> {
    let source = ctx.storage_buffer("readback source", bytes, false).map_err(|e| e.to_string())?;
    let new_staging = || {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let reused = new_staging();
    let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    for (label, reuse) in [("a new mappable buffer", false), ("one mappable buffer reused", true)] {
        let (mut maps, mut one_core, mut cores) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps + 1 {
            let staging = if reuse { reused.clone() } else { new_staging() };
            let start = Instant::now();
            let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
            encoder.copy_buffer_to_buffer(&source, 0, &staging, 0, bytes);
            let submission = ctx.queue.submit([encoder.finish()]);
            let mapped = crate::gpu::start_map(&staging);
            crate::gpu::wait_for_map(&ctx.device, mapped, Some(submission)).await.map_err(|e| e.to_string())?;
            maps.push(start.elapsed());
            {
                let view = staging.slice(..).get_mapped_range().map_err(|e| e.to_string())?;
                let floats: &[f32] = bytemuck::cast_slice(&view);
                let start = Instant::now();
                let copy = floats.to_vec();
                one_core.push(start.elapsed());
                drop(copy);
                let start = Instant::now();
                let copy = crate::platform::copy_on_cores(floats);
                cores.push(start.elapsed());
                drop(copy);
            }
            staging.unmap();
        }
        for times in [&mut maps, &mut one_core, &mut cores] {
            times.remove(0);
        }
        let (map, one, all) = (median(maps), median(one_core), median(cores));
        println!(
            "| readback of {:.1} MB, {label}: GPU copy and map / host copy on one core / on {} cores | {} ({:.1} GB/s) / {} ({:.1} GB/s) / {} ({:.1} GB/s) |",
            mb(bytes as usize),
            crate::platform::spare_cores(),
            ms(map),
            gbs(map),
            ms(one),
            gbs(one),
            ms(all),
            gbs(all)
        );
    }
    Ok(())
}

/// Each kernel's GPU time in the forward pass (from timestamps around every
/// dispatch), at 64 and 256 tokens, logits only and every site read back;
/// medians over `reps` runs, each kernel's apart.
async fn profile_rows(engine: &mut Engine, reps: usize) -> Result<(), String> {
    for t in [64usize, 256] {
        let tokens = prompt(t);
        for (label, record) in [("logits only", Record::LogitsOnly), ("all sites", Record::All)] {
            warm_up(engine, &tokens).await?;
            let mut profiles = Vec::new();
            // The first run of a shape builds buffers and compiles: left out.
            for _ in 0..reps + 1 {
                profiles.push(engine.profile(&tokens, &record).await.map_err(|e| e.to_string())?);
            }
            profiles.remove(0);
            let wall = median(profiles.iter().map(|p| p.wall).collect());
            let span = median(profiles.iter().map(|p| p.span).collect());
            println!(
                "| GPU forward, {t} tokens, {label}, each dispatch timed: wall / GPU first start to last end | {} / {} |",
                ms(wall),
                ms(span)
            );
            for kernel in &profiles[0].kernels {
                let times = profiles.iter().map(|p| p.kernels.iter().find(|k| k.kernel == kernel.kernel).map_or(Duration::ZERO, |k| k.gpu)).collect();
                let time = median(times);
                println!(
                    "| of which {} ({} dispatches) | {:.3} ms ({:.0}% of the span) |",
                    kernel.kernel,
                    kernel.dispatches,
                    1e3 * time.as_secs_f64(),
                    100.0 * time.as_secs_f64() / span.as_secs_f64().max(1e-12)
                );
            }
        }
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

/// The benchmark's prompt of `t` tokens (spread over the vocabulary).
fn prompt(t: usize) -> Vec<u32> {
    (0..t as u32).map(|i| (i * 7919) % 2048).collect()
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
