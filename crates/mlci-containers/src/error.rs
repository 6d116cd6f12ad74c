use std::path::PathBuf;

/// What went wrong talking to the Engine or preparing a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Nothing answered at the host (no Engine, wrong `DOCKER_HOST`, no permission on the socket).
    #[error(
        "no Docker Engine answered at {host}: {message} (mlci looks at DOCKER_HOST, else the default socket \
         {default}; start the Engine or set DOCKER_HOST)",
        default = crate::DEFAULT_HOST
    )]
    Unreachable { host: String, message: String },
    /// The Engine answered with an error.
    #[error("docker engine: {what}: {message}")]
    Engine { what: String, message: String },
    /// An image build failed; `message` is the build's own error line.
    #[error("building image {tag}: {message}")]
    Build { tag: String, message: String },
    /// A bind-mount source that does not exist on the host.
    #[error("mount source {} does not exist (for {target} in the container)", path.display())]
    MissingMount { path: PathBuf, target: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ContainerError {
    pub(crate) fn engine(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Self::Engine {
            what: what.into(),
            message: e.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
