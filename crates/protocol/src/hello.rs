//! `hello`: the first call on every stream: version, attach, mode, credit, capabilities.
//!
//! The operator, not the guest, decides which VM a session belongs to: the guest can only
//! present a VM name and the secret the operator gave it. Everything that may evolve is
//! negotiated here once, so later calls need no per-call version checks.
//!
//! A second stream attaches to an existing session as its event channel by sending a hello
//! with the one-time `event_channel_token` the first stream's hello reply returned.

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks. A mismatch in `hello` gets an
/// `EPROTONOSUPPORT` error reply, then the sidecar closes the stream.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default initial per-socket credit window (bytes) when hello omits `credit`.
pub const DEFAULT_CREDIT: u64 = 256 * 1024;

/// How a session learns about socket events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The sidecar pushes event frames as events happen.
    #[default]
    Push,
    /// No events are pushed; the guest asks with `net.poll` / `net.server_poll` /
    /// `dgram.poll` (the legacy shape, kept as the measured baseline).
    Poll,
}

/// Params of `hello`. Its `Debug` shows neither the secret nor the event channel token
/// (`<redacted>`), so no log of a hello holds a credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloParams {
    /// Must equal the sidecar's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The VM to attach to (defined by the operator). Empty (absent on the wire) on a
    /// stream the operator already attached to its VM, and on an event channel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vm: String,
    /// The VM's attach secret. Wrong secret → `EACCES`, then close. Empty (absent on the
    /// wire) on a pre-attached stream and on an event channel (its token suffices).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// Operator side only: check `vm` and `secret` and attach this stream to the VM, but
    /// start no session: the stream is then handed to a guest, whose own hello (without
    /// `vm` and `secret`) starts the session. Answered with a [`BoundResult`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bind: bool,
    /// Push or poll. Default push.
    #[serde(default)]
    pub mode: Mode,
    /// Initial per-socket credit window in bytes (sidecar → guest data not yet granted
    /// back with `net.credit`). Must be > 0. Default [`DEFAULT_CREDIT`].
    #[serde(default = "default_credit")]
    pub credit: u64,
    /// Capabilities the guest can use (see [`crate::capability`]).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Working directory for relative Unix socket paths (a VM path, default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Present only when this stream attaches as the event channel of an existing session:
    /// the token that session's hello reply returned. `mode`, `credit`, `capabilities`
    /// and `cwd` are then ignored (the session already has them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_channel_token: Option<String>,
    /// The largest frame the guest accepts (bytes, as [`crate::frame`] counts them).
    /// Default [`crate::DEFAULT_MAX_FRAME`]; the sidecar splits `data` to fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame: Option<u32>,
}

fn default_credit() -> u64 {
    DEFAULT_CREDIT
}

/// How `Debug` shows a credential: `""` when there is none (a pre-attached stream's
/// hello), `<redacted>` otherwise.
struct Redacted<'a>(&'a str);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("\"\""),
            false => f.write_str("<redacted>"),
        }
    }
}

impl std::fmt::Debug for HelloParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field by name: a new one cannot be left out (or shown unredacted) silently.
        let HelloParams {
            version,
            vm,
            secret,
            bind,
            mode,
            credit,
            capabilities,
            cwd,
            event_channel_token,
            max_frame,
        } = self;
        f.debug_struct("HelloParams")
            .field("version", version)
            .field("vm", vm)
            .field("secret", &Redacted(secret))
            .field("bind", bind)
            .field("mode", mode)
            .field("credit", credit)
            .field("capabilities", capabilities)
            .field("cwd", cwd)
            .field(
                "event_channel_token",
                &event_channel_token.as_deref().map(Redacted),
            )
            .field("max_frame", max_frame)
            .finish()
    }
}

impl HelloParams {
    /// A push-mode hello with default credit and no capabilities.
    pub fn new(vm: impl Into<String>, secret: impl Into<String>) -> HelloParams {
        HelloParams {
            version: PROTOCOL_VERSION,
            vm: vm.into(),
            secret: secret.into(),
            mode: Mode::Push,
            credit: DEFAULT_CREDIT,
            capabilities: Vec::new(),
            cwd: None,
            event_channel_token: None,
            max_frame: None,
            bind: false,
        }
    }

    /// A push-mode hello for a stream the operator already attached to its VM (one that
    /// `sidecar run` hands its child): no VM name, no secret.
    pub fn attached() -> HelloParams {
        HelloParams::new("", "")
    }

    /// The operator's `bind` hello for VM `vm` (see [`HelloParams::bind`]).
    pub fn bind(vm: impl Into<String>, secret: impl Into<String>) -> HelloParams {
        HelloParams {
            bind: true,
            ..HelloParams::new(vm, secret)
        }
    }
}

/// Result of a `bind` hello: the stream now belongs to VM `vm`; its next frame must be
/// the guest's hello (without `vm` and `secret`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundResult {
    /// The sidecar's protocol version.
    pub version: u32,
    /// The VM the stream is attached to.
    pub vm: String,
}

