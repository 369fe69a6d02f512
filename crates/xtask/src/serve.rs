//! A static file server for the demo and the browser tests, on 127.0.0.1 only.
//!
//! Serves `www/` at `/`, the npm package `pkg/` at `/pkg/`, the fixture app at `/fixture/` and the
//! model files at `/models/` (and, for `cargo xtask bench` only, `tests/bench/node_modules/` and a
//! transformers.js page: [`Server::start_bench`]), with
//! the headers ORION is meant to run under: a strict Content-Security-Policy (no inline script, no
//! eval, wasm allowed), cross-origin isolation (COOP/COEP) and correct MIME types. Written on
//! tiny_http rather than a framework: it is a dev server with no routing beyond these mounts.

use std::io::Cursor;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};
use tiny_http::{Header, Method, Request, Response};

/// The policy every response carries.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
worker-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The policy of the benchmark's transformers.js page (`/bench/`, served by
/// [`Server::start_bench`] only): [`CONTENT_SECURITY_POLICY`] with `blob:` added to `script-src`.
/// transformers.js 4.3.1, with its default `env.useWasmCache = true`, keeps onnxruntime-web's `.mjs`
/// loader in Cache Storage and `import()`s it from a `blob:` URL; under `script-src 'self'` that
/// import fails and no backend loads. ORION's pages never get this policy.
pub const BENCH_PAGE_CSP: &str = "default-src 'self'; script-src 'self' blob: 'wasm-unsafe-eval'; \
worker-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The policy of the LLM benchmark's page (`/bench-llm/`, served by [`Server::start_bench`] only):
/// [`CONTENT_SECURITY_POLICY`] with `blob:` added to `script-src` and `worker-src`. wllama 3.8.1
/// starts its llama.cpp worker from a `blob:` URL of code it carries. ORION's pages never get this
/// policy.
pub const BENCH_LLM_CSP: &str = "default-src 'self'; script-src 'self' blob: 'wasm-unsafe-eval'; \
worker-src 'self' blob:; connect-src 'self'; style-src 'self'; img-src 'self' data:; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A running server; dropping it does not stop it (the process exit does).
pub struct Server {
    url: String,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Serves on 127.0.0.1:`port` (0 picks a free port).
    pub fn start(root: &Path, port: u16) -> Result<Self> {
        Self::start_with(root, port, Vec::new(), Vec::new())
    }

    /// The server of `cargo xtask test`: the usual mounts, and the end-to-end tests' npm packages
    /// (`tests/node_modules/`) at `/test-modules/`, so that a test page can load a library it
    /// checks ORION against (Dexie and dexie-export-import) from here, never from a CDN.
    pub fn start_test(root: &Path, port: u16) -> Result<Self> {
        Self::start_with(
            root,
            port,
            vec![("/test-modules/".to_owned(), root.join("tests/node_modules"))],
            Vec::new(),
        )
    }

    /// The server of `cargo xtask bench`: the usual mounts, the benchmarks' npm packages
    /// (`tests/bench/node_modules/`) at `/node_modules/` so that transformers.js, onnxruntime-web's
    /// wasm files, Dexie and idb-keyval come from here (never from a CDN), and the fixture app
    /// again at `/bench/` under [`BENCH_PAGE_CSP`] for the transformers.js page, and `tests/bench/`
    /// itself at `/bench-harness/` (scripts a harness runs in the browser, such as a worker), and
    /// again at `/bench-llm/` under [`BENCH_LLM_CSP`] for the LLM benchmark's page. Only the
    /// benchmarks serve these.
    pub fn start_bench(root: &Path) -> Result<Self> {
        Self::start_with(
            root,
            0,
            vec![
                (
                    "/node_modules/".to_owned(),
                    root.join("tests/bench/node_modules"),
                ),
                ("/bench/".to_owned(), root.join("tests/fixture-app")),
                // The harnesses' own scripts (the worker of `bench tasks`).
                ("/bench-harness/".to_owned(), root.join("tests/bench")),
                // The same, under the LLM benchmark's policy (its page, for wllama).
                ("/bench-llm/".to_owned(), root.join("tests/bench")),
            ],
            vec![
                ("/bench/".to_owned(), BENCH_PAGE_CSP),
                ("/bench-llm/".to_owned(), BENCH_LLM_CSP),
            ],
        )
    }

