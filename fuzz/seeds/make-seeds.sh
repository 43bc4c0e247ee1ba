#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets (committed; run again after changing the
# schema or the plugins' argument types). Seeds are valid inputs the fuzzer mutates from.
set -euo pipefail
cd "$(dirname "$0")"

# request_decoding: invokeMany parameters, serialized by the capnp tool.
mkdir -p request_decoding
encode() { printf '%s' "$2" | capnp encode --import-path=../../schema batch.capnp InvokeManyParams > "request_decoding/$1"; }
encode one-json '(requests = [(plugin = "banking", workflow = "transfer", requestId = "client-1/42", arguments = (json = "{\"from\":1,\"to\":2,\"amount\":5}"))])'
encode one-encoded '(requests = [(plugin = "ycsb-t", workflow = "transfer", arguments = (encoded = 0x"010205"))])'
encode three '(requests = [(plugin = "banking", workflow = "balance", arguments = (json = "{\"account\":7}")), (plugin = "banking", workflow = "deposit", requestId = "r", arguments = (json = "{\"account\":7,\"amount\":1}")), (plugin = "x", workflow = "", arguments = (encoded = "")), (plugin = "banking", workflow = "transfer", requestId = "0123456789012345678901234567890123456789012345678901234567890123456789", arguments = (json = ""))])'
encode empty '(requests = [])'

# plugin_arguments_*: byte 0 picks the workflow, byte 1 the mode (bit 0: JSON, bit 1:
# keys hold values), the rest are JSON arguments.
seed() {
    local target=$1 name=$2 workflow=$3 json=$4
    mkdir -p "plugin_arguments_$target"
    { printf "\\x$(printf %02x "$workflow")\\x03"; printf '%s' "$json"; } > "plugin_arguments_$target/$name"
}
seed banking transfer 0 '{"from":1,"to":2,"amount":5}'
seed banking deposit 1 '{"account":3,"amount":10}'
seed banking balance 2 '{"account":3}'
seed banking open 3 '{"first":0,"count":4,"balance":100}'
seed banking total 4 '{"first":0,"count":4}'
seed ycsb_t transfer 0 '{"a":1,"b":2,"amount":1}'
seed ycsb_t read 2 '{"key":1}'
seed smallbank amalgamate 0 '{"from":1,"to":2}'
seed smallbank balance 1 '{"customer":1}'
seed smallbank deposit_checking 2 '{"customer":1,"amount":5}'
seed smallbank send_payment 3 '{"from":1,"to":2,"amount":5}'
seed travel reserve 0 '{"user":"u1","hotel":2,"flight":3}'
seed travel search 1 '{"hotels":[1,2],"flights":[3]}'
seed movie compose_review 0 '{"review_id":1,"username":"u","password":"p","title":"t","rating":5,"text":"good"}'
seed social login 0 '{"username":"u","password":"p"}'
seed social post 3 '{"post_id":1,"author":2,"body":"hello","notify":[3,4]}'
