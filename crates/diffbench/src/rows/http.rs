//! `http_loopback_get`: a minimal HTTP/1.1 keep-alive GET, request and response parsed
//! for real with `httparse` on both sides (not a byte-count shortcut). The request, the
//! response and both parsers are shared with `http_get_ext` (`rows/ext.rs`) and its
//! native server (`ext_server.rs`), and with `published_get` (`rows/published.rs`),
//! whose native client and guest server are the ones below.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream as StdTcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use guest_client::{TcpListener as GTcpListener, TcpStream};

use super::{port_of, Runner};
use crate::env::Connector;

pub(crate) const REQUEST: &[u8] =
    b"GET /hello HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n";
pub(crate) const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, world!";

/// Whether `buf` holds a complete request; returns its length.
pub(crate) fn request_len(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            assert_eq!(req.method, Some("GET"));
            Some(n)
        }
        Ok(httparse::Status::Partial) => None,
        Err(e) => panic!("bad request: {e}"),
    }
}

/// Whether `buf` holds a complete response (headers + Content-Length body).
pub(crate) fn response_len(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(head)) => {
            assert_eq!(res.code, Some(200));
            let length = res
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
                .unwrap_or(0);
            (buf.len() >= head + length).then_some(head + length)
        }
        Ok(httparse::Status::Partial) => None,
        Err(e) => panic!("bad response: {e}"),
    }
}

pub fn guest(connector: &Connector, poll: bool) -> Runner {
    let (tx, rx) = mpsc::channel();
    let server = connector.spawn("http-server", poll, move |lp| async move {
        let listener = GTcpListener::bind(&lp, "127.0.0.1", 0).unwrap();
        tx.send(port_of(&listener.local_addr())).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        serve_guest(stream).await;
    });
    let port = rx.recv().unwrap();
    let lp = connector.guest(poll);
    let stream = lp.block_on(async { TcpStream::connect(&lp, "127.0.0.1", port).await.unwrap() });
    Box::new(move |n, hist| {
        let _server = &server;
        lp.block_on(async {
            let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
            for _ in 0..n {
                let start = Instant::now();
                stream.write_all(REQUEST).await.unwrap();
                let len = loop {
                    if let Some(len) = response_len(&buf) {
                        break len;
                    }
                    let got = stream.read(&mut chunk).await.unwrap();
                    assert!(got > 0, "server closed");
                    buf.extend_from_slice(&chunk[..got]);
                };
                buf.drain(..len);
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        })
    })
}

/// The guest HTTP/1.1 keep-alive server: one response per complete request, until the
/// client closes (also `published_get`'s server behind a published port).
pub(crate) async fn serve_guest(stream: TcpStream) {
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        while let Some(n) = request_len(&buf) {
            buf.drain(..n);
            if stream.write_all(RESPONSE).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The native HTTP/1.1 keep-alive server: one response per complete request (parsed with
/// `httparse`), until the client closes. Also the `--ext-server` process's HTTP server.
pub(crate) fn serve_keep_alive(mut stream: StdTcpStream) {
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        while let Some(n) = request_len(&buf) {
            buf.drain(..n);
            if stream.write_all(RESPONSE).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn host() -> Runner {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        serve_keep_alive(stream);
    });
    NativeClient::connect(addr).unwrap().runner(())
}

/// The native keep-alive client of the `host` lanes (and of `published_get`'s guest
/// lanes): one GET, then its whole response, per round trip.
pub(crate) struct NativeClient {
    pub(crate) stream: StdTcpStream,
    buf: Vec<u8>,
}

impl NativeClient {
    /// Connects, with Nagle off.
    pub(crate) fn connect(addr: impl ToSocketAddrs) -> io::Result<NativeClient> {
        let stream = StdTcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(NativeClient {
            stream,
            buf: Vec::new(),
        })
    }

    /// One GET and its whole response.
    pub(crate) fn get(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        self.stream.write_all(REQUEST)?;
        let len = loop {
            if let Some(len) = response_len(&self.buf) {
                break len;
            }
            match self.stream.read(&mut chunk)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                got => self.buf.extend_from_slice(&chunk[..got]),
            }
        };
        self.buf.drain(..len);
        Ok(())
    }

    /// A lane timing each GET; `keep` lives as long as the lane (e.g. its server).
    pub(crate) fn runner<K: 'static>(mut self, keep: K) -> Runner {
        Box::new(move |n, hist| {
            let _keep = &keep;
            for _ in 0..n {
                let start = Instant::now();
                self.get().expect("GET");
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        })
    }
}
