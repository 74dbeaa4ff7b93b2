//! The runner's GPU side: passes, batches and gradients on the engine, and
//! dropping the GPU for the CPU when it fails.

use super::{Backend, Runner, SAVED_BYTES};
use crate::model::{Gate, GateGradients, Intervention, Model, Objective, Record, Recording, Site, Tensor};
use crate::gpu::length_chunks;
use crate::platform::now_ms;

impl Runner {
    /// The GPU gave an error that is not the input's: from now on, the CPU.
    fn drop_gpu(&self, gpu: &mut Option<crate::gpu::Engine>, error: &crate::gpu::GpuError) {
        *gpu = None;
        let backend = Backend::Cpu(format!("the GPU failed ({error})"));
        *self.backend.borrow_mut() = backend.clone();
        (self.on_backend)(&backend);
    }

    /// [`Runner::run`] on the GPU; `None` when there is no (working) GPU.
    pub(super) async fn run_on_gpu(
        &self,
        tokens: &[u32],
        interventions: &[Intervention],
        record: &Record,
        on_layer: &mut dyn FnMut(usize, &Recording),
    ) -> Option<Result<(Tensor, Recording), String>> {
        self.on_engine_first(async |engine| {
            let mut sites = Recording::new();
            let variant = [interventions.to_vec()];
            let mut logits = engine
                .run(tokens, &variant, record, &mut |mut stage| {
                    if let Some(layer) = stage.layer {
                        on_layer(layer, &stage.sites[0]);
                    }
                    sites.append(&mut stage.sites[0]);
                })
                .await?;
            Ok((logits.remove(0), sites))
        })
        .await
    }

    /// The logits of `variants` in one GPU batch and the milliseconds it
    /// took once the GPU was free; `None` when there is no (working) GPU.
    /// Gives way to a run the page waits for ([`Runner::on_engine_first`]).
    pub(super) async fn logits_on_gpu(&self, tokens: &[u32], variants: &[Vec<Intervention>]) -> Option<Result<(Vec<Tensor>, f64), String>> {
        loop {
            let outcome = self
                .on_engine(async |engine| {
                    let started = now_ms();
                    match engine.run_giving_way(tokens, variants, &self.give_way).await {
                        Ok(logits) => Ok(Some((logits, now_ms() - started))),
                        Err(crate::gpu::GpuError::GaveWay) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
                .await?;
            match outcome {
                Ok(Some(done)) => return Some(Ok(done)),
                // Again once the waiting call has had the GPU.
                Ok(None) => crate::platform::sleep(0).await,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// [`Runner::on_engine`] for a call the page waits for (a run, the rows
    /// it shows): a batch of variants on the GPU meanwhile gives way to it
    /// between two stages, and runs again after.
    pub(super) async fn on_engine_first<T>(&self, work: impl AsyncFnOnce(&mut crate::gpu::Engine) -> Result<T, crate::gpu::GpuError>) -> Option<Result<T, String>> {
        self.give_way.set(true);
        let outcome = self
            .on_engine(async |engine| {
                self.give_way.set(false);
                work(engine).await
            })
            .await;
        self.give_way.set(false);
        outcome
    }

    /// [`Runner::prompts_logits`] on the GPU; `None` when there is no
    /// (working) GPU or the batch is too large for it.
    pub(super) async fn prompts_logits_on_gpu(&self, prompts: &[Vec<u32>], interventions: &[Intervention]) -> Option<Result<Vec<Tensor>, String>> {
        self.on_engine(async |engine| engine.prompts_logits(prompts, interventions).await).await
    }

    /// [`Runner::gate_gradients`] on the GPU, a chunk of examples of like
    /// length per batch (handing back to the browser between chunks); `None`
    /// when there is no (working) GPU or not even one example fits it.
    pub(super) async fn gate_gradients_on_gpu(&self, examples: &[(Vec<u32>, Objective)], gates: &[Gate]) -> Option<Result<GateGradients, String>> {
        let ablated: Vec<Site> = gates.iter().filter(|gate| gate.kept.contains(&false)).map(|gate| gate.site).collect();
        let lengths: Vec<usize> = examples.iter().map(|(tokens, _)| tokens.len()).collect();
        let longest = lengths.iter().copied().max().unwrap_or(1);
        // What a chunk may hold at each length up to the longest, asked once.
        let fits: Vec<usize> = self
            .on_engine(async |engine| {
                let per_token = engine.saved_bytes_per_token(&ablated);
                Ok((0..=longest).map(|len| engine.batch_capacity(len).min((SAVED_BYTES / (per_token * len.max(1) as u64).max(1)) as usize)).collect())
            })
            .await?
            .ok()?;
        if fits[longest] == 0 {
            return None;
        }
        let mut total = GateGradients::zero(gates);
        for chunk in length_chunks(&lengths, |len| fits[len]) {
            let batch: Vec<(Vec<u32>, Objective)> = chunk.iter().map(|&i| examples[i].clone()).collect();
            match self.on_engine(async |engine| engine.gate_gradients(&batch, gates).await).await? {
                Ok(sums) => total.add(&sums),
                Err(e) => return Some(Err(e)),
            }
            self.pause_now_and_then().await;
        }
        Some(Ok(total))
    }

    /// `work` on the engine; `None` when there is no (working) GPU or the
    /// work is too large for it. Bad input is the input's fault (an error);
    /// any other GPU error is the GPU's, and drops it.
    pub(super) async fn on_engine<T>(&self, work: impl AsyncFnOnce(&mut crate::gpu::Engine) -> Result<T, crate::gpu::GpuError>) -> Option<Result<T, String>> {
        let mut gpu = self.gpu.lock().await;
        let engine = gpu.as_mut()?;
        match work(engine).await {
            Ok(value) => Some(Ok(value)),
            Err(crate::gpu::GpuError::Model(e)) => Some(Err(e.to_string())),
            // Too large for this adapter: the CPU does this one, the GPU stays.
            Err(crate::gpu::GpuError::TooLarge { .. }) => None,
            Err(e) => {
                self.drop_gpu(&mut gpu, &e);
                None
            }
        }
    }
}

/// A GPU with `model` uploaded, and the adapter's description.
pub(super) async fn start_gpu(model: &Model) -> Result<(crate::gpu::Engine, String), String> {
    use crate::gpu::{Engine, GpuContext};
    let missing = if cfg!(target_arch = "wasm32") { "WebGPU is not available" } else { "no GPU" };
    let ctx = GpuContext::new().await.map_err(|e| format!("{missing} ({e})"))?;
    let name = ctx.describe();
    let mut engine = Engine::new(ctx, model).map_err(|e| format!("the model cannot run on this GPU ({e})"))?;
    // Every kernel compiled now, by one token twice, the second with an
    // intervention: a first run would otherwise wait for them.
    let ablation = Intervention { site: crate::model::Site::Layer(0, crate::model::SiteKind::MlpPostAct), positions: vec![], channels: vec![0], ablation: crate::model::Ablation::Zero };
    engine
        .run(&[0], &[Vec::new(), vec![ablation]], &Record::All, &mut |_| {})
        .await
        .map_err(|e| format!("the GPU failed a first run ({e})"))?;
    Ok((engine, name))
}

