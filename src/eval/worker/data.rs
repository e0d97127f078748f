//! What the worker keeps between requests: each trial's inputs and the reference's outputs
//! (on the host, and on the device while it has room), the reference kernels, and the
//! helpers that turn a request's arguments into device buffers and parameters.

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngExt;

use super::server::{evaluator, evaluator_msg, Fail, MEMORY_MARGIN};
use super::KernelRef;
use crate::cuda::{CudaError, DeviceBuffer, Gpu, Kernel, Param};
use crate::eval::inputs::{self, ArgSpec};
use crate::task::{ArgRole, DType};

/// Host bytes of inputs and reference outputs kept between requests (the same for every
/// candidate of a shape, so the reference runs once per trial, not once per candidate): a
/// quarter of the machine's memory, at least 8 GiB. A trial that does not fit is drawn again
/// (and the reference run again) for every candidate, which costs seconds at large shapes.
fn cache_limit() -> usize {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical = if pages > 0 && page > 0 {
        pages as usize * page as usize
    } else {
        0
    };
    (physical / 4).max(8 << 30)
}

/// Share of the device's free memory (when the first trial is kept) that device copies of
/// trials may take.
const DEVICE_SHARE: f64 = 0.5;

/// Buffers start this many bytes apart at most from where their allocation starts (a random
/// multiple of 256, drawn per request), so where they lie says nothing about which launch it is.
pub const MAX_OFFSET: usize = 1 << 20;

/// Inputs and reference outputs of one trial.
pub struct TrialData {
    /// Per argument: initial values (inputs and inouts), in the argument's type.
    pub inputs: Vec<Option<Vec<u8>>>,
    /// Per argument: the reference's outputs (outputs and inouts), f32.
    pub reference: Vec<Option<Vec<u8>>>,
    /// The same on the device, when there was room: candidates' inputs are copied from
    /// there, and outputs compared with it, without crossing the bus.
    pub device: Option<DeviceTrial>,
}

/// A trial's pristine inputs and reference outputs in device memory.
pub struct DeviceTrial {
    pub inputs: Buffers,
    pub reference: Buffers,
}

impl TrialData {
    fn bytes(&self) -> usize {
        self.inputs
            .iter()
            .chain(&self.reference)
            .flatten()
            .map(Vec::len)
            .sum()
    }

    /// Copies the host data to new device buffers.
    fn to_device(&self, gpu: &Gpu) -> Result<DeviceTrial, CudaError> {
        let copy = |host: &Vec<Option<Vec<u8>>>| -> Result<Buffers, CudaError> {
            host.iter()
                .map(|b| match b {
                    Some(bytes) if !bytes.is_empty() => {
                        let buf = gpu.alloc(bytes.len())?;
                        gpu.upload(&buf, bytes)?;
                        Ok(Some(buf))
                    }
                    _ => Ok(None),
                })
                .collect()
        };
        Ok(DeviceTrial {
            inputs: copy(&self.inputs)?,
            reference: copy(&self.reference)?,
        })
    }
}

#[derive(Default)]
pub struct DataCache {
    key: String,
    trials: HashMap<u64, Arc<TrialData>>,
    bytes: usize,
    /// Device bytes the kept trials hold, and how many they may (set with the first).
    device_bytes: u64,
    device_budget: Option<u64>,
    /// Whether the note that a trial did not fit was said.
    overflow_said: bool,
}

impl DataCache {
    pub fn use_key(&mut self, key: String) {
        if key != self.key {
            self.clear();
            self.key = key;
        }
    }

    pub fn clear(&mut self) {
        self.trials.clear();
        self.bytes = 0;
        self.device_bytes = 0;
        self.device_budget = None;
        self.key.clear();
    }

