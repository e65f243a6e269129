//! Every WGSL kernel, in every variant the backend composes, parses and validates with naga and
//! translates to Metal Shading Language, SPIR-V and HLSL: what wgpu does on Vulkan, Metal and DX12
//! (Metal itself cannot run here; this is the check that its backend accepts our kernels).
#![cfg(feature = "wgpu")]

use latte::backend::wgpu::kernels::Kernel;
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn module(kernel: &Kernel) -> (naga::Module, naga::valid::ModuleInfo) {
    let source = kernel.source();
    let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
        panic!(
            "{kernel:?} does not parse:\n{}",
            e.emit_to_string_with_path(&source, "kernel.wgsl")
        )
    });
    // The capabilities wgpu grants without optional features (no subgroups, no f16, no f64), plus
    // the subgroup operations for the kernels used only where the device has them.
    let capabilities = if kernel.needs_subgroups() {
        Capabilities::SUBGROUP
    } else {
        Capabilities::empty()
    };
    let info = Validator::new(ValidationFlags::all(), capabilities)
        .validate(&module)
        .unwrap_or_else(|e| {
            panic!(
                "{kernel:?} does not validate:\n{}",
                e.emit_to_string_with_path(&source, "kernel.wgsl")
            )
        });
    (module, info)
}

#[test]
fn every_kernel_validates_and_translates() {
    let kernels = Kernel::all();
    for kernel in &kernels {
        let (module, info) = module(kernel);
        assert!(
            module
                .entry_points
                .iter()
                .any(|e| e.name == kernel.entry_point()),
            "{kernel:?}: no entry point {}",
            kernel.entry_point()
        );
        // SPIR-V (Vulkan; subgroup operations from SPIR-V 1.3).
        let spv_options = spv::Options {
            lang_version: if kernel.needs_subgroups() {
                (1, 3)
            } else {
                (1, 0)
            },
            ..Default::default()
        };
        let words = spv::write_vec(&module, &info, &spv_options, None)
            .unwrap_or_else(|e| panic!("{kernel:?} → SPIR-V: {e}"));
        assert!(
            words.len() > 5 && words[0] == 0x0723_0203,
            "{kernel:?}: not SPIR-V"
        );
        // MSL (Metal): wgpu binds every resource through the argument buffer of its pipeline
        // layout; naga's default options map bindings by their index for a translation check.
        let options = msl::Options {
            fake_missing_bindings: true,
            // Subgroup (simdgroup) operations need MSL 2.1.
            lang_version: (2, 1),
            ..Default::default()
        };
        let pipeline = msl::PipelineOptions::default();
        let (msl_source, _) = msl::write_string(&module, &info, &options, &pipeline)
            .unwrap_or_else(|e| panic!("{kernel:?} → MSL: {e}"));
        assert!(
            msl_source.contains("kernel void"),
            "{kernel:?}: no MSL kernel"
        );
        // HLSL (DX12).
        let mut hlsl_source = String::new();
        let options = hlsl::Options {
            fake_missing_bindings: true,
            // Wave operations need shader model 6.0.
            shader_model: hlsl::ShaderModel::V6_0,
            ..Default::default()
        };
        hlsl::Writer::new(
            &mut hlsl_source,
            &options,
            &hlsl::PipelineOptions::default(),
        )
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{kernel:?} → HLSL: {e}"));
        assert!(
            hlsl_source.contains("[numthreads("),
            "{kernel:?}: no HLSL kernel"
        );
    }
    println!("{} kernels validated and translated", kernels.len());
}
