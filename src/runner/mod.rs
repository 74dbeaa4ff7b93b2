//! One runner for every forward pass the page and the CLI make: the fast
//! CPU path (`cpu::run`) and the GPU engine behind the same calls, the choice between
//! them, and the fallback to the CPU when the GPU is lost or fails. Nothing
//! else in the crate chooses a backend. A runner can answer on the CPU at
//! once and ready the GPU meanwhile ([`Runner::at_once`], then
//! [`Runner::attach_gpu`]): the page's first prediction does not wait for
//! pipelines to compile.
//!
//! - [`Runner::run`]: one pass with its sites recorded, each layer handed
//!   over as soon as it is computed (prompt runs, ablation re-runs, tours).
//!   On the GPU whenever there is one.
//! - [`Runner::record`]: a pass whose sites are wanted in bulk (the means),
//!   where batches go; [`Runner::gradients`], a pass and its backward pass
//!   (attribution), likewise.
//! - [`Runner::logits`]: the logits of a batch of intervention variants
//!   (effect ranking, circuit search); [`Runner::prompts_logits`], of a
//!   batch of prompts under one variant (a circuit's task loss). The first calls after a model loads
//!   time the same kind of work on each backend ([`Runner::probe`]), and the
//!   rest runs on the faster: a software adapter is slower than the CPU
//!   for the bundled model, a real GPU far faster at the released
//!   shape.
//!
//! A GPU error that is not the input's fault (a lost device, a failed
//! readback, a validation error) drops the GPU for good: the runner says so
//! through its backend callback, and the same call finishes on the CPU.

#[cfg(feature = "gpu")]
mod gpu;
mod kept;

pub use kept::KeptRun;

use std::cell::{Cell, RefCell};
use std::sync::Arc;

#[cfg(feature = "gpu")]
use gpu::start_gpu;

use crate::model::{
    gated_gradients, gradients_of_run, Gate, GateGradients, Gradients, Intervention, Model, Objective, Record,
    Recording, Tensor,
};
use crate::platform::{now_ms, sleep};

/// Variants per GPU batch: enough to fill the GPU at the bundled model's
/// size without making one call of the search long.
const GPU_BATCH: usize = 64;
/// Variants [`Runner::logits`] times the GPU on: a batch, but a small one
/// (at the released shape on a software adapter one variant takes seconds).
const GPU_PROBE: usize = 4;
/// The CPU probe stops after this many variants, or after the first one
/// that took longer than [`SLOW_VARIANT_MS`] (at the released shape one
/// CPU pass takes seconds, and the CPU blocks the page while it works).
const CPU_PROBE: usize = 8;
const SLOW_VARIANT_MS: f64 = 20.0;
/// GPU memory a chunk of a gated batch keeps for its backward pass (every
/// site, and the values before the gates). At the released shape a 64-token
/// example keeps 105 MB, so a chunk is 10 examples; on a software
/// adapter this memory is the GPU process's own.
#[cfg(feature = "gpu")]
const SAVED_BYTES: u64 = 1 << 30;
/// CPU work between two hand-backs to the browser.
const CPU_SLICE_MS: f64 = 30.0;

/// Where passes run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// On the CPU while a GPU is looked for and readied.
    Looking,
    /// On this GPU adapter.
    Gpu(String),
    /// On the CPU, for this reason.
    Cpu(String),
}

/// Which backends the runner may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The CPU only.
    Cpu,
    /// The GPU, which must be there (the CLI's `--backend gpu`); still the
    /// CPU if the GPU is lost on the way.
    Gpu,
    /// Passes with recording on the GPU when there is one; batches of
    /// variants on whichever backend the probe found faster.
    Fastest,
}

/// One of the two backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Cpu,
    Gpu,
}

impl Place {
    pub fn name(self) -> &'static str {
        match self {
            Place::Cpu => "cpu",
            Place::Gpu => "gpu",
        }
    }
}

