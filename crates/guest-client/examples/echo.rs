//! A Rust guest, as `sidecar run` starts one: an echo server and a client in one program,
//! talking over their VM's private loopback.
//!
//! ```sh
//! cargo build -p sidecar && cargo build -p guest-client --example echo
//! target/debug/sidecar run --vm dev -- target/debug/examples/echo
//! ```
//!
//! The session comes already attached to VM `dev` on fd 3 (`PUSHNET_FD`), so the program
//! holds no secret; the mode (`PUSHNET_MODE`) says whether events are pushed or polled.
//! The README's tour runs it.

use std::error::Error;
use std::process::ExitCode;

use guest_client::protocol::Address;
use guest_client::{transport, Client, GuestLoop, TcpListener, TcpStream};

fn main() -> ExitCode {
    match echo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo: {error}");
            ExitCode::FAILURE
        }
    }
}

fn echo() -> Result<(), Box<dyn Error>> {
    let (stream, mode) = transport::inherited_session()?;
    let mut hello = Client::hello_params_attached();
    hello.mode = mode;
    let lp = GuestLoop::new(Client::connect(stream, hello)?)?;

    let rounds = 1000;
    lp.block_on(async {
        // Port 7 of this VM's 127.0.0.1: the VM's own, not the host's.
        let listener = TcpListener::bind(&lp, "127.0.0.1", 7)?;
        lp.spawn(async move {
            let (conn, _peer) = listener.accept().await?;
            let mut buf = [0u8; 64];
            loop {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    return conn.shutdown().await;
                }
                conn.write_all(&buf[..n]).await?;
            }
        });
        let client = TcpStream::connect(&lp, "127.0.0.1", 7).await?;
        let local = match client.local_addr() {
            Address::Inet(addr) => addr.to_string(),
            other => format!("{other:?}"),
        };
        println!("connected from {local} to 127.0.0.1:7 inside the VM");
        let mut reply = [0u8; 5];
        for _ in 0..rounds {
            client.write_all(b"hello").await?;
            client.read_exact(&mut reply).await?;
        }
        assert_eq!(&reply, b"hello");
        std::io::Result::Ok(())
    })?;
    let counters = lp.counters();
    println!(
        "{rounds} echoes of 5 bytes, {mode:?} mode: {} events received, {} polls, {} timer wakes",
        counters.events, counters.polls, counters.timer_wakes
    );
    Ok(())
}
