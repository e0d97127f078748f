//! Compiling in parallel: a batch ([`compile_many`]) and a background queue ([`CompileQueue`])
//! that compiles ahead while the GPU measures.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{CompileError, CompileGate, CompileJob, Compiled};

type Outcome = Result<Compiled, CompileError>;

/// One compile, with a panic in it turned into an error instead of a lost worker.
fn compile_caught(gate: &CompileGate, job: &CompileJob) -> Outcome {
    catch_unwind(AssertUnwindSafe(|| gate.compile(job))).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(CompileError::Toolchain(format!(
            "the compile panicked: {what}"
        )))
    })
}

/// Compiles `jobs` on `gate.settings().workers()` threads; results in input order.
pub(super) fn compile_many(gate: &CompileGate, jobs: &[CompileJob]) -> Vec<Outcome> {
    let workers = gate.settings().workers().min(jobs.len()).max(1);
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
    let done: Vec<Vec<(usize, Outcome)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        mine.push((i, compile_caught(gate, job)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("compile worker"))
            .collect()
    });
    for (i, r) in done.into_iter().flatten() {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.expect("every job compiled"))
        .collect()
}

struct State<K> {
    pending: VecDeque<(K, CompileJob)>,
    running: HashSet<K>,
    /// Each result with the wall time its compile took.
    finished: HashMap<K, (Outcome, Duration)>,
    shutdown: bool,
}

struct Shared<K> {
    gate: Arc<CompileGate>,
    state: Mutex<State<K>>,
    /// Signalled when a job is queued or the queue shuts down.
    work: Condvar,
    /// Signalled when a job finishes.
    done: Condvar,
}

impl<K> Shared<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Compiles submitted jobs in the background; [`CompileQueue::take`] waits for one.
///
/// Meant for compiling ahead: submit the candidates that come next, measure the current one
/// on the GPU, then take the next one's cubin, most likely ready by then. Taking a job that
/// has not started moves it to the front. Dropping the queue lets running compiles finish and
/// discards the rest.
pub struct CompileQueue<K: Eq + Hash + Clone + Send + 'static> {
    shared: Arc<Shared<K>>,
    workers: Vec<JoinHandle<()>>,
}

impl<K: Eq + Hash + Clone + Send + 'static> CompileQueue<K> {
    /// A queue with `gate.settings().workers()` threads.
    pub fn new(gate: Arc<CompileGate>) -> CompileQueue<K> {
        let n = gate.settings().workers();
        CompileQueue::with_workers(gate, n)
    }

    pub fn with_workers(gate: Arc<CompileGate>, workers: usize) -> CompileQueue<K> {
        let shared = Arc::new(Shared {
            gate,
            state: Mutex::new(State {
                pending: VecDeque::new(),
                running: HashSet::new(),
                finished: HashMap::new(),
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let workers = (0..workers.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("compile-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawn a compile worker")
            })
            .collect();
        CompileQueue { shared, workers }
    }

    /// Queues `job` under `key`; `false` (and nothing queued) if `key` is already queued,
    /// running or finished and not yet taken.
    pub fn submit(&self, key: K, job: CompileJob) -> bool {
        let mut st = self.shared.lock();
        if st.running.contains(&key)
            || st.finished.contains_key(&key)
            || st.pending.iter().any(|(k, _)| *k == key)
        {
            return false;
        }
        st.pending.push_back((key, job));
        drop(st);
        self.shared.work.notify_one();
        true
    }

    /// Whether `key` is queued, running, or finished and not yet taken.
    pub fn contains(&self, key: &K) -> bool {
        let st = self.shared.lock();
        st.running.contains(key)
            || st.finished.contains_key(key)
            || st.pending.iter().any(|(k, _)| k == key)
    }

    /// Jobs not started yet.
    pub fn pending(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Waits for `key`'s result and removes it from the queue; `None` if `key` was never
    /// submitted (or already taken).
    pub fn take(&self, key: &K) -> Option<Outcome> {
        self.take_timed(key).map(|(r, _)| r)
    }

    /// [`CompileQueue::take`], with the wall time the compile itself took (on its worker
    /// thread, not counting its time in the queue).
    pub fn take_timed(&self, key: &K) -> Option<(Outcome, Duration)> {
        let mut st = self.shared.lock();
        if let Some(i) = st.pending.iter().position(|(k, _)| k == key) {
            if i > 0 {
                let item = st.pending.remove(i).expect("index in range");
                st.pending.push_front(item);
                self.shared.work.notify_one();
            }
        }
        loop {
            if let Some(r) = st.finished.remove(key) {
                return Some(r);
            }
            let known = st.running.contains(key) || st.pending.iter().any(|(k, _)| k == key);
            if !known {
                return None;
            }
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// `key`'s result if it is finished, without waiting.
    pub fn try_take(&self, key: &K) -> Option<Outcome> {
        self.shared.lock().finished.remove(key).map(|(r, _)| r)
    }
}

fn worker<K: Eq + Hash + Clone>(shared: &Shared<K>) {
    loop {
        let (key, job) = {
            let mut st = shared.lock();
            loop {
                if st.shutdown {
                    return;
                }
                if let Some(item) = st.pending.pop_front() {
                    st.running.insert(item.0.clone());
                    break item;
                }
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let started = Instant::now();
        let result = compile_caught(&shared.gate, &job);
        let took = started.elapsed();
        let mut st = shared.lock();
        st.running.remove(&key);
        st.finished.insert(key, (result, took));
        drop(st);
        shared.done.notify_all();
    }
}

impl<K: Eq + Hash + Clone + Send + 'static> Drop for CompileQueue<K> {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.shutdown = true;
            st.pending.clear();
        }
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