/// Milliseconds per token on each backend, once timed: of a variant's
/// logits ([`Runner::timing`]), or of a gated pass and its backward pass
/// ([`Runner::gradient_timing`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Timing {
    gpu: Option<f64>,
    cpu: Option<f64>,
}

impl Timing {
    /// The faster backend, once both are timed.
    fn faster(self) -> Option<Place> {
        match (self.gpu, self.cpu) {
            (Some(g), Some(c)) => Some(if g <= c { Place::Gpu } else { Place::Cpu }),
            _ => None,
        }
    }
}

/// The model, the GPU engine when there is one, and where batches run.
pub struct Runner {
    want: Want,
    model: RefCell<Arc<Model>>,
    /// `None` once there is no (working) GPU. Behind an async lock so that
    /// the page's concurrent tasks take turns, none holding a borrow across
    /// an await.
    #[cfg(feature = "gpu")]
    gpu: async_lock::Mutex<Option<crate::gpu::Engine>>,
    backend: RefCell<Backend>,
    timing: Cell<Timing>,
    /// Timed apart from the logits: a software adapter that batches
    /// forward passes about as fast as the CPU runs them is some fifty
    /// times slower than the CPU at a gated step of the bundled model
    /// (5.7 s against 0.1 s for 16 examples, SwiftShader in the page).
    gradient_timing: Cell<Timing>,
    /// When CPU work last handed control back (to the browser): across
    /// calls, since callers make many short ones.
    last_pause: Cell<f64>,
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    on_backend: Box<dyn Fn(&Backend)>,
    /// Set while a call the page waits for waits for the GPU: batches of
    /// variants there stop between stages and run again after it.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    give_way: Cell<bool>,
    /// The last [`KeptRun`]'s id.
    next_kept: Cell<u64>,
    /// The latest run kept on the GPU ([`Runner::run_kept`]), by its id.
    #[cfg(feature = "gpu")]
    kept: RefCell<Option<(u64, crate::gpu::SavedRun)>>,
}

impl Runner {
    /// A runner for `model`: with `Want::Cpu` on the CPU; otherwise it looks
    /// for a GPU and readies the model there ([`Runner::attach_gpu`]),
    /// settling for the CPU (and saying why) when there is none, except that
    /// `Want::Gpu` makes that an error. `on_backend` hears of every later
    /// change of backend ([`Runner::backend`] says the first).
    pub async fn new(model: Arc<Model>, want: Want, on_backend: Box<dyn Fn(&Backend)>) -> Result<Runner, String> {
        let runner = Runner::at_once(model, want, on_backend);
        if want != Want::Cpu {
            runner.attach(false).await;
        }
        match runner.backend() {
            Backend::Cpu(why) if want == Want::Gpu => Err(why),
            _ => Ok(runner),
        }
    }

    /// A runner that answers on the CPU at once: with `Want::Cpu` for good,
    /// otherwise until [`Runner::attach_gpu`] has readied a GPU (the page
    /// opens with its first prediction while the GPU's pipelines compile).
    pub fn at_once(model: Arc<Model>, want: Want, on_backend: Box<dyn Fn(&Backend)>) -> Runner {
        let backend = match want {
            Want::Cpu => Backend::Cpu("asked for".into()),
            _ => Backend::Looking,
        };
        Runner {
            want,
            model: RefCell::new(model),
            #[cfg(feature = "gpu")]
            gpu: async_lock::Mutex::new(None),
            backend: RefCell::new(backend),
            timing: Cell::new(Timing::default()),
            gradient_timing: Cell::new(Timing::default()),
            last_pause: Cell::new(now_ms()),
            on_backend,
            give_way: Cell::new(false),
            next_kept: Cell::new(0),
            #[cfg(feature = "gpu")]
            kept: RefCell::new(None),
        }
    }

    /// Looks for a GPU, uploads the model and compiles every pipeline with
    /// a first small run; then passes go there (batches once timed). Without
    /// one, the runner stays on the CPU and says why, to `on_backend` too.
    pub async fn attach_gpu(&self) {
        self.attach(true).await;
    }

