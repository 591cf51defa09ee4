//! Small value types: what a registration wants to hear about, what the kernel reported,
//! and which triggering mode the reactor runs in.

/// Directions a registration wants to be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Interest {
    pub readable: bool,
    pub writable: bool,
}

impl Interest {
    pub const NONE: Interest = Interest {
        readable: false,
        writable: false,
    };
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
    };

    pub fn is_empty(self) -> bool {
        !self.readable && !self.writable
    }

    /// Whether every direction of `other` is in `self`.
    pub fn contains(self, other: Interest) -> bool {
        (self.readable || !other.readable) && (self.writable || !other.writable)
    }

    pub fn union(self, other: Interest) -> Interest {
        Interest {
            readable: self.readable || other.readable,
            writable: self.writable || other.writable,
        }
    }

    /// The directions of `self` that are not in `other`.
    pub fn minus(self, other: Interest) -> Interest {
        Interest {
            readable: self.readable && !other.readable,
            writable: self.writable && !other.writable,
        }
    }

    pub(crate) fn to_event(self, key: usize) -> polling::Event {
        polling::Event::new(key, self.readable, self.writable)
    }
}

/// What one kernel event reported for a source. Errors and hang-ups are reported as
/// readable and writable (the next operation returns the error or the end of stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
}

impl Readiness {
    pub(crate) fn as_interest(self) -> Interest {
        Interest {
            readable: self.readable,
            writable: self.writable,
        }
    }
}

/// How the reactor's poller delivers events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Registered once, notified at each readiness transition (epoll, kqueue).
    Edge,
    /// Disarmed after each event and re-armed by the crate (poll(2) backend).
    Oneshot,
}

impl Mode {
    pub(crate) fn poll_mode(self) -> polling::PollMode {
        match self {
            Mode::Edge => polling::PollMode::Edge,
            Mode::Oneshot => polling::PollMode::Oneshot,
        }
    }
}
