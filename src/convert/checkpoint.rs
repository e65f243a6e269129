//! A checkpoint directory, planned for conversion: configs read and cross-checked, every tensor
//! found, its dtype and shape checked against the config, its output name, shape and type
//! decided, and nothing left over. [`Checkpoint::write`] then streams it into one GGUF.
//!
//! Output order: Qwen2-VL text model, vision tower, shared generation tensors, DC-AE decoder,
//! then the expert groups, each one contiguous run starting on a 16 KiB boundary.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::config::{GenerationConfig, PreprocessorConfig, Qwen2VlConfig};
use super::error::ConvertError;
use super::json::JsonFile;
use super::metadata::{self, KEY_DCAE_CONFIG, KEY_MODEL_KIND};
use super::names::{self, canonical_vlm_name, Mapping, Split, WeightSetId};
use super::preset::LayerCounts;
use super::quantize::{plan_tensor, QuantizeOptions};
use super::source::{Found, WeightSet};
use super::tokenizer::tokenizer_metadata;
use super::validate::check_planned;
use super::write::{file_type_metadata, write_gguf, OutputTensor, Progress, TensorFiller};
use crate::dtype::TensorType;
use crate::gguf::writer::MAX_TENSOR_NAME_BYTES;
use crate::gguf::{MetadataValue, TensorInfo};
use crate::safetensors::{to_f32, Dtype};

/// What a checkpoint directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A plain Qwen2-VL: understanding only.
    Understanding,
    /// Qwen2-VL plus the generation replica and the DC-AE decoder.
    LatteFlow,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Understanding => "understanding",
            ModelKind::LatteFlow => "latte-flow",
        }
    }
}

/// Where one output tensor's values are in the checkpoint.
struct Source {
    set: WeightSetId,
    name: String,
    dtype: Dtype,
    split: Option<Split>,
}

/// A checkpoint, ready to write.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub kind: ModelKind,
    pub vlm: Qwen2VlConfig,
    pub generation: Option<GenerationConfig>,
    /// Metadata in file order (without `general.file_type`, added by [`Checkpoint::write`]).
    pub metadata: Vec<(String, MetadataValue)>,
    pub tensors: Vec<OutputTensor>,
    /// `general.file_type` of the output (llama.cpp's `llama_ftype`).
    pub file_type: u32,
    sources: Vec<Source>,
    sets: HashMap<WeightSetId, WeightSet>,
}

