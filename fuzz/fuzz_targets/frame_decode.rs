//! Any bytes from a peer: decoding never panics, takes only whole frames, and every frame
//! it yields encodes back to bytes that decode to the same frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshrpc::proto::Frame;

fuzz_target!(|data: &[u8]| {
    // A small limit so that the limit check is reached too.
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = Frame::decode(&mut buf, 64 * 1024) {
        let mut again = BytesMut::new();
        frame.encode(&mut again);
        assert_eq!(again.len(), frame.encoded_len());
        let back = Frame::decode(&mut again, 64 * 1024).expect("re-encoded frame decodes").expect("whole");
        assert_eq!(back, frame);
        assert!(again.is_empty());
    }
});