    /// The trial's data: kept from before, or made now (and kept on the host and, while there
    /// is room, on the device).
    pub fn get(
        &mut self,
        gpu: &Gpu,
        trial: u64,
        make: impl FnOnce() -> Result<TrialData, Fail>,
    ) -> Result<Arc<TrialData>, Fail> {
        if let Some(d) = self.trials.get(&trial) {
            return Ok(d.clone());
        }
        let mut d = make()?;
        let size = d.bytes();
        if self.bytes + size <= cache_limit() {
            let budget = match self.device_budget {
                Some(b) => b,
                None => {
                    let (free, _) = gpu
                        .mem_info()
                        .map_err(evaluator("cannot read free device memory"))?;
                    let b = (free as f64 * DEVICE_SHARE) as u64;
                    self.device_budget = Some(b);
                    b
                }
            };
            if self.device_bytes + size as u64 <= budget {
                d.device = Some(
                    d.to_device(gpu)
                        .map_err(evaluator("cannot keep a trial's data on the device"))?,
                );
                self.device_bytes += size as u64;
            }
            let d = Arc::new(d);
            self.bytes += size;
            self.trials.insert(trial, d.clone());
            return Ok(d);
        }
        if !std::mem::replace(&mut self.overflow_said, true) {
            eprintln!(
                "worker: the inputs and reference outputs of trial {trial} do not fit the host cache \
                 ({} MiB kept, limit {} MiB): they are drawn again for every candidate",
                self.bytes >> 20,
                cache_limit() >> 20
            );
        }
        Ok(Arc::new(d))
    }
}

/// Reference kernels loaded so far, by cubin hash and entry.
#[derive(Default)]
pub struct References {
    kernels: HashMap<(String, String), Kernel>,
}

impl References {
    pub fn load(&mut self, gpu: &Gpu, r: &KernelRef) -> Result<(&Kernel, String), Fail> {
        let bytes = std::fs::read(&r.cubin).map_err(|e| {
            evaluator_msg(format!(
                "cannot read the reference {}: {e}",
                r.cubin.display()
            ))
        })?;
        let sha = crate::task::sha256_hex(&bytes);
        let key = (sha.clone(), r.entry.clone());
        if !self.kernels.contains_key(&key) {
            if self.kernels.len() >= 16 {
                self.kernels.clear();
            }
            let k = gpu
                .load_kernel_bytes(bytes, &r.entry)
                .map_err(evaluator("cannot load the reference kernel"))?;
            self.kernels.insert(key.clone(), k);
        }
        let kernel = &self.kernels[&key];
        gpu.prepare(kernel, &r.dims)
            .map_err(evaluator("the reference's launch does not fit the device"))?;
        Ok((kernel, sha))
    }
}

/// The kernel's value for a scalar argument.
pub fn scalar_param(a: &ArgSpec) -> Result<Param, Fail> {
    let value = a
        .value
        .ok_or_else(|| evaluator_msg(format!("scalar `{}` has no value", a.name)))?;
    let bytes = inputs::scalar_bytes(a.dtype, value)
        .map_err(|e| evaluator_msg(format!("scalar `{}`: {e}", a.name)))?;
    let word4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    Ok(match a.dtype {
        DType::I32 => Param::I32(i32::from_le_bytes(word4(&bytes))),
        DType::F32 => Param::F32(f32::from_le_bytes(word4(&bytes))),
        DType::I64 => Param::I64(i64::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ])),
        other => {
            return Err(evaluator_msg(format!(
                "a scalar cannot be {}",
                other.as_str()
            )))
        }
    })
}

/// The parameter list: scalars by value, buffers by the address `buffer(i)` gives.
pub fn param_list(
    args: &[ArgSpec],
    mut buffer: impl FnMut(usize) -> Option<u64>,
) -> Result<Vec<Param>, Fail> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            if a.is_buffer() {
                buffer(i)
                    .map(Param::Ptr)
                    .ok_or_else(|| evaluator_msg(format!("no device buffer for `{}`", a.name)))
            } else {
                scalar_param(a)
            }
        })
        .collect()
}

