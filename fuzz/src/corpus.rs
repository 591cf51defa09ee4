//! The seed corpus: how it is made, and a replay of every committed file through the same
//! checks the fuzz targets run (on stable, without libFuzzer).
//!
//! Regenerate after changing an input format:
//!
//! ```sh
//! cargo test --manifest-path fuzz/Cargo.toml --lib -- --ignored write_seed_corpus
//! ```

use std::fs;
use std::path::PathBuf;

use serde_json::{json, Value};
use sidecar_protocol::{encode_raw_frame, DEFAULT_MAX_FRAME};

use crate::dispatch::{self, CallStep, Payload, Script, Step};
use crate::frames;

fn encoded(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_raw_frame(header, payload, DEFAULT_MAX_FRAME, &mut out).unwrap();
    out
}

/// The worked example of PROTOCOL.md §4, byte for byte.
fn hello_example() -> Vec<u8> {
    encoded(
        br#"{"type":"call","id":1,"method":"hello","params":{"version":1,"vm":"dev","secret":"s3cret","mode":"push","credit":262144,"capabilities":["push","noreply"]}}"#,
        b"",
    )
}

fn some_frames() -> Vec<u8> {
    let mut wire = hello_example();
    wire.extend(encoded(br#"{"type":"call","id":2,"method":"stats"}"#, b""));
    wire.extend(encoded(
        br#"{"type":"event","event":"data","socket":3,"seq":17}"#,
        b"hi\n",
    ));
    wire.extend(encoded(b"", b""));
    wire.extend(encoded(b"not json", b"\0\x01\x02"));
    wire
}

fn with_config(config: [u8; 4], stream: &[u8]) -> Vec<u8> {
    let mut input = config.to_vec();
    input.extend_from_slice(stream);
    input
}

/// `frame_decoder` seeds: `[limit, seed, seed, pacing]` then the stream.
fn frame_decoder_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let frames = some_frames();
    let mut large = encoded(
        br#"{"type":"call","id":4,"method":"net.write","params":{"socket":3}}"#,
        &[7; 40_000],
    );
    large.extend(encoded(br#"{"n":1}"#, b"tail"));
    let mut huge = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 8];
    huge.extend(b"{}{}{}{}");
    let mut claims_limit = (DEFAULT_MAX_FRAME as u32).to_be_bytes().to_vec();
    claims_limit.extend(0u32.to_be_bytes());
    claims_limit.extend([1; 32]);
    let mut header_over_total = vec![0, 0, 0, 10, 0, 0, 0, 7];
    header_over_total.extend(b"{}{}{}");
    vec![
        ("empty", Vec::new()),
        (
            "valid_frames_at_once",
            with_config([0, 0x12, 0x34, 3], &frames),
        ),
        ("valid_frames_bytewise", with_config([0, 1, 2, 0], &frames)),
        ("valid_frames_read_from", with_config([0, 5, 6, 5], &frames)),
        ("valid_frames_mixed", with_config([2, 7, 7, 9], &frames)),
        ("large_payload_read_from", with_config([0, 9, 9, 6], &large)),
        ("large_payload_pushed", with_config([3, 9, 9, 2], &large)),
        ("huge_length_prefix", with_config([0, 0, 0, 3], &huge)),
        ("claims_the_limit", with_config([0, 0, 0, 5], &claims_limit)),
        (
            "header_len_over_total",
            with_config([0, 0, 0, 3], &header_over_total),
        ),
        (
            "total_under_4",
            with_config([0, 0, 0, 3], &[0, 0, 0, 2, 0, 0, 0, 0]),
        ),
        (
            "over_a_small_limit",
            with_config([1, 0, 0, 3], &large[..200]),
        ),
        (
            "truncated",
            with_config([0, 3, 3, 1], &frames[..frames.len() - 5]),
        ),
    ]
}

fn call(method: &str, id: u8, params: &[(&str, Value)]) -> CallStep {
    CallStep::new(method, id, params, Payload::Short(0))
}

fn call_with(method: &str, id: u8, params: &[(&str, Value)], payload: Payload) -> CallStep {
    CallStep::new(method, id, params, payload)
}

/// `dispatcher` seeds: hello flags, then steps (see `dispatch`).
fn dispatcher_seeds() -> Vec<(&'static str, Script)> {
    use Step::*;
    let listen_connect_write = vec![
        Call(call("net.listen", 1, &[("port", json!(7001))])),
        Sync,
        Call(call("net.connect", 2, &[("port", json!(7001))])),
        Sync,
        Call(
            call(
                "net.credit",
                3,
                &[("socket", json!(3)), ("bytes", json!(0))],
            )
            .noreply(),
        ),
        Call(call_with(
            "net.write",
            4,
            &[("socket", json!(2))],
            Payload::Short(5),
        )),
        Call(
            call_with(
                "net.write",
                5,
                &[("socket", json!(3))],
                Payload::Long(40_000),
            )
            .noreply(),
        ),
        Call(call("net.shutdown", 6, &[("socket", json!(2))])),
        Call(call("net.destroy", 7, &[("socket", json!(3))])),
        Call(call("net.write", 8, &[("socket", json!(3))])),
        Call(call("net.server_close", 9, &[("server", json!(1))])),
        Sync,
    ];
    let udp = vec![
        Call(call("dgram.createSocket", 1, &[("type", json!("udp4"))])),
        Call(call(
            "dgram.bind",
            2,
            &[("socket", json!(1)), ("port", json!(7002))],
        )),
        Call(call("dgram.createSocket", 3, &[("type", json!("udp6"))])),
        Call(call_with(
            "dgram.send",
            4,
            &[
                ("socket", json!(2)),
                ("host", json!("::1")),
                ("port", json!(7002)),
            ],
            Payload::Short(3),
        )),
        Call(call_with(
            "dgram.send",
            5,
            &[("socket", json!(1)), ("port", json!(7002))],
            Payload::Short(9),
        )),
        Call(call(
            "dgram.connect",
            6,
            &[("socket", json!(2)), ("port", json!(7003))],
        )),
        Call(call_with(
            "dgram.send",
            7,
            &[("socket", json!(2))],
            Payload::Short(1),
        )),
        Call(call_with(
            "dgram.send",
            8,
            &[("socket", json!(2))],
            Payload::Short(1),
        )),
        Call(call("dgram.close", 9, &[("socket", json!(1))])),
        Call(call("dgram.disconnect", 10, &[("socket", json!(2))])),
        Call(call_with(
            "dgram.send",
            11,
            &[("socket", json!(2))],
            Payload::Short(1),
        )),
        Sync,
    ];
    let poll = vec![
        Call(call("net.listen", 1, &[("port", json!(7002))])),
        Call(call("net.connect", 2, &[("port", json!(7002))])),
        Call(call(
            "net.server_poll",
            3,
            &[("server", json!(1)), ("wait_ms", json!(20))],
        )),
        Call(call_with(
            "net.write",
            4,
            &[("socket", json!(2))],
            Payload::Short(8),
        )),
        Call(call(
            "net.poll",
            5,
            &[("socket", json!(3)), ("wait_ms", json!(0))],
        )),
        Call(call(
            "net.poll",
            6,
            &[("socket", json!(2)), ("wait_ms", json!(50))],
        )),
        Call(call("dgram.createSocket", 7, &[("type", json!("udp4"))])),
        Call(call(
            "dgram.poll",
            8,
            &[("socket", json!(4)), ("wait_ms", json!(1))],
        )),
        Sync,
    ];
    let unix = vec![
        Call(call("net.listen", 1, &[("path", json!("s.sock"))])),
        Call(call(
            "net.listen",
            2,
            &[("path", json!("/tmp/s.sock")), ("backlog", json!(1))],
        )),
        Call(call("net.connect", 3, &[("path", json!("s.sock"))])),
        Call(call("net.connect", 4, &[("path", json!("/tmp/s.sock"))])),
        Call(call(
            "net.connect",
            5,
            &[("path", json!("/tmp/s.sock")), ("timeout_ms", json!(50))],
        )),
        Call(call_with(
            "net.write",
            6,
            &[("socket", json!(3))],
            Payload::Short(200),
        )),
        Sync,
    ];
    let mut three = encoded(br#"{"type":"call","id":1,"method":"stats"}"#, b"");
    three.extend(encoded(
        br#"{"type":"call","id":2,"method":"dns.lookup","params":{"host":"localhost","family":4}}"#,
        b"",
    ));
    three.extend(encoded(
        br#"{"type":"call","id":3,"method":"net.listen","params":{"port":0}}"#,
        b"",
    ));
    let mut over_total = vec![0, 0, 0, 10, 0, 0, 0, 7];
    over_total.extend(b"{}{}{}");
    let misc = vec![
        Call(call("dns.lookup", 1, &[("host", json!("localhost"))])),
        Call(call(
            "dns.lookup",
            2,
            &[("host", json!("")), ("family", json!(6))],
        )),
        Call(call(
            "net.connect",
            3,
            &[("host", json!("no\0such")), ("port", json!(7001))],
        )),
        Call(call(
            "hello",
            4,
            &[
                ("version", json!(1)),
                ("vm", json!("a")),
                ("secret", json!("sa")),
            ],
        )),
        Call(CallStep {
            method: 0xf0,
            ..call("stats", 5, &[])
        }),
        Call(CallStep {
            flags: 4,
            ..call("net.listen", 6, &[])
        }),
        Call(call("net.socket_set_no_delay", 7, &[("socket", json!(7))]).noreply()),
        Call(call(
            "net.socket_set_keep_alive",
            8,
            &[("socket", json!(1)), ("enable", json!(true))],
        )),
        Call(call_with("stats", 9, &[], Payload::Short(4))),
        Batch(vec![
            call(
                "net.listen",
                10,
                &[("host", json!("::")), ("port", json!(0))],
            ),
            call(
                "net.listen",
                11,
                &[("host", json!("127.0.0.2")), ("port", json!(7003))],
            ),
            call(
                "net.connect",
                12,
                &[("host", json!("::ffff:127.0.0.1")), ("port", json!(7003))],
            ),
            call(
                "net.connect",
                13,
                &[("host", json!("127.0.0.1")), ("port", json!(1))],
            ),
        ]),
        Sync,
    ];
    let garbage = vec![
        Garbage {
            header: br#"{"type":"call","id":7,"meth"#.to_vec(),
            payload: Payload::Short(0),
        },
        Garbage {
            header: b"not json".to_vec(),
            payload: Payload::Short(2),
        },
        Garbage {
            header: br#"{"type":"reply","id":1,"result":null}"#.to_vec(),
            payload: Payload::Short(0),
        },
        Garbage {
            header: Vec::new(),
            payload: Payload::Short(0),
        },
        Garbage {
            header: br#"{"type":"call","id":8,"method":"net.connect","params":{"host":"example.com","port":80}}"#.to_vec(),
            payload: Payload::Short(0),
        },
        Sync,
    ];
    vec![
        (
            "empty",
            Script {
                hello: 0,
                steps: Vec::new(),
            },
        ),
        (
            "listen_connect_write",
            Script {
                hello: 0,
                steps: listen_connect_write.clone(),
            },
        ),
        (
            "listen_connect_write_vm_b_small_frames",
            Script {
                hello: 1 | 4 | 16,
                steps: listen_connect_write,
            },
        ),
        (
            "udp",
            Script {
                hello: 0,
                steps: udp,
            },
        ),
        (
            "poll_mode",
            Script {
                hello: 2,
                steps: poll,
            },
        ),
        (
            "unix_paths",
            Script {
                hello: 1,
                steps: unix,
            },
        ),
        (
            "misc_calls",
            Script {
                hello: 0,
                steps: misc,
            },
        ),
        (
            "no_capabilities",
            Script {
                hello: 8,
                steps: vec![
                    Call(call("dgram.createSocket", 1, &[("type", json!("udp4"))])),
                    Sync,
                ],
            },
        ),
        (
            "garbage_headers",
            Script {
                hello: 0,
                steps: garbage,
            },
        ),
        (
            "raw_valid_frames",
            Script {
                hello: 0,
                steps: vec![Step::Raw(three), Sync],
            },
        ),
        (
            "raw_huge_length_prefix",
            Script {
                hello: 0,
                steps: vec![Sync, Step::Raw(vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])],
            },
        ),
        (
            "raw_header_len_over_total",
            Script {
                hello: 2,
                steps: vec![Step::Raw(over_total)],
            },
        ),
        (
            "raw_half_a_frame",
            Script {
                hello: 0,
                steps: vec![Step::Raw(hello_example()[..20].to_vec())],
            },
        ),
        (
            "bad_lengths_total_short",
            Script {
                hello: 0,
                steps: vec![BadLengths {
                    how: 1,
                    by: 2,
                    call: call("stats", 1, &[]),
                }],
            },
        ),
        (
            "bad_lengths_header_past_total",
            Script {
                hello: 0,
                steps: vec![BadLengths {
                    how: 2,
                    by: 0,
                    call: call("stats", 1, &[]),
                }],
            },
        ),
        (
            "bad_lengths_over_the_limit",
            Script {
                hello: 0,
                steps: vec![BadLengths {
                    how: 3,
                    by: 0,
                    call: call("stats", 1, &[]),
                }],
            },
        ),
    ]
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn files(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(corpus_dir(target))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
#[ignore = "writes fuzz/corpus/: run by hand after changing an input format"]
fn write_seed_corpus() {
    for (target, seeds) in [
        ("frame_decoder", frame_decoder_seeds()),
        (
            "dispatcher",
            dispatcher_seeds()
                .into_iter()
                .map(|(name, script)| (name, script.to_bytes()))
                .collect(),
        ),
    ] {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn scripts_survive_their_encoding() {
    for (name, script) in dispatcher_seeds() {
        assert_eq!(Script::parse(&script.to_bytes()), script, "{name}");
    }
}

#[test]
fn the_committed_corpus_is_the_generated_one() {
    for (name, bytes) in frame_decoder_seeds() {
        let path = corpus_dir("frame_decoder").join(name);
        assert_eq!(
            fs::read(&path).ok(),
            Some(bytes),
            "{} is stale",
            path.display()
        );
    }
    for (name, script) in dispatcher_seeds() {
        let path = corpus_dir("dispatcher").join(name);
        assert_eq!(
            fs::read(&path).ok(),
            Some(script.to_bytes()),
            "{} is stale",
            path.display()
        );
    }
}

#[test]
fn frame_decoder_corpus_replays() {
    for (path, bytes) in files("frame_decoder") {
        eprintln!("{}", path.display());
        frames::check(&bytes);
    }
}

#[test]
fn dispatcher_corpus_replays() {
    for (path, bytes) in files("dispatcher") {
        eprintln!("{}", path.display());
        dispatch::run(&bytes);
    }
}