impl Checkpoint {
    /// Reads and checks everything in `dir`; reads no tensor data.
    pub fn plan(dir: &Path, options: &QuantizeOptions) -> Result<Checkpoint, ConvertError> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ConvertError::NotACheckpoint(dir.to_path_buf()));
        }
        let vlm = Qwen2VlConfig::read(&config_path)?;
        let preprocessor_path = dir.join("preprocessor_config.json");
        let preprocessor = PreprocessorConfig::read(&preprocessor_path)?;
        check_patch_geometry(&vlm, &preprocessor, &preprocessor_path)?;
        let mut sets = HashMap::new();
        sets.insert(WeightSetId::Vlm, open_set(dir, "model")?);

        let generation_config = dir.join("generation").join("config.json");
        let mut generation = None;
        let mut dcae_config = None;
        if generation_config.exists() {
            generation = Some(GenerationConfig::read(&generation_config)?);
            sets.insert(
                WeightSetId::Generation,
                open_set(&dir.join("generation"), "model")?,
            );
            let ae_dir = dir.join("autoencoder");
            let ae = JsonFile::read(&ae_dir.join("config.json"))?;
            let g = generation.as_ref().expect("just set");
            let scale = ae.f64_of(&["scaling_factor"])?;
            // Both files state the latent scale; f32 precision is what the engine uses.
            if (scale as f32) != (g.scaling_factor as f32) {
                return Err(ae.error(format!(
                    "scaling_factor {scale} differs from generation/config.json's {}",
                    g.scaling_factor
                )));
            }
            let latent = ae.u64_of(&["latent_channels"])?;
            if latent != g.latent_channels {
                return Err(ae.error(format!(
                    "latent_channels {latent} differs from generation/config.json's {}",
                    g.latent_channels
                )));
            }
            dcae_config = Some(ae.value.to_string());
            sets.insert(
                WeightSetId::Autoencoder,
                open_set(&ae_dir, "diffusion_pytorch_model")?,
            );
        }
        let kind = if generation.is_some() {
            ModelKind::LatteFlow
        } else {
            ModelKind::Understanding
        };

        // Every layer has tensors: a config with more layers than its checkpoint has tensors is
        // refused here, before naming them (a depth of 10^9 would otherwise be 10^10 names).
        let tensor_count = |id: WeightSetId| sets.get(&id).map_or(0, |s| s.names().len() as u64);
        let mut counts = vec![
            ("num_hidden_layers", vlm.layers, WeightSetId::Vlm),
            ("vision_config.depth", vlm.vision.depth, WeightSetId::Vlm),
        ];
        if let Some(g) = &generation {
            counts.push(("generation num_layers", g.layers, WeightSetId::Generation));
        }
        for (key, layers, set) in counts {
            if layers > tensor_count(set) {
                return Err(ConvertError::Config {
                    path: config_path.clone(),
                    reason: format!(
                        "'{key}' is {layers}, but the checkpoint holds only {} tensors",
                        tensor_count(set)
                    ),
                });
            }
        }

        // The VLM set may use transformers 5's `model.language_model.*` names.
        let vlm_names: HashMap<String, String> = sets[&WeightSetId::Vlm]
            .names()
            .into_iter()
            .map(|n| (canonical_vlm_name(n), n.to_string()))
            .collect();

        let mut mappings = names::qwen2vl(&vlm);
        let mut groups: Vec<Vec<Mapping>> = Vec::new();
        if let Some(g) = &generation {
            mappings.extend(names::flow_shared(g));
            let ae = &sets[&WeightSetId::Autoencoder];
            for source in ae.names() {
                let gguf =
                    names::dcae_name(source).map_err(|()| ConvertError::UnexpectedTensor {
                        file: ae.file_of(source),
                        tensor: source.into(),
                        model: "DC-AE",
                    })?;
                if let Some(gguf) = gguf {
                    mappings.push(Mapping {
                        gguf,
                        set: WeightSetId::Autoencoder,
                        source: source.into(),
                        expected: None,
                        split: None,
                        group: None,
                    });
                }
            }
            groups = (0..g.groups).map(|k| names::flow_group(g, k)).collect();
        }

        let mut tensors = Vec::new();
        let mut sources = Vec::new();
        let mut used: HashMap<WeightSetId, HashSet<String>> = HashMap::new();
        let all: Vec<_> = mappings
            .into_iter()
            .map(|m| (m, false))
            .chain(
                groups
                    .into_iter()
                    .flat_map(|group| group.into_iter().enumerate().map(|(i, m)| (m, i == 0))),
            )
            .collect();
        let layers = LayerCounts::of(all.iter().map(|(m, _)| m.gguf.as_str()));
        for (mapping, starts_group) in all {
            let set = &sets[&mapping.set];
            let actual = match mapping.set {
                WeightSetId::Vlm => vlm_names
                    .get(&mapping.source)
                    .cloned()
                    .unwrap_or_else(|| mapping.source.clone()),
                _ => mapping.source.clone(),
            };
            let found = set
                .get(&actual)
                .ok_or_else(|| ConvertError::MissingTensor {
                    file: set.origin.clone(),
                    tensor: actual.clone(),
                })?;
            let (tensor, source) =
                plan_one(&mapping, &actual, found, options, &layers, starts_group)?;
            used.entry(mapping.set).or_default().insert(actual);
            tensors.push(tensor);
            sources.push(source);
        }

        // Everything in the checkpoint must have been used (or be knowingly dropped).
        for (id, set) in &sets {
            for name in set.names() {
                let known_drop = match id {
                    WeightSetId::Vlm => {
                        vlm.tie_word_embeddings && canonical_vlm_name(name) == "lm_head.weight"
                    }
                    WeightSetId::Autoencoder => name.starts_with("encoder."),
                    WeightSetId::Generation => false,
                };
                let is_used = used.get(id).is_some_and(|u| u.contains(name));
                if !is_used && !known_drop {
                    return Err(ConvertError::UnexpectedTensor {
                        file: set.file_of(name),
                        tensor: name.into(),
                        model: match id {
                            WeightSetId::Vlm => "Qwen2-VL",
                            WeightSetId::Generation => "LaTtE-Flow generation",
                            WeightSetId::Autoencoder => "DC-AE",
                        },
                    });
                }
            }
        }

        let model_name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        let mut metadata = metadata::text_model(&vlm, &model_name);
        metadata.push((KEY_MODEL_KIND.into(), kind.name().into()));
        metadata.extend(tokenizer_metadata(dir, vlm.vocab_size)?);
        metadata.extend(metadata::vision(&vlm, &preprocessor));
        if let Some(g) = &generation {
            metadata.extend(metadata::generation(g));
        }
        if let Some(json) = dcae_config {
            metadata.push((KEY_DCAE_CONFIG.into(), json.as_str().into()));
        }
        check_planned(dir, &metadata, &tensors)?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            kind,
            vlm,
            generation,
            metadata,
            tensors,
            file_type: options.file_type,
            sources,
            sets,
        })
    }

    /// Streams the checkpoint into `output` (written atomically); returns the file size.
    pub fn write(
        &self,
        output: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<u64, ConvertError> {
        // Never replace a file of the checkpoint itself (e.g. `-o model.safetensors`).
        if let (Ok(out), Ok(dir)) = (output.canonicalize(), self.dir.canonicalize()) {
            if out.starts_with(&dir) {
                return Err(ConvertError::OutputInInput(output.to_path_buf()));
            }
        }
        let mut metadata = self.metadata.clone();
        metadata.extend(file_type_metadata(self.file_type, &self.tensors));
        write_gguf(output, &metadata, &self.tensors, self, progress)
    }
}

