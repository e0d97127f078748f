//! Kernel arguments as the GPU side sees them, and their data: reproducible random inputs,
//! rounded to each argument's element type; the poison pattern outputs get before every
//! launch; and decoding device bytes back to numbers for the comparison.
//!
//! Inputs are drawn on the host. Every buffer is cut into chunks of [`CHUNK`] elements and
//! each chunk has its own ChaCha8 generator, seeded from (run seed, trial, argument index,
//! chunk index): the bytes are the same on any number of threads, the same for every
//! candidate of a run (so candidates are compared on the same inputs), and different for
//! every trial.

use std::path::{Path, PathBuf};

use float8::{F8E4M3, F8E5M2};
use half::{bf16, f16};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::task::{Arg, ArgKind, ArgRole, DType, Init};

/// Elements per independently seeded chunk of a buffer.
pub const CHUNK: usize = 1 << 18;

/// A scalar argument's value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Float(f64),
}

/// One kernel argument, with its sizes evaluated for a shape and a config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgSpec {
    pub name: String,
    pub kind: ArgKind,
    pub dtype: DType,
    #[serde(default = "input_role")]
    pub role: ArgRole,
    #[serde(default)]
    pub init: Init,
    /// Buffers: the element count.
    #[serde(default)]
    pub len: u64,
    /// Buffers: how PyTorch baselines see it; empty means one dimension of `len`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shape: Vec<i64>,
    /// Scalars: the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Scalar>,
}

fn input_role() -> ArgRole {
    ArgRole::Input
}

