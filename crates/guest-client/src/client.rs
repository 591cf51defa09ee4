//! The blocking client: `hello`, calls, `noreply` sends, and the event stream.
//!
//! A guest that cannot run its own event loop reaches the network with *sync calls*: the
//! guest thread is frozen until the answer comes (an isolate's callSync). [`Client::call`]
//! is that call. Meanwhile the sidecar keeps pushing events on the same stream; those that
//! arrive while a call waits for its reply are queued, in arrival order, and handed out
//! by [`Client::next_event`] before anything received later. Nothing is dropped.
//!
//! One request is in flight at a time (`&mut self`), so a reply is matched by id; a reply
//! to an id nobody waits for can only answer a `noreply` call the sidecar answered anyway
//! (when `noreply` was not negotiated): its error, if any, becomes an `error` event.
//!
//! When the transport breaks, the client drops it (so the sidecar sees the session end)
//! and remembers why: the pending call and every later call fail with that error
//! (`ECONNRESET`), and the event stream yields what was queued before the break, then the
//! error. Nothing hangs.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde_json::Value;
use sidecar_protocol::{
    capability, encode_call_head, encode_raw_frame, Call, CallParams, Event, EventBody, Header,
    HelloParams, HelloResult, Mode, PollResult, RawFrame, Reply, ServerId, SocketId, WireError,
    WriteParams, WriteResult, DEFAULT_MAX_FRAME, HEAD_GUESS, PROTOCOL_VERSION,
};

use crate::error::ClientError;
use crate::transport::{Transport, TransportError};

/// What this client can use; offered in hello by [`Client::hello_params`].
///
/// `event_channel` is deliberately absent: once negotiated, the sidecar stops writing
/// events on this stream, and this client reads events from the stream it calls on.
pub const CLIENT_CAPABILITIES: &[&str] = &[
    capability::PUSH,
    capability::POLL,
    capability::NOREPLY,
    capability::TCP,
    capability::UNIX,
    capability::UDP,
    capability::DNS,
    capability::CREDIT,
];

/// `seq` of an event the client made up itself (an error reply to a `noreply` call the
/// sidecar answered anyway). The sidecar numbers its events from 1.
pub const LOCAL_SEQ: u64 = 0;

/// An event as delivered: the event and its payload (the bytes of `data` / `message`).
pub type EventFrame = (Event, Vec<u8>);

