//! A static file server for the demo and the browser tests, on 127.0.0.1 only.
//!
//! Serves `www/` at `/`, the npm package `pkg/` at `/pkg/`, the fixture app at `/fixture/` and the
//! model files at `/models/`, with
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

/// A running server; dropping it does not stop it (the process exit does).
pub struct Server {
    url: String,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Serves on 127.0.0.1:`port` (0 picks a free port).
    pub fn start(root: &Path, port: u16) -> Result<Self> {
        let server = tiny_http::Server::http(("127.0.0.1", port))
            .map_err(|e| anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let url = match server.server_addr().to_ip() {
            Some(addr) => format!("http://{addr}"),
            None => return Err(anyhow!("the server has no IP address")),
        };
        let server = Arc::new(server);
        let mounts = Arc::new(vec![
            ("/pkg/".to_owned(), root.join("pkg")),
            ("/fixture/".to_owned(), root.join("tests/fixture-app")),
            ("/models/".to_owned(), root.join("models")),
            // The reference data beside the repository (tests compare against it).
            ("/reference/".to_owned(), root.join("../shared/reference")),
            ("/".to_owned(), root.join("www")),
        ]);
        let threads = (0..4)
            .map(|_| {
                let server = Arc::clone(&server);
                let mounts = Arc::clone(&mounts);
                std::thread::spawn(move || {
                    for request in server.incoming_requests() {
                        respond(request, &mounts);
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

fn respond(request: Request, mounts: &[(String, PathBuf)]) {
    let method = request.method().clone();
    let url = request
        .url()
        .split(['?', '#'])
        .next()
        .unwrap_or("/")
        .to_owned();
    let response = if method != Method::Get && method != Method::Head {
        text(405, "method not allowed")
    } else {
        match resolve(&url, mounts) {
            Some(path) => match std::fs::read(&path) {
                Ok(body) => with_headers(Response::from_data(body), content_type(&path)),
                Err(_) => text(404, "not found"),
            },
            None => text(404, "not found"),
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

fn text(status: u16, body: &str) -> Response<Cursor<Vec<u8>>> {
    with_headers(
        Response::from_string(body).with_status_code(status),
        "text/plain; charset=utf-8",
    )
}

fn with_headers(
    response: Response<Cursor<Vec<u8>>>,
    content_type: &str,
) -> Response<Cursor<Vec<u8>>> {
    [
        ("Content-Type", content_type),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
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
    fn mime_types() {
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        assert!(content_type(Path::new("a.js")).starts_with("text/javascript"));
        assert!(content_type(Path::new("a.html")).starts_with("text/html"));
    }
}