/// Result of `hello`. Its `Debug` does not show the event channel token (`<redacted>`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResult {
    /// The sidecar's protocol version (equal to the guest's, or hello would have failed).
    pub version: u32,
    /// The session id (for logs and `stats`; the event channel gets the same id).
    pub session: u64,
    /// The intersection of both sides' capabilities (in the sidecar's order).
    pub capabilities: Vec<String>,
    /// One-time, unguessable token a second stream presents to attach as this session's
    /// event channel. Present when `event_channel` was negotiated on a primary stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_channel_token: Option<String>,
    /// The largest frame the sidecar accepts from this guest (bytes).
    pub max_frame: u32,
}

impl std::fmt::Debug for HelloResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let HelloResult {
            version,
            session,
            capabilities,
            event_channel_token,
            max_frame,
        } = self;
        f.debug_struct("HelloResult")
            .field("version", version)
            .field("session", session)
            .field("capabilities", capabilities)
            .field(
                "event_channel_token",
                &event_channel_token.as_deref().map(Redacted),
            )
            .field("max_frame", max_frame)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_hello_gets_defaults() {
        let p: HelloParams =
            serde_json::from_value(json!({"version": 1, "vm": "dev", "secret": "s"})).unwrap();
        assert_eq!(p, HelloParams::new("dev", "s"));
        assert_eq!(p.mode, Mode::Push);
        assert_eq!(p.credit, DEFAULT_CREDIT);
    }

    #[test]
    fn full_hello_round_trips() {
        let p = HelloParams {
            mode: Mode::Poll,
            credit: 4096,
            capabilities: vec!["poll".into(), "udp".into()],
            cwd: Some("/app".into()),
            event_channel_token: Some("tok".into()),
            max_frame: Some(1 << 20),
            ..HelloParams::new("vm1", "secret")
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["mode"], "poll");
        assert_eq!(v["event_channel_token"], "tok");
        assert_eq!(serde_json::from_value::<HelloParams>(v).unwrap(), p);
    }

    #[test]
    fn a_bad_mode_is_rejected() {
        let bad = json!({"version": 1, "vm": "dev", "secret": "s", "mode": "telepathy"});
        assert!(serde_json::from_value::<HelloParams>(bad).is_err());
        assert!(serde_json::from_value::<HelloParams>(json!({"vm": "dev"})).is_err());
    }

    #[test]
    fn an_attached_hello_carries_no_vm_and_no_secret() {
        let v = serde_json::to_value(HelloParams::attached()).unwrap();
        assert!(v.get("vm").is_none() && v.get("secret").is_none() && v.get("bind").is_none());
        let p: HelloParams = serde_json::from_value(json!({"version": 1})).unwrap();
        assert_eq!(p, HelloParams::attached());
        let bind = serde_json::to_value(HelloParams::bind("dev", "s")).unwrap();
        assert_eq!(bind["bind"], true);
        assert_eq!(
            serde_json::from_value::<HelloParams>(bind).unwrap(),
            HelloParams::bind("dev", "s")
        );
    }

    #[test]
    fn hello_result_round_trips() {
        let r = HelloResult {
            version: PROTOCOL_VERSION,
            session: 7,
            capabilities: vec!["push".into()],
            event_channel_token: Some("b64token".into()),
            max_frame: 16 << 20,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"version": 1, "session": 7, "capabilities": ["push"],
                   "event_channel_token": "b64token", "max_frame": 16777216})
        );
        assert_eq!(serde_json::from_value::<HelloResult>(v).unwrap(), r);
    }

    #[test]
    fn debug_shows_no_credential() {
        let mut p = HelloParams::new("dev", "hunter2-secret");
        p.event_channel_token = Some("one-time-token".into());
        let shown = format!("{p:?} {p:#?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("one-time"),
            "{shown}"
        );
        assert!(shown.contains("secret: <redacted>"), "{shown}");
        assert!(
            shown.contains("event_channel_token: Some(<redacted>)"),
            "{shown}"
        );
        assert!(
            shown.contains("vm: \"dev\"") && shown.contains("credit: 262144"),
            "{shown}"
        );
        let attached = format!("{:?}", HelloParams::attached());
        assert!(
            attached.contains("secret: \"\"") && attached.contains("event_channel_token: None")
        );
        // The wire still carries them, and equality still compares them.
        assert_eq!(
            serde_json::to_value(&p).unwrap()["secret"],
            "hunter2-secret"
        );
        assert_ne!(p, HelloParams::new("dev", "other"));

        let r = HelloResult {
            version: PROTOCOL_VERSION,
            session: 7,
            capabilities: vec![],
            event_channel_token: Some("one-time-token".into()),
            max_frame: 4096,
        };
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("one-time") && shown.contains("session: 7"),
            "{shown}"
        );
    }
}
