//! The on-disk cubin cache: one compile's result (cubin and ptxas report, or the compiler's
//! refusal) stored under a key that covers everything the result depends on.
//!
//! Layout: `<dir>/<first two hex digits of the key>/<key>.json` (the record) and
//! `<key>.cubin`. Files are written to a temporary name and renamed, so concurrent
//! processes never read half a file; a record whose cubin is missing or does not hash to the
//! recorded sha256 is a miss.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::gate::RejectReason;
use super::ptxas::KernelResources;
use crate::task::{hex, sha256_hex};

/// Bumped whenever the record format or the key's inputs change.
const FORMAT: u32 = 1;

/// Where compiles are cached.
#[derive(Clone, Debug)]
pub struct CubinCache {
    dir: PathBuf,
}

/// What one compile produced, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub format: u32,
    pub key: String,
    pub toolchain: String,
    pub compile_s: f64,
    /// The compiler's output (ptxas report, warnings), trimmed.
    #[serde(default)]
    pub log: String,
    #[serde(flatten)]
    pub result: CachedResult,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CachedResult {
    /// A cubin, with the entry's symbol and resources.
    Compiled {
        entry: String,
        resources: KernelResources,
        cubin_sha256: String,
    },
    /// The compiler refused the source (`message` holds its error lines), or compiled no
    /// entry of the name asked for.
    Refused {
        reason: RejectReason,
        message: String,
    },
}

impl CubinCache {
    pub fn new(dir: impl Into<PathBuf>) -> CubinCache {
        CubinCache { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/evoengineer/cubins`, else `$HOME/.cache/evoengineer/cubins`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(base.join("evoengineer").join("cubins"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf) {
        let sub = self.dir.join(&key[..key.len().min(2)]);
        (
            sub.join(format!("{key}.json")),
            sub.join(format!("{key}.cubin")),
        )
    }

    /// The record and cubin (empty for a refusal) stored under `key`, if intact.
    pub fn get(&self, key: &str) -> Option<(CacheRecord, Vec<u8>)> {
        let (json, cubin) = self.paths(key);
        let text = std::fs::read_to_string(json).ok()?;
        let record: CacheRecord = serde_json::from_str(&text).ok()?;
        if record.format != FORMAT || record.key != key {
            return None;
        }
        match &record.result {
            CachedResult::Compiled { cubin_sha256, .. } => {
                let bytes = std::fs::read(cubin).ok()?;
                (sha256_hex(&bytes) == *cubin_sha256).then_some((record, bytes))
            }
            CachedResult::Refused { .. } => Some((record, Vec::new())),
        }
    }

    /// Stores `record` (and `cubin`, for a compiled result) under `record.key`.
    pub fn put(&self, record: &CacheRecord, cubin: &[u8]) -> io::Result<()> {
        let (json, cubin_path) = self.paths(&record.key);
        if let Some(parent) = json.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if matches!(record.result, CachedResult::Compiled { .. }) {
            write_atomic(&cubin_path, cubin)?;
        }
        let text = serde_json::to_string_pretty(record).map_err(io::Error::other)?;
        write_atomic(&json, text.as_bytes())
    }

    pub(crate) fn record(
        key: &str,
        toolchain: &str,
        compile_s: f64,
        log: &str,
        result: CachedResult,
    ) -> CacheRecord {
        CacheRecord {
            format: FORMAT,
            key: key.to_string(),
            toolchain: toolchain.to_string(),
            compile_s,
            log: log.to_string(),
            result,
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// sha256 over length-prefixed fields: no two different lists of fields hash alike.
#[derive(Default)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new() -> KeyHasher {
        let mut h = KeyHasher(Sha256::new());
        h.field(format!("evoengineer-cubin-v{FORMAT}"));
        h
    }

    pub fn field(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        let bytes = bytes.as_ref();
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "evoengineer-cache-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_and_corruption() {
        let dir = tmpdir("rt");
        let cache = CubinCache::new(&dir);
        let cubin = b"\x7fELF fake cubin".to_vec();
        let key = "ab".repeat(32);
        assert!(cache.get(&key).is_none());
        let record = CubinCache::record(
            &key,
            "nvcc 13.0",
            1.25,
            "ptxas info",
            CachedResult::Compiled {
                entry: "k".into(),
                resources: KernelResources {
                    registers: 40,
                    ..Default::default()
                },
                cubin_sha256: sha256_hex(&cubin),
            },
        );
        cache.put(&record, &cubin).unwrap();
        let (got, bytes) = cache.get(&key).unwrap();
        assert_eq!(got, record);
        assert_eq!(bytes, cubin);
        assert!(dir.join("ab").join(format!("{key}.cubin")).is_file());

        // A cubin that no longer matches its hash is a miss.
        std::fs::write(dir.join("ab").join(format!("{key}.cubin")), b"other").unwrap();
        assert!(cache.get(&key).is_none());

        let refused_key = "cd".repeat(32);
        let refused = CubinCache::record(
            &refused_key,
            "nvcc 13.0",
            0.5,
            "",
            CachedResult::Refused {
                reason: RejectReason::CompilerError,
                message: "k.cu(3): error: nope".into(),
            },
        );
        cache.put(&refused, &[]).unwrap();
        assert_eq!(cache.get(&refused_key).unwrap().0, refused);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn key_fields_are_length_prefixed() {
        let mut a = KeyHasher::new();
        a.field("ab").field("c");
        let mut b = KeyHasher::new();
        b.field("a").field("bc");
        assert_ne!(a.finish(), b.finish());
        let mut c = KeyHasher::new();
        c.field("ab").field("c");
        let mut d = KeyHasher::new();
        d.field("ab").field("c");
        assert_eq!(c.finish(), d.finish());
    }
}
