//! IndexedDB's events as futures, and its errors as [`orion_core::Error`]s.

use js_sys::{Function, Promise};
use orion_core::Error;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{DomException, IdbRequest, IdbTransaction};

/// The name IndexedDB gives a lack of storage quota (a `DOMException`, or since 2025 its
/// `QuotaExceededError` subclass, which still is one).
const QUOTA_EXCEEDED: &str = "QuotaExceededError";

/// A DOM error as an [`Error`]: `Quota` for a lack of quota, `Store` naming `context`, the
/// error's name and its message otherwise.
pub(crate) fn dom_error(context: &str, error: &DomException) -> Error {
    if error.name() == QUOTA_EXCEEDED {
        Error::Quota(format!("{context}: {}", error.message()))
    } else {
        Error::Store(format!("{context}: {}: {}", error.name(), error.message()))
    }
}

/// Whatever a DOM call threw, as an [`Error`] (normally a `DOMException`; anything else is
/// described as best JS can).
pub(crate) fn thrown(context: &str, value: &JsValue) -> Error {
    if let Some(error) = value.dyn_ref::<DomException>() {
        return dom_error(context, error);
    }
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return Error::Store(format!("{context}: {}: {}", error.name(), error.message()));
    }
    Error::Store(format!("{context}: {value:?}"))
}

/// An idb error as an [`Error`]. idb keeps the DOM error in most variants; the ones that matter
/// here (opening, transactions) carry it as a `DOMException` or as the thrown value.
pub(crate) fn idb_error(context: &str, error: idb::Error) -> Error {
    use idb::Error as E;
    match &error {
        E::DomException(exception) => dom_error(context, exception),
        E::IndexedDbOpenFailed(value)
        | E::IndexedDbNotFound(value)
        | E::TransactionOpenFailed(value)
        | E::ObjectStoreNotFound(value)
        | E::IndexNotFound(value)
        | E::ObjectStoreCreateFailed(value)
        | E::IndexCreateFailed(value) => thrown(context, value),
        _ => Error::Store(format!("{context}: {error}")),
    }
}

/// A promise settled by the events `set` attaches, as a future. `set` runs synchronously inside
/// the promise's executor, so the handlers are in place before control returns to the event loop
/// (IndexedDB fires events as tasks, never while this code runs).
fn settled(set: impl FnOnce(&Function, &Function)) -> JsFuture {
    let mut set = Some(set);
    let promise = Promise::new(&mut |resolve, reject| {
        if let Some(set) = set.take() {
            set(&resolve, &reject);
        }
    });
    JsFuture::from(promise)
}

/// A request whose outcome will be awaited: its handlers are attached when it is made, so that
/// many requests can be placed at once and awaited in turn without missing an event.
pub(crate) struct Pending {
    request: IdbRequest,
    done: JsFuture,
}

impl Pending {
    /// Watches `request` (call it right after making the request).
    pub(crate) fn new(request: IdbRequest) -> Self {
        let done = settled(|resolve, reject| {
            request.set_onsuccess(Some(resolve));
            request.set_onerror(Some(reject));
        });
        Self { request, done }
    }

    /// The request's result, or its error naming `context`.
    pub(crate) async fn result(self, context: &str) -> Result<JsValue, Error> {
        match self.done.await {
            Ok(_) => self
                .request
                .result()
                .map_err(|error| thrown(context, &error)),
            Err(_) => Err(match self.request.error() {
                Ok(Some(error)) => dom_error(context, &error),
                Ok(None) => Error::Store(format!("{context}: the request failed without an error")),
                Err(error) => thrown(context, &error),
            }),
        }
    }
}

/// How a transaction ended.
pub(crate) struct Outcome {
    done: JsFuture,
}

impl Outcome {
    /// Watches `transaction` for `complete` and `abort` (call it right after creating it).
    pub(crate) fn new(transaction: &IdbTransaction) -> Self {
        let done = settled(|resolve, reject| {
            transaction.set_oncomplete(Some(resolve));
            transaction.set_onabort(Some(reject));
        });
        Self { done }
    }

    /// Aborts `transaction` (undoing the requests placed) and returns once the abort is through,
    /// so that no read sees them.
    pub(crate) async fn abort(self, transaction: &IdbTransaction) {
        let _ = transaction.abort();
        let _ = self.committed(transaction).await;
    }

    /// `Ok` once `complete` fired (the changes are committed); on `abort`, the reason the browser
    /// gave in `IDBTransaction.error`: the first failed request's error, or a failure at commit,
    /// which is where Chromium reports a lack of quota. An abort this code asked for has no error.
    pub(crate) async fn committed(self, transaction: &IdbTransaction) -> Result<(), Error> {
        match self.done.await {
            Ok(_) => Ok(()),
            Err(_) => Err(match transaction.error() {
                Some(error) => dom_error("the write was aborted", &error),
                None => Error::Store("the write was aborted".into()),
            }),
        }
    }
}

#[cfg(test)]
// A failed unwrap in a test is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use wasm_bindgen_test::*;

    use super::*;

    wasm_bindgen_test_configure!(run_in_dedicated_worker);

    /// No script can run a browser out of quota on demand, so the mapping is checked on the
    /// exception IndexedDB would put in the request's or the transaction's `error`.
    #[wasm_bindgen_test]
    fn quota_exceeded_is_a_quota_error_wherever_it_comes_from() {
        let quota =
            DomException::new_with_message_and_name("the disk is full", QUOTA_EXCEEDED).unwrap();
        assert!(matches!(dom_error("w", &quota), Error::Quota(m) if m == "w: the disk is full"));
        assert!(matches!(thrown("w", &quota.into()), Error::Quota(_)));
        let other = DomException::new_with_message_and_name("no", "ConstraintError").unwrap();
        assert!(matches!(dom_error("w", &other), Error::Store(m) if m == "w: ConstraintError: no"));
        assert!(matches!(
            thrown("w", &js_sys::Error::new("boom").into()),
            Error::Store(m) if m == "w: Error: boom"
        ));
    }
}