    async fn attach(&self, announce: bool) {
        let model = self.model();
        let backend = match start_gpu(&model).await {
            #[cfg(feature = "gpu")]
            Ok((mut engine, name)) => {
                let mut gpu = self.gpu.lock().await;
                // A model loaded meanwhile replaces the one readied.
                let current = self.model();
                match Arc::ptr_eq(&current, &model) {
                    true => Ok(()),
                    false => engine.load(&current).map_err(|e| format!("the model cannot run on this GPU ({e})")),
                }
                .map(|()| {
                    *gpu = Some(engine);
                    Backend::Gpu(name)
                })
                .unwrap_or_else(Backend::Cpu)
            }
            #[cfg(not(feature = "gpu"))]
            Ok(((), _)) => unreachable!("no GPU without the feature"),
            Err(e) => Backend::Cpu(e),
        };
        *self.backend.borrow_mut() = backend.clone();
        if announce {
            (self.on_backend)(&backend);
        }
    }

    pub fn model(&self) -> Arc<Model> {
        self.model.borrow().clone()
    }

    pub fn backend(&self) -> Backend {
        self.backend.borrow().clone()
    }

    /// Replaces the model, on the GPU too. A model the GPU refuses (say,
    /// over the adapter's limits) is an error and the runner keeps the model
    /// it had.
    pub async fn load(&self, model: Arc<Model>) -> Result<(), String> {
        #[cfg(feature = "gpu")]
        {
            let mut gpu = self.gpu.lock().await;
            if let Some(engine) = gpu.as_mut() {
                engine.load(&model).map_err(|e| e.to_string())?;
            }
        }
        *self.model.borrow_mut() = model;
        #[cfg(feature = "gpu")]
        self.kept.replace(None);
        self.timing.set(Timing::default());
        self.gradient_timing.set(Timing::default());
        Ok(())
    }

    /// One pass of `tokens` with `interventions`, recording `record`; each
    /// layer's sites go to `on_layer` as soon as they are computed (on the
    /// CPU, all at the end). Returns the logits `[T, vocab]` and the sites.
    pub async fn run(
        &self,
        tokens: &[u32],
        interventions: &[Intervention],
        record: &Record,
        on_layer: &mut dyn FnMut(usize, &Recording),
    ) -> Result<(Tensor, Recording), String> {
        #[cfg(feature = "gpu")]
        if let Some(outcome) = self.run_on_gpu(tokens, interventions, record, on_layer).await {
            return outcome;
        }
        self.on_cpu(tokens, interventions, record, on_layer).await
    }

    /// A pass whose sites are wanted in bulk (the means over sample
    /// prompts): on the backend batches go to, so a software adapter that
    /// the CPU outruns is not asked to read back every site.
    pub async fn record(&self, tokens: &[u32], record: &Record) -> Result<(Tensor, Recording), String> {
        if self.bulk_on_gpu(tokens.len()) {
            return self.run(tokens, &[], record, &mut |_, _| {}).await;
        }
        self.on_cpu(tokens, &[], record, &mut |_, _| {}).await
    }

    /// [`Runner::record`] of several prompts, where it would run each: on
    /// the GPU in one batch (a batch too large for it goes to the CPU), on
    /// the CPU natively a prompt per core, in the browser one after another.
    pub async fn record_batch(&self, prompts: &[Vec<u32>], record: &Record) -> Result<Vec<(Tensor, Recording)>, String> {
        #[cfg(feature = "gpu")]
        if self.bulk_on_gpu(prompts.iter().map(Vec::len).max().unwrap_or(0)) {
            if let Some(outcome) = self.on_engine(async |engine| engine.forward_batch(prompts, record).await).await {
                return outcome;
            }
        }
        self.pause_now_and_then().await;
        let model = self.model();
        crate::platform::map_on_cores(prompts, |tokens| crate::cpu::run(&model, tokens, &[], record).map_err(|e| e.to_string())).into_iter().collect()
    }

