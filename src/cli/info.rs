use std::path::Path;

use crate::model::{Activation, Model};

pub fn run(dir: &Path) -> Result<(), String> {
    let model = Model::load_dir(dir).map_err(|e| e.to_string())?;
    let c = &model.config;
    println!("model      {}", dir.display());
    println!(
        "shape      n_layer {}, d_model {}, n_head {} x d_head {}, d_mlp {}, vocab_size {}, block_size {}",
        c.n_layer, c.d_model, c.n_head, c.d_head, c.d_mlp, c.vocab_size, c.block_size
    );
    let mut features = vec![
        if c.rms_norm { "rms_norm".to_string() } else { format!("layer_norm (bias {})", c.ln_bias) },
        match c.activation {
            Activation::Gelu => "gelu".into(),
            Activation::Relu => "relu".into(),
        },
        format!("linear bias {}", c.bias),
        if c.tied_unembed { "tied unembedding".into() } else { "untied unembedding".into() },
    ];
    if let Some(afrac) = c.afrac {
        let sites: Vec<&str> = c.topk_sites.iter().map(|s| s.name()).collect();
        features.push(format!("afrac {afrac} at {}", sites.join(",")));
    }
    if c.residual_relu {
        features.push("residual relu".into());
    }
    if c.sink {
        features.push("attention sink".into());
    }
    if c.enable_bigram_table {
        features.push("bigram table".into());
    }
    if let Some(d_pos_emb) = c.d_pos_emb {
        features.push(format!("concatenated position embedding ({d_pos_emb})"));
    }
    println!("features   {}", features.join(", "));

    let stats = model.weight_stats();
    let params: usize = stats.iter().map(|s| s.numel()).sum();
    let nnz: usize = stats.iter().map(|s| s.nnz).sum();
    let bytes: usize = stats.iter().map(|s| s.bytes).sum();
    println!("parameters {params}");
    println!("nonzeros   {nnz} ({:.3}% of parameters)", percent(nnz, params));
    println!("memory     {bytes} bytes ({:.2}% of the {} bytes dense f32 would take)", percent(bytes, 4 * params), 4 * params);
    // What links (`sha256=`) and circuit files (`weights_sha256`) name these weights by.
    println!("weights    sha256 {}", model.weights_sha256());
    println!();
    println!("{:<44} {:>12} {:>10} {:>9} {:>10}", "tensor", "shape", "nonzeros", "density", "bytes");
    for s in &stats {
        let shape: Vec<String> = s.shape.iter().map(usize::to_string).collect();
        println!(
            "{:<44} {:>12} {:>10} {:>8.3}% {:>10}",
            s.name,
            shape.join("x"),
            s.nnz,
            percent(s.nnz, s.numel()),
            s.bytes
        );
    }
    Ok(())
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}
