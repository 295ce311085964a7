//! Any first bytes of a connection, to either side of the handshake: never a panic, and
//! a node that accepts settles on a version both speak and answers a whole reply.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshrpc::proto::{CallerHandshake, NodeHandshake, VERSION};

fuzz_target!(|data: &[u8]| {
    let node = NodeHandshake::new(1 << 20);
    let (mut inbox, mut out) = (BytesMut::from(data), BytesMut::new());
    if let Ok(Some(done)) = node.receive(&mut inbox, &mut out) {
        assert!(done.version <= VERSION);
        assert_eq!(out.len(), 8 + 4 + 4, "a whole welcome");
        // The caller side reads that welcome.
        let caller = CallerHandshake::new("fuzz", 1 << 20);
        let got = caller.receive(&mut out).expect("a node's own welcome is valid").expect("whole");
        assert_eq!(got.version, done.version);
    }
    let caller = CallerHandshake::new("fuzz", 1 << 20);
    let _ = caller.receive(&mut BytesMut::from(data));
});
