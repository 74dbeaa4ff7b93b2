//! A batch's interventions as the flat entry lists `intervene.wgsl` reads.

use super::GpuError;
use crate::model::{Config, Intervention, Site};

/// Every variant's interventions as entries of the flat `[R, width]` views
/// of their sites: `spans` holds (site, first entry, entries), by site. An
/// entry sets one cell, or with [`COLUMN`] set, one channel at every
/// position of its variant (zero or mean ablation everywhere: a circuit
/// search's variants ablate thousands of channels, T times fewer entries).
pub struct Flattened {
    pub spans: Vec<(Site, u32, u32)>,
    pub index: Vec<u32>,
    pub value: Vec<f32>,
}

/// Marks an entry that sets a whole column of its variant (see `intervene.wgsl`).
const COLUMN: u32 = 1 << 31;

pub fn flatten_interventions(config: &Config, seq_len: usize, variants: &[Vec<Intervention>]) -> Result<Flattened, GpuError> {
    let mut sites: Vec<Site> = variants.iter().flatten().map(|i| i.site).collect();
    sites.sort();
    sites.dedup();
    let mut flat = Flattened { spans: Vec::new(), index: Vec::new(), value: Vec::new() };
    for site in sites {
        let width = config.site_width(site);
        if (variants.len() * seq_len * width) as u64 >= u64::from(COLUMN) {
            return Err(GpuError::Model(crate::model::ModelError::Intervention(format!("at {site}: too many variants for one batch"))));
        }
        let start = flat.index.len() as u32;
        for (variant, interventions) in variants.iter().enumerate() {
            let row0 = variant * seq_len;
            for intervention in interventions.iter().filter(|i| i.site == site) {
                if let Some(columns) = intervention.columns(config, seq_len)? {
                    for (channel, v) in columns {
                        flat.index.push((row0 * width + channel) as u32 | COLUMN);
                        flat.value.push(v);
                    }
                    continue;
                }
                for (position, channel, v) in intervention.assignments(config, seq_len)? {
                    flat.index.push(((row0 + position) * width + channel) as u32);
                    flat.value.push(v);
                }
            }
        }
        flat.spans.push((site, start, flat.index.len() as u32 - start));
    }
    Ok(flat)
}

impl Flattened {
    /// (first entry, entries) of `site`'s interventions; (0, 0) for none.
    pub fn span_of(&self, site: Site) -> (u32, u32) {
        self.spans.iter().find(|(s, ..)| *s == site).map_or((0, 0), |&(_, start, n)| (start, n))
    }
}
