# A struct laid out exactly as the parameters of `Leasehold.invokeMany` (one pointer:
# the list of invocations), so that `capnp encode` can write seed messages for the
# `request_decoding` fuzz target (see make-seeds.sh).
@0xd3c0e6b4a2f15e01;

using Leasehold = import "/leasehold.capnp";

struct InvokeManyParams {
  requests @0 :List(Leasehold.Invocation);
}
