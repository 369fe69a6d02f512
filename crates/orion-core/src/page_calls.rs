//! Calls from the worker into the page: post an event carrying a call id, wait for the page's
//! answer to that id, and tell the page to stop when the worker no longer waits.
//!
//! The worker cannot call a JS function directly (it lives on the page's thread), so each call
//! is a pair of messages. Dropping a call's future (it timed out, the request was cancelled)
//! removes it and posts the abort event, so the page's `AbortSignal` fires; a late answer is then
//! refused as unknown.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use futures_channel::oneshot;

use crate::embedding::LocalBoxFuture;
use crate::protocol::Event;

/// The calls of one kind waiting for the page, with answers of type `T`.
pub struct PageCalls<T> {
    emit: Rc<dyn Fn(Event)>,
    prefix: &'static str,
    abort: fn(String) -> Event,
    next: Cell<u64>,
    pending: RefCell<HashMap<String, oneshot::Sender<T>>>,
}

impl<T: 'static> PageCalls<T> {
    /// A registry whose call ids start with `prefix` and whose aborts are `abort(call_id)`.
    pub fn new(
        emit: Rc<dyn Fn(Event)>,
        prefix: &'static str,
        abort: fn(String) -> Event,
    ) -> Rc<Self> {
        Rc::new(Self {
            emit,
            prefix,
            abort,
            next: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
        })
    }

    /// Posts `event(call_id)` and resolves with the page's answer; `None` if the registry went
    /// away first. Dropping the future aborts the call in the page.
    pub fn call(
        self: &Rc<Self>,
        event: impl FnOnce(String) -> Event,
    ) -> LocalBoxFuture<'static, Option<T>> {
        let n = self.next.get().wrapping_add(1);
        self.next.set(n);
        let call_id = format!("{}{n}", self.prefix);
        let (answer, answered) = oneshot::channel();
        self.pending.borrow_mut().insert(call_id.clone(), answer);
        let abort = AbortOnDrop {
            calls: Rc::downgrade(self),
            call_id: call_id.clone(),
        };
        (self.emit)(event(call_id));
        Box::pin(async move {
            let answer = answered.await.ok();
            drop(abort);
            answer
        })
    }

    /// Delivers the page's answer to `call_id`; `false` when no such call waits (it was
    /// answered, timed out or cancelled).
    pub fn answer(&self, call_id: &str, value: T) -> bool {
        match self.pending.borrow_mut().remove(call_id) {
            // The receiver is gone only if the call was dropped at this very moment.
            Some(sender) => {
                let _ = sender.send(value);
                true
            }
            None => false,
        }
    }

    /// How many calls wait for the page.
    pub fn waiting(&self) -> usize {
        self.pending.borrow().len()
    }
}

/// Tells the page to stop a call the worker no longer waits for.
struct AbortOnDrop<T> {
    calls: Weak<PageCalls<T>>,
    call_id: String,
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        let Some(calls) = self.calls.upgrade() else {
            return;
        };
        let was_pending = calls.pending.borrow_mut().remove(&self.call_id).is_some();
        if was_pending {
            (calls.emit)((calls.abort)(std::mem::take(&mut self.call_id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use crate::store::conformance::block_on;

    fn registry() -> (Rc<RefCell<Vec<Event>>>, Rc<PageCalls<u32>>) {
        let events = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&events);
        let calls = PageCalls::new(
            Rc::new(move |event| sink.borrow_mut().push(event)),
            "t",
            |call_id| Event::ToolHostAbort { call_id },
        );
        (events, calls)
    }

    fn abort(call_id: &str) -> Event {
        Event::ToolHostAbort {
            call_id: call_id.into(),
        }
    }

    #[test]
    fn an_answer_resolves_its_call_once() {
        let (events, calls) = registry();
        let call = calls.call(|call_id| abort(&format!("posted {call_id}")));
        assert_eq!(*events.borrow(), [abort("posted t1")]);
        assert_eq!(calls.waiting(), 1);
        assert!(calls.answer("t1", 7));
        assert!(!calls.answer("t1", 8), "a second answer is refused");
        assert_eq!(block_on(call), Some(7));
        assert_eq!(calls.waiting(), 0);
        assert_eq!(events.borrow().len(), 1, "an answered call is not aborted");
    }

    #[test]
    fn dropping_an_unanswered_call_aborts_it_and_refuses_its_late_answer() {
        let (events, calls) = registry();
        let mut call = calls.call(|_| abort("posted"));
        assert!(call.as_mut().now_or_never().is_none());
        drop(call);
        assert_eq!(*events.borrow(), [abort("posted"), abort("t1")]);
        assert!(!calls.answer("t1", 1));
        assert_eq!(calls.waiting(), 0);
    }
}
