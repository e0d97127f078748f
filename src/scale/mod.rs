//! Scale-out: every GPU of a host ([`pool::GpuPool`]), and any number of hosts through a
//! shared store ([`remote::QueueEvaluator`] on the coordinator, [`worker::serve`] on each
//! worker).
//!
//! The search stays deterministic: it proposes a batch of `Settings::batch` candidates from
//! the state at the batch's start, hands them to the evaluator at once, and concludes the
//! answers in proposal order ([`crate::search::run`]). Which GPU or host measured a candidate,
//! and in which order they finished, changes nothing but the `gpu` recorded with each trial.

pub mod pool;
pub mod remote;
pub mod worker;