impl ArgSpec {
    /// Evaluates a task argument's expressions (length, value, shape) for `vars` (the knobs of
    /// a config and the parameters of a shape).
    pub fn from_task_arg(arg: &Arg, vars: &[(&str, i64)]) -> Result<ArgSpec, String> {
        let eval = |e: &crate::task::expr::Expr| {
            e.eval_int(vars.iter().copied())
                .map_err(|err| format!("argument `{}`: {err}", arg.name))
        };
        let value = eval(&arg.value)?;
        let shape = arg.shape.iter().map(eval).collect::<Result<Vec<_>, _>>()?;
        let spec = match arg.kind {
            ArgKind::Buffer => ArgSpec {
                name: arg.name.clone(),
                kind: arg.kind,
                dtype: arg.dtype,
                role: arg.role,
                init: arg.init.clone(),
                len: u64::try_from(value)
                    .map_err(|_| format!("argument `{}`: length {value} is negative", arg.name))?,
                shape,
                value: None,
            },
            ArgKind::Scalar => ArgSpec {
                name: arg.name.clone(),
                kind: arg.kind,
                dtype: arg.dtype,
                role: ArgRole::Input,
                init: arg.init.clone(),
                len: 0,
                shape: vec![],
                value: Some(Scalar::Int(value)),
            },
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn is_buffer(&self) -> bool {
        self.kind == ArgKind::Buffer
    }

    /// A buffer the kernel writes (output or inout): compared against the reference.
    pub fn is_output(&self) -> bool {
        self.is_buffer() && self.role != ArgRole::Input
    }

    /// A buffer that starts with drawn values (input or inout).
    pub fn has_initial_values(&self) -> bool {
        self.is_buffer() && self.role != ArgRole::Output
    }

    /// Bytes of the buffer in its own element type.
    pub fn bytes(&self) -> u64 {
        self.len.saturating_mul(self.dtype.size() as u64)
    }

    /// The element type the reference kernel sees: f32 for everything the kernel writes.
    pub fn reference_dtype(&self) -> DType {
        if self.is_output() {
            DType::F32
        } else {
            self.dtype
        }
    }

    /// The shape PyTorch sees.
    pub fn torch_shape(&self) -> Vec<i64> {
        if self.shape.is_empty() {
            vec![self.len as i64]
        } else {
            self.shape.clone()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            ArgKind::Buffer => {
                if self.len == 0 {
                    return Err(format!("buffer `{}` has no elements", self.name));
                }
                if self.value.is_some() {
                    return Err(format!("buffer `{}` has a scalar value", self.name));
                }
                if !self.shape.is_empty() {
                    let product = self.shape.iter().try_fold(1_i64, |acc, &d| {
                        if d < 0 {
                            None
                        } else {
                            acc.checked_mul(d)
                        }
                    });
                    if product != Some(self.len as i64) {
                        return Err(format!(
                            "buffer `{}`: shape {:?} does not hold {} elements",
                            self.name, self.shape, self.len
                        ));
                    }
                }
                if let Init::Uniform { low, high, .. } = self.init {
                    if low.is_nan() || high.is_nan() || low > high {
                        return Err(format!(
                            "buffer `{}`: uniform low {low} > high {high}",
                            self.name
                        ));
                    }
                }
                Ok(())
            }
            ArgKind::Scalar => {
                let Some(value) = self.value else {
                    return Err(format!("scalar `{}` has no value", self.name));
                };
                scalar_bytes(self.dtype, value)
                    .map(|_| ())
                    .map_err(|e| format!("scalar `{}`: {e}", self.name))
            }
        }
    }
}

/// Checks every argument and that something is written.
pub fn validate_args(args: &[ArgSpec]) -> Result<(), String> {
    if args.is_empty() {
        return Err("the kernel has no arguments".into());
    }
    for (i, a) in args.iter().enumerate() {
        a.validate()?;
        if args[..i].iter().any(|b| b.name == a.name) {
            return Err(format!("argument `{}` is declared twice", a.name));
        }
    }
    if !args.iter().any(ArgSpec::is_output) {
        return Err("no argument is an output".into());
    }
    Ok(())
}

/// The 32-byte seed of one chunk's generator.
pub fn chunk_seed(seed: u64, trial: u64, arg: u32, chunk: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&seed.to_le_bytes());
    out[8..16].copy_from_slice(&trial.to_le_bytes());
    out[16..20].copy_from_slice(&arg.to_le_bytes());
    out[20..28].copy_from_slice(&chunk.to_le_bytes());
    out[28..].copy_from_slice(b"evo1");
    out
}

/// Draws `len` values for argument `arg` of `trial`, rounded to `dtype`, as little-endian
/// bytes. Uses every core; the result does not depend on how many there are.
pub fn generate(init: &Init, dtype: DType, len: usize, seed: u64, trial: u64, arg: u32) -> Vec<u8> {
    let size = dtype.size();
    let mut out = vec![0u8; len * size];
    let chunks: Vec<(usize, &mut [u8])> = out.chunks_mut(CHUNK * size).enumerate().collect();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
        .min(chunks.len());
    if workers <= 1 {
        for (i, c) in chunks {
            fill_chunk(init, dtype, chunk_seed(seed, trial, arg, i as u64), c);
        }
    } else {
        let mut buckets: Vec<Vec<(usize, &mut [u8])>> = (0..workers).map(|_| Vec::new()).collect();
        for (k, item) in chunks.into_iter().enumerate() {
            buckets[k % workers].push(item);
        }
        std::thread::scope(|s| {
            for bucket in buckets {
                s.spawn(move || {
                    for (i, c) in bucket {
                        fill_chunk(init, dtype, chunk_seed(seed, trial, arg, i as u64), c);
                    }
                });
            }
        });
    }
    out
}

fn fill_chunk(init: &Init, dtype: DType, seed: [u8; 32], out: &mut [u8]) {
    let mut rng = ChaCha8Rng::from_seed(seed);
    let size = dtype.size();
    let n = out.len() / size;
    match *init {
        Init::Normal { mean, std, scale } => {
            let mut i = 0;
            while i < n {
                // Box-Muller: two independent N(0, 1) draws from two uniform ones.
                let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
                let u2 = rng.random::<f64>();
                let r = (-2.0 * u1.ln()).sqrt();
                let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
                for z in [r * c, r * s] {
                    if i < n {
                        encode(
                            dtype,
                            (mean + std * z) * scale,
                            &mut out[i * size..(i + 1) * size],
                        );
                        i += 1;
                    }
                }
            }
        }
        Init::Uniform { low, high, scale } => {
            for i in 0..n {
                let u = rng.random::<f64>();
                encode(
                    dtype,
                    (low + (high - low) * u) * scale,
                    &mut out[i * size..(i + 1) * size],
                );
            }
        }
    }
}

/// Rounds `v` to `dtype` (floats: to nearest, saturating at the largest finite value;
/// integers: to nearest, clamped) and writes its little-endian bytes into `out`.
pub fn encode(dtype: DType, v: f64, out: &mut [u8]) {
    match dtype {
        DType::F32 => {
            let x = v.clamp(f32::MIN as f64, f32::MAX as f64) as f32;
            out.copy_from_slice(&x.to_le_bytes());
        }
        DType::F16 => {
            let x = f16::from_f64(v.clamp(f16::MIN.to_f64(), f16::MAX.to_f64()));
            out.copy_from_slice(&x.to_bits().to_le_bytes());
        }
        DType::Bf16 => {
            let x = bf16::from_f64(v.clamp(bf16::MIN.to_f64(), bf16::MAX.to_f64()));
            out.copy_from_slice(&x.to_bits().to_le_bytes());
        }
        // float8's conversions saturate to the largest finite value.
        DType::E4m3 => out[0] = F8E4M3::from_f64(v).to_bits(),
        DType::E5m2 => out[0] = F8E5M2::from_f64(v).to_bits(),
        DType::I32 => {
            let x = v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32;
            out.copy_from_slice(&x.to_le_bytes());
        }
        DType::I64 => {
            let x = v.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64;
            out.copy_from_slice(&x.to_le_bytes());
        }
    }
}

/// Encodes a whole slice.
pub fn encode_all(dtype: DType, values: &[f64]) -> Vec<u8> {
    let size = dtype.size();
    let mut out = vec![0u8; values.len() * size];
    for (v, o) in values.iter().zip(out.chunks_exact_mut(size)) {
        encode(dtype, *v, o);
    }
    out
}

/// One element's value.
pub fn decode(dtype: DType, b: &[u8]) -> f64 {
    match dtype {
        DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        DType::F16 => f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64(),
        DType::Bf16 => bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64(),
        DType::E4m3 => F8E4M3::from_bits(b[0]).to_f64(),
        DType::E5m2 => F8E5M2::from_bits(b[0]).to_f64(),
        DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        DType::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f64,
    }
}

/// Every element's value.
pub fn decode_all(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(dtype.size())
        .map(|b| decode(dtype, b))
        .collect()
}

/// The byte outputs are filled with before every launch. For every float type a buffer of
/// 0xFF bytes is NaN element by element (f32, f16, bf16: all-ones exponent with a non-zero
/// mantissa; e4m3: S.1111.111 is its only NaN; e5m2: S.11111.11 is a NaN). Integers get
/// 0xA5 (0xA5A5A5A5 = -1515870811 as i32), a value no kernel writes by accident.
pub fn poison_byte(dtype: DType) -> u8 {
    if dtype.is_float() {
        0xFF
    } else {
        0xA5
    }
}

/// Whether one element is still bit-equal to the poison pattern (never written).
pub fn is_poisoned(dtype: DType, element: &[u8]) -> bool {
    let p = poison_byte(dtype);
    element.iter().all(|&b| b == p)
}

/// A scalar's bytes as the kernel receives it.
pub fn scalar_bytes(dtype: DType, value: Scalar) -> Result<Vec<u8>, String> {
    let as_int = |v: Scalar| -> Result<i64, String> {
        match v {
            Scalar::Int(i) => Ok(i),
            Scalar::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
            Scalar::Float(f) => Err(format!("{f} is not an integer")),
        }
    };
    match dtype {
        DType::I32 => {
            let v = as_int(value)?;
            let v = i32::try_from(v).map_err(|_| format!("{v} does not fit in i32"))?;
            Ok(v.to_le_bytes().to_vec())
        }
        DType::I64 => Ok(as_int(value)?.to_le_bytes().to_vec()),
        DType::F32 => {
            let v = match value {
                Scalar::Int(i) => i as f64,
                Scalar::Float(f) => f,
            };
            if !v.is_finite() {
                return Err(format!("{v} is not finite"));
            }
            Ok((v as f32).to_le_bytes().to_vec())
        }
        other => Err(format!("a scalar cannot be {}", other.as_str())),
    }
}

/// Writes the initial values of every input and inout buffer of `trial` to
/// `dir/<name>.bin` (raw little-endian elements), for PyTorch baselines to load. Returns the
/// files by argument name.
pub fn write_trial_inputs(
    args: &[ArgSpec],
    seed: u64,
    trial: u64,
    dir: &Path,
) -> std::io::Result<Vec<(String, PathBuf)>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if !a.has_initial_values() {
            continue;
        }
        let bytes = generate(&a.init, a.dtype, a.len as usize, seed, trial, i as u32);
        let path = dir.join(format!("{}.bin", a.name));
        std::fs::write(&path, bytes)?;
        files.push((a.name.clone(), path));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOATS: [DType; 5] = [
        DType::F32,
        DType::F16,
        DType::Bf16,
        DType::E4m3,
        DType::E5m2,
    ];
    const ALL: [DType; 7] = [
        DType::F32,
        DType::F16,
        DType::Bf16,
        DType::E4m3,
        DType::E5m2,
        DType::I32,
        DType::I64,
    ];

