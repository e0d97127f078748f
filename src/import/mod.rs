//! Importers: bring measurements made by other autotuners in as evoengineer tasks and
//! landscapes.
//!
//! [`kernel_tuner`] reads a Kernel Tuner cache file (and optionally a benchmark_hub spec or a
//! restrictions list) and writes a task folder that `tune --replay` and `study` can use;
//! [`python_expr`] translates Kernel Tuner's Python restrictions into task constraints.

pub mod kernel_tuner;
pub mod python_expr;

use std::path::PathBuf;

/// Why an import failed; every message names the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    // The I/O error is part of the message, not a `source` (that would print it twice).
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not valid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{option}: {message}")]
    BadOption { option: String, message: String },
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("the imported task does not load (a bug in the importer): {0}")]
    Task(#[from] crate::task::TaskError),
}

impl ImportError {
    pub(crate) fn invalid(
        path: &std::path::Path,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ImportError {
        ImportError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}