    /// The gradient of `objective` at every site of `tokens`' run, with the
    /// run: where bulk work goes, as [`Runner::record`]; a GPU that fails
    /// hands it to the CPU.
    pub async fn gradients(&self, tokens: &[u32], objective: &Objective) -> Result<Gradients, String> {
        let mut batch = self.gradients_batch(&[(tokens.to_vec(), objective.clone())]).await?;
        Ok(batch.remove(0))
    }

    /// [`Runner::gradients`] of several prompts, each with its own objective
    /// (a task's examples): on the GPU in one forward and one backward pass.
    pub async fn gradients_batch(&self, examples: &[(Vec<u32>, Objective)]) -> Result<Vec<Gradients>, String> {
        #[cfg(feature = "gpu")]
        if self.bulk_on_gpu(examples.iter().map(|(tokens, _)| tokens.len()).sum()) {
            if let Some(outcome) = self.on_engine(async |engine| engine.gradients_batch(examples).await).await {
                return outcome;
            }
        }
        let model = self.model();
        let mut batch = Vec::with_capacity(examples.len());
        for (tokens, objective) in examples {
            self.pause_now_and_then().await;
            // The fast path's forward pass, the reference's backward pass.
            let (logits, sites) = crate::cpu::run(&model, tokens, &[], &Record::All).map_err(|e| e.to_string())?;
            batch.push(gradients_of_run(&model, logits, sites, objective).map_err(|e| e.to_string())?);
        }
        Ok(batch)
    }

    /// Gated runs of several prompts (`model::gated_gradients`, a step of
    /// the circuit pruning), reduced to their gate gradients: on the faster
    /// backend at this work ([`Runner::gradients_place`]), the first call
    /// timing both on its examples ([`Runner::gate_gradients_timed`]). On
    /// the GPU in batches as large as its limits and [`SAVED_BYTES`] allow;
    /// on the CPU reference, natively an example per core.
    pub async fn gate_gradients(&self, examples: &[(Vec<u32>, Objective)], gates: &[Gate]) -> Result<GateGradients, String> {
        #[cfg(feature = "gpu")]
        match self.gradients_place() {
            Some(Place::Gpu) => {
                if let Some(outcome) = self.gate_gradients_on_gpu(examples, gates).await {
                    return outcome;
                }
            }
            None if self.usable_gpu() => return self.gate_gradients_timed(examples, gates).await,
            _ => {}
        }
        self.gate_gradients_on_cpu(examples, gates).await
    }

    /// [`Runner::gate_gradients`] while a backend's time at it is not
    /// known: its shortest example on the CPU, the rest on the GPU in the
    /// batches they will run in, each timed per token; a lone example goes
    /// to the GPU first. So the probe costs no pass more than the work.
    #[cfg(feature = "gpu")]
    async fn gate_gradients_timed(&self, examples: &[(Vec<u32>, Objective)], gates: &[Gate]) -> Result<GateGradients, String> {
        let model = self.model();
        let tokens = |examples: &[(Vec<u32>, Objective)]| examples.iter().map(|(tokens, _)| tokens.len()).sum::<usize>();
        let mut for_gpu = examples.to_vec();
        let shortest = (0..examples.len()).min_by_key(|&i| examples[i].0.len());
        let cpu_times_one = examples.len() > 1 || self.gradient_timing.get().gpu.is_some();
        let for_cpu: Vec<_> = shortest.filter(|_| cpu_times_one).map(|i| for_gpu.remove(i)).into_iter().collect();
        let mut total = GateGradients::zero(gates);
        if !for_gpu.is_empty() {
            let started = now_ms();
            match self.gate_gradients_on_gpu(&for_gpu, gates).await {
                Some(sums) => {
                    total.add(&sums?);
                    self.remember(&self.gradient_timing, &model, Place::Gpu, now_ms() - started, tokens(&for_gpu));
                }
                None => total.add(&self.gate_gradients_on_cpu(&for_gpu, gates).await?),
            }
        }
        if !for_cpu.is_empty() {
            self.pause_now_and_then().await;
            let started = now_ms();
            total.add(&self.gate_gradients_on_cpu(&for_cpu, gates).await?);
            self.remember(&self.gradient_timing, &model, Place::Cpu, now_ms() - started, tokens(&for_cpu));
        }
        Ok(total)
    }

