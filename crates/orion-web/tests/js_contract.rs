//! The hand-written JS package must agree with the Rust side: the same error codes, the same
//! protocol version, the same version number. Runs natively (`cargo test`).
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeSet;
use std::path::PathBuf;

use orion_core::{ErrorCode, PROTOCOL_VERSION};

fn pkg_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../pkg")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every quoted `'ERR_…'` literal in `source`.
fn quoted_codes(source: &str) -> BTreeSet<String> {
    source
        .split('\'')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("ERR_"))
        .map(str::to_owned)
        .collect()
}

fn rust_codes() -> BTreeSet<String> {
    ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect()
}

#[test]
fn the_client_knows_exactly_the_core_error_codes() {
    let codes = quoted_codes(&pkg_file("index.js"));
    assert_eq!(codes, rust_codes());
}

#[test]
fn the_typescript_union_lists_exactly_the_core_error_codes() {
    let types = pkg_file("index.d.ts");
    let union = types
        .split("export type ErrorCode =")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("index.d.ts declares `export type ErrorCode = …;`");
    assert_eq!(quoted_codes(union), rust_codes());
    let constant = types
        .split("export declare const ErrorCode:")
        .nth(1)
        .and_then(|rest| rest.split("}>;").next())
        .expect("index.d.ts declares `export declare const ErrorCode: …}>;`");
    assert_eq!(quoted_codes(constant), rust_codes());
}

#[test]
fn versions_agree() {
    let protocol = format!("PROTOCOL_VERSION = {PROTOCOL_VERSION};");
    assert!(
        pkg_file("index.js").contains(&protocol),
        "index.js: {protocol}"
    );
    assert!(
        pkg_file("worker.js").contains(&protocol),
        "worker.js: {protocol}"
    );
    assert!(pkg_file("index.d.ts").contains(&format!("PROTOCOL_VERSION: {PROTOCOL_VERSION};")));

    let version = env!("CARGO_PKG_VERSION");
    assert!(
        pkg_file("index.js").contains(&format!("CLIENT_VERSION = '{version}';")),
        "index.js CLIENT_VERSION must be {version}"
    );
    assert!(
        pkg_file("package.json").contains(&format!("\"version\": \"{version}\"")),
        "package.json version must be {version}"
    );
}

#[test]
fn the_client_clears_the_cache_the_worker_fills() {
    let constant = format!("const MODEL_CACHE = '{}';", orion_web::MODEL_CACHE);
    assert!(
        pkg_file("index.js").contains(&constant),
        "index.js: {constant}"
    );
}
