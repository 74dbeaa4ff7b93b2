//! The GPU engine inside headless Chromium (WebGPU on SwiftShader): every
//! golden case at every site, forward and backward (in a batch), as
//! natively. Run by wasm-bindgen-test-runner through chromedriver
//! (`make test-browser-gpu`).
#![cfg(all(target_arch = "wasm32", feature = "gpu"))]

mod common;

use circuitscope::gpu::{Engine, GpuContext, Record};
use circuitscope::model::{gradients, Model, Objective};
use common::{assert_close, parse_objective, parse_safetensors};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! golden {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("golden/", $name, "/config.json")),
            include_bytes!(concat!("golden/", $name, "/model.safetensors")).as_slice(),
            include_bytes!(concat!("golden/", $name, "/expected.safetensors")).as_slice(),
            include_str!(concat!("golden/", $name, "/tokens.json")),
        )
    };
}

#[wasm_bindgen_test]
async fn every_golden_case_matches_at_every_site_on_webgpu() {
    let cases = [
        golden!("all_sites_relu_untied"),
        golden!("cat_pos_emb"),
        golden!("gpt2_ln_gelu"),
        golden!("paper_rms_topk_sink"),
    ];
    for (case, config, weights, expected, tokens) in cases {
        let model = Model::from_bytes(config, weights).unwrap();
        let tokens: Vec<u32> = serde_json::from_str(tokens).unwrap();
        let ctx = GpuContext::new().await.expect("a WebGPU adapter");
        let mut engine = Engine::new(ctx, &model).unwrap();
        let (logits, recording) = engine.forward(&tokens, &Record::All).await.unwrap();
        let expected = parse_safetensors(expected);
        assert_eq!(recording.len() + 1, expected.len(), "{case}: number of sites");
        assert_close(&format!("{case} logits (WebGPU)"), &logits, &expected["logits"]);
        for (site, tensor) in &recording {
            assert_close(&format!("{case} {site} (WebGPU)"), tensor, &expected[&site.to_string()]);
        }
    }
}

#[wasm_bindgen_test]
async fn every_golden_case_has_the_reference_gradient_at_every_site_on_webgpu() {
    let cases = [
        (golden!("all_sites_relu_untied"), include_bytes!("golden/all_sites_relu_untied/grads.safetensors").as_slice(), include_str!("golden/all_sites_relu_untied/objective.json")),
        (golden!("cat_pos_emb"), include_bytes!("golden/cat_pos_emb/grads.safetensors").as_slice(), include_str!("golden/cat_pos_emb/objective.json")),
        (golden!("gpt2_ln_gelu"), include_bytes!("golden/gpt2_ln_gelu/grads.safetensors").as_slice(), include_str!("golden/gpt2_ln_gelu/objective.json")),
        (golden!("paper_rms_topk_sink"), include_bytes!("golden/paper_rms_topk_sink/grads.safetensors").as_slice(), include_str!("golden/paper_rms_topk_sink/objective.json")),
    ];
    for ((case, config, weights, _, tokens), grads, objective) in cases {
        let model = Model::from_bytes(config, weights).unwrap();
        let tokens: Vec<u32> = serde_json::from_str(tokens).unwrap();
        let (objective, _) = parse_objective(objective);
        let ctx = GpuContext::new().await.expect("a WebGPU adapter");
        let mut engine = Engine::new(ctx, &model).unwrap();
        // In a batch with a shorter prompt and another objective, checked
        // against the CPU's backward pass.
        let half = tokens.len() / 2;
        let shorter = Objective::TaskLoss { position: half - 1, right: 1, wrong: 2, scale: 0.5 };
        let examples = [(tokens.clone(), objective), (tokens[..half].to_vec(), shorter)];
        let batch = engine.gradients_batch(&examples).await.unwrap();
        let expected = parse_safetensors(grads);
        assert_eq!(batch[0].gradients.len(), expected.len(), "{case}: sites with gradients");
        for (site, gradient) in &batch[0].gradients {
            assert_close(&format!("{case} d/d {site} (WebGPU)"), gradient, &expected[&site.to_string()]);
        }
        let cpu = gradients(&model, &examples[1].0, &examples[1].1).unwrap();
        for ((site, g), (_, c)) in batch[1].gradients.iter().zip(&cpu.gradients) {
            assert_close(&format!("{case} shorter prompt d/d {site} (WebGPU vs CPU)"), g, c);
        }
    }
}
