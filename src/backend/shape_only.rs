//! A backend that holds shapes only, for planning: a model loads on it with every shape and config
//! check of its loader, reading small vectors but never a weight (no dequantized copy), and its
//! working-memory figures are the CPU backend's. Every computation is refused. It lets a planner
//! ask a model for its own memory figures (`Decoder::predicted_working_bytes`) without loading
//! the model, instead of keeping a second copy of the model's arithmetic.
//!
//! Like every backend it knows no model.

use crate::backend::cpu::ops::RopeTable;
use crate::backend::cpu::CPU;
use crate::backend::{
    AttentionShape, Backend, BackendError, Conv2d, Mask, Placement, ScoreBlock, ScratchSizes,
    Slice, SliceMut, Unary,
};
use crate::dtype::TensorType;
use crate::tensor::TensorView;

/// A backend that only holds shapes: models load on it (every shape and config check runs, small
/// vectors are read) without weights being read or copied, and its working-memory figures are
/// the CPU's. It computes nothing: every op is refused.
pub struct ShapeOnly;

/// The one [`ShapeOnly`] backend.
pub static SHAPE_ONLY: ShapeOnly = ShapeOnly;

fn refused(op: &str) -> BackendError {
    BackendError::Device(format!(
        "{op}: the shape-only planning backend computes nothing"
    ))
}

/// A weight a real backend can read: one of the types with kernels and dequantizers.
fn readable(tensor: &TensorView<'_>, what: &'static str) -> Result<(), BackendError> {
    if tensor.ty().is_computable() {
        return Ok(());
    }
    Err(BackendError::UnsupportedType {
        backend: "latte",
        name: tensor.name().into(),
        ty: tensor.ty(),
        what,
    })
}

impl Backend for ShapeOnly {
    type Buffer = Vec<f32>;
    type Weight<'a> = ();
    type ConvWeight<'a> = ();
    type Rope = ();
    type StagedGroup = ();

    fn description(&self) -> String {
        "shape-only (planning)".into()
    }

    fn scratch_threads(&self) -> usize {
        CPU.scratch_threads()
    }

    fn conv2d_scratch(
        &self,
        conv: &Conv2d,
        weight_type: TensorType,
        hw: [usize; 2],
    ) -> Option<ScratchSizes> {
        CPU.conv2d_scratch(conv, weight_type, hw)
    }

    fn conv_weight_host_bytes(&self, conv: &Conv2d, weight_type: TensorType) -> Option<u64> {
        CPU.conv_weight_host_bytes(conv, weight_type)
    }

    fn linear_attention_scratch(
        &self,
        n_heads: usize,
        head_dim: usize,
        n_pixels: usize,
    ) -> Option<usize> {
        CPU.linear_attention_scratch(n_heads, head_dim, n_pixels)
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>, BackendError> {
        CPU.alloc(len)
    }

    fn upload(&self, values: &[f32]) -> Result<Vec<f32>, BackendError> {
        Ok(values.to_vec())
    }

    fn upload_owned(&self, values: Vec<f32>) -> Result<Vec<f32>, BackendError> {
        Ok(values)
    }

    fn write(&self, _: SliceMut<'_, Vec<f32>>, _: &[f32]) -> Result<(), BackendError> {
        Err(refused("write"))
    }

    fn read(&self, _: Slice<'_, Vec<f32>>, _: &mut [f32]) -> Result<(), BackendError> {
        Err(refused("read"))
    }

    fn copy(&self, _: Slice<'_, Vec<f32>>, _: SliceMut<'_, Vec<f32>>) -> Result<(), BackendError> {
        Err(refused("copy"))
    }

    fn weight<'a>(&self, tensor: TensorView<'a>, _: Placement) -> Result<(), BackendError> {
        readable(&tensor, "matmul")
    }

