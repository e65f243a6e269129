//! Finding and opening a GPU: the adapters wgpu sees on its primary APIs (Vulkan, Metal, DX12),
//! described for `latte devices`, and the choice among them (`wgpu`, `wgpu:N`, or `auto`, which
//! takes a hardware GPU and never a software rasteriser).
//!
//! This module owns adapter discovery and the device's limits and features; it must not compute.

use crate::backend::BackendError;

/// What kind of device an adapter drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKind {
    Discrete,
    Integrated,
    Virtual,
    /// A CPU implementation such as Mesa's lavapipe: correct, slow.
    Software,
    Other,
}

impl AdapterKind {
    fn of(t: wgpu::DeviceType) -> Self {
        match t {
            wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
            wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
            wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
            wgpu::DeviceType::Cpu => AdapterKind::Software,
            wgpu::DeviceType::Other => AdapterKind::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AdapterKind::Discrete => "discrete",
            AdapterKind::Integrated => "integrated",
            AdapterKind::Virtual => "virtual",
            AdapterKind::Software => "software",
            AdapterKind::Other => "other",
        }
    }

    /// Hardware that `auto` may pick.
    pub fn is_hardware(self) -> bool {
        matches!(
            self,
            AdapterKind::Discrete | AdapterKind::Integrated | AdapterKind::Virtual
        )
    }
}

/// One adapter, as `latte devices` lists it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    /// `Vulkan`, `Metal`, `Dx12`.
    pub api: String,
    pub kind: AdapterKind,
    pub driver: String,
    pub max_buffer_bytes: u64,
    pub max_binding_bytes: u64,
    pub workgroup_storage_bytes: u32,
    pub subgroups: bool,
    pub shader_f16: bool,
}

/// Which adapter to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterChoice {
    /// The best hardware adapter, else the best software one (`--device wgpu`).
    Best,
    /// Hardware only (`--device auto`): `None` when there is none.
    Hardware,
    /// The adapter of this index in [`adapters`] (`--device wgpu:N`).
    Index(usize),
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    wgpu::Instance::new(desc)
}

fn summary(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let features = adapter.features();
    AdapterSummary {
        index,
        name: info.name,
        api: format!("{:?}", info.backend),
        kind: AdapterKind::of(info.device_type),
        driver: [info.driver, info.driver_info]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        max_buffer_bytes: limits.max_buffer_size,
        max_binding_bytes: limits.max_storage_buffer_binding_size,
        workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
    }
}

fn enumerate() -> Vec<wgpu::Adapter> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::PRIMARY))
}

/// Every adapter on the primary APIs, in wgpu's order (the indices of `wgpu:N`).
pub fn adapters() -> Vec<AdapterSummary> {
    enumerate()
        .iter()
        .enumerate()
        .map(|(i, a)| summary(i, a))
        .collect()
}

/// Rank for choosing: discrete first, then integrated, virtual, other, software.
fn rank(kind: AdapterKind) -> u8 {
    match kind {
        AdapterKind::Discrete => 0,
        AdapterKind::Integrated => 1,
        AdapterKind::Virtual => 2,
        AdapterKind::Other => 3,
        AdapterKind::Software => 4,
    }
}

/// The adapter `choice` names, with its summary; `Ok(None)` when `Hardware` finds none.
pub(super) fn select(
    choice: AdapterChoice,
) -> Result<Option<(wgpu::Adapter, AdapterSummary)>, BackendError> {
    let all = enumerate();
    let summaries: Vec<AdapterSummary> =
        all.iter().enumerate().map(|(i, a)| summary(i, a)).collect();
    let pick = match choice {
        AdapterChoice::Index(i) => {
            if i >= all.len() {
                return Err(BackendError::Device(format!(
                    "wgpu:{i}: there are {} GPU adapters (see `latte devices`)",
                    all.len()
                )));
            }
            Some(i)
        }
        AdapterChoice::Best | AdapterChoice::Hardware => summaries
            .iter()
            .filter(|s| choice == AdapterChoice::Best || s.kind.is_hardware())
            .min_by_key(|s| rank(s.kind))
            .map(|s| s.index),
    };
    match pick {
        Some(i) => {
            let adapter = all.into_iter().nth(i).ok_or_else(|| {
                BackendError::Device(format!("adapter {i} disappeared while opening it"))
            })?;
            Ok(Some((adapter, summaries[i].clone())))
        }
        None if choice == AdapterChoice::Hardware => Ok(None),
        None => Err(BackendError::Device(
            "no GPU adapter found (Vulkan, Metal or DX12; on Linux install a Vulkan driver, e.g. \
             mesa-vulkan-drivers)"
                .into(),
        )),
    }
}
