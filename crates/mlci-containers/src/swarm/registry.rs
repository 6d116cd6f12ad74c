//! The trainer image for every node: pushed to the operator's registry under its
//! content tag and referenced by digest (`registry/repo@sha256:…`), so each node
//! pulls exactly the bits the manager built, and a tag moved later changes nothing.

use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;

use crate::{ContainerError, Engine};

/// `host[:port]` with an optional path prefix (`registry.example:5000/team`): no scheme,
/// no tag, no spaces. Checked before anything is pushed; the error names the setting.
pub fn check_registry(registry: &str) -> Result<(), String> {
    let host = registry.split('/').next().unwrap_or_default();
    let ok_chars = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/'))
    };
    if registry.contains("://") {
        return Err(format!(
            "'{registry}' has a scheme: give host[:port][/path], as in `docker push host:port/repo`"
        ));
    }
    if !ok_chars(registry) || host.is_empty() || registry.ends_with('/') {
        return Err(format!(
            "'{registry}' is not host[:port][/path] (letters, digits, '.', '-', '_', ':' and '/')"
        ));
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if port.parse::<u16>().is_err() {
            return Err(format!("'{registry}': port '{port}' is not a number"));
        }
    }
    Ok(())
}

impl Engine {
    /// Push `image` (`repo:tag`, present on this Engine) to `registry` as
    /// `registry/repo:tag` and return the reference by digest that services should
    /// use (`registry/repo@sha256:…`). The registry must be reachable from this Engine
    /// and trusted by every node (TLS, or listed in `insecure-registries`); nothing
    /// but the image is sent (no credentials: a registry that needs them must be
    /// logged in on the Engine, as `docker login` does).
    pub fn publish_image(&self, image: &str, registry: &str) -> Result<String, ContainerError> {
        check_registry(registry).map_err(|message| ContainerError::Engine {
            what: "swarm registry".into(),
            message,
        })?;
        let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        let remote = format!("{registry}/{repo}");
        let docker = self.docker();
        self.block_on(async {
            let options = TagImageOptionsBuilder::default().repo(&remote).tag(tag).build();
            docker
                .tag_image(image, Some(options))
                .await
                .map_err(|e| ContainerError::engine(format!("tagging {image} as {remote}:{tag}"), e))?;
            let options = PushImageOptionsBuilder::default().tag(tag).build();
            let mut push = docker.push_image(&remote, Some(options), None);
            while let Some(item) = push.next().await {
                item.map_err(|e| {
                    ContainerError::engine(
                        format!("pushing {remote}:{tag} to registry {registry}"),
                        format!(
                            "{e} (is the registry up, and does this Engine trust it: TLS or \
                             insecure-registries?)"
                        ),
                    )
                })?;
            }
            let inspected = docker
                .inspect_image(&format!("{remote}:{tag}"))
                .await
                .map_err(|e| ContainerError::engine(format!("inspecting {remote}:{tag}"), e))?;
            let prefix = format!("{remote}@");
            inspected
                .repo_digests
                .unwrap_or_default()
                .into_iter()
                .find(|d| d.starts_with(&prefix))
                .ok_or_else(|| ContainerError::Engine {
                    what: format!("pushing {remote}:{tag}"),
                    message: format!("the registry {registry} returned no digest for it"),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_addresses_are_checked() {
        for good in ["10.213.1.1:5000", "registry.example", "reg.example:443/team/ml"] {
            assert_eq!(check_registry(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("http://10.0.0.1:5000", "scheme"),
            ("", "host[:port]"),
            ("reg example", "host[:port]"),
            ("reg:50x0", "not a number"),
            ("reg:5000/", "host[:port]"),
        ] {
            let err = check_registry(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
