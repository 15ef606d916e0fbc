//! Property-based fuzzing of the protocol layer through the public library
//! API: request parsing, line framing, rendered events and names.
//!
//! Every property runs a bounded number of cases (a couple of seconds in a
//! debug build) and nothing is persisted: a failure prints its minimal
//! input, which belongs in a unit test once understood.

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Value, json};
use switchboard::names::is_valid_name;
use switchboard::protocol::codec::{Frame, LineCodec};
use switchboard::protocol::error::ErrorCode;
use switchboard::protocol::reply::Event;
use switchboard::protocol::request::{ChatRequest, Request, parse};
use tokio_util::codec::Decoder;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Valid user names: 1 to 64 bytes of the contract's alphabet.
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.@-]{1,64}"
}

/// A `ref` as the contract allows it: a string or a 64-bit integer.
fn reference() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        any::<i64>().prop_map(|n| Some(json!(n))),
        any::<u64>().prop_map(|n| Some(json!(n))),
        any::<String>().prop_map(|s| Some(json!(s))),
    ]
}

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop_oneof![
            Just("login"),
            Just("chat"),
            Just("ping"),
            Just("who"),
            Just("logout")
        ]
        .prop_map(|s| json!(s)),
        name().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request-shaped object: known fields with arbitrary values.
fn request_object() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just("cmd"),
        Just("ref"),
        Just("name"),
        Just("recv"),
        Just("send"),
        Just("content"),
        Just("token"),
        Just("extra"),
    ];
    prop::collection::vec((field, json_value()), 0..7).prop_map(|fields| {
        let mut map = serde_json::Map::new();
        for (k, v) in fields {
            map.insert(k.to_owned(), v);
        }
        Value::Object(map)
    })
}

/// Encodes a string as a JSON string literal with every non-ASCII
/// character (and some ASCII) written as `\uXXXX` escapes, surrogate pairs
/// included: another client's legal spelling of the same text.
fn escaped_literal(s: &str) -> String {
    let mut out = String::from("\"");
    let mut units = [0u16; 2];
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out.push('"');
    out
}

/// Feeds `input` to a fresh codec in the chunks given by `cuts`, the way
/// `FramedRead` does (decode until `None` after each read, `decode_eof`
/// at the end), and checks the buffer bound every time the codec asks for
/// more input.
fn decode_chunked(max_len: usize, input: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let mut codec = LineCodec::new(max_len);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut at = 0;
    for p in points {
        buf.extend_from_slice(&input[at..p]);
        at = p;
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(
            buf.len() <= max_len + 3,
            "codec holds {} bytes with a limit of {max_len}",
            buf.len()
        );
    }
    while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
        frames.push(f);
    }
    assert!(buf.is_empty(), "bytes left after EOF: {buf:?}");
    frames
}

fn is_line_end(b: &u8) -> bool {
    matches!(b, b'\r' | b'\0')
}

/// The framing rules of docs/protocol.md as a model: lines split at `\n`
/// (the last one may lack it), trailing `\r`/NUL removed, whitespace-only
/// lines skipped, lines longer than the limit reported as `TooLong`.
fn model(max_len: usize, input: &[u8]) -> Vec<Frame> {
    let mut segments: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    // After a final `\n` (or for empty input) the last segment is empty.
    if segments.last().is_some_and(|s| s.is_empty()) {
        segments.pop();
    }
    let mut out = Vec::new();
    for seg in segments {
        let keep = seg
            .iter()
            .rposition(|b| !is_line_end(b))
            .map_or(0, |i| i + 1);
        let line = &seg[..keep];
        if line.len() > max_len {
            out.push(Frame::TooLong);
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(Frame::Line(bytes::Bytes::copy_from_slice(line)));
        }
    }
    out
}

/// A segment whose raw bytes exceed the early-report threshold although
/// its trimmed line fits: whether it is reported depends on where TCP
/// splits it (see the report on trailing `\r`/NUL runs).
fn ambiguous(max_len: usize, input: &[u8]) -> bool {
    input.split(|b| *b == b'\n').any(|seg| {
        let keep = seg
            .iter()
            .rposition(|b| !is_line_end(b))
            .map_or(0, |i| i + 1);
        seg.len() > max_len + 3 && keep <= max_len
    })
}

/// Client input bytes biased towards the interesting ones.
fn stream_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'\n'),
        2 => Just(b'\r'),
        1 => Just(b'\0'),
        2 => Just(b' '),
        1 => Just(b'\t'),
        8 => b'a'..=b'z',
        2 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..max)
}

