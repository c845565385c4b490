//! Choosing the device a model runs on.
//!
//! [`parse_device`] turns a user's device string (a CLI flag or config value) into a candle
//! [`Device`]:
//!
//! | string | device |
//! |---|---|
//! | `cpu` | the CPU (threads: [`cpu_threads`]) |
//! | `cuda`, `cuda:N` | CUDA GPU 0 or N (needs the `cuda` cargo feature) |
//! | `metal`, `metal:N` | Apple GPU 0 or N (needs the `metal` cargo feature) |
//! | `auto` | CUDA GPU 0 if built in and it opens, else Metal GPU 0 likewise, else the CPU |
//!
//! Asking for a GPU backend the binary was not compiled with is an error that says which cargo
//! feature is missing, rather than a silent fall-back to the CPU: a user who writes `cuda`
//! expects a GPU. Only `auto` falls back.
//!
//! ```
//! use slmgate_local_model::device::parse_device;
//! assert!(parse_device("cpu").unwrap().is_cpu());
//! assert!(parse_device("auto").is_ok());
//! assert!(parse_device("tpu").is_err());
//! ```

use candle_core::Device;

/// Why a device string could not be turned into a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The string names no known device.
    #[error("unknown device {0:?} (expected one of: cpu, cuda, cuda:N, metal, metal:N, auto)")]
    Unknown(String),
    /// The ordinal after `cuda:` / `metal:` is not a number.
    #[error("invalid device ordinal in {0:?} (expected for example `cuda:0`)")]
    BadOrdinal(String),
    /// The GPU backend was not compiled into this binary.
    #[error("slmgate was built without the `{feature}` feature; rebuild with `--features {feature}` or use `cpu`")]
    NotCompiled {
        /// The missing cargo feature (`cuda` or `metal`).
        feature: &'static str,
    },
    /// The backend is compiled in but the device could not be opened (no driver, no such GPU).
    #[error("cannot open device {device}: {source}")]
    Unavailable {
        /// The device as asked for (`cuda:1`).
        device: String,
        /// candle's error (boxed: it is large).
        #[source]
        source: Box<candle_core::Error>,
    },
}

/// A GPU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Cuda,
    Metal,
}

impl Backend {
    fn feature(self) -> &'static str {
        match self {
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
        }
    }

    /// Returns true if and only if candle was compiled with this backend.
    fn compiled(self) -> bool {
        match self {
            Backend::Cuda => candle_core::utils::cuda_is_available(),
            Backend::Metal => candle_core::utils::metal_is_available(),
        }
    }

    fn open(self, ordinal: usize) -> candle_core::Result<Device> {
        match self {
            Backend::Cuda => Device::new_cuda(ordinal),
            Backend::Metal => Device::new_metal(ordinal),
        }
    }
}

/// Parses a device string: `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N` or `auto`
/// (case-insensitive, surrounding spaces ignored).
///
/// A GPU device is opened here, so an error names the problem at startup: an unknown string,
/// a backend not compiled in ([`DeviceError::NotCompiled`]) or a device that cannot be opened
/// ([`DeviceError::Unavailable`]). `auto` never fails: it falls back to the CPU.
pub fn parse_device(s: &str) -> Result<Device, DeviceError> {
    let spec = s.trim().to_ascii_lowercase();
    let (name, ordinal) = match spec.split_once(':') {
        Some((name, ordinal)) => {
            let ordinal = ordinal
                .trim()
                .parse::<usize>()
                .map_err(|_| DeviceError::BadOrdinal(s.to_string()))?;
            (name.trim(), Some(ordinal))
        }
        None => (spec.as_str(), None),
    };
    let backend = match (name, ordinal) {
        ("cpu", None) => return Ok(Device::Cpu),
        ("auto", None) => return Ok(auto_device()),
        ("cuda", _) => Backend::Cuda,
        ("metal", _) => Backend::Metal,
        _ => return Err(DeviceError::Unknown(s.to_string())),
    };
    if !backend.compiled() {
        return Err(DeviceError::NotCompiled {
            feature: backend.feature(),
        });
    }
    let ordinal = ordinal.unwrap_or(0);
    backend
        .open(ordinal)
        .map_err(|source| DeviceError::Unavailable {
            device: format!("{}:{ordinal}", backend.feature()),
            source: Box::new(source),
        })
}

/// The best device available: CUDA GPU 0, then Metal GPU 0, then the CPU.
fn auto_device() -> Device {
    for backend in [Backend::Cuda, Backend::Metal] {
        if backend.compiled() {
            match backend.open(0) {
                Ok(device) => return device,
                Err(err) => tracing::debug!(
                    backend = backend.feature(),
                    error = %err,
                    "device auto: backend compiled in but unusable"
                ),
            }
        }
    }
    Device::Cpu
}

/// A short name for a device, for logs and `/health`-style reports: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The number of threads candle's CPU kernels use.
///
/// candle reads `RAYON_NUM_THREADS` (matmuls) and `CANDLE_NUM_THREADS` (quantized kernels,
/// defaulting to the former); without them it uses the physical cores this process may run
/// on. This reports the matmul count, which is what the embedder's speed depends on.
pub fn cpu_threads() -> usize {
    candle_core::utils::get_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("  CPU ").unwrap().is_cpu());
        // Whatever was compiled in, `auto` yields a device.
        let auto = parse_device("auto").unwrap();
        if !candle_core::utils::cuda_is_available() && !candle_core::utils::metal_is_available() {
            assert!(auto.is_cpu());
        }
    }

    #[test]
    fn unknown_devices_are_errors() {
        for s in ["", "tpu", "gpu", "cpu:0", "auto:1", "cudaa", "cuda0"] {
            let err = parse_device(s).unwrap_err();
            assert!(matches!(err, DeviceError::Unknown(_)), "{s:?} gave {err:?}");
            assert!(err.to_string().contains("expected one of"), "{err}");
        }
    }

    #[test]
    fn bad_ordinals_are_errors() {
        for s in ["cuda:", "cuda:x", "metal:-1", "cuda:1.5"] {
            let err = parse_device(s).unwrap_err();
            assert!(
                matches!(err, DeviceError::BadOrdinal(_)),
                "{s:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn missing_backends_name_the_feature() {
        for (s, feature) in [
            ("cuda", "cuda"),
            ("cuda:1", "cuda"),
            ("CUDA:0", "cuda"),
            ("metal", "metal"),
            ("metal:0", "metal"),
        ] {
            let compiled = match feature {
                "cuda" => candle_core::utils::cuda_is_available(),
                _ => candle_core::utils::metal_is_available(),
            };
            if compiled {
                continue;
            }
            let err = parse_device(s).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "slmgate was built without the `{feature}` feature; \
                     rebuild with `--features {feature}` or use `cpu`"
                )
            );
        }
    }

    #[test]
    fn names() {
        assert_eq!(device_name(&Device::Cpu), "cpu");
        assert!(!device_name(&parse_device("auto").unwrap()).is_empty());
    }

    #[test]
    fn threads_are_positive() {
        assert!(cpu_threads() >= 1);
    }
}
