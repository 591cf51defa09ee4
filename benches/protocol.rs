//! Protocol microbenchmarks: what the codec costs, what one sync call costs, and what one
//! in-VM push costs, over the in-process transport (no socket anywhere).
//!
//! - `protocol/frame_encode`: one frame from typed values, into a fresh `Vec` as the real
//!   senders do (the guest client's `net.write` call; the sidecar's `data` event), 64 B
//!   payload each.
//! - `protocol/frame_decode`: bytes → [`RawFrame`] → [`Header`] (→ typed [`Request`] for
//!   the call), for the same 64 B `net.write` call and for a 64 KiB `data` event, each
//!   two ways: `frame_decoder` (a long-lived [`FrameDecoder`], as the byte-stream
//!   transports read) and `read_frame` (one pipe message at a time, as both ends of the
//!   in-process transport read).
//! - `protocol/call_round_trip_inproc`: one blocking `dns.lookup localhost` from a guest
//!   [`Client`] to an embedded [`Sidecar`]: encode, pipe, the sidecar's RPC loop, pipe
//!   back, decode. (`dns.lookup localhost` rather than `stats`: it is answered inside
//!   the VM with a small typed result, while `stats` assembles every counter into a large
//!   JSON object and would measure that instead of the round trip.)
//! - `protocol/inproc_push_write_to_data_event`: guests A and B of one VM, connected by an
//!   in-VM Unix stream. One iteration = A sends a 64 B `net.write` with `noreply`, B
//!   waits (blocking, with a deadline) for the `data` event. That is **two**
//!   process-internal hops: A → sidecar (pipe + RPC loop wake-up) and sidecar → B (pipe +
//!   B's wake-up); there is no reply to A. B grants its credit back with a `noreply`
//!   `net.credit` every 64 KiB, so the receive window never closes (the grant is part of
//!   the measured cost, amortized over 1024 iterations).
//!
//! Both clients run on the bench thread; B's receive is a real blocking wait on the pipe,
//! so each iteration includes a thread wake-up on the sidecar side and, when the event is
//! not there yet, on B's side.
//!
//! Reading the two sidecar rows: they are wake-up bound, so they move with the machine,
//! not only with the code. On a small VM whose other vCPU is idle (halted), each
//! cross-thread wake-up costs tens of µs and both rows come out several times slower
//! than on the same VM with a busy neighbour. Compare them with
//! `fabric/notify_to_blocking_wake_roundtrip` (two bare wake-ups) from the same run,
//! not with a figure from another run.
//!
//! CI runs every bench in short mode (`cargo bench --bench protocol -- --quick`), and
//! that must stay well under a minute. In quick mode criterion doubles the iteration count
//! until two consecutive estimates agree within 5 %, or until the group's
//! `measurement_time` has passed. The codec rows converge in a fraction of a second; the
//! two sidecar rows are noisy (thread wake-ups) and may run to the cap, so every group
//! sets it to [`MEASUREMENT`] (3 s): eight rows, at most 24 s of sampling, plus sidecar
//! start-up and analysis. A full run (`cargo bench --bench protocol`) keeps criterion's
//! 3 s warm-up and 100 samples.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use guest_client::{Client, InProcTransport};
use sidecar::{Sidecar, SidecarConfig};
use sidecar_protocol::{
    encode_call, encode_event, read_frame, ConnectParams, CreditParams, Endpoint, Event, EventBody,
    Family, FrameDecoder, Header, ListenParams, LookupParams, RawFrame, Request, SocketId,
    WriteParams, DEFAULT_MAX_FRAME,
};

/// Upper bound of each row's sampling (see the module docs).
const MEASUREMENT: Duration = Duration::from_secs(3);
/// The small payload: a `net.write` call and a `data` event.
const SMALL: usize = 64;
/// The large payload: a `data` event.
const LARGE: usize = 64 * 1024;
/// B grants its window back after this many received bytes.
const CREDIT_BATCH: u64 = 64 * 1024;
/// How long a guest waits for anything before the bench fails instead of hanging.
const TIMEOUT: Duration = Duration::from_secs(10);

const VM: &str = "bench";
const SECRET: &str = "bench";

