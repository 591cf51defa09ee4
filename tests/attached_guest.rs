//! The Rust guest client on a session `sidecar run` hands over: the primary stream on
//! `PUSHNET_FD`, already attached to its VM, taken with `transport::inherited_session`
//! and greeted without a secret. (One test in this binary: it sets the process's
//! environment, which no other test here may read meanwhile.)

use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;

use guest_client::{transport, Client, InProcTransport};
use sidecar::{Sidecar, SidecarConfig};
use sidecar_protocol::Mode;

#[test]
fn an_inherited_attached_session_works_without_a_secret() {
    let sidecar = Sidecar::start(SidecarConfig::default().with_vm("vm", "secret")).unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    sidecar.serve_fds_attached(ours.into(), None, "vm").unwrap();
    // As `sidecar run` leaves it for its child (there at fd 3).
    let fd = theirs.into_raw_fd();
    std::env::set_var("PUSHNET_FD", fd.to_string());
    std::env::set_var("PUSHNET_MODE", "poll");
    let (stream, mode) = transport::inherited_session().unwrap();
    assert_eq!(mode, Mode::Poll);
    let mut hello = Client::hello_params_attached();
    hello.mode = mode;
    assert!(hello.secret.is_empty() && hello.vm.is_empty());
    let mut guest = Client::connect(stream, hello).expect("attached hello");

    // It is a guest of VM `vm`: a peer attached with the secret reaches its listener.
    let (listen, _) = guest
        .call_value(
            "net.listen",
            serde_json::json!({"host": "127.0.0.1", "port": 0}),
            b"",
        )
        .unwrap();
    let port = listen["local"]["port"].as_u64().unwrap();
    let end = sidecar.connect_in_process().unwrap();
    let mut peer = Client::connect(
        InProcTransport::new(end),
        Client::hello_params("vm", "secret"),
    )
    .unwrap();
    let (connected, _) = peer
        .call_value(
            "net.connect",
            serde_json::json!({"host": "127.0.0.1", "port": port}),
            b"",
        )
        .unwrap();
    assert!(connected["socket"].as_u64().is_some(), "{connected}");

    std::env::set_var("PUSHNET_FD", "not-a-number");
    let Err(refused) = transport::inherited_session() else {
        panic!("PUSHNET_FD=not-a-number was taken for an fd");
    };
    assert!(refused.to_string().contains("PUSHNET_FD"), "{refused}");
}
