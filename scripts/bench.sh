#!/usr/bin/env bash
# The benchmarks (not part of the test command): builds the release gateway and the load clients,
# then runs one of them against Mosquitto started from upstream-broker/.
#   bash scripts/bench.sh compare [REPS]           issue 8's comparison: Mosquitto direct, the gateway
#                                                  (plain and mTLS + 1,000 rules), HAProxy and nginx;
#                                                  floods, fixed-rate CPU, QoS 1 latency, handshakes/s,
#                                                  idle memory; medians of REPS runs (default 3) ->
#                                                  benches/results/compare.{md,csv,svg}
#   bash scripts/bench.sh load [MESSAGES] [BYTES]  one QoS 0 flood through the same targets
#   bash scripts/bench.sh reload | authflood | policy
# HAProxy and nginx: apt-get install haproxy nginx-light libnginx-mod-stream
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked -p mqtt-gateway -p bench
what=${1:-compare}
shift || true
exec "target/release/$what" "$@"
