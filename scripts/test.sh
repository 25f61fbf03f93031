#!/usr/bin/env bash
# THE test command: `bash scripts/test.sh` (CI runs it through .ci/run).
#
# On a fresh Debian 12 machine (as root, or with sudo) it installs what the tests need, then runs,
# stopping at the first failure:
#   1. tools      mosquitto + mosquitto-clients, prometheus (prometheus + promtool, for the
#                 observability tests), systemd (systemd-analyze, for the unit in deploy/),
#                 haproxy (two gateways behind it, send-proxy-v2), redis-server (the shared ban
#                 state of several gateways, gateway/tests/cluster.rs), nodejs + npm (apt-get, only
#                 when missing), MQTT.js for the WebSocket tests (npm ci in tests/mqttjs),
#                 python3-paho-mqtt (paho-mqtt over WebSocket, gateway/tests/websocket.rs),
#                 rustfmt + clippy
#   2. fmt        cargo fmt --all -- --check
#   3. clippy     cargo clippy --workspace --all-targets --locked -- -D warnings
#   4. test       cargo test --workspace --locked (unit, integration, e2e against real Mosquitto)
#   5. deploy     deploy/check.sh: hadolint, yamllint, kubernetes-validate and cross-checks of deploy/,
#                 `mqtt-gateway check` on the Kubernetes ConfigMap (the systemd unit is verified by
#                 systemd-analyze in step 4, gateway/tests/operator_tools.rs)
#   6. fuzz       when mqtt-inspect/fuzz exists: every cargo-fuzz target for 20 s, seeded with
#                 mqtt-inspect/tests/fixtures/*.bin
# Budget: well under 20 minutes on 2 cores, most of it compiling.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
CARGO_FUZZ_VERSION=0.13.2

step_no=0
current=""
step() {
    step_no=$((step_no + 1))
    current=$1
    printf '\n==> [%d] %s\n' "$step_no" "$current"
}
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        printf '\n==> FAILED (exit %d) in step [%d] %s\n' "$rc" "$step_no" "$current" >&2
    fi
}
trap on_exit EXIT

# shellcheck source=scripts/as_root.sh
source scripts/as_root.sh

step "tools: mosquitto, mosquitto-clients, prometheus, systemd, haproxy, redis-server, node, MQTT.js, paho-mqtt, rustfmt, clippy"
packages=()
if ! command -v mosquitto >/dev/null || ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
    packages+=(mosquitto mosquitto-clients)
fi
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    packages+=(prometheus)
fi
# systemd-analyze verifies deploy/systemd/ (gateway/tests/operator_tools.rs).
if ! command -v systemd-analyze >/dev/null; then
    packages+=(systemd)
fi
# HAProxy in front of two gateways (gateway/tests/behind_haproxy.rs).
if ! command -v haproxy >/dev/null; then
    packages+=(haproxy)
fi
# Redis shares bans and failure counters between gateways (gateway/tests/cluster.rs).
if ! command -v redis-server >/dev/null; then
    packages+=(redis-server)
fi
# Node.js runs a real MQTT.js client (gateway/tests/mqttjs.rs).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    packages+=(nodejs npm)
fi
# paho-mqtt for Python over WebSocket (gateway/tests/websocket.rs), for the system Python 3.
if ! /usr/bin/python3 -c 'import paho.mqtt.client' 2>/dev/null; then
    packages+=(python3-paho-mqtt)
fi
if ((${#packages[@]} > 0)); then
    echo "installing ${packages[*]} with apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
fi
# The Debian packages may start a system broker on 127.0.0.1:1883 and a Prometheus on :9090; the
# tests never use those ports (they start their own broker, gateway and Prometheus on free ports).
for tool in mosquitto mosquitto_pub mosquitto_sub stdbuf prometheus promtool systemd-analyze haproxy redis-server node npm cargo; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
/usr/bin/python3 -c 'import paho.mqtt.client' || { echo "missing: python3-paho-mqtt" >&2; exit 1; }
# MQTT.js at the version pinned in tests/mqttjs/package-lock.json.
if [[ ! -d tests/mqttjs/node_modules/mqtt ]]; then
    npm ci --prefix tests/mqttjs --no-audit --no-fund
fi
node --version
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
mosquitto -h 2>/dev/null | head -n 1 || true
prometheus --version 2>&1 | head -n 1 || true
cargo --version
cargo fmt --version
cargo clippy --version

step "fmt: cargo fmt --all -- --check"
cargo fmt --all -- --check

step "clippy: cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "test: cargo test --workspace --locked"
test_log=$(mktemp)
cargo test --workspace --locked 2>&1 | tee "$test_log"
passed=$(grep -oE '^test result: .* ([0-9]+) passed' "$test_log" | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
failed=$(grep -oE '[0-9]+ failed' "$test_log" | awk '{s += $1} END {print s + 0}')
rm -f "$test_log"

step "deploy: bash deploy/check.sh"
bash deploy/check.sh

if [[ -f mqtt-inspect/fuzz/Cargo.toml ]]; then
    step "fuzz: every cargo-fuzz target for ${FUZZ_SECONDS}s"
    if ! cargo fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
    fi
    cargo fuzz --version
    cd "$root/mqtt-inspect"
    targets=$(RUSTC_BOOTSTRAP=1 cargo fuzz list)
    if [[ -z $targets ]]; then
        echo "mqtt-inspect/fuzz has no targets" >&2
        exit 1
    fi
    shopt -s nullglob
    seeds=("$root"/mqtt-inspect/tests/fixtures/*.bin)
    shopt -u nullglob
    for target in $targets; do
        corpus=fuzz/corpus/$target
        mkdir -p "$corpus"
        if ((${#seeds[@]} > 0)); then
            cp -n -- "${seeds[@]}" "$corpus"/
        fi
        echo "--- fuzz target $target (corpus $corpus, ${#seeds[@]} fixture seeds)"
        RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$corpus" -- \
            -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048
    done
    cd "$root"
else
    step "fuzz: skipped (no mqtt-inspect/fuzz/Cargo.toml)"
fi

printf '\n==> all steps passed\n'
# The totals of the cargo test step, as the last line.
echo "tests: ${passed} passed, ${failed} failed"
