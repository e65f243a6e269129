//! The wgpu backend: the [`Backend`](crate::backend::Backend) operations as WGSL compute kernels
//! (`kernels/wgsl/`) on Vulkan, Metal or DX12.
//!
//! - **Recording.** Ops validate their shapes, write a parameter block into a uniform arena and
//!   record a dispatch (bind groups are cached per kernel and buffer set). Recorded work is
//!   submitted when the arena fills, before a host write, and when the host reads (`read`,
//!   `synchronize`), so the device runs ahead of the host within a step.
//! - **Numerics.** Matrix products round the activations as the CPU rounds them for the weight
//!   type's dot partner (Q8_0, Q8_K, F16, BF16), then multiply by the exactly decoded weights in
//!   f32: results match the CPU backend up to summation order.
//! - **Memory.** Every allocation is counted ([`buffer::Ledger`]); weights are repacked to
//!   word-aligned layouts of the same size ([`weights`]); expert groups share a few slots
//!   ([`slots`]). Buffers and bindings are checked against the adapter's limits, which are asked
//!   for explicitly (wgpu's defaults cap a binding at 128 MiB).
//! - **Errors.** Validation errors and device loss are caught (never the default panic) and come
//!   back as [`BackendError`]s from the next operation.
//!
//! This module must not know models: it sees tensors, buffers and shapes.

mod attention;
mod buffer;
mod device;
pub mod kernels;
mod ops;
mod products;
mod residency;
mod slots;
pub mod weights;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use buffer::WgpuBuffer;
pub use device::{adapters, AdapterChoice, AdapterKind, AdapterSummary};
pub use weights::WgpuWeight;

use buffer::{Ledger, RawBuffer};
use kernels::{Access, Kernel};

use crate::backend::{BackendError, DeviceMemory};

/// Bytes of one parameter block in the uniform arena (wgpu's largest uniform-offset alignment).
const PARAM_BLOCK: u64 = 256;
/// Dispatches recorded before the work is submitted.
const PARAM_BLOCKS: u64 = 2048;

/// The read-back staging buffer for reads of up to `bytes` (grown in powers of two).
fn readback_bytes(bytes: u64) -> u64 {
    bytes.next_power_of_two().max(1 << 16)
}

/// A compiled kernel and the layout of its bindings.
struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// One storage binding of a dispatch: a byte range of a device allocation.
#[derive(Clone, Copy)]
struct Bind<'b> {
    raw: &'b Arc<RawBuffer>,
    offset: u64,
    size: u64,
}

impl<'b> Bind<'b> {
    fn whole(raw: &'b Arc<RawBuffer>) -> Self {
        Bind {
            raw,
            offset: 0,
            size: raw.bytes,
        }
    }
}

enum Command {
    Dispatch {
        pipeline: wgpu::ComputePipeline,
        bind_group: wgpu::BindGroup,
        params: u32,
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    },
}

type BindKey = (Kernel, Vec<(u64, u64, u64)>);

#[derive(Default)]
struct Recorder {
    commands: Vec<Command>,
    params: Vec<u8>,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
}

/// Errors wgpu reports outside an error scope, and device loss, kept for the next operation.
#[derive(Default)]
struct Faults {
    error: Option<String>,
    lost: Option<String>,
}