    /// `extra` mounts come before the usual ones; a response under a prefix of `policies` carries
    /// that policy instead of [`CONTENT_SECURITY_POLICY`].
    fn start_with(
        root: &Path,
        port: u16,
        extra: Vec<(String, PathBuf)>,
        policies: Vec<(String, &'static str)>,
    ) -> Result<Self> {
        let server = tiny_http::Server::http(("127.0.0.1", port))
            .map_err(|e| anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let url = match server.server_addr().to_ip() {
            Some(addr) => format!("http://{addr}"),
            None => return Err(anyhow!("the server has no IP address")),
        };
        let server = Arc::new(server);
        let mut mounts = extra;
        mounts.extend([
            ("/pkg/".to_owned(), root.join("pkg")),
            ("/fixture/".to_owned(), root.join("tests/fixture-app")),
            ("/models/".to_owned(), root.join("models")),
            // The reference data beside the repository (tests compare against it).
            ("/reference/".to_owned(), root.join("../shared/reference")),
            ("/".to_owned(), root.join("www")),
        ]);
        let site = Arc::new(Site { mounts, policies });
        let threads = (0..4)
            .map(|_| {
                let server = Arc::clone(&server);
                let site = Arc::clone(&site);
                std::thread::spawn(move || {
                    for request in server.incoming_requests() {
                        respond(request, &site);
                    }
                })
            })
            .collect();
        Ok(Self { url, threads })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Blocks until the server stops (it does not, short of the process ending).
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// What a server serves: its mounts (first matching prefix wins) and its per-prefix policies.
struct Site {
    mounts: Vec<(String, PathBuf)>,
    policies: Vec<(String, &'static str)>,
}

impl Site {
    fn policy(&self, url: &str) -> &'static str {
        self.policies
            .iter()
            .find(|(prefix, _)| url.starts_with(prefix.as_str()))
            .map_or(CONTENT_SECURITY_POLICY, |(_, policy)| policy)
    }
}

fn respond(request: Request, site: &Site) {
    let method = request.method().clone();
    let url = request
        .url()
        .split(['?', '#'])
        .next()
        .unwrap_or("/")
        .to_owned();
    let csp = site.policy(&url);
    let response = if method != Method::Get && method != Method::Head {
        text(405, "method not allowed", csp)
    } else {
        match resolve(&url, &site.mounts) {
            Some(path) => match std::fs::read(&path) {
                // Never chunked: clients (ORION's model loader among them) check Content-Length.
                Ok(body) => with_headers(
                    Response::from_data(body).with_chunked_threshold(usize::MAX),
                    content_type(&path),
                    csp,
                ),
                Err(_) => text(404, "not found", csp),
            },
            None => text(404, "not found", csp),
        }
    };
    let _ = request.respond(response);
}

/// The file for `url`, if it is inside a mount and exists (`index.html` for a folder).
fn resolve(url: &str, mounts: &[(String, PathBuf)]) -> Option<PathBuf> {
    let (prefix, dir) = mounts
        .iter()
        .find(|(prefix, _)| url.starts_with(prefix.as_str()))?;
    let relative = Path::new(url.get(prefix.len()..)?);
    // Only plain names: no `..`, no absolute parts, so nothing outside the mount is reachable.
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let path = dir.join(relative);
    let path = if path.is_dir() {
        path.join("index.html")
    } else {
        path
    };
    path.is_file().then_some(path)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        "ts" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn text(status: u16, body: &str, csp: &str) -> Response<Cursor<Vec<u8>>> {
    with_headers(
        Response::from_string(body).with_status_code(status),
        "text/plain; charset=utf-8",
        csp,
    )
}

fn with_headers(
    response: Response<Cursor<Vec<u8>>>,
    content_type: &str,
    csp: &str,
) -> Response<Cursor<Vec<u8>>> {
    [
        ("Content-Type", content_type),
        ("Content-Security-Policy", csp),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Embedder-Policy", "require-corp"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        // The wasm tests run on wasm-bindgen-test-runner's own origin and fetch models from here.
        ("Access-Control-Allow-Origin", "*"),
        ("X-Content-Type-Options", "nosniff"),
        // Always revalidate: the service worker, not the HTTP cache, is what keeps ORION offline.
        ("Cache-Control", "no-cache"),
    ]
    .into_iter()
    .filter_map(|(name, value)| Header::from_bytes(name, value).ok())
    .fold(response, Response::with_header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside_the_mounts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mounts = vec![
            ("/pkg/".to_owned(), root.join("pkg")),
            ("/".to_owned(), root.join("www")),
        ];
        assert!(resolve("/", &mounts).is_some_and(|p| p.ends_with("www/index.html")));
        assert!(resolve("/pkg/index.js", &mounts).is_some_and(|p| p.ends_with("pkg/index.js")));
        assert_eq!(resolve("/../Cargo.toml", &mounts), None);
        assert_eq!(resolve("/pkg/../Cargo.toml", &mounts), None);
        assert_eq!(resolve("/missing.html", &mounts), None);
    }

    #[test]
    fn only_the_bench_page_gets_the_relaxed_policy() {
        let site = Site {
            mounts: Vec::new(),
            policies: vec![("/bench/".to_owned(), BENCH_PAGE_CSP)],
        };
        assert_eq!(site.policy("/bench/blank.html"), BENCH_PAGE_CSP);
        assert_eq!(site.policy("/fixture/blank.html"), CONTENT_SECURITY_POLICY);
        assert_eq!(site.policy("/"), CONTENT_SECURITY_POLICY);
        assert!(!CONTENT_SECURITY_POLICY.contains("blob:"));
        assert_eq!(
            BENCH_PAGE_CSP.replace(" blob:", ""),
            CONTENT_SECURITY_POLICY,
            "the bench policy differs from the strict one by `blob:` in script-src only"
        );
    }

    #[test]
    fn mime_types() {
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        assert!(content_type(Path::new("a.js")).starts_with("text/javascript"));
        assert!(content_type(Path::new("a.html")).starts_with("text/html"));
    }
}
