//! What the search evaluates: a kernel source (the task's own, or a variant written later by a
//! language model) with a knob config.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::space::{Config, Space};

/// Which kernel source a candidate compiles.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceRef {
    /// The task's own kernel source.
    Base,
    /// A source variant, named by the sha256 of its text.
    Variant(String),
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRef::Base => f.write_str("base"),
            SourceRef::Variant(hash) => write!(f, "src:{}", &hash[..hash.len().min(16)]),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Candidate {
    pub source: SourceRef,
    pub config: Config,
}

impl Candidate {
    pub fn base(config: Config) -> Candidate {
        Candidate {
            source: SourceRef::Base,
            config,
        }
    }

    /// A stable text identity: `base|K=V,...` or `src:<hash>|K=V,...`.
    pub fn key(&self, space: &Space) -> String {
        let source = match &self.source {
            SourceRef::Base => "base".to_string(),
            SourceRef::Variant(hash) => format!("src:{hash}"),
        };
        format!("{source}|{}", space.display(&self.config))
    }
}