/// A session with the sidecar, used from one thread.
pub struct Client {
    /// `None` once broken (dropped, so the sidecar sees the session end).
    transport: Option<Box<dyn Transport>>,
    /// Why the connection is gone; handed to every later operation.
    broken: Option<ClientError>,
    hello: HelloResult,
    mode: Mode,
    credit_window: u64,
    /// Largest frame the sidecar accepts from us.
    send_limit: usize,
    next_id: u64,
    events: VecDeque<EventFrame>,
    /// `noreply` calls sent without the `noreply` capability: the sidecar will answer
    /// them; an error answer becomes an `error` event naming this socket / server.
    unanswered_noreply: HashMap<u64, (Option<SocketId>, Option<ServerId>)>,
    last_seq: u64,
    seq_gaps: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session", &self.hello.session)
            .field("mode", &self.mode)
            .field("broken", &self.broken)
            .field("queued_events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Hello params for this client: version, VM, secret, push mode, default credit, and
    /// [`CLIENT_CAPABILITIES`]. Adjust fields (`cwd`, `credit`) before connecting.
    pub fn hello_params(vm: impl Into<String>, secret: impl Into<String>) -> HelloParams {
        let mut params = HelloParams::new(vm, secret);
        params.capabilities = capability::to_owned_list(CLIENT_CAPABILITIES);
        params
    }

    /// Hello params for a stream that is already attached to its VM (the primary stream
    /// `sidecar run` hands its child on fd 3, or one an embedder attached): no VM name
    /// and no secret; otherwise as [`Client::hello_params`].
    pub fn hello_params_attached() -> HelloParams {
        let mut params = HelloParams::attached();
        params.capabilities = capability::to_owned_list(CLIENT_CAPABILITIES);
        params
    }

    /// As [`Client::hello_params`], in poll mode (the legacy baseline: no events are
    /// pushed; the guest asks with [`Client::poll`]).
    pub fn hello_params_poll(vm: impl Into<String>, secret: impl Into<String>) -> HelloParams {
        let mut params = Client::hello_params(vm, secret);
        params.mode = Mode::Poll;
        params
    }

    /// Says hello over `transport` and returns the session.
    ///
    /// A refused hello (wrong secret: `EACCES`; version mismatch: `EPROTONOSUPPORT`) is
    /// [`ClientError::Wire`]; the sidecar closes the stream after it.
    pub fn connect(
        transport: impl Transport + 'static,
        params: HelloParams,
    ) -> Result<Client, ClientError> {
        let mut transport: Box<dyn Transport> = Box::new(transport);
        let accept = params.max_frame.map_or(DEFAULT_MAX_FRAME, |m| m as usize);
        transport.set_max_frame(accept);
        let mut client = Client {
            transport: Some(transport),
            broken: None,
            hello: HelloResult {
                version: params.version,
                session: 0,
                capabilities: Vec::new(),
                event_channel_token: None,
                max_frame: u32::try_from(DEFAULT_MAX_FRAME).unwrap_or(u32::MAX),
            },
            mode: params.mode,
            credit_window: params.credit,
            send_limit: DEFAULT_MAX_FRAME,
            next_id: 1,
            events: VecDeque::new(),
            unanswered_noreply: HashMap::new(),
            last_seq: 0,
            seq_gaps: 0,
        };
        let result: HelloResult = client.call(&params)?;
        if result.version != PROTOCOL_VERSION {
            return Err(client.fail(ClientError::protocol(format!(
                "hello answered version {} (this client speaks {PROTOCOL_VERSION})",
                result.version
            ))));
        }
        client.send_limit = result.max_frame as usize;
        client.hello = result;
        Ok(client)
    }

    /// The negotiated hello result (session id, capabilities, limits).
    pub fn hello(&self) -> &HelloResult {
        &self.hello
    }

    /// Whether a capability was negotiated.
    pub fn has_capability(&self, name: &str) -> bool {
        capability::has(&self.hello.capabilities, name)
    }

    /// The mode asked for in hello.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The initial per-socket credit window announced in hello (bytes).
    pub fn credit_window(&self) -> u64 {
        self.credit_window
    }

    /// The largest frame the sidecar accepts from this guest.
    pub fn max_frame(&self) -> usize {
        self.send_limit
    }

    /// Why the connection is gone, if it is.
    pub fn broken(&self) -> Option<&ClientError> {
        self.broken.as_ref()
    }

    /// The `seq` of the last event received from the sidecar.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many times an event's `seq` was not the previous one + 1 (a lost event: the
    /// sidecar promises this stays 0).
    pub fn seq_gaps(&self) -> u64 {
        self.seq_gaps
    }

    /// A blocking call with typed params and result (no payload either way).
    pub fn call<P: CallParams>(&mut self, params: &P) -> Result<P::Result, ClientError> {
        self.call_with_payload(params, &[])
            .map(|(result, _)| result)
    }

    /// A blocking call that sends `payload` (`net.write`, `dgram.send`) and returns the
    /// reply's payload too (a poll reply carrying `data`).
    pub fn call_with_payload<P: CallParams>(
        &mut self,
        params: &P,
        payload: &[u8],
    ) -> Result<(P::Result, Vec<u8>), ClientError> {
        self.check_usable()?;
        let id = self.take_id();
        // Room for the payload too: the in-process transport joins the two.
        let mut head = Vec::with_capacity(HEAD_GUESS + payload.len().min(self.send_limit));
        encode_call_head(id, params, false, payload.len(), self.send_limit, &mut head)
            .map_err(ClientError::from_encode)?;
        self.send_parts(head, payload)?;
        let (value, payload) = self.wait_reply(id)?;
        let result =
            serde_json::from_value::<P::Result>(value).map_err(|e| ClientError::BadReply {
                reason: format!("{} result: {e}", P::METHOD),
            })?;
        Ok((result, payload))
    }

    /// A poll call (`net.poll`, `net.server_poll`, `dgram.poll`): `None`, or one event
    /// with its payload. A polled event's `seq` counts like a pushed one's (poll mode
    /// numbers events on delivery), so [`Client::last_seq`] and [`Client::seq_gaps`]
    /// cover both.
    pub fn poll<P: CallParams<Result = PollResult>>(
        &mut self,
        params: &P,
    ) -> Result<Option<EventFrame>, ClientError> {
        let (event, payload) = self.call_with_payload(params, &[])?;
        Ok(event.map(|event| {
            self.note_seq(event.seq);
            (event, payload)
        }))
    }

    /// A blocking call by method name with raw JSON params (for methods this build does
    /// not know, and for tests of the sidecar's answers to them).
    pub fn call_value(
        &mut self,
        method: &str,
        params: Value,
        payload: &[u8],
    ) -> Result<(Value, Vec<u8>), ClientError> {
        self.check_usable()?;
        let id = self.take_id();
        let call = Call {
            id,
            method: method.to_owned(),
            params,
            noreply: false,
        };
        let header = serde_json::to_vec(&Header::Call(call))
            .map_err(|e| ClientError::protocol(format!("could not encode a call: {e}")))?;
        let mut frame = Vec::new();
        encode_raw_frame(&header, payload, self.send_limit, &mut frame)
            .map_err(ClientError::from_encode)?;
        self.send_frame(frame)?;
        self.wait_reply(id)
    }

    /// A synchronous `net.write`: waits for `{buffered, need_drain}`.
    pub fn write(&mut self, socket: SocketId, bytes: &[u8]) -> Result<WriteResult, ClientError> {
        self.call_with_payload(&WriteParams { socket }, bytes)
            .map(|(result, _)| result)
    }

    /// Sends a call asking for no reply and returns its id at once. A failure arrives
    /// later as an `error` event whose `request` is that id.
    pub fn send_noreply<P: CallParams>(
        &mut self,
        params: &P,
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        self.check_usable()?;
        let id = self.take_id();
        let mut head = Vec::with_capacity(HEAD_GUESS + payload.len().min(self.send_limit));
        encode_call_head(id, params, true, payload.len(), self.send_limit, &mut head)
            .map_err(ClientError::from_encode)?;
        if !self.has_capability(capability::NOREPLY) {
            // The sidecar will answer anyway; remember whom an error answer is about.
            let value = serde_json::to_value(params).unwrap_or(Value::Null);
            let id_of = |key: &str| value.get(key).and_then(Value::as_u64);
            let target = (id_of("socket").map(SocketId), id_of("server").map(ServerId));
            self.unanswered_noreply.insert(id, target);
        }
        self.send_parts(head, payload)?;
        Ok(id)
    }

    /// The next event: a queued one, or the next one received, waiting until `deadline`
    /// (`None`: without limit). `Ok(None)` when the deadline passed. After the transport
    /// broke: the events queued before the break, then the error.
    pub fn next_event(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<EventFrame>, ClientError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            self.check_usable()?;
            match self.recv(deadline)? {
                None => return Ok(None),
                Some(Incoming::Event(event, payload)) => return Ok(Some((event, payload))),
                Some(Incoming::Reply(reply, _)) => self.unexpected_reply(reply),
            }
        }
    }

