//! Whether the parts of one file fit together: each config is read by its own loader (the only
//! place its rules live), then what only two configs together can tell is checked here: the flow
//! replica copies the VLM's layers, the DC-AE decoder takes the flow's latents, the expert groups
//! tile the replica's tensors.
//!
//! `latte convert` runs [`check_model_file`] on the header of the file it is about to write, and
//! the generator runs [`check_generation`] when it loads, so a file convert writes is one the
//! engine reads. This module reads metadata and tensor shapes only, never tensor data.

use super::dcae::DcaeConfig;
use super::expert_groups::GroupLayout;
use super::flow::FlowConfig;
use super::text::TextConfig;
use super::vision::VisionConfig;
use super::{ModelError, ModelFile};

/// Reads every config `file` declares (text decoder; vision tower, flow replica, DC-AE decoder and
/// expert groups where present) and checks them against each other.
pub fn check_model_file(file: &ModelFile) -> Result<(), ModelError> {
    let text = TextConfig::from_file(file)?;
    if VisionConfig::present(file) {
        VisionConfig::from_file(file)?;
    }
    if FlowConfig::present(file) {
        let flow = FlowConfig::from_file(file)?;
        let decoder = DcaeConfig::from_file(file)?;
        check_generation(file, &text, &flow, &decoder)?;
    }
    Ok(())
}

/// What the generation pathway needs of its parts together.
pub fn check_generation(
    file: &ModelFile,
    text: &TextConfig,
    flow: &FlowConfig,
    decoder: &DcaeConfig,
) -> Result<(), ModelError> {
    // Replica layer l attends to the prompt as VLM layer l sees it.
    let pairs = [
        ("layer count", flow.layer_count, text.layers),
        ("embedding length", flow.hidden, text.hidden),
        ("head count", flow.heads, text.heads),
        ("KV head count", flow.kv_heads, text.kv_heads),
        ("head dimension", flow.head_dim, text.head_dim),
        ("feed-forward length", flow.ffn_hidden, text.ffn),
    ];
    if let Some((what, here, there)) = pairs.iter().find(|(_, a, b)| a != b) {
        return Err(file.invalid(format!(
            "the flow replica's {what} is {here}, the VLM's {there} (the replica copies the VLM's layers)"
        )));
    }
    if flow.latent_channels != decoder.latent_channels {
        return Err(file.invalid(format!(
            "latte.flow.latent_channels {} differs from the DC-AE decoder's {}",
            flow.latent_channels, decoder.latent_channels
        )));
    }
    if flow.scaling_factor != decoder.scaling_factor {
        return Err(file.invalid(format!(
            "latte.flow.scaling_factor {} differs from the DC-AE decoder's {}",
            flow.scaling_factor, decoder.scaling_factor
        )));
    }
    let layout = GroupLayout::from_file(file.gguf())
        .and_then(|layout| {
            layout
                .map(|l| l.ranges(file.gguf().tensor_infos()))
                .transpose()
        })
        .map_err(|cause| file.invalid(cause.to_string()))?;
    if layout.is_none() {
        return Err(file.invalid("a generation pathway without expert-group metadata"));
    }
    Ok(())
}
