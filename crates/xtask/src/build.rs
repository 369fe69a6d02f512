//! `cargo xtask build`: the wasm package, as `wasm-pack.toml` describes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::{cargo_bin, run_checked};

/// `wasm-pack.toml`; its keys are documented in the file itself.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct BuildConfig {
    #[serde(rename = "crate")]
    krate: String,
    out_dir: PathBuf,
    target: String,
    default_profile: String,
    profile: BTreeMap<String, ProfileConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ProfileConfig {
    cargo_profile: String,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    debug_info: bool,
    #[serde(default)]
    wasm_opt: WasmOpt,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum WasmOpt {
    #[default]
    Off,
    Enabled(bool),
    Flags(Vec<String>),
}

impl WasmOpt {
    fn flags(&self) -> Option<Vec<String>> {
        match self {
            WasmOpt::Off | WasmOpt::Enabled(false) => None,
            WasmOpt::Enabled(true) => Some(vec!["-O".into()]),
            WasmOpt::Flags(flags) => Some(flags.clone()),
        }
    }
}

/// Builds the wasm package with `profile` (or the file's default) into the configured out dir.
pub fn wasm(root: &Path, profile: Option<&str>) -> Result<()> {
    let path = root.join("wasm-pack.toml");
    let text = std::fs::read_to_string(&path).context("reading wasm-pack.toml")?;
    let config: BuildConfig = toml::from_str(&text).context("parsing wasm-pack.toml")?;
    let name = profile.unwrap_or(&config.default_profile);
    let Some(settings) = config.profile.get(name) else {
        bail!("wasm-pack.toml has no [profile.{name}]");
    };

    let mut cargo = Command::new("cargo");
    cargo
        .args(["build", "--target", "wasm32-unknown-unknown", "-p"])
        .arg(&config.krate)
        .args(["--profile", &settings.cargo_profile])
        .current_dir(root);
    if !settings.features.is_empty() {
        cargo.args(["--features", &settings.features.join(",")]);
    }
    run_checked(&mut cargo)?;

    // Cargo calls the dev profile's folder `debug`.
    let dir = match settings.cargo_profile.as_str() {
        "dev" => "debug",
        other => other,
    };
    let artifact = root
        .join("target/wasm32-unknown-unknown")
        .join(dir)
        .join(format!("{}.wasm", config.krate.replace('-', "_")));
    let out_dir = root.join(&config.out_dir);
    let module = out_dir.join(format!("{}_bg.wasm", config.krate.replace('-', "_")));
    let mut bindgen = Command::new(cargo_bin("wasm-bindgen"));
    bindgen
        .arg(&artifact)
        .args(["--target", &config.target, "--no-typescript", "--out-dir"])
        .arg(&out_dir);
    if settings.debug_info {
        bindgen.arg("--keep-debug");
    }
    run_checked(&mut bindgen)?;

    if let Some(flags) = settings.wasm_opt.flags() {
        let local = root.join("tests/node_modules/.bin/wasm-opt");
        let program = if local.exists() {
            local
        } else {
            PathBuf::from("wasm-opt")
        };
        run_checked(
            Command::new(program)
                .args(&flags)
                .arg(&module)
                .arg("-o")
                .arg(&module),
        )?;
    }
    let size = std::fs::metadata(&module).map(|m| m.len()).unwrap_or(0);
    println!(
        "built {} ({name}) into {} ({:.1} KiB of wasm)",
        config.krate,
        out_dir.display(),
        size as f64 / 1024.0
    );
    Ok(())
}
