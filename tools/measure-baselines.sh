#!/bin/bash
# The lease/2pl/occ comparison of benches/RESULTS.md (issue 5): banking and ycsb-t at theta
# 0, 0.6, 0.8 and 0.99 under each concurrency control, on one node (embedded) and on a
# local cluster of three engine processes (`leasehold cluster start -- --cc <cc>`, a fresh
# cluster per run), one CSV row per run, then throughput and latency charts per workload
# and size (`leasehold plot`, series = cc). Run on a quiet machine after building the
# workspace, with no other engine on ports 7900-8100; output goes to $OUT (default
# ./baseline-measurements). WORKLOADS picks workloads (default "banking ycsb-t"), SIZES
# the sizes ("1 3": one node and three nodes), FABRIC the cluster's fabric (default shm).
set -eu
OUT=${OUT:-./baseline-measurements}
WORKLOADS=${WORKLOADS:-banking ycsb-t}
SIZES=${SIZES:-1 3}
FABRIC=${FABRIC:-shm}
L=${CARGO_TARGET_DIR:-$HOME/.cache/leasehold-target}/release/leasehold
mkdir -p "$OUT"
load() { cut -d' ' -f1 /proc/loadavg; }
for size in $SIZES; do
  for workload in $WORKLOADS; do
    if [ "$size" = 1 ]; then name=$workload-1-node; else name=$workload-$size-nodes-$FABRIC; fi
    csv=$OUT/$name.csv
    rm -f "$csv"
    for theta in 0 0.6 0.8 0.99; do
      for cc in lease 2pl occ; do
        echo "== $name theta $theta cc $cc (load $(load))"
        if [ "$size" = 1 ]; then
          $L bench --workload "$workload" --theta "$theta" --cc "$cc" --duration-seconds 10 --warmup-seconds 2 \
            --output-csv "$csv" 2>&1 | grep -E "transactions/s|latency|invariant"
        else
          directory=$(mktemp -d /tmp/leasehold-baselines.XXXXXX)
          $L cluster start --directory "$directory" --nodes "$size" --fabric "$FABRIC" --base-port 7900 \
            -- --cc "$cc" >/dev/null
          $L bench --cluster-file "$directory/cluster.toml" --workload "$workload" --theta "$theta" \
            --duration-seconds 10 --warmup-seconds 2 --output-csv "$csv" 2>&1 | grep -E "transactions/s|latency|invariant"
          $L cluster stop --directory "$directory" >/dev/null
          rm -rf "$directory"
        fi
      done
    done
    $L plot --input "$csv" --x theta --series cc --output-prefix "$OUT/$name"
  done
done
