//! What the search evaluates: a kernel source (the task's own, or a variant written later by a
//! language model) with a knob config.

use std::fmt;
use std::str::FromStr;

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

/// How a source variant's tag begins: `src:<sha256>`.
pub const VARIANT_PREFIX: &str = "src:";

impl SourceRef {
    /// The full tag, as keys, the store and landscapes spell it: `base` or `src:<sha256>`
    /// ([`FromStr`] reads it back). `Display` shortens the hash for people.
    pub fn tag(&self) -> String {
        match self {
            SourceRef::Base => "base".to_string(),
            SourceRef::Variant(hash) => format!("{VARIANT_PREFIX}{hash}"),
        }
    }
}

/// A tag that is neither `base` nor `src:<hash>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown source `{0}` (expected `base` or `src:<sha256>`)")]
pub struct BadSourceTag(pub String);

impl FromStr for SourceRef {
    type Err = BadSourceTag;

    fn from_str(text: &str) -> Result<SourceRef, BadSourceTag> {
        match text {
            "base" => Ok(SourceRef::Base),
            _ => match text.strip_prefix(VARIANT_PREFIX) {
                Some(hash) if !hash.is_empty() => Ok(SourceRef::Variant(hash.to_string())),
                _ => Err(BadSourceTag(text.to_string())),
            },
        }
    }
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRef::Base => f.write_str("base"),
            SourceRef::Variant(hash) => {
                write!(f, "{VARIANT_PREFIX}{}", &hash[..hash.len().min(16)])
            }
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
        format!("{}|{}", self.source.tag(), space.display(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_tags_round_trip_and_bad_ones_are_named() {
        let hash = "ab".repeat(32);
        for s in [SourceRef::Base, SourceRef::Variant(hash.clone())] {
            assert_eq!(s.tag().parse::<SourceRef>(), Ok(s.clone()));
        }
        assert_eq!(
            SourceRef::Variant(hash.clone()).tag(),
            format!("src:{hash}")
        );
        // Display is for people: the hash shortened.
        assert_eq!(SourceRef::Variant(hash).to_string(), "src:abababababababab");
        for bad in ["", "src:", "Base", "sha:abc"] {
            let err = bad.parse::<SourceRef>().unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }
}
