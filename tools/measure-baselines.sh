#!/bin/bash
# The single-node lease/2pl/occ comparison of benches/RESULTS.md (issue 5): banking and
# ycsb-t at theta 0, 0.6, 0.8 and 0.99 under each concurrency control, one CSV row per run,
# then throughput and latency charts per workload (`leasehold plot`, series = cc). Run on
# a quiet machine after building the workspace; output goes to $OUT (default
# ./baseline-measurements); WORKLOADS picks workloads (default "banking ycsb-t").
set -eu
OUT=${OUT:-./baseline-measurements}
WORKLOADS=${WORKLOADS:-banking ycsb-t}
L=${CARGO_TARGET_DIR:-$HOME/.cache/leasehold-target}/release/leasehold
mkdir -p "$OUT"
for workload in $WORKLOADS; do
  csv=$OUT/$workload-1-node.csv
  rm -f "$csv"
  for theta in 0 0.6 0.8 0.99; do
    for cc in lease 2pl occ; do
      echo "== $workload theta $theta cc $cc (load $(cut -d' ' -f1 /proc/loadavg))"
      $L bench --workload "$workload" --theta "$theta" --cc "$cc" --duration-seconds 10 --warmup-seconds 2 \
        --output-csv "$csv" 2>&1 | grep -E "transactions/s|latency|invariant"
    done
  done
  $L plot --input "$csv" --x theta --series cc --output-prefix "$OUT/$workload-1-node"
done
