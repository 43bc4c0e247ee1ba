//! Fuzz target: the decoding of the frames engine nodes exchange over the cluster
//! transport (`leasehold_engine::cluster::wire`), which a node reads from its peers'
//! sockets and rings. Any input must decode or be refused without a panic; a frame that
//! decodes must take no more bytes than it was given, and must survive encoding and
//! decoding again unchanged. The input is a frame body: the target puts the length prefix
//! in front (a wrong length only means "wait for more" or a frame cut short, which the
//! fuzzer would otherwise spend most inputs on), and every eighth input also goes in raw.

#![no_main]

use leasehold_engine::cluster::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.first().is_some_and(|byte| byte % 8 == 7) {
        check(data);
    }
    let mut framed = Vec::with_capacity(4 + data.len());
    framed.extend_from_slice(&(data.len() as u32).to_le_bytes());
    framed.extend_from_slice(data);
    check(&framed);
});

fn check(stream: &[u8]) {
    let Ok(Some((frame, used))) = wire::decode(stream) else { return };
    assert!(used <= stream.len(), "the frame took {used} bytes of {}", stream.len());
    let mut encoded = Vec::new();
    wire::encode(&frame, &mut encoded);
    match wire::decode(&encoded) {
        Ok(Some((again, again_used))) => {
            assert_eq!(again, frame, "a frame changed through encoding");
            assert_eq!(again_used, encoded.len(), "an encoded frame was not taken whole");
        }
        other => panic!("an encoded frame did not decode: {other:?}"),
    }
}
