//! Test support (feature `testing`, dev-dependencies only): [`missing`], the one rule for
//! a test that needs a tool which is not there, the real Engine or fail, and two
//! `FROM scratch` test images (there is no registry to pull from).
#![allow(clippy::print_stderr, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{BuildContext, Engine};

/// A test needs `tool` and it is not there: the test **fails**, naming the tool and how
/// `.ci/run` installs it, unless the user opted out of `category` with
/// `MLCI_SKIP=category,…`; then the skip is said and counted (a line appended to the file
/// `MLCI_SKIP_LOG` names, which `scripts/test` sets and counts) and the test returns.
#[allow(clippy::disallowed_methods)] // test support reads its own switches
pub fn missing(category: &str, tool: &str, why: impl std::fmt::Display, install: &str) {
    let opted_out = std::env::var("MLCI_SKIP")
        .is_ok_and(|list| list.split(',').any(|c| c.trim() == category || c.trim() == "all"));
    if !opted_out {
        panic!(
            "this test needs {tool}: {why}. Install: {install} (.ci/run does). \
             To run without it, opt out explicitly: MLCI_SKIP={category}"
        );
    }
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    eprintln!("\n!!!! SKIPPED (MLCI_SKIP={category}): {test} needs {tool}: {why}\n");
    if let Ok(log) = std::env::var("MLCI_SKIP_LOG") {
        use std::io::Write;
        // One write of the whole line: tests run in parallel threads and processes.
        let line = format!("{category}\t{test}\n");
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Whether `tool` is a command on `PATH` (`command -v`).
pub fn on_path(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Engine at `DOCKER_HOST` (else the default socket); without one the test fails
/// (or, opted out with `MLCI_SKIP=docker`, is counted as skipped: `None`).
pub fn engine() -> Option<Arc<Engine>> {
    // Test support (feature `testing`), not the library: the tests' Engine is the
    // environment's, as for the binary.
    #[allow(clippy::disallowed_methods)]
    let host = std::env::var("DOCKER_HOST").ok();
    match Engine::connect(host.as_deref()) {
        Ok(e) => Some(Arc::new(e)),
        Err(e) => {
            missing(
                "docker",
                "a Docker Engine",
                e,
                "apt-get install docker.io and start dockerd",
            );
            None
        }
    }
}

/// An `mlci.owner` value unique to this test process and test.
pub fn owner(test: &str) -> String {
    format!("mlci-test-{}-{test}", std::process::id())
}

/// An image tag removed when dropped (the image goes with its last tag).
#[derive(Debug)]
pub struct TestImage {
    pub engine: Arc<Engine>,
    pub tag: String,
    pub id: String,
}

impl Drop for TestImage {
    fn drop(&mut self) {
        if let Err(e) = self.engine.remove_image(&self.tag) {
            eprintln!("could not remove test image {} ({}): {e}", self.tag, self.id);
        }
    }
}

/// Build `context` as `tag`, panicking with the build log on failure. The image shares no
/// layer with any other image (see `BuildContext::isolated`), so removing it when the
/// test ends never pulls a cached layer from under a build running in parallel.
pub fn build(engine: &Arc<Engine>, context: BuildContext, dockerfile: &str, tag: String) -> TestImage {
    let context = context.isolated(dockerfile, &tag);
    let mut log = Vec::new();
    let id = engine
        .build_image(&context, dockerfile, &tag, &mut |l| log.push(l.to_owned()))
        .unwrap_or_else(|e| panic!("{e}\n{}", log.join("\n")));
    assert!(id.starts_with("sha256:"), "{id}");
    TestImage {
        engine: engine.clone(),
        tag,
        id,
    }
}

/// `/bin/sh` and `/bin/sleep` with their libraries from the host, in a scratch image.
pub fn shell_image(engine: &Arc<Engine>, test: &str) -> TestImage {
    let mut ctx = BuildContext::new()
        .bytes("Dockerfile", "FROM scratch\nCOPY root/ /\nUSER 65534:65534\n")
        .file("root/bin/sh", "/bin/sh")
        .file("root/bin/sleep", "/bin/sleep");
    let mut libs = crate::shared_libraries(Path::new("/bin/sh")).unwrap();
    for lib in crate::shared_libraries(Path::new("/bin/sleep")).unwrap() {
        if !libs.contains(&lib) {
            libs.push(lib);
        }
    }
    for lib in libs {
        ctx = ctx.file(format!("root{}", lib.display()), lib);
    }
    build(
        engine,
        ctx,
        "Dockerfile",
        format!("mlci-test-shell:{}-{test}", std::process::id()),
    )
}

/// The static mlci of `scripts/build-static`; without it the test fails (or, opted out
/// with `MLCI_SKIP=docker`, is counted as skipped: `None`).
pub fn static_binary() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join("target/static/x86_64-unknown-linux-gnu/release/mlci");
    if bin.exists() {
        Some(bin)
    } else {
        missing(
            "docker",
            "the static mlci for the scratch trainer image",
            format!("{} is missing", bin.display()),
            "scripts/build-static",
        );
        None
    }
}

/// The scratch trainer image from the static mlci, tagged for this test.
pub fn trainer_image(engine: &Arc<Engine>, test: &str) -> Option<TestImage> {
    let bin = static_binary()?;
    let tag = format!("mlci-trainer-test:{}-{test}", std::process::id());
    Some(build(engine, BuildContext::trainer(&bin), "Dockerfile", tag))
}
