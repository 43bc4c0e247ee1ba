#!/bin/bash
# The cluster and placement figures of benches/RESULTS.md: one node, three nodes over shm
# and tcp (throughput, idle latency, epoch barrier from each node's metrics), and grouped
# banking with placement on and off, and uniform banking with requests routed three ways
# (where they arrive, forwarded by the nodes, routed by the client's lease table). Run on a
# quiet machine after building the workspace; everything goes under $OUT (default
# ./cluster-measurements), the summary to $OUT/out.txt. SECTIONS picks parts (default:
# "single cluster placement routing").
set -u
SECTIONS=${SECTIONS:-single cluster placement routing}
section() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
OUT=${OUT:-./cluster-measurements}
mkdir -p "$OUT"
T=${CARGO_TARGET_DIR:-$HOME/.cache/leasehold-target}/release
L=$T/leasehold
out=$OUT/out.txt
: > $out
log() { echo "$@" | tee -a $out; }
cluster_file() { # dir fabric base placement
  mkdir -p $1
  {
    echo "fabric = \"$2\""
    for i in 0 1 2; do
      echo "[[nodes]]"; echo "id = $i"; echo "client_address = \"127.0.0.1:$(( $3 + i ))\""
      echo "peer_address = \"127.0.0.1:$(( $3 + 100 + i ))\""; echo "data_dir = \"node-$i\""
      echo "metrics_address = \"127.0.0.1:$(( $3 + 200 + i ))\""
    done
  } > $1/cluster.toml
}
cpu_ticks() { # dir: user+system clock ticks of the three node processes so far
  local total=0
  for i in 0 1 2; do
    local pid; pid=$(cat $1/node-$i.pid 2>/dev/null) || continue
    total=$(( total + $(awk '{print $14 + $15}' /proc/$pid/stat 2>/dev/null || echo 0) ))
  done
  echo $total
}
barrier() { # base
  for i in 0 1 2; do curl -s 127.0.0.1:$(( $1 + 200 + i ))/metrics | grep -E "leasehold_epoch_barrier_seconds\{quantile=\"0.5\"\}|leasehold_epoch_barrier_seconds\{quantile=\"0.99\"\}" | sed "s/^/  node $i /"; done
}
log "== $(date -u +%H:%M) load $(cut -d' ' -f1-3 /proc/loadavg)"
if section single; then
log "-- single node, banking 100k, 10 s"
$L bench --duration-seconds 10 2>&1 | grep -E "transactions/s|latency" | tee -a $out
$L bench --duration-seconds 5 --clients 1 --pipeline 1 --batch 1 2>&1 | grep -E "transactions/s|latency" | tee -a $out
fi
section cluster && for fabric in shm tcp; do
  d=$OUT/c-$fabric; rm -rf $d; cluster_file $d $fabric 7800 true
  $L cluster start --directory $d >/dev/null 2>&1 || log "start failed"
  log "-- 3 nodes $fabric, banking 100k uniform, 10 s (load $(cut -d' ' -f1 /proc/loadavg))"
  $L bench --cluster-file $d/cluster.toml --duration-seconds 10 2>&1 | grep -E "transactions/s|latency|invariant" | tee -a $out
  log "-- idle transfer"
  $L bench --cluster-file $d/cluster.toml --no-load --clients 1 --pipeline 1 --batch 1 --duration-seconds 5 2>&1 | grep -E "transactions/s|latency" | tee -a $out
  log "-- barrier (epoch_barrier_seconds quantiles, cumulative)"; barrier 7800 | tee -a $out
  $L cluster status --directory $d | tee -a $out
  $L cluster stop --directory $d >/dev/null
done
# Placement on and static hash placement, each with requests forwarded by the nodes to the
# holder of most of their keys and with requests run where they arrive (static: the
# research systems' baseline, functions run where invoked and reach remote data;
# placement: only the leases move, towards the functions). A variant ending in -ids salts
# request ids so that their exactly-once records live on the node each client sends to
# (--request-ids-at-node). PLACEMENT_VARIANTS picks variants.
PLACEMENT_VARIANTS=${PLACEMENT_VARIANTS:-on on-arrival off-forwarding off-arrival on-arrival-ids off-arrival-ids}
section placement && for variant in $PLACEMENT_VARIANTS; do
  placement=true; forwarding=true; extra=""
  case $variant in off-*) placement=false ;; esac
  case $variant in *-arrival*) forwarding=false ;; esac
  case $variant in *-ids) extra=--request-ids-at-node ;; esac
  d=$OUT/p-$variant; rm -rf $d; cluster_file $d tcp 7900 $placement
  $L cluster start --directory $d -- --placement $placement --forwarding $forwarding >/dev/null 2>&1 || log "start failed"
  log "-- $variant: grouped banking 30k keys, 3 groups, 3 clients, tcp, placement $placement, forwarding $forwarding $extra, 10 s warm-up + 10 s (load $(cut -d' ' -f1 /proc/loadavg))"
  $L bench --cluster-file $d/cluster.toml $extra --key-groups 3 --clients 3 --keys 30000 --duration-seconds 10 2>&1 | grep -E "transactions/s" | sed 's/^/  warm-up run: /' | tee -a $out
  $L cluster status --directory $d | sed 's/^/  before: /' | tee -a $out
  ticks_before=$(cpu_ticks $d)
  $L bench --cluster-file $d/cluster.toml $extra --no-load --key-groups 3 --clients 3 --keys 30000 --duration-seconds 10 --output-json $OUT/placement-$variant.json 2>&1 | grep -E "transactions/s|latency|invariant" | tee -a $out
  # The nodes' CPU per transaction: on a host where the nodes share the cores, the cost
  # placement saves shows here even when throughput is bound by the cores.
  log "  node CPU: $(( ($(cpu_ticks $d) - ticks_before) * 1000 / $(getconf CLK_TCK) )) ms over the measured run"
  $L cluster status --directory $d | sed 's/^/  after: /' | tee -a $out
  $L cluster stop --directory $d >/dev/null
done
# Uniform transfers over 100k accounts touch keys on two nodes, so where a request runs
# decides how many of its accesses are remote. Placement is off so that only routing moves.
section routing && for routing in arrival forwarding client; do
  d=$OUT/r-$routing; rm -rf $d; cluster_file $d tcp 8000 false
  forwarding=true; [ $routing = arrival ] && forwarding=false
  $L cluster start --directory $d -- --placement false --forwarding $forwarding >/dev/null 2>&1 || log "start failed"
  extra=""; [ $routing = client ] && extra="--route-by-lease-table"
  log "-- banking 100k uniform, tcp, requests run: $routing, 10 s (load $(cut -d' ' -f1 /proc/loadavg))"
  $L cluster status --directory $d | sed 's/^/  before: /' >> $OUT/status-$routing.txt
  $L bench --cluster-file $d/cluster.toml $extra --duration-seconds 10 --output-csv $OUT/routing.csv 2>&1 | grep -E "transactions/s|latency|invariant" | tee -a $out
  $L cluster status --directory $d | sed 's/^/  after: /' | tee -a $out
  $L cluster stop --directory $d >/dev/null
done
log "== done $(date -u +%H:%M) load $(cut -d' ' -f1-3 /proc/loadavg)"
