use gloo_net::http::Request;

use crate::model::Model;

/// Fetches `{base}/config.json` and `{base}/model.safetensors` and builds the
/// model; every failure is a message naming the file.
pub async fn fetch_model(base: &str) -> Result<Model, String> {
    let config = fetch_bytes(&format!("{base}/config.json")).await?;
    let config = String::from_utf8(config).map_err(|_| "config.json is not UTF-8 text".to_string())?;
    let weights = fetch_bytes(&format!("{base}/model.safetensors")).await?;
    Model::from_bytes(&config, &weights).map_err(|e| e.to_string())
}

async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let response = Request::get(url).send().await.map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if !response.ok() {
        return Err(format!("cannot fetch {url}: HTTP {} {}", response.status(), response.status_text()));
    }
    response.binary().await.map_err(|e| format!("cannot read {url}: {e}"))
}
