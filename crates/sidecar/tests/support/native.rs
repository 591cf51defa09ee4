//! The host's side of host-socket tests: native peers on the host's loopback (an echo, a
//! listener whose backlog is full, a port where nothing listens) and names the host's
//! resolver maps to it.

use std::time::Duration;

/// A native loopback listener whose accept queue is full and never drained, with the
/// connections that fill it: a connect to it gets no answer (Linux drops the SYN). Filled
/// by probing (connect until one gets no answer), so it does not depend on how a kernel
/// counts the backlog.
pub fn full_backlog() -> (
    socket2::Socket,
    Vec<std::net::TcpStream>,
    std::net::SocketAddr,
) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any_port.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fill.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (listener, fill, addr),
            Err(e) => panic!("filling the backlog: {e}"),
        }
    }
    panic!("the accept queue of a backlog-0 listener never filled");
}

/// A native echo server on the host's loopback, serving one connection; its thread
/// returns the bytes it echoed.
pub fn native_echo() -> (u16, std::thread::JoinHandle<usize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => {
                    total += n;
                    stream.write_all(&buf[..n]).unwrap();
                }
            }
        }
    });
    (port, server)
}

/// A free port on 127.0.0.1 (bound and released): for a listener a test starts later.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP port of the host's loopback where nothing listens (bound, then released).
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Names this process's resolver maps to 127.0.0.1 only (the hostname, glibc's `0x7f.1`):
/// to the VM they are host names, resolved by the host, so the policy sees 127.0.0.1.
pub fn loopback_host_names() -> Vec<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name ends at the first NUL.
    assert_eq!(
        unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) },
        0
    );
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let hostname = String::from_utf8_lossy(&buf[..len]).into_owned();
    [hostname, "0x7f.1".into()]
        .into_iter()
        .filter(|name| {
            let ips: Vec<std::net::IpAddr> =
                std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0))
                    .map(|a| a.map(|a| a.ip()).collect())
                    .unwrap_or_default();
            !ips.is_empty()
                && ips
                    .iter()
                    .all(|ip| *ip == std::net::IpAddr::from([127, 0, 0, 1]))
        })
        .collect()
}
