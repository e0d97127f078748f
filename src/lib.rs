//! evoengineer: evolutionary, profiling-guided tuning of CUDA kernels.
//!
//! The path of one candidate: a [`task::Task`] defines a [`space::Space`]; a strategy in
//! [`search`] proposes a [`candidate::Candidate`]; an [`eval::Evaluator`] takes it through
//! the gates (compile, correctness, performance) and maybe profiles it ([`insight`]); the
//! search keeps elites and decides when to stop; [`store`] records everything so a run can be
//! resumed, shown and exported.

pub mod candidate;
pub mod cuda;
pub mod eval;
pub mod import;
pub mod insight;
pub mod llm;
pub mod report;
pub mod scale;
pub mod search;
pub mod secrets;
pub mod space;
pub mod store;
pub mod study;
pub mod task;
