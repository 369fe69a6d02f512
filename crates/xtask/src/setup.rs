//! Idempotent installation of everything the build and the tests need. Each step checks first and
//! returns in milliseconds when its tool is already there.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo_bin, output_of, run_checked};

/// Every set-up step.
pub fn all(root: &Path) -> Result<()> {
    wasm_toolchain(root)?;
    browser()?;
    npm_deps(root)?;
    crate::models::fetch(root)
}

/// The wasm32 target and the wasm-bindgen CLI at exactly Cargo.lock's wasm-bindgen version.
pub fn wasm_toolchain(root: &Path) -> Result<()> {
    let targets = output_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the wasm32 target")?;
    if !targets
        .lines()
        .any(|t| t.trim() == "wasm32-unknown-unknown")
    {
        run_checked(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    let wanted = locked_version(root, "wasm-bindgen")?;
    let installed = output_of(Command::new(cargo_bin("wasm-bindgen")).arg("--version"));
    let runner = output_of(Command::new(cargo_bin("wasm-bindgen-test-runner")).arg("--version"));
    let matches = |out: &Option<String>| {
        out.as_deref()
            .is_some_and(|v| v.split_whitespace().nth(1) == Some(wanted.as_str()))
    };
    if !(matches(&installed) && matches(&runner)) {
        // Not --locked: a dependency pinned in the CLI's own lock file is not on the registry here.
        run_checked(Command::new("cargo").args([
            "install",
            "wasm-bindgen-cli",
            "--version",
            &wanted,
            "--force",
        ]))?;
    }
    Ok(())
}

/// Debian's chromium and chromedriver, and node with npm.
pub fn browser() -> Result<()> {
    let mut missing = Vec::new();
    if !Path::new("/usr/bin/chromium").exists() {
        missing.push("chromium");
    }
    if !Path::new("/usr/bin/chromedriver").exists() {
        missing.push("chromium-driver");
    }
    if output_of(Command::new("node").arg("--version")).is_none() {
        missing.extend(["nodejs", "npm"]);
    } else if output_of(Command::new("npm").arg("--version")).is_none() {
        missing.push("npm");
    }
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

pub fn apt_install(packages: &[&str]) -> Result<()> {
    // The dpkg lock may be held briefly by another apt run (TOOLCHAIN.md): retry a few times.
    for attempt in 1..=5 {
        let ok = Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        eprintln!("apt-get install {packages:?} failed (attempt {attempt} of 5); retrying");
        std::thread::sleep(std::time::Duration::from_secs(10));
    }
    bail!("could not install {packages:?} with apt-get (are you root?)")
}

/// The npm dependencies of `tests/` (Playwright), installed from its lock file.
pub fn npm_deps(root: &Path) -> Result<()> {
    npm_ci(&root.join("tests"))
}

/// The npm dependencies of the benchmarks, `tests/bench/` (transformers.js, Dexie, idb-keyval and
/// Playwright; about 500 MB, most of it onnxruntime-node's native binaries that nothing uses),
/// installed from its lock file. Only `cargo xtask bench` calls this: the tests and CI never
/// download them.
pub fn bench_packages(root: &Path) -> Result<()> {
    npm_ci(&root.join("tests/bench"))
}

/// `npm ci` in `dir` unless its `node_modules/` is at least as new as its lock file.
fn npm_ci(dir: &Path) -> Result<()> {
    let installed = dir.join("node_modules/.package-lock.json");
    let lock = dir.join("package-lock.json");
    let fresh = match (modified(&installed), modified(&lock)) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    };
    if !fresh {
        run_checked(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
                // transformers.js (a benchmark's peer) depends on onnxruntime-node, whose install
                // script downloads native (and CUDA) binaries; only its browser side is used.
                .env("ONNXRUNTIME_NODE_INSTALL", "skip")
                .env("ONNXRUNTIME_NODE_INSTALL_CUDA", "skip")
                .current_dir(dir),
        )
        .with_context(|| format!("npm ci in {}", dir.display()))?;
    }
    Ok(())
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

/// The version of `package` in Cargo.lock.
pub fn locked_version(root: &Path, package: &str) -> Result<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let lock: toml::Value = toml::from_str(&lock).context("parsing Cargo.lock")?;
    lock.get("package")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(toml::Value::as_str) == Some(package))
        .and_then(|p| p.get("version").and_then(toml::Value::as_str))
        .map(str::to_owned)
        .with_context(|| format!("{package} is not in Cargo.lock"))
}
