//! What kind of model a workspace holds, and which image and command train it.
//!
//! Pure apart from reading the workspace's files: an mlci model spec (JSON)
//! with conv blocks is an mlci CNN; a Python file importing Keras/TensorFlow
//! and using `Conv2D` is a Keras CNN; one importing torch and using
//! `nn.Conv2d` is a PyTorch CNN. Anything else is an error naming every file
//! looked at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The framework a model is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framework {
    Mlci,
    Keras,
    #[serde(rename = "pytorch")]
    PyTorch,
}

/// A kind of model, which decides the image it trains in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelKind {
    Cnn { framework: Framework },
}

impl ModelKind {
    /// The label value and table key: `cnn/mlci`, `cnn/keras`, `cnn/pytorch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cnn {
                framework: Framework::Mlci,
            } => "cnn/mlci",
            Self::Cnn {
                framework: Framework::Keras,
            } => "cnn/keras",
            Self::Cnn {
                framework: Framework::PyTorch,
            } => "cnn/pytorch",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A detected model: its kind and the file that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: ModelKind,
    /// Relative to the workspace.
    pub file: PathBuf,
}

/// No model could be recognised.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error(
        "no model recognised in {}: looked at {} (expected an mlci model spec with conv_blocks, or a Python \
         file using Keras Conv2D or PyTorch nn.Conv2d)",
        workspace.display(),
        list(looked_at)
    )]
    Unknown {
        workspace: PathBuf,
        looked_at: Vec<PathBuf>,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        "no .json or .py files".to_owned()
    } else {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Folders never searched (dependencies, build outputs, VCS data).
const SKIP_DIRS: &[&str] = &["target", "node_modules", "venv", "__pycache__", "site-packages"];
/// How deep below the workspace root files are looked at.
const MAX_DEPTH: usize = 3;

/// The candidate files (`.json`, `.py`) of a workspace, relative and sorted.
fn candidates(workspace: &Path) -> Result<Vec<PathBuf>, KindError> {
    let mut found = Vec::new();
    let mut stack = vec![(workspace.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let io = |source| KindError::Io {
            path: dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            // Links are never followed: a repository's link could lead out of its checkout.
            let Ok(kind) = entry.file_type() else { continue };
            if name.starts_with('.') || kind.is_symlink() {
                continue;
            }
            if kind.is_dir() {
                if depth + 1 < MAX_DEPTH && !SKIP_DIRS.contains(&name) {
                    stack.push((path, depth + 1));
                }
            } else if name.ends_with(".json") || name.ends_with(".py") {
                if let Ok(rel) = path.strip_prefix(workspace) {
                    found.push(rel.to_path_buf());
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether this JSON text is an mlci model spec with at least one conv block.
pub fn is_mlci_cnn(text: &str) -> bool {
    mlci_core::ModelSpec::from_json(text).is_ok_and(|s| !s.conv_blocks.is_empty())
        && serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
            v.get("conv_blocks")
                .and_then(|c| c.as_array())
                .is_some_and(|c| !c.is_empty())
        })
}

/// The framework of a Python CNN, from its imports and layer names.
pub fn python_cnn(text: &str) -> Option<Framework> {
    let imports = |module: &str| {
        text.lines().map(str::trim).any(|l| {
            let rest = l
                .strip_prefix("import ")
                .or_else(|| l.strip_prefix("from "))
                .unwrap_or("");
            rest.split([',', ' ', '.'])
                .next()
                .is_some_and(|first| first == module)
        })
    };
    if (imports("keras") || imports("tensorflow")) && text.contains("Conv2D") {
        Some(Framework::Keras)
    } else if imports("torch") && (text.contains("nn.Conv2d") || text.contains("Conv2d(")) {
        Some(Framework::PyTorch)
    } else {
        None
    }
}

/// Detect the model in `workspace`. mlci specs win over Python files, then
/// files are taken in path order, so the answer is deterministic.
pub fn detect(workspace: &Path) -> Result<Detection, KindError> {
    let files = candidates(workspace)?;
    let mut python = None;
    for rel in &files {
        let path = workspace.join(rel);
        // Unreadable or non-UTF-8 files are simply not models.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let is_json = rel.extension().is_some_and(|e| e == "json");
        if is_json && is_mlci_cnn(&text) {
            return Ok(Detection {
                kind: ModelKind::Cnn {
                    framework: Framework::Mlci,
                },
                file: rel.clone(),
            });
        }
        if !is_json && python.is_none() {
            python = python_cnn(&text).map(|framework| Detection {
                kind: ModelKind::Cnn { framework },
                file: rel.clone(),
            });
        }
    }
    python.ok_or_else(|| KindError::Unknown {
        workspace: workspace.to_path_buf(),
        looked_at: files,
    })
}

/// How one kind of model is trained: in which image, with which command.
/// In commands, `{file}` becomes the detected file's path under `/work`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runner {
    pub image: String,
    pub command: Vec<String>,
}

impl Runner {
    /// The command for a detected file (`{file}` substituted).
    pub fn command_for(&self, detection: &Detection) -> Vec<String> {
        let file = format!("/work/{}", detection.file.display());
        self.command.iter().map(|a| a.replace("{file}", &file)).collect()
    }
}

/// The configurable table kind → (image, command), keyed by [`ModelKind::as_str`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageTable(pub BTreeMap<String, Runner>);

impl Default for ImageTable {
    /// mlci CNNs in the scratch trainer image; Keras and PyTorch scripts in
    /// the frameworks' public CPU images (which must be present locally).
    fn default() -> Self {
        let runner = |image: &str, command: &[&str]| Runner {
            image: image.to_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
        };
        Self(BTreeMap::from([
            (
                "cnn/mlci".to_owned(),
                runner(
                    crate::TRAINER_IMAGE,
                    &[
                        "/mlci", "train", "--data", "/data", "--out", "/work", "--spec", "{file}",
                    ],
                ),
            ),
            (
                "cnn/keras".to_owned(),
                runner("tensorflow/tensorflow:2.17.0", &["python", "{file}"]),
            ),
            (
                "cnn/pytorch".to_owned(),
                runner(
                    "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime",
                    &["python", "{file}"],
                ),
            ),
        ]))
    }
}

impl ImageTable {
    /// The runner for `kind`, or `None` when the table has no entry for it.
    pub fn runner(&self, kind: ModelKind) -> Option<&Runner> {
        self.0.get(kind.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn check(files: &[(&str, &str)], expect: Option<(Framework, &str)>) {
        let dir = workspace(files);
        match (detect(dir.path()), expect) {
            (Ok(d), Some((framework, file))) => {
                assert_eq!(d.kind, ModelKind::Cnn { framework });
                assert_eq!(d.file, Path::new(file));
            }
            (Err(e), None) => {
                let msg = e.to_string();
                assert!(msg.contains("no model recognised"), "{msg}");
                for (name, _) in files {
                    assert!(msg.contains(name), "{msg} should name {name}");
                }
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    const SPEC: &str = r#"{"input_size": 32, "conv_blocks": [{"filters": 8}]}"#;
    const KERAS: &str =
        "import tensorflow as tf\nfrom tensorflow.keras.layers import Conv2D\nm = Conv2D(32, 3)\n";
    const TORCH: &str = "import torch\nimport torch.nn as nn\nself.c = nn.Conv2d(3, 8, 3)\n";

    /// Regression (issue 10): links in a repository were followed, out of its checkout.
    #[test]
    fn links_are_never_followed() {
        let outside = workspace(&[(
            "model.json",
            r#"{"conv_blocks": [{"filters": 8}], "dense": [{"units": 4}]}"#,
        )]);
        let dir = workspace(&[("README.md", "no model here")]);
        std::os::unix::fs::symlink(outside.path().join("model.json"), dir.path().join("model.json")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
        assert!(
            detect(dir.path()).is_err(),
            "a model only behind links is not this repository's"
        );
    }

    #[test]
    fn detects_each_kind() {
        check(&[("model.json", SPEC)], Some((Framework::Mlci, "model.json")));
        check(&[("train.py", KERAS)], Some((Framework::Keras, "train.py")));
        check(&[("src/net.py", TORCH)], Some((Framework::PyTorch, "src/net.py")));
        check(
            &[("a.py", "from keras import layers\nx = layers.Conv2D(8, 3)\n")],
            Some((Framework::Keras, "a.py")),
        );
    }

    #[test]
    fn mlci_specs_win_over_python() {
        check(
            &[("a.py", TORCH), ("z/model.json", SPEC)],
            Some((Framework::Mlci, "z/model.json")),
        );
    }

    #[test]
    fn unknown_models_name_the_files_looked_at() {
        check(&[], None);
        check(
            &[
                ("package.json", r#"{"name": "x"}"#),
                ("dense.json", r#"{"conv_blocks": []}"#),
                ("script.py", "import torch\nx = torch.nn.Linear(3, 4)\n"),
                ("tf.py", "import numpy\n# Conv2D mentioned, but no keras import\n"),
            ],
            None,
        );
    }

    #[test]
    fn default_table_runs_mlci_cnns_in_the_trainer_image() {
        let table = ImageTable::default();
        let d = Detection {
            kind: ModelKind::Cnn {
                framework: Framework::Mlci,
            },
            file: "specs/model.json".into(),
        };
        let r = table.runner(d.kind).unwrap();
        assert_eq!(r.image, crate::TRAINER_IMAGE);
        assert_eq!(r.command_for(&d).last().unwrap(), "/work/specs/model.json");
        let parsed: ImageTable =
            serde_json::from_str(r#"{"cnn/keras": {"image": "k:1", "command": ["python", "{file}"]}}"#)
                .unwrap();
        assert_eq!(
            parsed
                .runner(ModelKind::Cnn {
                    framework: Framework::Keras
                })
                .unwrap()
                .image,
            "k:1"
        );
    }
}