    /// [`Runner::gate_gradients`] on the CPU reference.
    async fn gate_gradients_on_cpu(&self, examples: &[(Vec<u32>, Objective)], gates: &[Gate]) -> Result<GateGradients, String> {
        let model = self.model();
        // In the page the CPU is the page's own thread: an example at a
        // time, handing back to the browser between them now and then.
        let per_call = if cfg!(target_arch = "wasm32") { 1 } else { examples.len().max(1) };
        let mut total = GateGradients::zero(gates);
        for examples in examples.chunks(per_call) {
            self.pause_now_and_then().await;
            let each = crate::platform::map_on_cores(examples, |(tokens, objective)| {
                let run = gated_gradients(&model, tokens, objective, gates)?;
                let mut sums = GateGradients::zero(gates);
                sums.add_run(&run, gates)?;
                Ok::<_, crate::model::ModelError>(sums)
            });
            for sums in each {
                total.add(&sums.map_err(|e| e.to_string())?);
            }
        }
        Ok(total)
    }

    /// [`Runner::gradients`] of a run already made (its logits `[T, vocab]`
    /// and every site): the backward pass alone.
    pub async fn gradients_of_run(&self, logits: &Tensor, activations: &Recording, objective: &Objective) -> Result<Gradients, String> {
        #[cfg(feature = "gpu")]
        if self.bulk_on_gpu(logits.rows) {
            let (logits, activations) = (logits.clone(), activations.clone());
            if let Some(outcome) = self.on_engine(async |engine| engine.gradients_of_run(logits, activations, objective).await).await {
                return outcome;
            }
        }
        self.pause_now_and_then().await;
        gradients_of_run(&self.model(), logits.clone(), activations.clone(), objective).map_err(|e| e.to_string())
    }

    /// Times the backends with a pass of `tokens` each (logits only) until
    /// the faster is known, so that the bulk work after it goes there rather
    /// than to the GPU by default (for a task's examples at the released
    /// shape SwiftShader took 1.06 s an example, the CPU path in WebAssembly
    /// 0.02 s: bench-page BENCH_ONLY=inspect). Two passes at most:
    /// while a GPU is readied the faster cannot be known yet.
    pub async fn time_backends(&self, tokens: &[u32]) -> Result<(), String> {
        for _ in 0..2 {
            if self.batch_place().is_some() || self.probing().is_none() {
                break;
            }
            self.probe(tokens, &[Vec::new()]).await?;
        }
        Ok(())
    }

    /// Whether bulk work (every site read back, or a backward pass) on
    /// `seq_len` tokens goes to the GPU: where gradients go once timed, else
    /// where batches go once timed, and before that the GPU unless the CPU
    /// is known to take a pass in stride.
    fn bulk_on_gpu(&self, seq_len: usize) -> bool {
        if let Some(place) = self.gradients_place() {
            return place == Place::Gpu;
        }
        let cpu_is_quick = self.timing.get().cpu.is_some_and(|ms| ms * (seq_len as f64) < SLOW_VARIANT_MS);
        match self.batch_place() {
            Some(place) => place == Place::Gpu,
            None => self.usable_gpu() && !cpu_is_quick,
        }
    }

    /// [`Runner::run`] on the CPU.
    async fn on_cpu(
        &self,
        tokens: &[u32],
        interventions: &[Intervention],
        record: &Record,
        on_layer: &mut dyn FnMut(usize, &Recording),
    ) -> Result<(Tensor, Recording), String> {
        self.pause_now_and_then().await;
        let model = self.model();
        let (logits, sites) = crate::cpu::run(&model, tokens, interventions, record).map_err(|e| e.to_string())?;
        if !sites.is_empty() {
            for layer in 0..model.config.n_layer {
                on_layer(layer, &sites);
            }
        }
        Ok((logits, sites))
    }