    /// The next event if one is queued or already received; never waits.
    pub fn try_next_event(&mut self) -> Result<Option<EventFrame>, ClientError> {
        self.next_event(Some(Instant::now()))
    }

    /// The next event already queued by the client (received during a call), without
    /// touching the transport.
    pub fn next_queued_event(&mut self) -> Option<EventFrame> {
        self.events.pop_front()
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        match &self.broken {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    /// Records a fatal error, drops the transport, and returns the error.
    fn fail(&mut self, err: ClientError) -> ClientError {
        self.transport = None;
        self.unanswered_noreply.clear();
        self.broken.get_or_insert(err).clone()
    }

    fn fail_transport(&mut self, err: TransportError) -> ClientError {
        let err = if err.is_protocol_violation() {
            ClientError::protocol(err.to_string())
        } else {
            ClientError::disconnected(err.to_string())
        };
        self.fail(err)
    }

    /// Sends a frame as its prefix and header, then its payload (one vectored write on a
    /// byte stream: the payload is not copied into a frame first).
    fn send_parts(&mut self, head: Vec<u8>, payload: &[u8]) -> Result<(), ClientError> {
        let Some(transport) = self.transport.as_mut() else {
            return Err(self.fail(ClientError::disconnected("transport dropped")));
        };
        match transport.send_parts(head, payload) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail_transport(e)),
        }
    }