fn write_call(payload: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let params = WriteParams {
        socket: SocketId(3),
    };
    encode_call(42, &params, true, payload, DEFAULT_MAX_FRAME, &mut wire).unwrap();
    wire
}

fn data_event() -> Event {
    Event::new(
        1234,
        EventBody::Data {
            socket: SocketId(3),
        },
    )
}

fn data_event_frame(payload: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    encode_event(&data_event(), payload, DEFAULT_MAX_FRAME, &mut wire).unwrap();
    wire
}

/// Header → typed request, as the sidecar dispatches a call; returns the payload length.
fn typed_write(raw: RawFrame) -> usize {
    let Ok(Header::Call(call)) = raw.parse_header() else {
        panic!("not a call");
    };
    match call.into_request() {
        Ok(Request::Write(params)) => {
            black_box(params);
            raw.payload.len()
        }
        other => panic!("not a net.write: {other:?}"),
    }
}

/// Header → event, as a guest takes a push; returns the payload length.
fn data_len(raw: RawFrame) -> usize {
    match raw.parse_header() {
        Ok(Header::Event(event)) if matches!(event.body, EventBody::Data { .. }) => {
            black_box(event);
            raw.payload.len()
        }
        other => panic!("not a data event: {other:?}"),
    }
}

fn frame_encode(c: &mut Criterion) {
    let payload = [7u8; SMALL];
    let mut group = c.benchmark_group("protocol/frame_encode");
    group.measurement_time(MEASUREMENT);

    let params = WriteParams {
        socket: SocketId(3),
    };
    group.throughput(Throughput::Bytes(write_call(&payload).len() as u64));
    group.bench_function("net_write_call_64B", |b| {
        let mut id = 0u64;
        b.iter(|| {
            id += 1;
            // A fresh buffer per frame, as the guest client does (the pipe takes the Vec).
            let mut wire = Vec::new();
            encode_call(
                id,
                black_box(&params),
                true,
                black_box(&payload),
                DEFAULT_MAX_FRAME,
                &mut wire,
            )
            .unwrap();
            wire
        })
    });

    let event = data_event();
    group.throughput(Throughput::Bytes(data_event_frame(&payload).len() as u64));
    group.bench_function("data_event_64B", |b| {
        b.iter(|| {
            // Sized up front, as the sidecar's outbound queue does.
            let mut wire = Vec::with_capacity(64 + payload.len());
            encode_event(
                black_box(&event),
                black_box(&payload),
                DEFAULT_MAX_FRAME,
                &mut wire,
            )
            .unwrap();
            wire
        })
    });
    group.finish();
}

fn frame_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol/frame_decode");
    group.measurement_time(MEASUREMENT);

    let call = write_call(&[7u8; SMALL]);
    group.throughput(Throughput::Bytes(call.len() as u64));
    group.bench_function("net_write_call_64B/frame_decoder", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter(|| {
            decoder.push(black_box(&call));
            let raw = decoder.next_frame().unwrap().expect("one whole frame");
            assert_eq!(typed_write(raw), SMALL);
        })
    });
    group.bench_function("net_write_call_64B/read_frame", |b| {
        b.iter(|| {
            let mut reader = black_box(call.as_slice());
            let raw = read_frame(&mut reader, DEFAULT_MAX_FRAME).unwrap().unwrap();
            assert_eq!(typed_write(raw), SMALL);
        })
    });

    let event = data_event_frame(&vec![7u8; LARGE]);
    group.throughput(Throughput::Bytes(event.len() as u64));
    group.bench_function("data_event_64KiB/frame_decoder", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter(|| {
            decoder.push(black_box(&event));
            let raw = decoder.next_frame().unwrap().expect("one whole frame");
            assert_eq!(data_len(raw), LARGE);
        })
    });
    group.bench_function("data_event_64KiB/read_frame", |b| {
        b.iter(|| {
            let mut reader = black_box(event.as_slice());
            let raw = read_frame(&mut reader, DEFAULT_MAX_FRAME).unwrap().unwrap();
            assert_eq!(data_len(raw), LARGE);
        })
    });
    group.finish();
}