    /// The logits `[T, vocab]` of `tokens` under each of `variants`, on the
    /// faster backend (probing both first when that is not known yet).
    pub async fn logits(&self, tokens: &[u32], variants: &[Vec<Intervention>]) -> Result<Vec<Tensor>, String> {
        let mut out = Vec::with_capacity(variants.len());
        while out.len() < variants.len() {
            let rest = &variants[out.len()..];
            let done = match self.probing() {
                Some(Place::Gpu) => self.probe(tokens, &rest[..rest.len().min(GPU_PROBE)]).await?,
                Some(Place::Cpu) => self.probe(tokens, rest).await?,
                None => {
                    let place = self.batch_place().unwrap_or(Place::Cpu);
                    self.logits_on(place, tokens, &rest[..rest.len().min(GPU_BATCH)]).await?
                }
            };
            out.extend(done);
        }
        Ok(out)
    }

    /// The logits `[T_b, vocab]` of each of `prompts` under the same
    /// `interventions` (a circuit's task loss over a task's examples): once
    /// the backends are timed (the first prompts time them), on the GPU in
    /// batches of prompts, on the CPU a prompt at a time, natively one per core.
    pub async fn prompts_logits(&self, prompts: &[Vec<u32>], interventions: &[Intervention]) -> Result<Vec<Tensor>, String> {
        let variant = [interventions.to_vec()];
        let mut out = Vec::with_capacity(prompts.len());
        while out.len() < prompts.len() {
            let rest = &prompts[out.len()..];
            #[cfg(feature = "gpu")]
            if self.batch_place() == Some(Place::Gpu) {
                if let Some(logits) = self.prompts_logits_on_gpu(rest, interventions).await {
                    out.extend(logits?);
                    continue;
                }
            }
            if self.batch_place().is_none() {
                out.extend(self.logits(&rest[0], &variant).await?);
                continue;
            }
            let per_call = if cfg!(target_arch = "wasm32") { 1 } else { rest.len() };
            self.pause_now_and_then().await;
            let model = self.model();
            for run in crate::platform::map_on_cores(&rest[..per_call], |tokens| crate::cpu::run(&model, tokens, interventions, &Record::LogitsOnly)) {
                out.push(run.map_err(|e| e.to_string())?.0);
            }
        }
        Ok(out)
    }

    /// Times `variants` on the backend [`Runner::probing`] names and returns
    /// their logits: on the GPU all of them (up to a batch), on the CPU up to
    /// eight (`CPU_PROBE`), or only the first where that one was slow; so it may
    /// return fewer than it was given. Callers that must stop early (a time
    /// budget) probe until [`Runner::estimate_ms`] answers; otherwise
    /// [`Runner::logits`] probes by itself.
    pub async fn probe(&self, tokens: &[u32], variants: &[Vec<Intervention>]) -> Result<Vec<Tensor>, String> {
        let (place, limit) = match self.probing() {
            Some(Place::Gpu) => (Place::Gpu, GPU_BATCH),
            _ => (Place::Cpu, CPU_PROBE),
        };
        self.logits_on(place, tokens, &variants[..variants.len().min(limit)]).await
    }

    /// The backend the next probe times, while one that could be faster is
    /// not timed yet: the GPU first.
    pub fn probing(&self) -> Option<Place> {
        if self.batch_place().is_some() {
            return None;
        }
        let timing = self.timing.get();
        Some(if self.usable_gpu() && timing.gpu.is_none() { Place::Gpu } else { Place::Cpu })
    }

    /// Where the next batch of variants runs, or `None` while a backend
    /// that could be faster has not been timed.
    pub fn batch_place(&self) -> Option<Place> {
        let timing = self.timing.get();
        // While a GPU is readied, the CPU works in probe-sized steps.
        if *self.backend.borrow() == Backend::Looking {
            return None;
        }
        if !self.usable_gpu() {
            return timing.cpu.map(|_| Place::Cpu);
        }
        if self.want == Want::Gpu {
            return Some(Place::Gpu);
        }
        timing.faster()
    }

