//! One weight set of a checkpoint (`model`, `generation/model`, `autoencoder/...`): a single
//! safetensors file or the shards a `*.safetensors.index.json` lists, opened as memory maps, with
//! every tensor name mapped to its shard. Tensors are only looked up here; nothing is read.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::ConvertError;
use super::json::JsonFile;
use crate::safetensors::{SafetensorsFile, StTensor};

pub struct WeightSet {
    /// What errors name: the single file or the index.
    pub origin: PathBuf,
    shards: Vec<SafetensorsFile>,
    /// Tensor name → (shard, index in that shard's tensor list).
    index: HashMap<String, (usize, usize)>,
}

/// A tensor found in a weight set.
#[derive(Clone, Copy)]
pub struct Found<'a> {
    pub file: &'a SafetensorsFile,
    pub tensor: &'a StTensor,
}

impl WeightSet {
    /// Opens `<dir>/<stem>.safetensors` or, failing that, `<dir>/<stem>.safetensors.index.json`
    /// and its shards. `None` when neither exists.
    pub fn open(dir: &Path, stem: &str) -> Result<Option<WeightSet>, ConvertError> {
        let single = dir.join(format!("{stem}.safetensors"));
        let index_path = dir.join(format!("{stem}.safetensors.index.json"));
        if index_path.exists() {
            return WeightSet::open_index(dir, &index_path).map(Some);
        }
        if single.exists() {
            let file = SafetensorsFile::open(&single)?;
            return WeightSet::from_shards(single, vec![file]).map(Some);
        }
        Ok(None)
    }

    fn open_index(dir: &Path, index_path: &Path) -> Result<WeightSet, ConvertError> {
        let index = JsonFile::read(index_path)?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| index.error("'weight_map' is missing or not an object"))?;
        let mut shard_names = BTreeSet::new();
        for (tensor, shard) in map {
            let shard = shard
                .as_str()
                .ok_or_else(|| index.error(format!("'weight_map.{tensor}' is not a file name")))?;
            // Shards are plain file names beside the index; refuse paths that leave the directory.
            if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                return Err(index.error(format!(
                    "shard name '{shard}' for '{tensor}' is not a plain file name"
                )));
            }
            if !dir.join(shard).is_file() {
                return Err(ConvertError::MissingShard {
                    index: index_path.to_path_buf(),
                    tensor: tensor.clone(),
                    shard: dir.join(shard),
                });
            }
            shard_names.insert(shard.to_string());
        }
        let shards = shard_names
            .iter()
            .map(|name| SafetensorsFile::open(dir.join(name)))
            .collect::<Result<Vec<_>, _>>()?;
        let set = WeightSet::from_shards(index_path.to_path_buf(), shards)?;
        // The index and the shards must agree.
        for (tensor, shard) in map {
            let found = set.get(tensor).ok_or_else(|| ConvertError::MissingTensor {
                file: dir.join(shard.as_str().unwrap_or_default()),
                tensor: tensor.clone(),
            })?;
            if found.file.path() != dir.join(shard.as_str().unwrap_or_default()) {
                return Err(index.error(format!(
                    "'{tensor}' is listed in '{}' but stored in '{}'",
                    shard.as_str().unwrap_or_default(),
                    found.file.path().display()
                )));
            }
        }
        for name in set.index.keys() {
            if !map.contains_key(name) {
                return Err(index.error(format!(
                    "tensor '{name}' is in a shard but not in the index"
                )));
            }
        }
        Ok(set)
    }

    fn from_shards(
        origin: PathBuf,
        shards: Vec<SafetensorsFile>,
    ) -> Result<WeightSet, ConvertError> {
        let mut index = HashMap::new();
        for (s, shard) in shards.iter().enumerate() {
            for (t, tensor) in shard.tensors().iter().enumerate() {
                if index.insert(tensor.name.clone(), (s, t)).is_some() {
                    return Err(ConvertError::DuplicateTensor {
                        file: shard.path().to_path_buf(),
                        tensor: tensor.name.clone(),
                    });
                }
            }
        }
        Ok(WeightSet {
            origin,
            shards,
            index,
        })
    }

    pub fn get(&self, name: &str) -> Option<Found<'_>> {
        let &(s, t) = self.index.get(name)?;
        let file = &self.shards[s];
        Some(Found {
            file,
            tensor: &file.tensors()[t],
        })
    }

    /// Every tensor name, sorted (for the unexpected-tensor check and stable messages).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.index.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The file errors about `name` should point at.
    pub fn file_of(&self, name: &str) -> PathBuf {
        self.get(name)
            .map_or_else(|| self.origin.clone(), |f| f.file.path().to_path_buf())
    }
}
