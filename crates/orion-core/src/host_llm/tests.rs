//! The host generator's settings and call bookkeeping; its timing (timeouts, retries,
//! cancellation, the breaker) is tested through the runtime in `runtime::llm_requests`.

use super::*;
use crate::clock::ManualClock;

fn field(result: Result<()>) -> Option<String> {
    match result {
        Err(Error::InvalidInput { field, .. }) => Some(field),
        Err(other) => panic!("unexpected {other:?}"),
        Ok(()) => None,
    }
}

#[test]
fn settings_have_defaults_and_checked_ranges() {
    let config: HostLlmConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, HostLlmConfig::default());
    assert_eq!(config.timeout_ms, DEFAULT_HOST_TIMEOUT_MS);
    assert_eq!(field(config.validate("llm.host")), None);
    let bad = [
        (
            HostLlmConfig {
                timeout_ms: 0,
                ..config
            },
            "llm.host.timeoutMs",
        ),
        (
            HostLlmConfig {
                attempts: 0,
                ..config
            },
            "llm.host.attempts",
        ),
        (
            HostLlmConfig {
                attempts: MAX_HOST_ATTEMPTS + 1,
                ..config
            },
            "llm.host.attempts",
        ),
        (
            HostLlmConfig {
                backoff_ms: MAX_HOST_BACKOFF_MS + 1,
                ..config
            },
            "llm.host.backoffMs",
        ),
    ];
    for (config, expected) in bad {
        assert_eq!(
            field(config.validate("llm.host")).as_deref(),
            Some(expected)
        );
    }
    assert!(serde_json::from_str::<HostLlmConfig>(r#"{"timeout": 5}"#).is_err());
}

#[test]
fn answers_for_unknown_calls_name_the_call_id() {
    let clock = ManualClock::new(0);
    let host = HostLlm::new(
        HostLlmConfig::default(),
        clock.shared(),
        Rc::new(|_| Box::pin(std::future::pending())),
        Rc::new(|_| {}),
    );
    assert_eq!(
        field(host.chunk("l9", "x".into())).as_deref(),
        Some("callId")
    );
    assert_eq!(
        field(host.answer("l9", Ok(Some("x".into())))).as_deref(),
        Some("callId")
    );
    assert_eq!(host.waiting(), 0);
    assert_eq!(host.info().kind, "host");
}
