//! [`QuotaRelief`]: what a store does when a write fails for lack of quota: it asks the function
//! it was given to free space (the backup manager deletes the oldest automatic backups) and, if
//! that freed anything, tries the same write once more. A store keeps the write it failed (in
//! IndexedDB, its rows already converted), so the retry copies nothing.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};

/// Frees space; answers how many things it deleted (0: nothing could be freed).
pub type Relief = Rc<dyn Fn() -> LocalBoxFuture<'static, Result<usize>>>;

/// The relief a store was given, and whether it is running (its own deletions never ask for it).
#[derive(Default)]
pub struct QuotaRelief {
    relief: RefCell<Option<Relief>>,
    running: Cell<bool>,
}

impl std::fmt::Debug for QuotaRelief {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaRelief")
            .field("set", &self.relief.borrow().is_some())
            .field("running", &self.running.get())
            .finish()
    }
}

impl QuotaRelief {
    /// Sets (or replaces) the relief.
    pub fn set(&self, relief: Relief) {
        *self.relief.borrow_mut() = Some(relief);
    }

    /// After a write failed with `error`: when it lacked quota and the relief freed something,
    /// the answer of `again()` (the same write, once more; should it lack quota still, the error
    /// says what was deleted); otherwise `error`, saying why nothing was freed.
    pub async fn retry<T, F>(&self, error: Error, again: impl FnOnce() -> F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let deleted = self.relieve(error).await?;
        again().await.map_err(|error| match error {
            Error::Quota(reason) => Error::Quota(format!(
                "{reason} (still, after deleting {deleted} automatic backups to make room)"
            )),
            other => other,
        })
    }

    /// Runs the relief for a write that failed with `error`: `Ok(deleted)` when it freed
    /// something; otherwise the error to answer.
    async fn relieve(&self, error: Error) -> std::result::Result<usize, Error> {
        let Error::Quota(reason) = error else {
            return Err(error);
        };
        // The relief's own deletions never ask for it.
        let relief = match self.relief.borrow().clone() {
            Some(relief) if !self.running.get() => relief,
            _ => return Err(Error::Quota(reason)),
        };
        self.running.set(true);
        let freed = relief().await;
        self.running.set(false);
        match freed {
            Ok(0) => Err(Error::Quota(format!(
                "{reason} (and there was no automatic backup to delete)"
            ))),
            Ok(deleted) => Ok(deleted),
            Err(failure) => Err(Error::Quota(format!(
                "{reason} (and deleting automatic backups to make room failed: {failure})"
            ))),
        }
    }
}