/// One device buffer per argument (none for scalars and for arguments that need none).
pub type Buffers = Vec<Option<DeviceBuffer>>;

pub fn ptr(bufs: &[Option<DeviceBuffer>], i: usize) -> Option<u64> {
    bufs.get(i)?.as_ref().map(DeviceBuffer::ptr)
}

/// A buffer per argument that `bytes` gives a size for; with `offsets`, each starts a random
/// distance (up to [`MAX_OFFSET`]) into its allocation.
pub fn alloc_each(
    gpu: &Gpu,
    args: &[ArgSpec],
    bytes: impl Fn(&ArgSpec) -> Option<u64>,
    mut offsets: Option<&mut rand_chacha::ChaCha8Rng>,
) -> Result<Buffers, Fail> {
    args.iter()
        .map(|a| {
            let offset = offsets
                .as_deref_mut()
                .map_or(0, |r| r.random_range(0..MAX_OFFSET / 256) * 256);
            bytes(a)
                .map(|n| gpu.alloc_at(n as usize, offset))
                .transpose()
                .map_err(evaluator(format!("cannot allocate `{}`", a.name)))
        })
        .collect()
}

pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Draws a trial's inputs and, with a reference, runs it on them.
pub fn make_trial(
    gpu: &Gpu,
    args: &[ArgSpec],
    seed: u64,
    trial: u64,
    reference: Option<(&Kernel, &KernelRef)>,
    main: &[Option<DeviceBuffer>],
    ref_out: &[Option<DeviceBuffer>],
) -> Result<TrialData, Fail> {
    let inputs: Vec<Option<Vec<u8>>> = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.has_initial_values()
                .then(|| inputs::generate(&a.init, a.dtype, a.len as usize, seed, trial, i as u32))
        })
        .collect();
    let Some((kernel, r)) = reference else {
        return Ok(TrialData {
            reference: vec![None; args.len()],
            inputs,
            device: None,
        });
    };
    for (i, a) in args.iter().enumerate() {
        let upload_err = evaluator(format!("cannot upload `{}`", a.name));
        match (a.role, &inputs[i]) {
            (ArgRole::Input, Some(bytes)) if a.is_buffer() => {
                upload(gpu, main, i, bytes).map_err(upload_err)?
            }
            (ArgRole::Inout, Some(bytes)) => {
                let as_f32 = inputs::encode_all(DType::F32, &inputs::decode_all(a.dtype, bytes));
                upload(gpu, ref_out, i, &as_f32).map_err(upload_err)?
            }
            (ArgRole::Output, _) if a.is_buffer() => {
                if let Some(Some(buf)) = ref_out.get(i) {
                    gpu.fill(buf, inputs::poison_byte(DType::F32))
                        .map_err(upload_err)?;
                }
            }
            _ => {}
        }
    }
    let params = param_list(args, |i| {
        if args[i].is_output() {
            ptr(ref_out, i)
        } else {
            ptr(main, i)
        }
    })?;
    gpu.launch(kernel, &r.dims, &params)
        .map_err(evaluator("the reference kernel does not launch"))?;
    gpu.synchronize().map_err(evaluator(format!(
        "the reference kernel failed on trial {trial}"
    )))?;
    let mut reference_out = vec![None; args.len()];
    for (i, a) in args.iter().enumerate() {
        if !a.is_output() {
            continue;
        }
        let Some(Some(buf)) = ref_out.get(i) else {
            return Err(evaluator_msg(format!(
                "no reference buffer for `{}`",
                a.name
            )));
        };
        let out = gpu
            .download(buf)
            .map_err(evaluator("cannot read the reference's output"))?;
        let bad = out
            .chunks_exact(4)
            .filter(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
            .count();
        if bad > 0 {
            return Err(evaluator_msg(format!(
                "the reference left {bad} of {} elements of `{}` NaN, Inf or unwritten on trial {trial}; \
                 the task's reference is broken",
                a.len, a.name
            )));
        }
        reference_out[i] = Some(out);
    }
    Ok(TrialData {
        inputs,
        reference: reference_out,
        device: None,
    })
}

