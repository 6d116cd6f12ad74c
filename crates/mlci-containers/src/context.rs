//! Image build contexts: files gathered into the tar stream the Engine's
//! `/build` endpoint takes.

use std::path::{Path, PathBuf};

use crate::ContainerError;

/// `docker/Dockerfile.scratch`, embedded so an installed mlci can build its own trainer image.
pub const SCRATCH_DOCKERFILE: &str = include_str!("../../../docker/Dockerfile.scratch");

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// The files of a build context: `(name in the context, content)`.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    files: Vec<(String, Source)>,
}

impl BuildContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one host file under `name` (e.g. the static binary as `mlci`).
    pub fn file(mut self, name: impl Into<String>, source: impl Into<PathBuf>) -> Self {
        self.files.push((name.into(), Source::File(source.into())));
        self
    }

    /// Add a file with this content (mode 0644), e.g. an embedded Dockerfile.
    pub fn bytes(mut self, name: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.into(), Source::Bytes(content.into())));
        self
    }

    /// The scratch trainer image's context: the embedded `Dockerfile.scratch`
    /// as `Dockerfile` and a statically linked mlci (from `scripts/build-static`,
    /// or the running executable when it is static) as `mlci`.
    pub fn trainer(static_binary: &Path) -> Self {
        Self::new()
            .bytes("Dockerfile", SCRATCH_DOCKERFILE)
            .file("mlci", static_binary)
    }

    /// Every regular file under `dir`, named by its path relative to `dir`.
    pub fn dir(mut self, dir: &Path) -> Result<Self, ContainerError> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(ContainerError::io(&d))?;
            for entry in entries {
                let path = entry.map_err(ContainerError::io(&d))?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(dir) {
                    self.files
                        .push((rel.to_string_lossy().into_owned(), Source::File(path.clone())));
                }
            }
        }
        Ok(self)
    }

    /// The context as an uncompressed tar archive (modes kept, so binaries stay executable).
    pub fn to_tar(&self) -> Result<Vec<u8>, ContainerError> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        // The Engine's tar reader rejects GNU sparse entries (type 'S').
        builder.sparse(false);
        for (name, source) in &self.files {
            match source {
                Source::File(path) => {
                    let mut file = std::fs::File::open(path).map_err(ContainerError::io(path))?;
                    builder
                        .append_file(name, &mut file)
                        .map_err(ContainerError::io(path))?;
                }
                Source::Bytes(content) => {
                    let mut header = tar::Header::new_gnu();
                    header.set_size(content.len() as u64);
                    header.set_mode(0o644);
                    header.set_cksum();
                    builder
                        .append_data(&mut header, name, content.as_slice())
                        .map_err(ContainerError::io(name))?;
                }
            }
        }
        builder.into_inner().map_err(ContainerError::io("build context"))
    }
}
