//! The in-VM stream data path with flow control: nothing lost, nothing unbounded.
//!
//! A write from end A goes into its peer B's *inbox* (bytes the sidecar holds for A that
//! B's guest has not been given), then [`Core::pump`] hands B's guest as much as B's
//! receive window (credit) allows, in order. So:
//!
//! - **sidecar → guest**: B's guest never gets more than its window; with the window at 0
//!   the inbox stops draining, and A's writes accumulate there;
//! - **guest → sidecar**: A's `net.write` reply reports the inbox size (`buffered`) and
//!   whether it passed the high-water mark (`need_drain`; with the `pressure` capability
//!   also a `pressure` event, once per crossing); a `drain` event follows once it
//!   falls below; a write that would pass the hard limit fails `ENOBUFS` with nothing
//!   accepted. Bytes are never dropped.
//! - **ordering**: `end` and `close` wait until the inbox ahead of them is delivered.
//!   A close with unread data (the closing end's own inbox not empty) is a reset: its
//!   peer gets `error ECONNRESET` then `close`, as the kernel answers with RST.
//! - **per VM**: every inbox counts against its writer's VM (`Vm::buffered`); a write that
//!   would take the VM past `buffered_bytes_per_vm` fails `ENOBUFS` naming that limit, so
//!   many connections to a guest that never reads stop at one VM-wide bound.
//! - **the reader's session**: B's data is not pushed while B's session is at its
//!   outbound cap (its guest is not reading what it was sent); it stays in the inbox,
//!   so the writers see `need_drain` and `ENOBUFS`, and is pushed once the guest has
//!   read ([`Core::resume_held`]).

use sidecar_protocol::{ErrorCode, EventBody, SocketId, WireError, WriteResult};

use super::{Core, Handle, SessionId, StreamKey};
use crate::metrics::bump;

/// Freed buffers at least this large are worth handing back to the OS ([`crate::memory`]).
const BIG_BUFFER: usize = 1024 * 1024;

