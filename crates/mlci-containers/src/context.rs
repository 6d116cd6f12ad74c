//! Image build contexts: files gathered into the tar stream the Engine's
//! `/build` endpoint takes.

use std::path::{Path, PathBuf};

use crate::ContainerError;

/// `docker/Dockerfile.scratch`, embedded so an installed mlci can build its own trainer image.
pub const SCRATCH_DOCKERFILE: &str = include_str!("../../../docker/Dockerfile.scratch");

/// `docker/Dockerfile.dynamic`: the trainer image from a dynamically linked mlci and the
/// shared libraries it links.
pub const DYNAMIC_DOCKERFILE: &str = include_str!("../../../docker/Dockerfile.dynamic");

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

    /// The trainer image's context for a dynamically linked mlci: `Dockerfile.dynamic`,
    /// the binary as `mlci` and each of `libraries` (absolute host paths, the program
    /// interpreter among them) at its own path under `root/`.
    pub fn trainer_dynamic(binary: &Path, libraries: &[PathBuf]) -> Self {
        let mut context = Self::new()
            .bytes("Dockerfile", DYNAMIC_DOCKERFILE)
            .file("mlci", binary);
        for lib in libraries {
            let inside = lib.to_string_lossy();
            context = context.file(format!("root/{}", inside.trim_start_matches('/')), lib);
        }
        context
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

    /// Test images only: a `LABEL mlci.test-image=<tag>` right after `dockerfile`'s `FROM`,
    /// so every layer of the image is this build's own. Without it the Engine's build cache
    /// hands one test a layer that another test's cleanup is deleting (`failed to get
    /// digest …: no such file or directory`), and test layers could serve as cache for
    /// mlci's own trainer image.
    #[cfg(feature = "testing")]
    pub(crate) fn isolated(mut self, dockerfile: &str, tag: &str) -> Self {
        let entry = self
            .files
            .iter_mut()
            .find(|(name, _)| name == dockerfile)
            .unwrap_or_else(|| panic!("the build context has no {dockerfile}"));
        let text = match &entry.1 {
            Source::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Source::File(p) => {
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
            }
        };
        let mut out = String::new();
        let mut labelled = false;
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            if !labelled && line.trim_start().to_ascii_uppercase().starts_with("FROM ") {
                out.push_str(&format!("LABEL mlci.test-image=\"{tag}\"\n"));
                labelled = true;
            }
        }
        assert!(labelled, "{dockerfile} has no FROM line");
        entry.1 = Source::Bytes(out.into_bytes());
        self
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

/// The shared libraries `binary` links, the program interpreter included, as `ldd`
/// (glibc's, on the host) lists them: what a `FROM scratch` image needs beside a
/// dynamically linked program. `binary` is the operator's own (mlci, or a test's
/// shell), never a path from a repository or a request.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| {
            format!(
                "cannot run ldd to list the libraries of {}: {e}",
                binary.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_ldd(&String::from_utf8_lossy(&out.stdout))
}

/// `libc.so.6 => /lib/…/libc.so.6 (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)` lines;
/// the vDSO has no file; a library ldd could not find is an error naming it.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries: Vec<PathBuf> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("=> not found") {
            return Err(format!("a library it links is missing on this host: {line}"));
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            let path = PathBuf::from(path);
            if !libraries.contains(&path) {
                libraries.push(path);
            }
        }
    }
    if libraries.is_empty() {
        return Err("ldd listed no library (is it statically linked after all?)".into());
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_libraries_and_the_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f01)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libssl.so.3",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let missing = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(missing.contains("libfoo.so.1"), "{missing}");
        assert!(parse_ldd("\tstatically linked\n").is_err());
    }
}