    fn send_frame(&mut self, frame: Vec<u8>) -> Result<(), ClientError> {
        let Some(transport) = self.transport.as_mut() else {
            return Err(self.fail(ClientError::disconnected("transport dropped")));
        };
        match transport.send(frame) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail_transport(e)),
        }
    }

    fn wait_reply(&mut self, id: u64) -> Result<(Value, Vec<u8>), ClientError> {
        loop {
            match self.recv(None)? {
                Some(Incoming::Reply(reply, payload)) if reply.id == id => {
                    return reply
                        .outcome
                        .map(|v| (v, payload))
                        .map_err(ClientError::Wire);
                }
                Some(Incoming::Reply(reply, _)) => self.unexpected_reply(reply),
                Some(Incoming::Event(event, payload)) => self.events.push_back((event, payload)),
                None => {}
            }
        }
    }

    /// One frame from the transport, parsed. Any failure is fatal.
    fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming>, ClientError> {
        let Some(transport) = self.transport.as_mut() else {
            return Err(self.fail(ClientError::disconnected("transport dropped")));
        };
        let raw = match transport.recv(deadline) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail_transport(e)),
        };
        match self.parse(raw) {
            Ok(incoming) => Ok(Some(incoming)),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn parse(&mut self, raw: RawFrame) -> Result<Incoming, ClientError> {
        let header = raw
            .parse_header()
            .map_err(|e| ClientError::protocol(e.to_string()))?;
        match header {
            Header::Reply(reply) => Ok(Incoming::Reply(reply, raw.payload)),
            Header::Event(event) => {
                self.note_seq(event.seq);
                Ok(Incoming::Event(event, raw.payload))
            }
            Header::Call(call) => Err(ClientError::protocol(format!(
                "the sidecar sent a call ({})",
                call.method
            ))),
        }
    }

    fn note_seq(&mut self, seq: u64) {
        if seq != self.last_seq + 1 {
            self.seq_gaps += 1;
        }
        self.last_seq = seq;
    }

    /// A reply nobody waits for: the answer to a `noreply` call sent without the
    /// `noreply` capability. Success is dropped; an error becomes an `error` event.
    /// A reply to an id never sent is ignored (it cannot be anybody's answer).
    fn unexpected_reply(&mut self, reply: Reply) {
        let Some((socket, server)) = self.unanswered_noreply.remove(&reply.id) else {
            return;
        };
        if let Err(WireError { code, message }) = reply.outcome {
            let body = EventBody::Error {
                socket,
                server,
                request: Some(reply.id),
                code,
                message,
            };
            self.events
                .push_back((Event::new(LOCAL_SEQ, body), Vec::new()));
        }
    }
}

/// A parsed frame from the sidecar.
enum Incoming {
    Reply(Reply, Vec<u8>),
    Event(Event, Vec<u8>),
}
