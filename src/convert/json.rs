//! Reading the JSON files of a checkpoint with errors that name the file and the key.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::ConvertError;

/// A parsed JSON file and where it came from.
pub struct JsonFile {
    pub path: PathBuf,
    pub value: Value,
}

impl JsonFile {
    pub fn read(path: &Path) -> Result<JsonFile, ConvertError> {
        let text = std::fs::read(path).map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            cause: source,
        })?;
        JsonFile::parse(path, &text)
    }

    /// Parses `bytes`; `path` is only what errors name.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<JsonFile, ConvertError> {
        let value = serde_json::from_slice(bytes).map_err(|source| ConvertError::Json {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Ok(JsonFile {
            path: path.to_path_buf(),
            value,
        })
    }

    /// The file, if it exists.
    pub fn read_optional(path: &Path) -> Result<Option<JsonFile>, ConvertError> {
        if path.exists() {
            JsonFile::read(path).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn error(&self, reason: impl Into<String>) -> ConvertError {
        ConvertError::Config {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The value at a dotted path (`text_config.rope_parameters.rope_theta`), if present and not null.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let mut value = &self.value;
        for part in key.split('.') {
            value = value.get(part)?;
        }
        (!value.is_null()).then_some(value)
    }

    /// The first of `keys` that is present.
    pub fn first<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &Value)> {
        keys.iter().find_map(|&k| self.get(k).map(|v| (k, v)))
    }

    pub fn u64_of(&self, keys: &[&str]) -> Result<u64, ConvertError> {
        let (key, value) = self.first(keys).ok_or_else(|| self.missing(keys))?;
        value
            .as_u64()
            .ok_or_else(|| self.error(format!("'{key}' must be an unsigned integer")))
    }

    pub fn f64_of(&self, keys: &[&str]) -> Result<f64, ConvertError> {
        let (key, value) = self.first(keys).ok_or_else(|| self.missing(keys))?;
        value
            .as_f64()
            .ok_or_else(|| self.error(format!("'{key}' must be a number")))
    }

    pub fn bool_of(&self, keys: &[&str]) -> Result<bool, ConvertError> {
        let (key, value) = self.first(keys).ok_or_else(|| self.missing(keys))?;
        value
            .as_bool()
            .ok_or_else(|| self.error(format!("'{key}' must be true or false")))
    }

    pub fn str_of(&self, keys: &[&str]) -> Result<&str, ConvertError> {
        let (key, value) = self.first(keys).ok_or_else(|| self.missing(keys))?;
        value
            .as_str()
            .ok_or_else(|| self.error(format!("'{key}' must be a string")))
    }

    pub fn u64_array_of(&self, keys: &[&str]) -> Result<Vec<u64>, ConvertError> {
        let (key, value) = self.first(keys).ok_or_else(|| self.missing(keys))?;
        value
            .as_array()
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.error(format!("'{key}' must be an array of unsigned integers")))
    }

    pub fn f64_array_of(&self, keys: &[&str]) -> Result<Vec<f64>, ConvertError> {
        let (key, value) = self.first(keys).ok_or_else(|| self.missing(keys))?;
        value
            .as_array()
            .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.error(format!("'{key}' must be an array of numbers")))
    }

    fn missing(&self, keys: &[&str]) -> ConvertError {
        self.error(format!("missing key '{}'", keys.join("' or '")))
    }
}