/// Host bytes into an argument's device buffer.
pub fn upload(
    gpu: &Gpu,
    bufs: &[Option<DeviceBuffer>],
    i: usize,
    bytes: &[u8],
) -> Result<(), CudaError> {
    match bufs.get(i) {
        Some(Some(buf)) => gpu.upload(buf, bytes),
        _ => Err(CudaError::Invalid(format!(
            "argument {i} has no device buffer"
        ))),
    }
}

/// Loads the reference (if any) and points the data cache at this (arguments, seed,
/// reference): the key under which inputs and reference outputs are reused.
pub fn load_reference<'a>(
    gpu: &Gpu,
    references: &'a mut References,
    data: &mut DataCache,
    reference: Option<&'a KernelRef>,
    args: &[ArgSpec],
    seed: u64,
) -> Result<Option<(&'a Kernel, &'a KernelRef)>, Fail> {
    let loaded = match reference {
        Some(r) => Some((references.load(gpu, r)?, r)),
        None => None,
    };
    let key = serde_json::to_string(&(
        args,
        seed,
        loaded.as_ref().map(|((_, sha), r)| (sha, &r.entry, r.dims)),
    ))
    .unwrap_or_default();
    data.use_key(key);
    Ok(loaded.map(|((k, _), r)| (k, r)))
}

/// Device buffers of one request: each argument in its own type (`main`), and the
/// reference's outputs in f32 (`ref_out`).
pub fn alloc_buffers(
    gpu: &Gpu,
    args: &[ArgSpec],
    with_reference: bool,
    offsets: Option<&mut rand_chacha::ChaCha8Rng>,
) -> Result<(Buffers, Buffers), Fail> {
    let main_bytes: u64 = args
        .iter()
        .filter(|a| a.is_buffer())
        .map(ArgSpec::bytes)
        .sum();
    let ref_bytes: u64 = if with_reference {
        args.iter()
            .filter(|a| a.is_output())
            .map(|a| a.len * 4)
            .sum()
    } else {
        0
    };
    let (free, _) = gpu
        .mem_info()
        .map_err(evaluator("cannot read free device memory"))?;
    let need = main_bytes + ref_bytes + gpu.flush_bytes() as u64 + MEMORY_MARGIN;
    if need > free as u64 {
        return Err(evaluator_msg(format!(
            "the arguments need {} of device memory, {} is free",
            mib(need),
            mib(free as u64)
        )));
    }
    let main = alloc_each(gpu, args, |a| a.is_buffer().then(|| a.bytes()), offsets)?;
    let ref_out = alloc_each(
        gpu,
        args,
        |a| (with_reference && a.is_output()).then(|| a.len * 4),
        None,
    )?;
    Ok((main, ref_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_parameters() {
        let a = |dtype, value| ArgSpec {
            name: "s".into(),
            kind: crate::task::ArgKind::Scalar,
            dtype,
            role: ArgRole::Input,
            init: Default::default(),
            len: 0,
            shape: vec![],
            value: Some(value),
        };
        use inputs::Scalar;
        assert_eq!(
            scalar_param(&a(DType::I32, Scalar::Int(-3))).ok(),
            Some(Param::I32(-3))
        );
        assert_eq!(
            scalar_param(&a(DType::I64, Scalar::Int(1 << 40))).ok(),
            Some(Param::I64(1 << 40))
        );
        assert_eq!(
            scalar_param(&a(DType::F32, Scalar::Float(0.5))).ok(),
            Some(Param::F32(0.5))
        );
        assert!(scalar_param(&a(DType::I32, Scalar::Int(1 << 40))).is_err());
    }
}
