//! Keeps the worked byte-level example in `docs/PROTOCOL.md` exact: the hex dump there
//! must be what this crate really encodes. On mismatch the failure prints the block to
//! paste into the document.

use sidecar_protocol::*;

/// The hello call frame the document walks through.
fn hello_frame() -> Vec<u8> {
    let mut params = HelloParams::new("dev", "s3cret");
    params.capabilities = vec!["push".into(), "noreply".into()];
    let mut out = Vec::new();
    encode_call(1, &params, false, b"", DEFAULT_MAX_FRAME, &mut out).unwrap();
    out
}

/// The `data` event frame the document shows next to it.
fn data_event_frame() -> Vec<u8> {
    let event = Event::new(
        17,
        EventBody::Data {
            socket: SocketId(3),
        },
    );
    let mut out = Vec::new();
    encode_event(&event, b"hi\n", DEFAULT_MAX_FRAME, &mut out).unwrap();
    out
}

/// `hexdump -C`-style lines: offset, 16 bytes in two groups of 8, printable ASCII.
fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (line, chunk) in bytes.chunks(16).enumerate() {
        let mut hex = String::new();
        for i in 0..16 {
            if i == 8 {
                hex.push(' ');
            }
            match chunk.get(i) {
                Some(b) => hex.push_str(&format!("{b:02x} ")),
                None => hex.push_str("   "),
            }
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!("{:08x}  {hex} |{ascii}|\n", line * 16));
    }
    out.push_str(&format!("{:08x}\n", bytes.len()));
    out
}

#[test]
fn protocol_md_hex_dump_is_exact() {
    let frame = hello_frame();
    let header = &frame[8..];
    assert_eq!(
        std::str::from_utf8(header).unwrap(),
        r#"{"type":"call","id":1,"method":"hello","params":{"version":1,"vm":"dev","secret":"s3cret","mode":"push","credit":262144,"capabilities":["push","noreply"]}}"#
    );
    assert_eq!(
        u32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize,
        frame.len() - 4
    );
    let dump = hexdump(&frame);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
    assert!(
        doc.contains(&dump),
        "docs/PROTOCOL.md does not contain the exact dump; expected block:\n{dump}"
    );
    let total_line = format!("total = 0x{:08x} = {}", frame.len() - 4, frame.len() - 4);
    assert!(doc.contains(&total_line), "docs should say `{total_line}`");
    let header_line = format!("header_len = 0x{:08x} = {}", header.len(), header.len());
    assert!(
        doc.contains(&header_line),
        "docs should say `{header_line}`"
    );

    let data = data_event_frame();
    assert_eq!(
        std::str::from_utf8(&data[8..data.len() - 3]).unwrap(),
        r#"{"type":"event","event":"data","socket":3,"seq":17}"#
    );
    let dump = hexdump(&data);
    assert!(
        doc.contains(&dump),
        "docs/PROTOCOL.md does not contain the exact data event dump; expected block:\n{dump}"
    );
}