/// A GPU opened through wgpu. See the module docs.
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: AdapterSummary,
    limits: wgpu::Limits,
    ledger: Arc<Ledger>,
    /// Host-visible staging of expert groups (system memory on a discrete GPU): counted apart.
    staging_ledger: Arc<Ledger>,
    faults: Arc<Mutex<Faults>>,
    pipelines: Mutex<HashMap<Kernel, Arc<Pipeline>>>,
    recorder: Mutex<Recorder>,
    params: Arc<RawBuffer>,
    /// Bound where a kernel's optional input (`dummy`) or output (`dummy_out`) is absent.
    dummy: Arc<RawBuffer>,
    dummy_out: Arc<RawBuffer>,
    readback: Mutex<Option<Arc<RawBuffer>>>,
    scratch: Mutex<ops::Scratch>,
    slots: Mutex<slots::Slots>,
    /// The device has the SUBGROUP feature and the kernels use it.
    subgroups: std::sync::atomic::AtomicBool,
    has_subgroups: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WgpuBackend {
    /// Opens the adapter `choice` names; `Ok(None)` when `AdapterChoice::Hardware` finds no
    /// hardware GPU.
    pub fn open(choice: AdapterChoice) -> Result<Option<Self>, BackendError> {
        let Some((adapter, summary)) = device::select(choice)? else {
            return Ok(None);
        };
        let limits = adapter.limits();
        let features = adapter.features() & wgpu::Features::SUBGROUP;
        let has_subgroups = features.contains(wgpu::Features::SUBGROUP);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("latte"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| BackendError::Device(format!("{}: {e}", summary.name)))?;
        let faults = Arc::new(Mutex::new(Faults::default()));
        let sink = faults.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut f = lock(&sink);
            f.error.get_or_insert_with(|| e.to_string());
        }));
        let sink = faults.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                lock(&sink)
                    .lost
                    .get_or_insert(format!("{reason:?}: {message}"));
            }
        });
        let ledger = Arc::new(Ledger::default());
        let make = |bytes: u64, usage: wgpu::BufferUsages, label: &str| {
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            });
            Arc::new(RawBuffer::new(buffer, bytes, &ledger))
        };
        let params = make(
            PARAM_BLOCK * PARAM_BLOCKS,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            "latte params",
        );
        let dummy = make(16, wgpu::BufferUsages::STORAGE, "latte dummy");
        let dummy_out = make(16, wgpu::BufferUsages::STORAGE, "latte dummy output");
        Ok(Some(WgpuBackend {
            device,
            queue,
            adapter: summary,
            limits,
            ledger,
            staging_ledger: Arc::new(Ledger::default()),
            faults,
            pipelines: Mutex::new(HashMap::new()),
            recorder: Mutex::new(Recorder::default()),
            params,
            dummy,
            dummy_out,
            readback: Mutex::new(None),
            scratch: Mutex::new(ops::Scratch::default()),
            slots: Mutex::new(slots::Slots::default()),
            subgroups: std::sync::atomic::AtomicBool::new(has_subgroups),
            has_subgroups,
        }))
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.adapter
    }

    /// Gives the device up now: every later call fails with [`BackendError::DeviceLost`], as after
    /// a driver reset.
    pub fn close(&self) {
        lock(&self.faults)
            .lost
            .get_or_insert_with(|| "the device was closed".into());
        self.device.destroy();
    }

    /// Whether reductions use subgroup operations (by default where the device has them; tests
    /// turn them off to cover the workgroup-memory kernels too).
    pub fn use_subgroups(&self, on: bool) {
        self.subgroups.store(
            on && self.has_subgroups,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn subgroups(&self) -> bool {
        self.subgroups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The largest storage binding, in bytes (weights are split into parts of at most this).
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    pub fn memory(&self) -> DeviceMemory {
        DeviceMemory {
            allocated: self.ledger.allocated(),
            peak: self.ledger.peak(),
        }
    }

    /// The first fault wgpu reported since the last check, as an error.
    fn check_faults(&self) -> Result<(), BackendError> {
        let mut f = lock(&self.faults);
        if let Some(lost) = &f.lost {
            return Err(BackendError::DeviceLost(lost.clone()));
        }
        if let Some(error) = f.error.take() {
            return Err(BackendError::Device(error));
        }
        Ok(())
    }

    /// A device allocation of `bytes` (at least 4), refused cleanly when it exceeds a limit or the
    /// driver runs out of memory. A buffer bound whole (`bound_whole`: activations) must also fit
    /// one storage binding; slots are bound a part at a time.
    fn create(
        &self,
        bytes: u64,
        usage: wgpu::BufferUsages,
        what: &str,
        bound_whole: bool,
    ) -> Result<Arc<RawBuffer>, BackendError> {
        self.check_faults()?;
        let bytes = bytes.max(4).div_ceil(4) * 4;
        let (limit, limit_name) = if bound_whole {
            (
                self.max_binding_bytes().min(self.limits.max_buffer_size),
                "storage binding",
            )
        } else {
            (self.limits.max_buffer_size, "buffer")
        };
        if bytes > limit {
            return Err(BackendError::TooLarge {
                what: what.into(),
                bytes,
                limit,
                limit_name,
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes,
            usage,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(BackendError::OutOfMemory {
                what: format!("{what} ({e})"),
                bytes,
                allocated: self.ledger.allocated(),
            });
        }
        Ok(Arc::new(RawBuffer::new(buffer, bytes, &self.ledger)))
    }

    /// A storage buffer of `len` f32 values (zeroed by wgpu).
    fn storage(&self, len: usize, what: &str) -> Result<WgpuBuffer, BackendError> {
        if len == 0 {
            return Ok(WgpuBuffer::default());
        }
        let bytes = (len as u64)
            .checked_mul(4)
            .ok_or_else(|| BackendError::TooLarge {
                what: what.into(),
                bytes: u64::MAX,
                limit: self.max_binding_bytes(),
                limit_name: "storage binding",
            })?;
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        Ok(WgpuBuffer {
            raw: Some(self.create(bytes, usage, what, true)?),
            len,
        })
    }

    fn pipeline(&self, kernel: Kernel) -> Result<Arc<Pipeline>, BackendError> {
        if let Some(p) = lock(&self.pipelines).get(&kernel) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.entry_point()),
                source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
            });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, access) in kernel.bindings().iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *access == Access::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.entry_point()),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.entry_point()),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry_point()),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry_point()),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(BackendError::Device(format!(
                "kernel {kernel:?} does not compile on {}: {e}",
                self.adapter.name
            )));
        }
        let p = Arc::new(Pipeline { pipeline, layout });
        lock(&self.pipelines).insert(kernel, p.clone());
        Ok(p)
    }

    /// Records one dispatch of `kernel` with `params` (u32 words; f32 fields as bits) and its
    /// storage `bindings`, over `groups` workgroups.
    fn dispatch(
        &self,
        kernel: Kernel,
        params: &[u32],
        bindings: &[Bind<'_>],
        groups: [u32; 3],
    ) -> Result<(), BackendError> {
        self.check_faults()?;
        if groups.contains(&0) {
            return Ok(());
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(BackendError::Device(format!(
                "{kernel:?}: {groups:?} workgroups exceed the device's {max} per dimension"
            )));
        }
        debug_assert_eq!(bindings.len(), kernel.bindings().len());
        let pipeline = self.pipeline(kernel)?;
        let mut rec = lock(&self.recorder);
        if rec.params.len() as u64 >= PARAM_BLOCK * PARAM_BLOCKS {
            self.flush(&mut rec)?;
        }
        let offset = rec.params.len() as u32;
        let bytes: Vec<u8> = params.iter().flat_map(|w| w.to_le_bytes()).collect();
        rec.params.extend_from_slice(&bytes);
        rec.params.resize((offset as u64 + PARAM_BLOCK) as usize, 0);
        let key: BindKey = (
            kernel,
            bindings
                .iter()
                .map(|b| (b.raw.id, b.offset, b.size))
                .collect(),
        );
        let bind_group = match rec.bind_groups.get(&key) {
            Some(g) => g.clone(),
            None => {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.params.buffer,
                        offset: 0,
                        size: wgpu::BufferSize::new(PARAM_BLOCK),
                    }),
                }];
                for (i, b) in bindings.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &b.raw.buffer,
                            offset: b.offset,
                            size: wgpu::BufferSize::new(b.size),
                        }),
                    });
                }
                let g = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.layout,
                    entries: &entries,
                });
                rec.bind_groups.insert(key, g.clone());
                g
            }
        };
        rec.commands.push(Command::Dispatch {
            pipeline: pipeline.pipeline.clone(),
            bind_group,
            params: offset,
            groups,
        });
        Ok(())
    }

    /// Records a device-side copy.
    fn record_copy(&self, src: Bind<'_>, dst: Bind<'_>) -> Result<(), BackendError> {
        self.check_faults()?;
        let mut rec = lock(&self.recorder);
        rec.commands.push(Command::Copy {
            src: src.raw.buffer.clone(),
            src_offset: src.offset,
            dst: dst.raw.buffer.clone(),
            dst_offset: dst.offset,
            bytes: src.size,
        });
        Ok(())
    }

    /// Submits everything recorded.
    fn flush(&self, rec: &mut Recorder) -> Result<(), BackendError> {
        let dropped = self.ledger.take_dropped();
        if !dropped.is_empty() {
            rec.bind_groups
                .retain(|(_, ids), _| !ids.iter().any(|(id, _, _)| dropped.contains(id)));
        }
        if rec.commands.is_empty() {
            return self.check_faults();
        }
        self.queue.write_buffer(&self.params.buffer, 0, &rec.params);
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let mut commands = rec.commands.drain(..).peekable();
        while let Some(command) = commands.next() {
            match command {
                Command::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    bytes,
                } => encoder.copy_buffer_to_buffer(&src, src_offset, &dst, dst_offset, bytes),
                first @ Command::Dispatch { .. } => {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: None,
                    });
                    let mut next = Some(first);
                    while let Some(Command::Dispatch {
                        pipeline,
                        bind_group,
                        params,
                        groups,
                    }) = next
                    {
                        pass.set_pipeline(&pipeline);
                        pass.set_bind_group(0, &bind_group, &[params]);
                        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        next = match commands.peek() {
                            Some(Command::Dispatch { .. }) => commands.next(),
                            _ => None,
                        };
                    }
                }
            }
        }
        drop(commands);
        self.queue.submit([encoder.finish()]);
        rec.params.clear();
        self.check_faults()
    }

    /// Submits the recorded work and waits for the device to finish it.
    fn finish(&self) -> Result<(), BackendError> {
        self.flush(&mut lock(&self.recorder))?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| BackendError::Device(e.to_string()))?;
        self.check_faults()
    }

    /// Copies `bytes` from `src` at `offset` to the host.
    fn download(
        &self,
        src: &Arc<RawBuffer>,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        let bytes = out.len() as u64;
        // Held until the buffer is unmapped: another thread must not copy into it while mapped.
        let mut slot = lock(&self.readback);
        let readback = match slot.as_ref() {
            Some(r) if r.bytes >= bytes => r.clone(),
            _ => {
                *slot = None;
                let r = self.create(
                    readback_bytes(bytes),
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    "latte readback",
                    false,
                )?;
                *slot = Some(r.clone());
                r
            }
        };
        self.record_copy(
            Bind {
                raw: src,
                offset,
                size: bytes,
            },
            Bind::whole(&readback),
        )?;
        self.flush(&mut lock(&self.recorder))?;
        let slice = readback.buffer.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| BackendError::Device(e.to_string()))?;
        self.check_faults()?;
        rx.recv()
            .map_err(|_| BackendError::Device("the read-back never completed".into()))?
            .map_err(|e| BackendError::Device(format!("read-back: {e}")))?;
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| BackendError::Device(format!("read-back: {e}")))?;
            out.copy_from_slice(&view[..bytes as usize]);
        }
        readback.buffer.unmap();
        drop(slot);
        Ok(())
    }

    /// Writes host bytes at `offset` of `dst`, after the work recorded so far.
    fn upload_bytes(
        &self,
        dst: &wgpu::Buffer,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), BackendError> {
        // `write_buffer` lands before the next submission: submit what reads the old contents.
        self.flush(&mut lock(&self.recorder))?;
        self.queue.write_buffer(dst, offset, bytes);
        Ok(())
    }
}
