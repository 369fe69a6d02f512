use serde_json::json;

use super::*;

fn rejected(message: Value) -> Rejection {
    match decode(message) {
        Ok(envelope) => panic!("accepted {envelope:?}"),
        Err(rejection) => rejection,
    }
}

fn invalid_at(rejection: &Rejection) -> &str {
    match &rejection.error {
        Error::InvalidMessage { path, .. } => path,
        other => panic!("expected ERR_INVALID_MESSAGE, got {other:?}"),
    }
}

#[test]
fn decodes_every_request_type() {
    let cases = [
        (
            json!({"v": 1, "id": 1, "type": "ping"}),
            Request::Ping {
                payload: Value::Null,
            },
        ),
        (
            json!({"v": 1, "id": 1, "type": "ping", "payload": {"a": [1, "x"]}}),
            Request::Ping {
                payload: json!({"a": [1, "x"]}),
            },
        ),
        (
            json!({"v": 1, "id": 1, "type": "health"}),
            Request::Health {},
        ),
        (
            json!({"v": 1, "id": 1, "type": "version"}),
            Request::Version {},
        ),
        (json!({"v": 1, "id": 1, "type": "crash"}), Request::Crash {}),
        (
            json!({"v": 1, "id": 1, "type": "init", "debug": true, "breaker": {"failureThreshold": 2}}),
            Request::Init {
                debug: true,
                breaker: BreakerConfig {
                    failure_threshold: 2,
                    ..BreakerConfig::default()
                },
                health: HealthConfig::default(),
                profile: ProfileRequest::Auto,
                models: Box::default(),
                database: None,
                memory: MemorySettings::default(),
                tasks: crate::tasks::TaskSettings::default(),
                llm: Box::default(),
                tools: Vec::new(),
                ask: Default::default(),
                backups: Default::default(),
            },
        ),
        (
            json!({"v": 1, "id": 1, "type": "llm_cancel", "requestId": 7}),
            Request::LlmCancel { request_id: 7 },
        ),
    ];
    for (message, expected) in cases {
        let envelope = decode(message.clone()).unwrap_or_else(|r| panic!("{message}: {r:?}"));
        assert_eq!(envelope.id, 1);
        assert_eq!(envelope.request, expected);
        assert_eq!(Some(envelope.request.kind()), message["type"].as_str());
    }
}

#[test]
fn a_message_that_is_not_an_object_has_no_id() {
    for message in [json!(null), json!("ping"), json!(3), json!([1, 2])] {
        let r = rejected(message);
        assert_eq!(r.id, None);
        assert_eq!(invalid_at(&r), ".");
    }
}

#[test]
fn a_bad_id_is_reported_without_an_id() {
    for id in [
        json!("7"),
        json!(-1),
        json!(1.5),
        json!(4_294_967_296_u64),
        json!(null),
        json!({}),
    ] {
        let r = rejected(json!({"v": 1, "id": id, "type": "ping"}));
        assert_eq!(r.id, None, "{id}");
        assert_eq!(invalid_at(&r), "id");
    }
    let r = rejected(json!({"v": 1, "type": "ping"}));
    assert_eq!(invalid_at(&r), "id");
    assert!(r.error.to_string().contains("missing"), "{}", r.error);
}

#[test]
fn the_protocol_version_is_checked() {
    let r = rejected(json!({"v": 2, "id": 4, "type": "ping"}));
    assert_eq!(r.id, Some(4));
    assert_eq!(
        r.error,
        Error::UnsupportedProtocol {
            got: 2,
            supported: 1
        }
    );
    let r = rejected(json!({"id": 4, "type": "ping"}));
    assert_eq!(invalid_at(&r), "v");
    let r = rejected(json!({"v": "1", "id": 4, "type": "ping"}));
    assert_eq!(invalid_at(&r), "v");
}

#[test]
fn unknown_or_missing_types_point_at_type() {
    let r = rejected(json!({"v": 1, "id": 9, "type": "launch_missiles"}));
    assert_eq!(r.id, Some(9));
    assert_eq!(invalid_at(&r), "type");
    assert!(
        r.error.to_string().contains("launch_missiles"),
        "{}",
        r.error
    );
    let r = rejected(json!({"v": 1, "id": 9}));
    assert_eq!(invalid_at(&r), "type");
    let r = rejected(json!({"v": 1, "id": 9, "type": 5}));
    assert_eq!(invalid_at(&r), "type");
}

#[test]
fn mistyped_and_unknown_fields_are_refused_with_their_path() {
    let r = rejected(json!({"v": 1, "id": 3, "type": "init", "debug": "yes"}));
    assert_eq!(r.id, Some(3));
    assert_eq!(invalid_at(&r), "debug");
    let r = rejected(json!({"v": 1, "id": 3, "type": "init", "breaker": {"openTimeoutMs": -5}}));
    assert_eq!(invalid_at(&r), "breaker.openTimeoutMs");
    let r = rejected(json!({"v": 1, "id": 3, "type": "ping", "paylod": 1}));
    assert!(r.error.to_string().contains("paylod"), "{}", r.error);
    let r = rejected(json!({"v": 1, "id": 3, "type": "health", "extra": true}));
    assert!(r.error.to_string().contains("extra"), "{}", r.error);
}

#[test]
fn outgoing_messages_have_the_documented_shape() {
    let response = Outgoing::Response {
        v: PROTOCOL_VERSION,
        id: 5,
        result: ResponseBody::Pong(Pong {
            payload: json!("hi"),
            at_ms: 12,
        }),
    };
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"type": "response", "v": 1, "id": 5, "result": {"payload": "hi", "atMs": 12}})
    );
    let error = Outgoing::error(None, &Error::invalid("id", "missing field"));
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        json!({"type": "error", "v": 1, "id": null, "error": {
            "code": "ERR_INVALID_MESSAGE", "message": "invalid message at `id`: missing field"}})
    );
}

#[test]
fn an_import_takes_its_text_whole_or_in_pieces_and_nothing_else() {
    let import = |text: Value| {
        decode(json!({"v": 1, "id": 3, "type": "backups_import", "text": text}))
            .map(|envelope| envelope.request)
    };
    let whole = import(json!("{\"formatName\":\"dexie\"}")).unwrap();
    assert!(matches!(
        whole,
        Request::BackupsImport { text: BackupText::Whole(ref text), .. } if text == "{\"formatName\":\"dexie\"}"
    ));
    let Request::BackupsImport { text: pieces, .. } = import(json!(["{\"a\"", ":1}"])).unwrap()
    else {
        panic!("not an import");
    };
    assert_eq!(pieces.join(), "{\"a\":1}");
    for (bad, path) in [
        (json!(7), "text"),
        (json!(["a", 1]), "text[1]"),
        (json!({"text": "x"}), "text"),
        (Value::Null, "text"),
    ] {
        let rejection = import(bad.clone()).unwrap_err();
        assert_eq!(invalid_at(&rejection), path, "{bad}");
    }
}