    fn normal() -> Init {
        Init::default()
    }

    #[test]
    fn generation_is_reproducible_and_differs_by_trial_arg_and_seed() {
        let a = generate(&normal(), DType::F32, 1000, 7, 0, 0);
        assert_eq!(a, generate(&normal(), DType::F32, 1000, 7, 0, 0));
        assert_ne!(a, generate(&normal(), DType::F32, 1000, 7, 1, 0));
        assert_ne!(a, generate(&normal(), DType::F32, 1000, 7, 0, 1));
        assert_ne!(a, generate(&normal(), DType::F32, 1000, 8, 0, 0));
    }

    #[test]
    fn chunks_are_independent_of_thread_count_and_prefix_stable() {
        // A longer buffer starts with the same chunks as a shorter one.
        let n = CHUNK * 2 + 17;
        let long = generate(&normal(), DType::Bf16, n + CHUNK, 1, 2, 3);
        let short = generate(&normal(), DType::Bf16, n, 1, 2, 3);
        assert_eq!(&long[..CHUNK * 2 * 2], &short[..CHUNK * 2 * 2]);
        // Chunk by chunk, the same as a single-threaded fill.
        let mut single = vec![0u8; n * 2];
        for (i, c) in single.chunks_mut(CHUNK * 2).enumerate() {
            fill_chunk(&normal(), DType::Bf16, chunk_seed(1, 2, 3, i as u64), c);
        }
        assert_eq!(single, short);
    }

