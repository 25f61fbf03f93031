#!/usr/bin/env bash
# The load benchmark (not part of the test command): builds the release gateway and the load
# client, then measures Mosquitto directly and the gateway (mTLS + policy) in one run.
#   bash scripts/bench.sh [MESSAGES] [PAYLOAD_BYTES]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked -p mqtt-gateway -p bench
exec target/release/load "$@"
