use std::fmt;

/// The activation sites the forward pass records, named as in the
/// reference's hooks (`{layer}.{suffix}`, plus `final_resid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SiteKind {
    ResidIn,
    AttnActIn,
    AttnQ,
    AttnK,
    AttnV,
    AttnY,
    AttnResidDelta,
    ResidMid,
    MlpActIn,
    MlpPostAct,
    MlpResidDelta,
}

impl SiteKind {
    /// In layer order, attention before MLP, and q, k, v in the order
    /// `c_attn` splits them (the forward pass records them k, q, v: the
    /// reference applies their top-k in that order). The graph's columns,
    /// the search's node order and links follow this order.
    pub const ALL: [SiteKind; 11] = [
        SiteKind::ResidIn,
        SiteKind::AttnActIn,
        SiteKind::AttnQ,
        SiteKind::AttnK,
        SiteKind::AttnV,
        SiteKind::AttnY,
        SiteKind::AttnResidDelta,
        SiteKind::ResidMid,
        SiteKind::MlpActIn,
        SiteKind::MlpPostAct,
        SiteKind::MlpResidDelta,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            SiteKind::ResidIn => "resid_in",
            SiteKind::AttnActIn => "attn.act_in",
            SiteKind::AttnQ => "attn.q",
            SiteKind::AttnK => "attn.k",
            SiteKind::AttnV => "attn.v",
            SiteKind::AttnY => "attn.y",
            SiteKind::AttnResidDelta => "attn.resid_delta",
            SiteKind::ResidMid => "resid_mid",
            SiteKind::MlpActIn => "mlp.act_in",
            SiteKind::MlpPostAct => "mlp.post_act",
            SiteKind::MlpResidDelta => "mlp.resid_delta",
        }
    }
}

/// One recorded site: a kind in a layer, or the final residual stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    Layer(usize, SiteKind),
    FinalResid,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Layer(layer, kind) => write!(f, "{layer}.{}", kind.suffix()),
            Site::FinalResid => f.write_str("final_resid"),
        }
    }
}

impl Site {
    /// Parses a reference name such as `0.attn.q` or `final_resid`.
    pub fn parse(name: &str) -> Option<Site> {
        if name == "final_resid" {
            return Some(Site::FinalResid);
        }
        let (layer, suffix) = name.split_once('.')?;
        let kind = SiteKind::ALL.into_iter().find(|k| k.suffix() == suffix)?;
        Some(Site::Layer(layer.parse().ok()?, kind))
    }
}

/// Which activations a run reads back.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// Every site of every layer, and the logits.
    All,
    /// These sites, and the logits.
    Sites(Vec<Site>),
    /// Only the logits.
    LogitsOnly,
}

impl Record {
    /// Whether `site` is read back.
    pub fn wants(&self, site: Site) -> bool {
        match self {
            Record::All => true,
            Record::Sites(sites) => sites.contains(&site),
            Record::LogitsOnly => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in SiteKind::ALL {
            let site = Site::Layer(3, kind);
            assert_eq!(Site::parse(&site.to_string()), Some(site));
        }
        assert_eq!(Site::parse("final_resid"), Some(Site::FinalResid));
        assert_eq!(Site::parse("x.attn.q"), None);
        assert_eq!(Site::parse("0.attn.z"), None);
    }
}