    #[test]
    fn normal_draws_have_the_requested_moments() {
        let init = Init::Normal {
            mean: 1.5,
            std: 2.0,
            scale: 0.5,
        };
        let v = decode_all(DType::F32, &generate(&init, DType::F32, 200_000, 3, 0, 0));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((mean - 0.75).abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 1.0).abs() < 0.01, "std {}", var.sqrt());
    }

    #[test]
    fn uniform_draws_stay_in_range_and_scale() {
        let init = Init::Uniform {
            low: -2.0,
            high: 4.0,
            scale: 0.5,
        };
        let v = decode_all(DType::F32, &generate(&init, DType::F32, 50_000, 3, 0, 0));
        assert!(v.iter().all(|&x| (-1.0..=2.0).contains(&x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn values_are_rounded_to_the_element_type() {
        for dtype in ALL {
            let bytes = generate(&normal(), dtype, 4096, 5, 0, 0);
            assert_eq!(bytes.len(), 4096 * dtype.size());
            // Decoding then re-encoding gives the same bytes: every value is representable.
            let again = encode_all(dtype, &decode_all(dtype, &bytes));
            assert_eq!(again, bytes, "{}", dtype.as_str());
            assert!(decode_all(dtype, &bytes).iter().all(|x| x.is_finite()));
        }
        // Integers get integral values; normal draws are not all zero.
        let ints = decode_all(DType::I32, &generate(&normal(), DType::I32, 1000, 5, 0, 0));
        assert!(ints.iter().all(|x| x.fract() == 0.0));
        assert!(ints.iter().any(|&x| x != 0.0));
    }

    #[test]
    fn known_encodings() {
        let enc = |d, v| encode_all(d, &[v]);
        assert_eq!(enc(DType::F32, 1.0), 1.0f32.to_le_bytes());
        assert_eq!(enc(DType::F16, 1.0), 0x3C00u16.to_le_bytes());
        assert_eq!(enc(DType::Bf16, 1.0), 0x3F80u16.to_le_bytes());
        assert_eq!(enc(DType::Bf16, -2.0), 0xC000u16.to_le_bytes());
        assert_eq!(enc(DType::E4m3, 1.0), [0x38]);
        assert_eq!(enc(DType::E5m2, 1.0), [0x3C]);
        // Saturation at the largest finite value.
        assert_eq!(enc(DType::E4m3, 1000.0), [0x7E]);
        assert_eq!(decode(DType::E4m3, &[0x7E]), 448.0);
        assert_eq!(enc(DType::E5m2, 1.0e6), [0x7B]);
        assert_eq!(decode(DType::E5m2, &[0x7B]), 57344.0);
        assert_eq!(decode(DType::F16, &enc(DType::F16, 1.0e9)), 65504.0);
        assert!(decode(DType::Bf16, &enc(DType::Bf16, 1.0e300)).is_finite());
        assert_eq!(enc(DType::I32, 2.5), 3i32.to_le_bytes()); // round half away from zero
        assert_eq!(enc(DType::I32, -1.4), (-1i32).to_le_bytes());
        assert_eq!(enc(DType::I64, 1.0e30), i64::MAX.to_le_bytes());
        // Rounding to nearest in bf16 (ulp 2^-7 at 1): halfway cases tie to even.
        assert_eq!(
            enc(DType::Bf16, 1.0 + 2f64.powi(-8)),
            0x3F80u16.to_le_bytes()
        );
        assert_eq!(
            enc(DType::Bf16, 1.0 + 3.0 * 2f64.powi(-8)),
            0x3F82u16.to_le_bytes()
        );
        assert_eq!(
            enc(DType::Bf16, 1.0 + 3.0 * 2f64.powi(-9)),
            0x3F81u16.to_le_bytes()
        );
    }

    #[test]
    fn poison_is_nan_for_every_float_type_and_detected() {
        for dtype in FLOATS {
            let elem = vec![poison_byte(dtype); dtype.size()];
            assert!(decode(dtype, &elem).is_nan(), "{}", dtype.as_str());
            assert!(is_poisoned(dtype, &elem));
            // The NaN a kernel writes (canonical NaN) is not the poison pattern.
            let written = encode_all(dtype, &[0.0]);
            assert!(!is_poisoned(dtype, &written));
        }
        for dtype in [DType::I32, DType::I64] {
            let elem = vec![poison_byte(dtype); dtype.size()];
            assert!(is_poisoned(dtype, &elem));
            assert!(!is_poisoned(dtype, &encode_all(dtype, &[-1.0])));
            assert!(decode(dtype, &elem) < -1.0e9);
        }
        assert!(!is_poisoned(DType::F32, &f32::NAN.to_le_bytes()));
    }

    #[test]
    fn scalars() {
        assert_eq!(
            scalar_bytes(DType::I32, Scalar::Int(7)).unwrap(),
            7i32.to_le_bytes()
        );
        assert!(scalar_bytes(DType::I32, Scalar::Int(1 << 40)).is_err());
        assert_eq!(
            scalar_bytes(DType::I64, Scalar::Int(1 << 40)).unwrap(),
            (1i64 << 40).to_le_bytes()
        );
        assert_eq!(
            scalar_bytes(DType::F32, Scalar::Int(3)).unwrap(),
            3.0f32.to_le_bytes()
        );
        assert_eq!(
            scalar_bytes(DType::F32, Scalar::Float(0.125)).unwrap(),
            0.125f32.to_le_bytes()
        );
        assert_eq!(
            scalar_bytes(DType::I32, Scalar::Float(4.0)).unwrap(),
            4i32.to_le_bytes()
        );
        assert!(scalar_bytes(DType::I32, Scalar::Float(0.5)).is_err());
        assert!(scalar_bytes(DType::Bf16, Scalar::Int(1)).is_err());
        assert!(scalar_bytes(DType::F32, Scalar::Float(f64::INFINITY)).is_err());
    }

    fn buffer(name: &str, role: ArgRole, len: u64) -> ArgSpec {
        ArgSpec {
            name: name.into(),
            kind: ArgKind::Buffer,
            dtype: DType::Bf16,
            role,
            init: Init::default(),
            len,
            shape: vec![],
            value: None,
        }
    }

    #[test]
    fn argument_checks() {
        let out = buffer("O", ArgRole::Output, 8);
        assert!(validate_args(&[buffer("A", ArgRole::Input, 8), out.clone()]).is_ok());
        assert!(validate_args(&[buffer("A", ArgRole::Input, 8)])
            .unwrap_err()
            .contains("output"));
        assert!(validate_args(&[out.clone(), out.clone()])
            .unwrap_err()
            .contains("twice"));
        assert!(validate_args(&[buffer("O", ArgRole::Output, 0)]).is_err());
        let mut shaped = out.clone();
        shaped.shape = vec![2, 4];
        assert!(shaped.validate().is_ok());
        shaped.shape = vec![3, 4];
        assert!(shaped.validate().is_err());
        let scalar = ArgSpec {
            kind: ArgKind::Scalar,
            dtype: DType::I32,
            len: 0,
            value: None,
            ..buffer("N", ArgRole::Input, 0)
        };
        assert!(scalar.validate().unwrap_err().contains("no value"));
        assert_eq!(out.reference_dtype(), DType::F32);
        assert_eq!(
            buffer("A", ArgRole::Input, 8).reference_dtype(),
            DType::Bf16
        );
        assert_eq!(out.torch_shape(), vec![8]);
    }

    #[test]
    fn json_form() {
        let text = r#"{"name":"N","kind":"scalar","dtype":"i32","value":4096}"#;
        let a: ArgSpec = serde_json::from_str(text).unwrap();
        assert_eq!(a.value, Some(Scalar::Int(4096)));
        assert_eq!(a.role, ArgRole::Input);
        let text = r#"{"name":"s","kind":"scalar","dtype":"f32","value":0.5}"#;
        let a: ArgSpec = serde_json::from_str(text).unwrap();
        assert_eq!(a.value, Some(Scalar::Float(0.5)));
        let b = buffer("O", ArgRole::Output, 8);
        let back: ArgSpec = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn trial_inputs_are_written_for_inputs_only() {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            buffer("A", ArgRole::Input, 10),
            buffer("O", ArgRole::Output, 10),
        ];
        let files = write_trial_inputs(&args, 1, 0, dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "A");
        let bytes = std::fs::read(&files[0].1).unwrap();
        assert_eq!(bytes, generate(&args[0].init, DType::Bf16, 10, 1, 0, 0));
    }
}
