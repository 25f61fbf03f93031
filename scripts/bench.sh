#!/usr/bin/env bash
# The benchmarks (not part of the test command): builds the release gateway and the load clients,
# then runs one of them against Mosquitto started from upstream-broker/.
#   bash scripts/bench.sh compare [REPS]           issue 8's comparison: Mosquitto direct, the gateway
#                                                  (plain and mTLS + 1,000 rules), HAProxy and nginx;
#                                                  floods, fixed-rate CPU, QoS 1 latency, handshakes/s,
#                                                  idle memory, the fleet (9,900 mTLS devices, QoS 1
#                                                  every 5 s), wake-ups and syscalls per message;
#                                                  medians of REPS runs (default 3) ->
#                                                  benches/results/compare.{md,csv,svg}
#   bash scripts/bench.sh load [MESSAGES] [BYTES]  one QoS 0 flood through the same targets
#   bash scripts/bench.sh reload | authflood | authmem | authcost | clustercost | policy
# Installs what is missing with apt-get (as root, or with sudo): mosquitto, haproxy, redis-server, nginx-light with
# libnginx-mod-stream (nginx's stream module).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/as_root.sh
source scripts/as_root.sh
packages=()
command -v mosquitto >/dev/null || packages+=(mosquitto)
command -v haproxy >/dev/null || packages+=(haproxy)
command -v redis-server >/dev/null || packages+=(redis-server)
# perf counts the proxies' syscalls per message (compare's wake-up table); without it those cells read "-".
command -v perf >/dev/null || packages+=(linux-perf)
if ! command -v nginx >/dev/null || ! compgen -G "/usr/lib/nginx/modules/ngx_stream_module.so" >/dev/null; then
    packages+=(nginx-light libnginx-mod-stream)
fi
if ((${#packages[@]} > 0)); then
    echo "installing ${packages[*]} with apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
fi
cargo build --release --locked -p mqtt-gateway -p bench
what=${1:-compare}
shift || true
exec "target/release/$what" "$@"