fn open_set(dir: &Path, stem: &str) -> Result<WeightSet, ConvertError> {
    WeightSet::open(dir, stem)?.ok_or_else(|| ConvertError::Config {
        path: dir.to_path_buf(),
        reason: format!("no {stem}.safetensors or {stem}.safetensors.index.json"),
    })
}

/// Checks one source tensor against its mapping and decides its output.
fn plan_one(
    mapping: &Mapping,
    actual: &str,
    found: Found<'_>,
    options: &QuantizeOptions,
    layers: &LayerCounts,
    starts_group: bool,
) -> Result<(OutputTensor, Source), ConvertError> {
    let file = found.file.path().to_path_buf();
    let st = found.tensor;
    let source_type = match st.dtype {
        Dtype::F32 => TensorType::F32,
        Dtype::F16 => TensorType::F16,
        Dtype::BF16 => TensorType::BF16,
        dtype => {
            return Err(ConvertError::UnsupportedDtype {
                file,
                tensor: actual.into(),
                dtype,
            })
        }
    };
    if let Some(expected) = &mapping.expected {
        if &st.shape != expected {
            return Err(ConvertError::ShapeMismatch {
                file,
                tensor: actual.into(),
                found: st.shape.clone(),
                expected: expected.clone(),
            });
        }
    }
    let shape = mapping.output_shape(&st.shape);
    if shape.is_empty() || shape.len() > crate::tensor::MAX_DIMS || shape.contains(&0) {
        return Err(ConvertError::BadRank {
            file,
            tensor: actual.into(),
            shape: st.shape.clone(),
        });
    }
    if mapping.gguf.len() > MAX_TENSOR_NAME_BYTES {
        return Err(ConvertError::NameTooLong {
            file,
            tensor: actual.into(),
            name: mapping.gguf.clone(),
        });
    }
    let dims: Vec<u64> = shape.iter().rev().copied().collect();
    let info = TensorInfo {
        name: mapping.gguf.clone(),
        ty: source_type,
        dims: dims.clone(),
        offset: 0,
        n_bytes: 0,
    };
    let plan = plan_tensor(&info, options, layers);
    Ok((
        OutputTensor {
            plan,
            dims,
            group: mapping.group,
            starts_group,
        },
        Source {
            set: mapping.set,
            name: actual.into(),
            dtype: st.dtype,
            split: mapping.split,
        },
    ))
}

impl TensorFiller for Checkpoint {
    fn fill(&self, index: usize, first: u64, out: &mut [f32]) -> Result<(), ConvertError> {
        let source = &self.sources[index];
        let found = self.sets[&source.set]
            .get(&source.name)
            .expect("planned from this set");
        let bytes = found.file.data(found.tensor);
        let size = found.tensor.dtype.size() as usize;
        let convert = |start: u64, out: &mut [f32]| {
            let start = start as usize * size;
            let end = start + out.len() * size;
            to_f32(source.dtype, &bytes[start..end], out)
        };
        let result = match source.split {
            None => convert(first, out),
            Some(split) => {
                // Output element e is source element (o·parts + index)·inner + e mod inner,
                // o = e / inner: copy run by run.
                let mut done = 0usize;
                let mut result = Ok(());
                while done < out.len() && result.is_ok() {
                    let e = first + done as u64;
                    let (o, within) = (e / split.inner, e % split.inner);
                    let n = ((split.inner - within) as usize).min(out.len() - done);
                    let start = (o * split.parts + split.index) * split.inner + within;
                    result = convert(start, &mut out[done..done + n]);
                    done += n;
                }
                result
            }
        };
        result.map_err(|e| ConvertError::Config {
            path: found.file.path().to_path_buf(),
            reason: format!("tensor '{}': {e}", source.name),
        })
    }

    fn done(&self, index: usize) {
        let source = &self.sources[index];
        if let Some(found) = self.sets[&source.set].get(&source.name) {
            found.file.release(found.tensor);
        }
    }
}

/// The processor cuts images into patches of its own `patch_size`, `merge_size` and
/// `temporal_patch_size`, and the vision tower's patch embedding and merger are shaped by
/// config.json's: the file stores the tower's, so both must say the same.
fn check_patch_geometry(
    vlm: &Qwen2VlConfig,
    preprocessor: &PreprocessorConfig,
    path: &Path,
) -> Result<(), ConvertError> {
    let v = &vlm.vision;
    let pairs = [
        (
            "patch_size",
            preprocessor.patch_size,
            "vision_config.patch_size",
            v.patch_size,
        ),
        (
            "merge_size",
            preprocessor.merge_size,
            "vision_config.spatial_merge_size",
            v.spatial_merge_size,
        ),
        (
            "temporal_patch_size",
            preprocessor.temporal_patch_size,
            "vision_config.temporal_patch_size",
            v.temporal_patch_size,
        ),
    ];
    for (key, processor, model_key, model) in pairs {
        if processor != model {
            return Err(ConvertError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "{key} is {processor}, but config.json's {model_key} is {model}: \
                     the image processor and the vision tower must cut the same patches"
                ),
            });
        }
    }
    Ok(())
}