/// docs/protocol.md: trailing `\r`/NUL bytes are removed before parsing,
/// blank lines get no reply, and a last line without `\n` is processed
/// like any other at end of input. So a final `\r\0` (telnet's CR NUL)
/// or `\0` is a blank line, not an empty (or whitespace) request line.
#[test]
fn a_last_line_of_only_line_end_bytes_is_blank_at_eof() {
    for tail in [&b"\0"[..], b"\r\0", b"\0\0\0", b" \0", b"\t\r\0\r"] {
        let mut input = b"{}\n".to_vec();
        input.extend_from_slice(tail);
        let frames = decode_chunked(64, &input, &[]);
        assert_eq!(
            frames,
            vec![Frame::Line(bytes::Bytes::from_static(b"{}"))],
            "input {input:?}: a blank last line must yield no frame"
        );
        // The same bytes followed by a newline are skipped as blank.
        input.push(b'\n');
        assert_eq!(frames, decode_chunked(64, &input, &[]));
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bytes never panic the parser; whatever is not a JSON
    /// object is `bad_json` without a ref.
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let p = parse(&bytes);
        if let Err(e) = &p.request
            && e.code == ErrorCode::BadJson
        {
            prop_assert!(p.reference.is_none());
        }
    }

    /// JSON-looking text (from a JSON-ish alphabet) never panics either.
    #[test]
    fn parse_never_panics_on_json_like_text(text in r#"[{}\[\]":,a-z0-9\\. \-eE+tfnul]{0,200}"#) {
        let _ = parse(text.as_bytes());
    }

    /// Request-shaped objects with arbitrary field values: no panic, and
    /// the decision follows the documented order of checks.
    #[test]
    fn parse_follows_the_order_of_checks(obj in request_object()) {
        let line = serde_json::to_vec(&obj).unwrap();
        let p = parse(&line);
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        match get("ref") {
            Some(r @ (Value::String(_) | Value::Number(_))) => {
                prop_assert_eq!(p.reference.as_ref(), Some(r));
            }
            Some(_) => {
                prop_assert!(p.reference.is_none());
                prop_assert_eq!(p.request.as_ref().unwrap_err().code, ErrorCode::BadRequest);
                return Ok(());
            }
            None => prop_assert!(p.reference.is_none()),
        }
        let Some(cmd) = get("cmd") else {
            prop_assert_eq!(p.request.unwrap_err().code, ErrorCode::BadRequest);
            return Ok(());
        };
        let Some(cmd) = cmd.as_str() else {
            prop_assert_eq!(p.request.unwrap_err().code, ErrorCode::BadRequest);
            return Ok(());
        };
        let string = |k: &str| get(k).and_then(Value::as_str);
        let expected: Result<Request, ErrorCode> = match cmd {
            "ping" => Ok(Request::Ping),
            "logout" => Ok(Request::Logout),
            "login" | "who" => match (get("name"), string("name")) {
                (None, _) | (Some(_), None) => Err(ErrorCode::BadRequest),
                (Some(_), Some(n)) if !is_valid_name(n) => Err(ErrorCode::BadName),
                (Some(_), Some(n)) if cmd == "who" => Ok(Request::Who { name: n.into() }),
                (Some(_), Some(n)) => match (get("token"), string("token")) {
                    (Some(_), None) => Err(ErrorCode::BadRequest),
                    (_, token) => Ok(Request::Login {
                        name: n.into(),
                        token: token.map(str::to_owned),
                    }),
                },
            },
            "chat" => {
                let send_ok = get("send").is_none() || string("send").is_some();
                match (send_ok, string("recv"), string("content")) {
                    (false, _, _) => Err(ErrorCode::BadRequest),
                    (true, Some(r), Some(c)) if is_valid_name(r) => {
                        Ok(Request::Chat(ChatRequest {
                            send: string("send").map(str::to_owned),
                            recv: r.into(),
                            content: c.into(),
                        }))
                    }
                    _ => Err(ErrorCode::BadRequest),
                }
            }
            _ => Err(ErrorCode::UnknownCmd),
        };
        match (p.request, expected) {
            (Ok(got), Ok(want)) => prop_assert_eq!(got, want),
            (Err(got), Err(want)) => prop_assert_eq!(got.code, want),
            (got, want) => prop_assert!(false, "{obj}: got {got:?}, want {want:?}"),
        }
    }

    /// Any valid chat with arbitrary Unicode content round-trips, however
    /// the client spells the JSON, and through the line codec too (with a
    /// telnet line end).
    #[test]
    fn chat_requests_round_trip(
        recv in name(),
        send in prop::option::of(name()),
        content in any::<String>(),
        r in reference(),
        escape_all in any::<bool>(),
        line_end in prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r\0\r\n"[..])],
    ) {
        let mut obj = json!({"cmd":"chat","recv":recv,"content":content});
        if let Some(s) = &send {
            obj["send"] = json!(s);
        }
        if let Some(r) = &r {
            obj["ref"] = r.clone();
        }
        let mut line = if escape_all {
            let mut text = serde_json::to_string(&obj).unwrap();
            let plain = serde_json::to_string(&json!(content)).unwrap();
            // Replace the value of "content" only (the content may equal a
            // key or another value, e.g. "cmd").
            let field = format!("\"content\":{plain}");
            let escaped = format!("\"content\":{}", escaped_literal(&content));
            text = text.replacen(&field, &escaped, 1);
            text.into_bytes()
        } else {
            serde_json::to_vec(&obj).unwrap()
        };
        let want = Request::Chat(ChatRequest { send, recv, content });

        let p = parse(&line);
        prop_assert_eq!(&p.reference, &r);
        prop_assert_eq!(p.request.as_ref().unwrap(), &want);

        line.extend_from_slice(line_end);
        let frames = decode_chunked(65536, &line, &[]);
        prop_assert_eq!(frames.len(), 1);
        let p = parse(frames[0].line().unwrap());
        prop_assert_eq!(p.request.unwrap(), want);
    }

    /// Names: exactly the contract's alphabet and length.
    #[test]
    fn names_follow_the_contract(s in prop_oneof![name(), any::<String>(), "[a-z@ ./:é]{0,70}"]) {
        let want = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b));
        prop_assert_eq!(is_valid_name(&s), want);
    }

    /// A `ref` of any string or 64-bit integer is echoed unchanged.
    #[test]
    fn refs_are_echoed_verbatim(r in reference().prop_filter("some", Option::is_some)) {
        let line = serde_json::to_vec(&json!({"cmd":"ping","ref":r})).unwrap();
        let p = parse(&line);
        prop_assert_eq!(p.request.unwrap(), Request::Ping);
        let echoed = Event::Pong { reference: &p.reference }.to_line();
        let back: Value = serde_json::from_slice(&echoed).unwrap();
        prop_assert_eq!(&back["ref"], r.as_ref().unwrap());
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Splitting a byte stream at arbitrary points decodes to the same
    /// frames as decoding it in one piece, and both follow the model of
    /// the documented framing rules. No line frame exceeds the limit and
    /// the buffer stays bounded (checked inside `decode_chunked`).
    #[test]
    fn codec_is_independent_of_read_boundaries(
        max_len in 1usize..24,
        input in stream_bytes(300),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        prop_assume!(!ambiguous(max_len, &input));
        let whole = decode_chunked(max_len, &input, &[]);
        let split = decode_chunked(max_len, &input, &cuts);
        let bytewise: Vec<usize> = (0..input.len()).collect();
        let trickle = decode_chunked(max_len, &input, &bytewise);
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(&whole, &trickle);
        prop_assert_eq!(&whole, &model(max_len, &input));
        for f in &whole {
            if let Some(line) = f.line() {
                prop_assert!(!line.is_empty() && line.len() <= max_len);
                prop_assert!(!line.contains(&b'\n'));
                prop_assert!(!line.ends_with(b"\r") && !line.ends_with(b"\0"));
            }
        }
    }

    /// An endless line streamed in arbitrary chunks yields exactly one
    /// `TooLong`, keeps the buffer bounded by the limit (nothing of it is
    /// retained), and the next line after its `\n` is decoded normally.
    #[test]
    fn an_endless_line_is_reported_once_and_never_buffered(
        max_len in 1usize..128,
        chunks in prop::collection::vec(prop::collection::vec(b'a'..=b'z', 1..256), 1..24),
    ) {
        let mut codec = LineCodec::new(max_len);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut sent = 0;
        for chunk in &chunks {
            buf.extend_from_slice(chunk);
            sent += chunk.len();
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
            prop_assert!(buf.len() <= max_len + 3, "buffer {} > limit {}", buf.len(), max_len);
            if sent > max_len + 3 {
                prop_assert!(buf.is_empty(), "an over-long line is discarded as it arrives");
            }
        }
        buf.extend_from_slice(b"\n{\"cmd\":\"ping\"}\n");
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        let long = sent > max_len;
        let mut want = Vec::new();
        if long {
            want.push(Frame::TooLong);
        } else {
            want.push(Frame::Line(bytes::Bytes::from(chunks.concat())));
        }
        if max_len >= 14 {
            want.push(Frame::Line(bytes::Bytes::from_static(b"{\"cmd\":\"ping\"}")));
        } else {
            want.push(Frame::TooLong);
        }
        prop_assert_eq!(frames, want);
    }

    /// Every `message` event is exactly one line (one `\n`, at the end),
    /// survives the line codec as one frame, and parses back to the same
    /// fields, for arbitrary content and names.
    #[test]
    fn message_events_are_one_line_and_round_trip(
        id in any::<String>(),
        from in any::<String>(),
        to in any::<String>(),
        content in any::<String>(),
        ts in any::<i64>(),
    ) {
        let line = Event::Message { id: &id, from: &from, to: &to, content: &content, ts, stored: false }.to_line();
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        prop_assert!(line.ends_with(b"\n"));
        prop_assert!(std::str::from_utf8(&line).is_ok());
        let v: Value = serde_json::from_slice(&line).unwrap();
        prop_assert_eq!(
            v,
            json!({"event":"message","id":id,"from":from,"to":to,"content":content,"ts":ts})
        );
        let frames = decode_chunked(line.len(), &line, &[line.len() / 2]);
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(frames[0].line(), Some(&line[..line.len() - 1]));
    }

    /// Error events with arbitrary messages and refs are one line too.
    #[test]
    fn error_events_are_one_line(message in any::<String>(), r in reference()) {
        let line = Event::Error { code: "bad_request", message: &message, reference: &r }.to_line();
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        prop_assert!(line.ends_with(b"\n"));
        let v: Value = serde_json::from_slice(&line).unwrap();
        prop_assert_eq!(&v["message"], &json!(message));
        prop_assert_eq!(v.get("ref"), r.as_ref());
    }
}