    fn conv_weight<'a>(&self, tensor: TensorView<'a>, conv: &Conv2d) -> Result<(), BackendError> {
        // The CPU's checks, without reading the data.
        readable(&tensor, "conv2d")?;
        let expected = conv.weight_len()?;
        if tensor.n_elements() != expected as u64 {
            return Err(BackendError::Device(format!(
                "conv2d: weight '{}' has {} values, the convolution needs {expected}",
                tensor.name(),
                tensor.n_elements()
            )));
        }
        Ok(())
    }

    fn rope_table(&self, _: &RopeTable) -> Result<(), BackendError> {
        Ok(())
    }

    fn set_rope_table(&self, _: &mut (), _: &RopeTable) -> Result<(), BackendError> {
        Ok(())
    }

    fn stage_group(&self, _: usize, _: &[&()]) -> Result<(), BackendError> {
        Err(refused("stage_group"))
    }

    fn commit_group(&self, _: usize, _: ()) -> Result<(), BackendError> {
        Err(refused("commit_group"))
    }

    fn matmul(
        &self,
        _: &(),
        _: Slice<'_, Vec<f32>>,
        _: usize,
        _: SliceMut<'_, Vec<f32>>,
        _: Option<Slice<'_, Vec<f32>>>,
    ) -> Result<(), BackendError> {
        Err(refused("matmul"))
    }

    fn rms_norm(
        &self,
        _: SliceMut<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
        _: f32,
    ) -> Result<(), BackendError> {
        Err(refused("rms_norm"))
    }

    fn layer_norm(
        &self,
        _: SliceMut<'_, Vec<f32>>,
        _: usize,
        _: Option<Slice<'_, Vec<f32>>>,
        _: Option<Slice<'_, Vec<f32>>>,
        _: f32,
    ) -> Result<(), BackendError> {
        Err(refused("layer_norm"))
    }

    fn rms_norm_channels(
        &self,
        _: SliceMut<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
        _: Option<Slice<'_, Vec<f32>>>,
        _: f32,
    ) -> Result<(), BackendError> {
        Err(refused("rms_norm_channels"))
    }

    fn batch_norm(
        &self,
        _: SliceMut<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("batch_norm"))
    }

    fn unary(&self, _: SliceMut<'_, Vec<f32>>, _: Unary) -> Result<(), BackendError> {
        Err(refused("unary"))
    }

    fn swiglu(
        &self,
        _: SliceMut<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("swiglu"))
    }

    fn add(&self, _: SliceMut<'_, Vec<f32>>, _: Slice<'_, Vec<f32>>) -> Result<(), BackendError> {
        Err(refused("add"))
    }

    fn add_gated_rows(
        &self,
        _: SliceMut<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("add_gated_rows"))
    }

    fn modulate_rows(
        &self,
        _: SliceMut<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("modulate_rows"))
    }

    fn rope(&self, _: SliceMut<'_, Vec<f32>>, _: usize, _: &()) -> Result<(), BackendError> {
        Err(refused("rope"))
    }

    fn attention(
        &self,
        _: Slice<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
        _: Slice<'_, Vec<f32>>,
        _: AttentionShape,
        _: Mask,
        _: Option<ScoreBlock<'_, Vec<f32>>>,
        _: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("attention"))
    }

    fn conv2d(
        &self,
        _: &Conv2d,
        _: &(),
        _: Option<Slice<'_, Vec<f32>>>,
        _: Slice<'_, Vec<f32>>,
        _: [usize; 2],
        _: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("conv2d"))
    }

    fn relu_linear_attention(
        &self,
        _: Slice<'_, Vec<f32>>,
        _: usize,
        _: usize,
        _: usize,
        _: f32,
        _: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("relu_linear_attention"))
    }

    fn upsample_nearest(
        &self,
        _: Slice<'_, Vec<f32>>,
        _: usize,
        _: [usize; 2],
        _: usize,
        _: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("upsample_nearest"))
    }

    fn pixel_shuffle(
        &self,
        _: Slice<'_, Vec<f32>>,
        _: usize,
        _: [usize; 2],
        _: usize,
        _: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("pixel_shuffle"))
    }

    fn repeat_channels(
        &self,
        _: Slice<'_, Vec<f32>>,
        _: usize,
        _: [usize; 2],
        _: usize,
        _: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Err(refused("repeat_channels"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DeviceBuffer, Placement};

    #[test]
    fn shapes_are_checked_weights_never_read_and_every_op_refused() {
        let bytes = vec![0u8; 4 * 8];
        let f32s = TensorView::new("w", crate::dtype::TensorType::F32, &[4, 2], &bytes).unwrap();
        assert!(SHAPE_ONLY.weight(f32s, Placement::Shared).is_ok());
        // A type no backend reads is refused at load, as a real backend's first use would.
        let ints = TensorView::new("ids", crate::dtype::TensorType::I16, &[4, 4], &bytes).unwrap();
        let err = SHAPE_ONLY.weight(ints, Placement::Shared).unwrap_err();
        assert!(err.to_string().contains("I16"), "{err}");
        let buffer = SHAPE_ONLY.upload(&[1.0, 2.0]).unwrap();
        let mut out = [0.0; 2];
        assert!(SHAPE_ONLY.read(buffer.slice(..), &mut out).is_err());
    }
}
