//! Fuzz target: the decoding of a client's `invokeMany` parameters, from raw message
//! bytes through Cap'n Proto framing, the client connection's reader limits and the RPC
//! edge's checks (`leasehold_engine::rpc::decode_invocation_batch`). Any input must be
//! refused or decoded without a panic, and what decodes must respect the edge's limits.

#![no_main]

use leasehold_engine::model::{Arguments, RequestId, REQUEST_ID_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

/// A small message limit, so that the fuzzer also reaches the size refusals.
const MESSAGE_BYTES_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(invocations) = leasehold_engine::rpc::decode_invocation_batch(data, MESSAGE_BYTES_MAX) else { return };
    for invocation in invocations {
        match invocation {
            Ok(invocation) => {
                match &invocation.request_id {
                    RequestId::Untracked => {}
                    RequestId::Id(bytes) => {
                        assert!(!bytes.is_empty(), "an empty request id is untracked");
                        assert!(bytes.len() <= REQUEST_ID_BYTES_MAX, "an over-long request id was accepted");
                    }
                    RequestId::Session(position) => {
                        assert!(position.sequence >= 1 && position.first_unanswered >= 1, "session numbers start at 1")
                    }
                }
                let argument_bytes = match &invocation.arguments {
                    Arguments::Encoded(bytes) => bytes.len(),
                    Arguments::Json(text) => text.len(),
                };
                let decoded_bytes = argument_bytes + invocation.plugin.len() + invocation.workflow.len();
                assert!(decoded_bytes <= data.len(), "decoding produced more bytes than the message holds");
            }
            Err(message) => assert!(!message.is_empty(), "a refusal without a message"),
        }
    }
});