    /// Where gated passes and their backward passes run (the circuit
    /// pruning's steps), or `None` while a backend that could be faster has
    /// not been timed at them.
    pub fn gradients_place(&self) -> Option<Place> {
        if *self.backend.borrow() == Backend::Looking {
            return None;
        }
        if !self.usable_gpu() {
            return Some(Place::Cpu);
        }
        if self.want == Want::Gpu {
            return Some(Place::Gpu);
        }
        self.gradient_timing.get().faster()
    }

    /// About how long `variants` variants of a `seq_len`-token prompt take
    /// on the faster backend, once both are timed.
    pub fn estimate_ms(&self, seq_len: usize, variants: usize) -> Option<f64> {
        let Timing { gpu, cpu } = self.timing.get();
        let per = match self.batch_place()? {
            Place::Gpu => gpu?,
            Place::Cpu => cpu?,
        };
        Some(per * (seq_len * variants) as f64)
    }

    /// Destroys the GPU device, as a driver reset or a lost GPU process
    /// would: the fallback's tests use it.
    #[cfg(feature = "gpu")]
    pub async fn lose_gpu(&self) {
        if let Some(engine) = self.gpu.lock().await.as_ref() {
            engine.context().device.destroy();
        }
    }

    fn usable_gpu(&self) -> bool {
        matches!(*self.backend.borrow(), Backend::Gpu(_))
    }

    /// Runs `variants` on `place` and times them, per variant and token,
    /// for a backend not timed yet; a lost GPU hands them to the CPU.
    async fn logits_on(&self, place: Place, tokens: &[u32], variants: &[Vec<Intervention>]) -> Result<Vec<Tensor>, String> {
        let model = self.model();
        #[cfg(not(feature = "gpu"))]
        let _ = place;
        #[cfg(feature = "gpu")]
        if place == Place::Gpu {
            if let Some(outcome) = self.logits_on_gpu(tokens, variants).await {
                let (logits, ms) = outcome?;
                self.remember(&self.timing, &model, Place::Gpu, ms, tokens.len() * logits.len());
                return Ok(logits);
            }
        }
        let started = now_ms();
        let probing = self.timing.get().cpu.is_none();
        let mut logits = Vec::with_capacity(variants.len());
        let mut paused = 0.0;
        for variant in variants {
            paused += self.pause_now_and_then().await;
            logits.push(crate::cpu::run(&model, tokens, variant, &Record::LogitsOnly).map_err(|e| e.to_string())?.0);
            if probing && now_ms() - started - paused > SLOW_VARIANT_MS {
                break;
            }
        }
        self.remember(&self.timing, &model, Place::Cpu, now_ms() - started - paused, tokens.len() * logits.len());
        Ok(logits)
    }

    /// Hands control back (to the browser, which paints and takes input)
    /// once CPU work has held it for [`CPU_SLICE_MS`]; the milliseconds it
    /// was away.
    async fn pause_now_and_then(&self) -> f64 {
        let at = now_ms();
        if at - self.last_pause.get() < CPU_SLICE_MS {
            return 0.0;
        }
        sleep(0).await;
        let back = now_ms();
        self.last_pause.set(back);
        back - at
    }

    /// Keeps in `timing` the fastest time per variant and token seen on
    /// `place` for `model`, unless another model has been loaded meanwhile.
    fn remember(&self, timing: &Cell<Timing>, model: &Arc<Model>, place: Place, ms: f64, variant_tokens: usize) {
        if !Arc::ptr_eq(model, &self.model.borrow()) || variant_tokens == 0 {
            return;
        }
        let per = ms / variant_tokens as f64;
        let mut times = timing.get();
        let slot = match place {
            Place::Gpu => &mut times.gpu,
            Place::Cpu => &mut times.cpu,
        };
        *slot = Some(slot.map_or(per, |known| known.min(per)));
        timing.set(times);
    }
}

#[cfg(not(feature = "gpu"))]
async fn start_gpu(_: &Model) -> Result<((), String), String> {
    Err("this build has no GPU backend (built without the `gpu` feature)".into())
}
