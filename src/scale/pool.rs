//! One evaluator per GPU of a host; a batch's candidates go to whichever is free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::candidate::Candidate;
use crate::eval::{Environment, EvalError, Evaluation, Evaluator};
use crate::insight::Profile;
use crate::task::Shape;

/// An evaluator that may move to another thread.
pub type SendEvaluator = Box<dyn Evaluator + Send>;

/// Several evaluators, each named by its GPU. Compiles are shared through the on-disk cubin
/// cache; compile-ahead hints and profiles go to the first member.
pub struct GpuPool {
    members: Vec<(u32, SendEvaluator)>,
}

impl GpuPool {
    /// `members`: (GPU ordinal, its evaluator); at least one.
    pub fn new(members: Vec<(u32, SendEvaluator)>) -> Result<GpuPool, EvalError> {
        if members.is_empty() {
            return Err(EvalError::Other("a GPU pool needs at least one GPU".into()));
        }
        Ok(GpuPool { members })
    }

    pub fn gpus(&self) -> Vec<u32> {
        self.members.iter().map(|(g, _)| *g).collect()
    }
}

type Answer = Result<(Evaluation, Option<u32>), EvalError>;

impl Evaluator for GpuPool {
    fn environment(&self) -> Environment {
        self.members[0].1.environment()
    }

    fn register_source(&mut self, hash: &str, code: &str) {
        for (_, m) in &mut self.members {
            m.register_source(hash, code);
        }
    }

    fn prepare(&mut self, upcoming: &[Candidate], shape: &Shape) {
        self.members[0].1.prepare(upcoming, shape);
    }

    fn set_race_bar(&mut self, bar_us: Option<f64>) {
        for (_, m) in &mut self.members {
            m.set_race_bar(bar_us);
        }
    }

    fn evaluate(&mut self, candidate: &Candidate, shape: &Shape) -> Result<Evaluation, EvalError> {
        let mut answers = self.evaluate_batch(std::slice::from_ref(candidate), shape)?;
        Ok(answers.remove(0).0)
    }

    fn evaluate_batch(
        &mut self,
        candidates: &[Candidate],
        shape: &Shape,
    ) -> Result<Vec<(Evaluation, Option<u32>)>, EvalError> {
        let next = AtomicUsize::new(0);
        let answers: Mutex<Vec<Option<Answer>>> =
            Mutex::new((0..candidates.len()).map(|_| None).collect());
        std::thread::scope(|scope| {
            for (gpu, member) in &mut self.members {
                let (next, answers) = (&next, &answers);
                let gpu = *gpu;
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(c) = candidates.get(i) else { break };
                    let answer = member.evaluate(c, shape).map(|e| (e, Some(gpu)));
                    let failed = answer.is_err();
                    answers.lock().expect("no thread panics holding it")[i] = Some(answer);
                    if failed {
                        // This GPU's evaluator is broken; the others take the rest.
                        break;
                    }
                });
            }
        });
        let answers = answers.into_inner().expect("no thread panics holding it");
        let mut out = Vec::with_capacity(answers.len());
        for (i, a) in answers.into_iter().enumerate() {
            match a {
                Some(a) => out.push(a?),
                None => {
                    return Err(EvalError::Device(format!(
                        "every GPU's evaluator failed before candidate {} of the batch",
                        i + 1
                    )))
                }
            }
        }
        Ok(out)
    }

    fn verify(
        &mut self,
        candidate: &Candidate,
        shapes: &[Shape],
    ) -> Result<Option<Vec<crate::eval::ShapeCheck>>, EvalError> {
        self.members[0].1.verify(candidate, shapes)
    }

    fn profile(
        &mut self,
        candidate: &Candidate,
        shape: &Shape,
    ) -> Result<Option<Profile>, EvalError> {
        self.members[0].1.profile(candidate, shape)
    }
}

/// `all` (every GPU: `0..count`) or a list such as `0,2,3`, as ordinals.
pub fn parse_gpus(spec: &str, count: impl FnOnce() -> usize) -> Result<Vec<u32>, String> {
    let spec = spec.trim();
    if spec == "all" {
        let n = count();
        if n == 0 {
            return Err("--gpus all: no GPU found".into());
        }
        return Ok((0..n as u32).collect());
    }
    let mut out = Vec::new();
    for part in spec.split(',') {
        let g: u32 = part.trim().parse().map_err(|_| {
            format!("--gpus `{spec}`: `{part}` is not a GPU number (expected `all` or a list such as 0,2,3)")
        })?;
        if out.contains(&g) {
            return Err(format!("--gpus `{spec}`: GPU {g} is named twice"));
        }
        out.push(g);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_lists_parse() {
        assert_eq!(parse_gpus("all", || 3).unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_gpus("0,2, 3", || 0).unwrap(), vec![0, 2, 3]);
        assert!(parse_gpus("all", || 0).unwrap_err().contains("no GPU"));
        assert!(parse_gpus("0,x", || 1).unwrap_err().contains("`x`"));
        assert!(parse_gpus("1,1", || 1).unwrap_err().contains("twice"));
    }
}
