mod support;

use serde_json::json;
use sidecar::{Sidecar, SidecarConfig};
use support::{RawGuest, Wire};

#[test]
fn tcp_echo_in_process() {
    let sidecar = Sidecar::start(SidecarConfig::default().with_vm("vm", "s")).unwrap();
    let mut server = RawGuest::attach(Wire::Pipe(sidecar.connect_in_process().unwrap()), "vm", "s");
    let mut client = RawGuest::attach(Wire::Pipe(sidecar.connect_in_process().unwrap()), "vm", "s");
    let listen = server
        .call("net.listen", json!({"host": "127.0.0.1", "port": 0}), b"")
        .unwrap();
    let port = listen["local"]["port"].as_u64().unwrap();
    let conn = client
        .call("net.connect", json!({"port": port}), b"")
        .unwrap();
    let csock = conn["socket"].as_u64().unwrap();
    let (accept, _, _) = server.event_of("accept");
    let ssock = accept["socket"].as_u64().unwrap();
    client.send_call("net.write", json!({"socket": csock}), b"hello", true);
    assert_eq!(server.read_data(ssock, 5), b"hello");
    println!("{}", client.stats());
}
