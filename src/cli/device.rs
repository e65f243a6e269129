//! `--device` for every command that computes, and `latte devices`: opens the backend a run asks
//! for (`auto` takes a hardware GPU and falls back to the CPU with a one-line notice) and hands it
//! to the command's generic body.

use anyhow::{bail, Result};
use clap::Args;
use latte::backend::cpu::{CpuBackend, CPU};
use latte::backend::{Backend, DeviceChoice};

#[cfg(feature = "wgpu")]
use latte::backend::wgpu::{adapters, AdapterChoice, WgpuBackend};

#[cfg(feature = "wgpu")]
use super::human_bytes;

/// An opened backend.
pub enum Device {
    Cpu,
    #[cfg(feature = "wgpu")]
    Wgpu(Box<WgpuBackend>),
}

impl Device {
    /// Opens what `choice` names; `auto` never fails (it falls back to the CPU).
    pub fn open(choice: DeviceChoice) -> Result<Device> {
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            #[cfg(feature = "wgpu")]
            DeviceChoice::Auto => match WgpuBackend::open(AdapterChoice::Hardware) {
                Ok(Some(b)) => Ok(Device::Wgpu(Box::new(b))),
                Ok(None) => Ok(Device::Cpu),
                Err(e) => {
                    eprintln!("latte: no usable GPU ({e}); running on the CPU");
                    Ok(Device::Cpu)
                }
            },
            #[cfg(feature = "wgpu")]
            DeviceChoice::Wgpu(index) => {
                let choice = index.map_or(AdapterChoice::Best, AdapterChoice::Index);
                match WgpuBackend::open(choice)? {
                    Some(b) => {
                        if !b.adapter().kind.is_hardware() {
                            eprintln!(
                                "latte: {} is a software adapter: correct, but far slower than a GPU",
                                b.adapter().name
                            );
                        }
                        Ok(Device::Wgpu(Box::new(b)))
                    }
                    None => bail!("no GPU adapter found"),
                }
            }
            #[cfg(not(feature = "wgpu"))]
            DeviceChoice::Auto => Ok(Device::Cpu),
            #[cfg(not(feature = "wgpu"))]
            DeviceChoice::Wgpu(_) => bail!("this latte was built without the `wgpu` feature"),
        }
    }

    /// One line for summaries.
    pub fn description(&self) -> String {
        match self {
            Device::Cpu => CPU.description(),
            #[cfg(feature = "wgpu")]
            Device::Wgpu(b) => b.description(),
        }
    }
}

/// Evaluates `$body` with `$b` bound to the opened backend (each arm is its own monomorphised
/// instance of the generic body).
macro_rules! on_device {
    ($device:expr, $b:ident => $body:expr) => {
        match $device {
            crate::cli::device::Device::Cpu => {
                let $b = &latte::backend::cpu::CPU;
                $body
            }
            #[cfg(feature = "wgpu")]
            crate::cli::device::Device::Wgpu(gpu) => {
                let $b: &latte::backend::wgpu::WgpuBackend = &**gpu;
                $body
            }
        }
    };
}
pub(crate) use on_device;

/// List the compute devices: the CPU and every GPU adapter wgpu finds (Vulkan, Metal, DX12)
#[derive(Args)]
pub struct DevicesArgs {}

pub fn run(_args: DevicesArgs) -> Result<()> {
    let cpu: &CpuBackend = &CPU;
    println!("cpu      {}", cpu.description());
    #[cfg(feature = "wgpu")]
    {
        let list = adapters();
        if list.is_empty() {
            println!(
                "no GPU adapters (on Linux, a Vulkan driver such as mesa-vulkan-drivers is needed)"
            );
        }
        for a in list {
            println!(
                "wgpu:{}   {} ({}, {}{})",
                a.index,
                a.name,
                a.api,
                a.kind.name(),
                if a.kind.is_hardware() {
                    ""
                } else {
                    "; `auto` skips it"
                }
            );
            println!(
                "         driver {}; largest buffer {}, storage binding {}, workgroup memory {}; subgroups {}, shader-f16 {}; device memory size: not reported by wgpu",
                if a.driver.is_empty() { "-" } else { &a.driver },
                human_bytes(a.max_buffer_bytes),
                human_bytes(a.max_binding_bytes),
                human_bytes(a.workgroup_storage_bytes as u64),
                if a.subgroups { "yes" } else { "no" },
                if a.shader_f16 { "yes" } else { "no" },
            );
        }
    }
    #[cfg(not(feature = "wgpu"))]
    println!("(built without the `wgpu` feature: no GPU backend)");
    Ok(())
}