impl Core {
    pub fn write(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        payload: &[u8],
    ) -> Result<WriteResult, WireError> {
        if let Some(host) = self.host_of(sid, socket) {
            return host.write(payload);
        }
        let key = self.stream_of(sid, socket)?;
        self.touch(key);
        let end = &self.streams[&key];
        if !end.write_open {
            return Err(WireError::new(ErrorCode::Epipe, "write after end"));
        }
        let Some(peer_key) = end.peer.filter(|p| self.streams.contains_key(p)) else {
            // The peer closed (this end got or gets its `end`): a kernel still takes the
            // write, and so does this, for nobody. Counted, never an error here, so a
            // program's last words (TLS close_notify on `end()`) do not fail.
            let discarded = &self.metrics.stream_bytes_after_peer_close;
            discarded.fetch_add(payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return Ok(WriteResult {
                buffered: 0,
                need_drain: false,
            });
        };
        // The writer's VM's limits bound what is buffered for its writes.
        let (high_water, hard_limit, vm_limit) = {
            let limits = self.vm_limits(&end.vm);
            let vm_limit = limits.buffered_bytes_per_vm;
            (limits.write_high_water, limits.write_hard_limit, vm_limit)
        };
        let vm_buffered = self.vms.get(&end.vm).map_or(0, |vm| vm.buffered);
        if !payload.is_empty() && vm_buffered + payload.len() > vm_limit {
            bump(&self.metrics.vm_buffer_refused);
            return Err(WireError::new(
                ErrorCode::Enobufs,
                format!(
                    "{vm_buffered} bytes already buffered for this VM's stream sockets; a write of {} would pass buffered_bytes_per_vm ({vm_limit})",
                    payload.len()
                ),
            ));
        }
        let writer_vm = end.vm.clone();
        let peer = self.streams.get_mut(&peer_key).expect("checked");
        if peer.inbox_bytes + payload.len() > hard_limit {
            return Err(WireError::new(
                ErrorCode::Enobufs,
                format!(
                    "{} bytes already buffered for this socket; a write of {} would pass the limit of {hard_limit}",
                    peer.inbox_bytes,
                    payload.len()
                ),
            ));
        }
        if !payload.is_empty() {
            peer.inbox_bytes += payload.len();
            peer.inbox.push_back(payload.to_vec());
            if let Some(vm) = self.vms.get_mut(&writer_vm) {
                vm.buffered += payload.len();
            }
            self.pump(peer_key);
        }
        let buffered = self.streams.get(&peer_key).map_or(0, |p| p.inbox_bytes);
        let need_drain = buffered >= high_water;
        if need_drain {
            let crossed = self
                .streams
                .get_mut(&key)
                .is_some_and(|end| !std::mem::replace(&mut end.drain_needed, true));
            if let (true, Some(session)) = (crossed, self.sessions.get(&sid)) {
                session.out.pressure(socket, buffered);
            }
        }
        Ok(WriteResult {
            buffered: buffered as u64,
            need_drain,
        })
    }

    /// `net.credit`: grows the window and delivers what it now allows. Also acknowledges
    /// an accept. A grant for a socket that already closed is ignored (it races with
    /// `close`).
    pub fn credit(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        bytes: u64,
    ) -> Result<(), WireError> {
        // A window never exceeds `max_credit`, however many grants (PROTOCOL.md §13).
        let max_credit = self.config.limits.max_credit;
        if let Some(host) = self.host_of(sid, socket) {
            host.credit(bytes, max_credit);
            return Ok(());
        }
        match self.stream_of(sid, socket) {
            Ok(key) => {
                self.touch(key);
                if let Some(window) = self.streams.get_mut(&key).and_then(|e| e.window.as_mut()) {
                    *window = window.saturating_add(bytes).min(max_credit);
                }
                self.pump(key);
                Ok(())
            }
            Err(_) if self.session_mut(sid)?.was_issued(socket.0) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// FIN: the peer gets `end` after what is buffered for it. When both directions have
    /// ended, both ends close.
    pub fn shutdown(&mut self, sid: SessionId, socket: SocketId) -> Result<(), WireError> {
        if let Some(host) = self.host_of(sid, socket) {
            return host.shutdown();
        }
        let key = self.stream_of(sid, socket)?;
        self.touch(key);
        let end = self.streams.get_mut(&key).expect("looked up");
        if !end.write_open {
            return Ok(());
        }
        end.write_open = false;
        match end.peer {
            Some(peer) => {
                if let Some(peer_end) = self.streams.get_mut(&peer) {
                    peer_end.read_open = false;
                }
                self.pump(peer);
                self.finish_if_both_ended(key);
            }
            // The peer closed first: this end closes once its own `end` is delivered.
            None => self.pump(key),
        }
        Ok(())
    }

    /// Closes a socket now (the caller pushes its own `close` after the reply). With
    /// `reset`, as `SO_LINGER` 0 does: a host socket sends RST, an in-VM peer gets
    /// `error ECONNRESET` and `close` (what it had not read is dropped).
    pub fn destroy(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        reset: bool,
    ) -> Result<(), WireError> {
        if let Some(host) = self.host_of(sid, socket) {
            let key = host.key();
            if reset {
                host.reset_on_close();
            }
            self.close_host(key, false, false);
            return Ok(());
        }
        let key = self.stream_of(sid, socket)?;
        self.abort_stream_with(key, reset);
        Ok(())
    }

    /// Tears a connection down from `key`'s side without telling `key`'s own guest, as a
    /// kernel socket's close: the peer gets what was buffered for it and `end`, and
    /// stays open (half-closed: its writes are taken, for nobody) until it ends or
    /// destroys its side, then `close`. If `key` leaves unread data behind, a reset
    /// instead: the peer gets `error ECONNRESET` and `close` at once.
    pub(crate) fn abort_stream(&mut self, key: StreamKey) {
        self.abort_stream_with(key, false);
    }

    /// [`Core::abort_stream`]; `reset` makes it a reset whatever was left unread.
    pub(crate) fn abort_stream_with(&mut self, key: StreamKey, reset: bool) {
        let Some(end) = self.close_end(key, false) else {
            return;
        };
        let Some(peer) = end.peer else { return };
        let discarded_unread = reset || end.inbox_bytes > 0;
        let Some(peer_end) = self.streams.get_mut(&peer) else {
            return;
        };
        peer_end.read_open = false;
        peer_end.closing = true;
        peer_end.drain_needed = false;
        if discarded_unread {
            let (vm, dropped) = (peer_end.writer_vm.clone(), peer_end.inbox_bytes);
            peer_end.inbox.clear();
            peer_end.inbox_bytes = 0;
            self.unbuffer(&vm, dropped);
            let Some(peer_end) = self.streams.get_mut(&peer) else {
                return;
            };
            peer_end.end_sent = true;
            let (session, id) = (peer_end.session, peer_end.id);
            let reset = WireError::new(
                ErrorCode::Econnreset,
                match reset {
                    true => "the peer reset the connection",
                    false => "the peer closed with unread data (reset)",
                },
            );
            if let Some(session) = self.sessions.get(&session) {
                session.out.deliver(EventBody::socket_error(id, reset), &[]);
            }
            self.close_end_with(peer, true, true);
        } else {
            self.pump(peer);
        }
    }

    /// Delivers `key`'s inbox as far as its window allows, then a due `end` / `close`, and
    /// a `drain` to the writer whose buffer fell below the high-water mark.
    pub(crate) fn pump(&mut self, key: StreamKey) {
        // The writer's high-water mark: the one its `need_drain` was measured against.
        let writer_vm = self
            .streams
            .get(&key)
            .and_then(|end| end.peer)
            .and_then(|writer| self.streams.get(&writer))
            .map(|writer| writer.vm.as_str());
        let high_water = match writer_vm {
            Some(vm) => self.vm_limits(vm).write_high_water,
            None => self.config.limits.write_high_water,
        };
        let Some(end) = self.streams.get_mut(&key) else {
            return;
        };
        let Some(session) = self.sessions.get(&end.session) else {
            return;
        };
        let out = &session.out;
        let max_payload = out.max_data_payload();
        let before = end.inbox_bytes;
        let mut held = false;
        while let Some(front) = end.inbox.front_mut() {
            if !out.has_room(crate::outbound::Gate::All) {
                // The guest is not reading what it was sent: leave the rest here.
                held = out.room.hold();
                break;
            }
            let allowed = match end.window {
                Some(0) => break,
                Some(window) => usize::try_from(window).unwrap_or(usize::MAX),
                None => usize::MAX,
            };
            let n = front.len().min(allowed).min(max_payload);
            let chunk = if n == front.len() {
                end.inbox.pop_front().expect("front exists")
            } else {
                front.drain(..n).collect()
            };
            end.inbox_bytes -= n;
            if let Some(window) = end.window.as_mut() {
                *window -= n as u64;
            }
            out.deliver(EventBody::Data { socket: end.id }, &chunk);
        }
        let inbox_empty = end.inbox.is_empty();
        let send_end = inbox_empty && !end.read_open && !end.end_sent;
        if send_end {
            end.end_sent = true;
            out.deliver(EventBody::End { socket: end.id }, &[]);
        }
        // A peer gone first closes this end once its `end` is out and it has ended its
        // own side too (the kernel's half-closed socket, until its close).
        let closing = end.closing && end.end_sent && !end.write_open;
        let (inbox_bytes, writer) = (end.inbox_bytes, end.peer);
        let (session_id, writer_vm) = (end.session, end.writer_vm.clone());
        self.unbuffer(&writer_vm, before - inbox_bytes);
        if held {
            bump(&self.metrics.outbound_held_back);
            self.held.push(session_id);
            self.held_notify.notify_one();
        }
        if let Some(writer_end) = writer.and_then(|w| self.streams.get_mut(&w)) {
            if writer_end.drain_needed && inbox_bytes < high_water {
                writer_end.drain_needed = false;
                let drain = EventBody::Drain {
                    socket: writer_end.id,
                };
                if let Some(session) = self.sessions.get(&writer_end.session) {
                    session.out.deliver(drain, &[]);
                }
            }
        }
        if inbox_empty && closing {
            self.close_end(key, true);
        } else if send_end {
            self.finish_if_both_ended(key);
        }
    }

    /// `bytes` of an inbox counted against `vm` were delivered or dropped.
    pub(crate) fn unbuffer(&mut self, vm: &str, bytes: usize) {
        if bytes == 0 {
            return;
        }
        if let Some(vm) = self.vms.get_mut(vm) {
            vm.buffered = vm.buffered.saturating_sub(bytes);
        }
        if bytes >= BIG_BUFFER {
            crate::memory::freed(&self.metrics);
        }
    }

    /// Session `sid`'s guest has read down from its outbound cap: pushes the in-VM stream
    /// data that was held back for it (as far as its windows and the cap allow again).
    pub fn resume_held(&mut self, sid: SessionId) {
        let Some(session) = self.sessions.get(&sid) else {
            return;
        };
        session.out.room.release();
        let mut keys: Vec<StreamKey> = Vec::new();
        for (_, handle) in session.handles() {
            match handle {
                Handle::Stream(key) => keys.push(key),
                Handle::Host(key) => {
                    if let Some(host) = self.hosts.get(&key) {
                        host.resume_reading();
                    }
                }
                _ => {}
            }
        }
        for key in keys {
            if self.streams.get(&key).is_some_and(|e| !e.inbox.is_empty()) {
                self.pump(key);
            }
        }
    }

    /// Both directions ended (each side shut down and got its `end`): both ends close.
    fn finish_if_both_ended(&mut self, key: StreamKey) {
        let done = |core: &Core, k: StreamKey| {
            core.streams
                .get(&k)
                .is_some_and(|e| !e.write_open && e.end_sent)
        };
        let Some(peer) = self.streams.get(&key).and_then(|e| e.peer) else {
            return;
        };
        if done(self, key) && done(self, peer) {
            self.close_end(peer, true);
            self.close_end(key, true);
        }
    }
}
