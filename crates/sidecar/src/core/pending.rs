//! Pending connections per VM (DESIGN.md, "Limits per VM"): what a VM's guests have not
//! taken yet, bounded by [`Limits::pending_connections_per_vm`](crate::Limits).
//!
//! A VM's count is
//! - connections to its listeners that the sidecar accepted and pushed (`accept`) but
//!   that its guests have not acknowledged yet, summed over the VM's listeners: in-VM
//!   connects, published-port accepts, paired connections (each is an end whose
//!   `unacked` is set; acknowledging or closing it takes it off), plus
//! - its host connects still in progress (a [`Connecting`] guard each, held by the
//!   parked connect, so an aborted one cannot leak its count).
//!
//! The per-listener backlog already bounds one listener; this bounds a VM with many
//! listeners, or many host connects, so a guest that stops taking connections cannot
//! make the sidecar hold an unbounded number of them. At the limit nothing is dropped
//! silently: an in-VM connect waits for room as for a full backlog (on the VM's
//! [`Key::VmRoom`], notified whenever its count falls), a host connect fails `EAGAIN`,
//! and a published-port connection is closed and counted (`pending_refused` and
//! `published_refused`).

use std::cell::Cell;
use std::rc::Rc;

use notify_fabric::Fabric;
use sidecar_protocol::{ErrorCode, WireError};

use super::{Core, Key};
use crate::metrics::bump;

/// A host connect in progress, counted in its VM until dropped.
pub struct Connecting {
    count: Rc<Cell<usize>>,
    fabric: Fabric<Key>,
    key: Key,
}

impl Drop for Connecting {
    fn drop(&mut self) {
        self.count.set(self.count.get().saturating_sub(1));
        self.fabric.notify_all(&self.key);
    }
}

impl Core {
    /// Why VM `vm` may not have one more pending connection (it is at its limit), if so.
    pub(crate) fn pending_refusal(&self, vm: &str) -> Option<WireError> {
        let vm = self.vms.get(vm)?;
        let (pending, limit) = (
            vm.pending_connections(),
            vm.limits.pending_connections_per_vm,
        );
        (pending >= limit).then(|| {
            WireError::new(
                ErrorCode::Eagain,
                format!("the VM has {pending} pending connections (limit {limit})"),
            )
        })
    }

    /// Counts a refusal because of the pending limit that no guest is told of.
    pub(crate) fn count_pending_refusal(&self) {
        bump(&self.metrics.pending_refused);
    }

    /// An accepted connection was pushed to a guest of `vm`, not taken yet.
    pub(crate) fn queue_accept(&mut self, vm: &str) {
        if let Some(vm) = self.vms.get_mut(vm) {
            vm.unaccepted += 1;
        }
    }

    /// A guest of `vm` took (or closed) a connection it had not taken yet.
    pub(crate) fn accept_taken(&mut self, vm: &str) {
        if let Some(vm) = self.vms.get_mut(vm) {
            vm.unaccepted = vm.unaccepted.saturating_sub(1);
            self.fabric.notify_all(&Key::VmRoom(vm.key));
        }
    }

    /// Starts counting a host connect of VM `vm`, or refuses it (`EAGAIN`, counted) at
    /// the limit.
    pub(crate) fn start_connecting(&mut self, vm: &str) -> Result<Connecting, WireError> {
        if let Some(e) = self.pending_refusal(vm) {
            self.count_pending_refusal();
            return Err(WireError::new(
                e.code,
                format!("connect EAGAIN: {}", e.message),
            ));
        }
        let vm = self
            .vms
            .get(vm)
            .ok_or_else(|| WireError::new(ErrorCode::Eacces, "the VM no longer exists"))?;
        vm.connecting.set(vm.connecting.get() + 1);
        Ok(Connecting {
            count: Rc::clone(&vm.connecting),
            fabric: self.fabric.clone(),
            key: Key::VmRoom(vm.key),
        })
    }
}