fn start_sidecar() -> Sidecar {
    Sidecar::start_in_process(SidecarConfig::default().with_vm(VM, SECRET)).unwrap()
}

fn guest(sidecar: &Sidecar) -> Client {
    let end = sidecar.connect_in_process().unwrap();
    Client::connect(InProcTransport::new(end), Client::hello_params(VM, SECRET)).unwrap()
}

fn call_round_trip(c: &mut Criterion) {
    let sidecar = start_sidecar();
    let mut client = guest(&sidecar);
    let params = LookupParams {
        host: "localhost".into(),
        family: Family::Any,
    };
    assert!(!client.call(&params).unwrap().addresses.is_empty());

    let mut group = c.benchmark_group("protocol/call_round_trip_inproc");
    group.measurement_time(MEASUREMENT);
    group.bench_function("dns_lookup_localhost", |b| {
        b.iter(|| client.call(black_box(&params)).unwrap())
    });
    group.finish();

    drop(client);
    sidecar.shutdown();
}

/// Waits for B's next event; on a timeout, says what A heard (a failed `noreply` write
/// arrives at A as an `error` event).
fn next_event_of(b: &mut Client, a: &mut Client) -> (Event, Vec<u8>) {
    match b.next_event(Some(Instant::now() + TIMEOUT)).unwrap() {
        Some(event) => event,
        None => panic!(
            "B got nothing within {TIMEOUT:?}; A's next event: {:?}",
            a.try_next_event()
        ),
    }
}

fn inproc_push(c: &mut Criterion) {
    let sidecar = start_sidecar();
    let mut a = guest(&sidecar);
    let mut b = guest(&sidecar);
    let path = "/protocol-bench.sock";

    b.call(&ListenParams::new(Endpoint::unix(path))).unwrap();
    let a_sock = a
        .call(&ConnectParams::new(Endpoint::unix(path)))
        .unwrap()
        .socket;
    // A's `connect` event follows the reply; take it so A's queue holds nothing stale.
    match a.next_event(Some(Instant::now() + TIMEOUT)).unwrap() {
        Some((
            Event {
                body: EventBody::Connect { socket, .. },
                ..
            },
            _,
        )) if socket == a_sock => {}
        other => panic!("A expected its connect event, got {other:?}"),
    }
    let b_sock = match next_event_of(&mut b, &mut a) {
        (
            Event {
                body: EventBody::Accept { socket, .. },
                ..
            },
            _,
        ) => socket,
        other => panic!("B expected an accept, got {other:?}"),
    };
    // Take the connection: acknowledges the accept (frees its backlog slot).
    b.call(&CreditParams {
        socket: b_sock,
        bytes: 0,
    })
    .unwrap();

    let payload = [7u8; SMALL];
    let write = WriteParams { socket: a_sock };
    let mut ungranted = 0u64;
    let mut group = c.benchmark_group("protocol/inproc_push_write_to_data_event");
    group.measurement_time(MEASUREMENT);
    group.bench_function("unix_stream_64B", |bench| {
        bench.iter(|| {
            a.send_noreply(&write, black_box(&payload)).unwrap();
            let mut got = 0;
            while got < SMALL {
                let (event, bytes) = next_event_of(&mut b, &mut a);
                match event.body {
                    EventBody::Data { socket } if socket == b_sock => got += bytes.len(),
                    other => panic!("B expected data on {b_sock:?}, got {other:?}"),
                }
            }
            assert_eq!(got, SMALL, "B got more than A wrote");
            ungranted += got as u64;
            if ungranted >= CREDIT_BATCH {
                let grant = CreditParams {
                    socket: b_sock,
                    bytes: ungranted,
                };
                b.send_noreply(&grant, &[]).unwrap();
                ungranted = 0;
            }
        })
    });
    group.finish();

    assert_eq!(b.seq_gaps(), 0, "B lost an event");
    if let Some(event) = a.try_next_event().unwrap() {
        panic!("A heard something during the bench: {event:?}");
    }
    drop((a, b));
    sidecar.shutdown();
}

criterion_group!(
    benches,
    frame_encode,
    frame_decode,
    call_round_trip,
    inproc_push
);
criterion_main!(benches);
