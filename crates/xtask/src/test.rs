//! `cargo xtask test`: set-up, then every test suite in order of cost.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{build, cargo_bin, output_of, run_checked, serve, setup};

/// Crates that must never appear among orion-core's dependencies: the core stays platform-free.
const PLATFORM_CRATES: [&str; 5] = [
    "wasm-bindgen",
    "web-sys",
    "js-sys",
    "wasm-bindgen-futures",
    "gloo-timers",
];

/// The test server's port on 127.0.0.1.
const TEST_SERVER_PORT: u16 = 18086;

/// Runs every suite; stops at the first failing one.
pub fn all(root: &Path) -> Result<()> {
    setup::all(root)?;
    core_is_platform_free(root)?;
    section("native tests (cargo test)");
    run_checked(
        Command::new("cargo")
            .args(["test", "--workspace"])
            .current_dir(root),
    )?;
    build::wasm(root, Some("release"))?;
    // One server for the wasm tests (which fetch the models from it, so its address is compiled in
    // and must not change between runs) and the Playwright tests.
    let server = serve::Server::start_test(root, TEST_SERVER_PORT)?;
    section("wasm tests in headless Chromium (wasm-bindgen-test, dedicated worker)");
    run_checked(
        Command::new("cargo")
            .args([
                "test",
                "-p",
                "orion-web",
                "-p",
                "orion-embed",
                "-p",
                "orion-store",
                "-p",
                "orion-llm",
                "--target",
                "wasm32-unknown-unknown",
                "--release",
            ])
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                cargo_bin("wasm-bindgen-test-runner"),
            )
            .env("CHROMEDRIVER", "/usr/bin/chromedriver")
            .env("WASM_BINDGEN_TEST_TIMEOUT", "600")
            .env("ORION_TEST_ASSETS", server.url())
            .current_dir(root),
    )?;
    section("npm package (npm pack) and the fixture app that installs it");
    pack_and_install_fixture(root)?;
    section("end-to-end tests in headless Chromium (Playwright)");
    run_checked(
        Command::new("npx")
            .args(["playwright", "test"])
            .env("ORION_BASE_URL", server.url())
            .current_dir(root.join("tests")),
    )
}

fn section(title: &str) {
    println!("\n==> {title}");
}

/// `cargo tree` of orion-core's normal dependencies, for every target, must name no platform crate.
fn core_is_platform_free(root: &Path) -> Result<()> {
    section("orion-core has no platform dependency");
    let tree = output_of(
        Command::new("cargo")
            .args([
                "tree",
                "-p",
                "orion-core",
                "-e",
                "normal",
                "--target",
                "all",
                "--prefix",
                "none",
            ])
            .current_dir(root),
    )
    .context("cargo tree -p orion-core failed")?;
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| PLATFORM_CRATES.contains(name))
        .collect();
    if !found.is_empty() {
        bail!("orion-core must not depend on platform crates, but its tree has {found:?}");
    }
    println!("ok: none of {PLATFORM_CRATES:?} in orion-core's dependency tree");
    Ok(())
}

/// Packs `pkg/` the way npm publishes it and installs the tarball into `tests/fixture-app`.
fn pack_and_install_fixture(root: &Path) -> Result<()> {
    let out = root.join("target/npm");
    std::fs::create_dir_all(&out).context("creating target/npm")?;
    let packed = output_of(
        Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(&out)
            .current_dir(root.join("pkg")),
    )
    .context("npm pack in pkg/ failed")?;
    let name = packed.lines().last().unwrap_or_default().trim();
    let tarball = out.join(name);
    let stable = out.join("orion-orchestrator.tgz");
    std::fs::rename(&tarball, &stable)
        .with_context(|| format!("moving {} to {}", tarball.display(), stable.display()))?;
    println!("packed {}", stable.display());
    // npm keeps an installed file: dependency of the same version even when the tarball changed.
    let installed = root.join("tests/fixture-app/node_modules/orion-orchestrator");
    if installed.exists() {
        std::fs::remove_dir_all(&installed)
            .with_context(|| format!("removing {}", installed.display()))?;
    }
    run_checked(
        Command::new("npm")
            .args([
                "install",
                "--no-package-lock",
                "--no-audit",
                "--no-fund",
                "--install-links",
            ])
            .current_dir(root.join("tests/fixture-app")),
    )
}
