//! Where the tensors of a run live: the CPU (burn's Flex backend, where the hand-written passes of
//! [`crate::psums`], [`crate::adc`] and [`crate::activation`] are the fast path) or a GPU (burn's
//! wgpu backend: Vulkan on a GPU, OpenGL where only Mesa's llvmpipe is installed), which takes the
//! generic tensor-op formulation of every pass. The GPU needs a build with the `gpu` feature.
//!
//! The choice is not part of an experiment's identity: the same cell trained on either device is
//! the same experiment (GPU float reductions need not be bit-identical run to run; see README).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// The device a command runs on (`--device cpu|gpu`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDevice {
    /// burn's Flex backend with the hand-written kernels.
    #[default]
    Cpu,
    /// burn's wgpu backend (feature `gpu`), generic tensor ops.
    Gpu,
}

/// Why a device could not be opened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "`--device gpu` was asked of a binary built without the `gpu` feature; build it with \
         `cargo run --release -p xtask --features gpu -- ...` (needs a Vulkan driver and \
         Debian's `libvulkan1`, or Mesa's OpenGL for a CPU-emulated adapter)"
    )]
    /// The binary was built without the `gpu` feature.
    NotBuilt,
    #[error(
        "`--device gpu`: wgpu found no usable adapter ({0}). On a GPU machine install the Vulkan \
         loader (Debian: `libvulkan1`) and the vendor's driver (set VK_DRIVER_FILES to its ICD \
         JSON if the loader does not find it); without a GPU, Mesa's OpenGL (`libegl1 \
         libegl-mesa0 libgl1-mesa-dri`) gives a slow CPU-emulated adapter"
    )]
    /// wgpu found no adapter (its message).
    NoAdapter(String),
    /// A device name that is neither `cpu` nor `gpu`.
    #[error("`--device`: {0:?} is not a device; expected `cpu` or `gpu`")]
    Unknown(String),
}

impl ComputeDevice {
    /// The name used on the command line and in files.
    pub fn label(self) -> &'static str {
        match self {
            ComputeDevice::Cpu => "cpu",
            ComputeDevice::Gpu => "gpu",
        }
    }

    /// Opens the device (without autodiff; add `.autodiff()` for training). The GPU is opened
    /// once per process and shared by every later call.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            ComputeDevice::Cpu => Ok(Device::flex()),
            ComputeDevice::Gpu => gpu::open().map(|opened| opened.device.clone()),
        }
    }

    /// A line naming the hardware behind the device (the wgpu adapter and its graphics API
    /// for the GPU), for logs and the GPU check.
    pub fn describe(self) -> Result<String, DeviceError> {
        match self {
            ComputeDevice::Cpu => Ok(format!("CPU, burn Flex backend, {} threads", rayon::current_num_threads())),
            ComputeDevice::Gpu => gpu::open().map(|opened| opened.adapter.clone()),
        }
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for ComputeDevice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(ComputeDevice::Cpu),
            "gpu" => Ok(ComputeDevice::Gpu),
            other => Err(DeviceError::Unknown(other.to_string())),
        }
    }
}

#[cfg(feature = "gpu")]
mod gpu {
    use std::sync::OnceLock;

    use burn::tensor::Device;

    use super::DeviceError;

    pub(super) struct Opened {
        pub device: Device,
        pub adapter: String,
    }

    /// wgpu's runtime refuses a second initialization, so the first outcome is kept.
    pub(super) fn open() -> Result<&'static Opened, DeviceError> {
        static OPENED: OnceLock<Result<Opened, DeviceError>> = OnceLock::new();
        OPENED
            .get_or_init(|| {
                let (device, setup) =
                    Device::wgpu_options().init_with_setup().map_err(|e| DeviceError::NoAdapter(e.to_string()))?;
                let info = setup.adapter.get_info();
                let adapter = format!(
                    "GPU, burn wgpu backend: {} ({:?}, {:?}, driver {} {})",
                    info.name, info.backend, info.device_type, info.driver, info.driver_info
                );
                Ok(Opened { device, adapter })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[cfg(not(feature = "gpu"))]
mod gpu {
    use burn::tensor::Device;

    use super::DeviceError;

    #[allow(dead_code)] // never made: this build has no GPU to open
    pub(super) struct Opened {
        pub device: Device,
        pub adapter: String,
    }

    pub(super) fn open() -> Result<&'static Opened, DeviceError> {
        Err(DeviceError::NotBuilt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_both_devices() {
        for d in [ComputeDevice::Cpu, ComputeDevice::Gpu] {
            assert_eq!(d.label().parse::<ComputeDevice>().unwrap(), d);
        }
        let e = "cuda".parse::<ComputeDevice>().unwrap_err().to_string();
        assert!(e.contains("\"cuda\"") && e.contains("`cpu` or `gpu`"), "{e}");
    }

    #[cfg(not(feature = "gpu"))]
    #[test]
    fn a_cpu_only_build_refuses_the_gpu_with_the_build_command() {
        let e = ComputeDevice::Gpu.open().unwrap_err();
        assert_eq!(e, DeviceError::NotBuilt);
        assert!(e.to_string().contains("--features gpu"), "{e}");
    }
}
