#!/usr/bin/env bash
# THE demo command: `bash scripts/demo.sh` (and `bash scripts/demo.sh stop`).
#
# On a fresh Debian machine it installs Mosquitto if absent, starts the reference unsecured broker
# from upstream-broker/ on 127.0.0.1:18830 (loopback only, as the gateway's README tells operators
# to do), makes a development CA with a server certificate and an operator certificate
# (`mqtt-gateway pki`), starts the gateway on 127.0.0.1:8883 (mTLS) with policies/demo.toml and its
# EST enrollment port on 127.0.0.1:8443, enrolls device sensor-1 over EST with a one-time token
# (`mqtt-gateway pki token`, `mqtt-gateway enroll`), checks that a publish really goes through, and
# prints a mosquitto_sub / mosquitto_pub pair to try.
# Everything it makes lives in ./demo (ignored by git).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
demo=$root/demo
BROKER_PORT=${BROKER_PORT:-18830}
GATEWAY_PORT=${GATEWAY_PORT:-8883}
ADMIN_PORT=${ADMIN_PORT:-9090}
EST_PORT=${EST_PORT:-8443}
bin=${CARGO_TARGET_DIR:-$root/target}/release/mqtt-gateway

stop() {
    for name in gateway mosquitto; do
        if [[ -f $demo/$name.pid ]]; then
            pid=$(cat "$demo/$name.pid")
            kill "$pid" 2>/dev/null && echo "stopped $name (pid $pid)"
            rm -f "$demo/$name.pid"
        fi
    done
}

if [[ ${1:-} == stop ]]; then
    stop
    exit 0
fi

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

if ! command -v mosquitto >/dev/null || ! command -v mosquitto_pub >/dev/null; then
    echo "==> installing mosquitto and mosquitto-clients"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto mosquitto-clients
fi

echo "==> building mqtt-gateway (release)"
cargo build --release --locked -p mqtt-gateway

mkdir -p "$demo"
stop >/dev/null 2>&1 || true

echo "==> starting the unsecured broker on 127.0.0.1:$BROKER_PORT (upstream-broker/)"
upstream-broker/start.sh "$BROKER_PORT" >"$demo/mosquitto.log" 2>&1 &
echo $! >"$demo/mosquitto.pid"

pki=$demo/pki
if [[ ! -f $pki/ca.key ]]; then
    echo "==> making a development CA in $pki"
    "$bin" pki init "$pki" --cn "mqtt-gateway demo CA"
    "$bin" pki issue "$pki" gateway --server --san localhost --san 127.0.0.1
    "$bin" pki issue "$pki" operator
fi
# An operate token for the admin API and its CLI (`sessions`, `kick`, `ban`, ...), printed once.
if [[ ! -f $demo/admin-token ]]; then
    "$bin" admin-token "$demo/admin-tokens" demo --role operate >"$demo/admin-token"
    chmod 600 "$demo/admin-token"
fi

cat >"$demo/gateway.toml" <<EOF
# Written by scripts/demo.sh. Every key: see README.md and ../../shared/spec/gateway.example.toml.
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
api_tokens_file = "admin-tokens"
pki_dir = "pki"

[upstream]
address = "127.0.0.1:$BROKER_PORT"
connect_timeout = "5s"
credentials = "principal"

[[listener]]
name = "mqtts"
bind = "127.0.0.1:$GATEWAY_PORT"
[listener.tls]
cert = "pki/gateway.pem"
key = "pki/gateway.key"
client_ca = "pki/ca.pem"
client_auth = "required"
crl = ["pki/ca.crl"]
crl_scope = "leaf"
min_version = "1.2"

[auth]
allow_anonymous = false
principal_from = "cert_cn"
cert_is_credential = true

[policy]
file = "$root/policies/demo.toml"
on_publish_deny = "drop"

[limits]
connect_timeout = "10s"
max_packet_size = "256KiB"

[log]
audit_file = "audit.jsonl"

# Device enrollment over EST (RFC 7030): docs/guide-device-enrollment.md.
[enrollment]
bind = "127.0.0.1:$EST_PORT"
pki_dir = "pki"
cert_days = 7
[enrollment.tls]
cert = "pki/gateway.pem"
key = "pki/gateway.key"
EOF

echo "==> checking the configuration"
"$bin" check --config "$demo/gateway.toml"

echo "==> starting the gateway on 127.0.0.1:$GATEWAY_PORT"
"$bin" run --config "$demo/gateway.toml" >"$demo/gateway.log" 2>&1 &
echo $! >"$demo/gateway.pid"

ready=""
for _ in $(seq 1 50); do
    # The braces scope the 2>/dev/null to this one connection attempt: bash reports a refused
    # connection itself (`connect: Connection refused`) while the port is not open yet, and an
    # `exec` with a bare redirection would silence the script's stderr for good once it succeeds.
    if { exec 3<>"/dev/tcp/127.0.0.1/$ADMIN_PORT"; } 2>/dev/null; then
        printf 'GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n' >&3
        if head -n 1 <&3 | grep -q ' 200 '; then ready=yes; fi
        exec 3>&-
        [[ -n $ready ]] && break
    fi
    sleep 0.2
done
if [[ -z $ready ]]; then
    echo "the gateway did not become ready; its log:" >&2
    cat "$demo/gateway.log" >&2
    exit 1
fi

# The device enrolls itself: a one-time token (OU devices, the policy's device group), then the EST
# client makes its key, sends a CSR and gets a 7-day certificate. Run again, it renews when due.
if [[ ! -f $pki/sensor-1.pem ]]; then
    echo "==> enrolling sensor-1 over EST (one-time token, mqtt-gateway enroll)"
    (umask 077 && "$bin" pki token "$pki" sensor-1 --ou devices --ttl 10m >"$demo/sensor-1.token")
fi
"$bin" enroll --server "https://localhost:$EST_PORT" --ca "$pki/ca.pem" --name sensor-1 \
    --out "$pki/sensor-1" --token-file "$demo/sensor-1.token"

tls_operator=(--cafile "$pki/ca.pem" --cert "$pki/operator.pem" --key "$pki/operator.key")
tls_sensor=(--cafile "$pki/ca.pem" --cert "$pki/sensor-1.pem" --key "$pki/sensor-1.key")

echo "==> proving it works: operator subscribes, sensor-1 publishes, through the gateway"
mosquitto_sub -h localhost -p "$GATEWAY_PORT" "${tls_operator[@]}" -i operator -t 'demo/#' -v -C 1 -W 10 >"$demo/selftest.out" &
sub=$!
sleep 1
mosquitto_pub -h localhost -p "$GATEWAY_PORT" "${tls_sensor[@]}" -i sensor-1 -t demo/sensor-1/temp -m 21.5 -q 1
wait "$sub"
cat "$demo/selftest.out"

cat <<EOF

The gateway is running (mTLS on 127.0.0.1:$GATEWAY_PORT, EST on https://127.0.0.1:$EST_PORT, metrics on http://127.0.0.1:$ADMIN_PORT/metrics,
audit log $demo/audit.jsonl), in front of an unsecured Mosquitto on 127.0.0.1:$BROKER_PORT.

Watch (as the operator):
  mosquitto_sub -h localhost -p $GATEWAY_PORT --cafile $pki/ca.pem --cert $pki/operator.pem --key $pki/operator.key -i operator -t 'demo/#' -v

Publish (as device sensor-1, allowed under demo/sensor-1/):
  mosquitto_pub -h localhost -p $GATEWAY_PORT --cafile $pki/ca.pem --cert $pki/sensor-1.pem --key $pki/sensor-1.key -i sensor-1 -t demo/sensor-1/temp -m 21.5

Refused (another device's topic; MQTT 5 shows the gateway's "not authorized"):
  mosquitto_pub -V mqttv5 -q 1 -h localhost -p $GATEWAY_PORT --cafile $pki/ca.pem --cert $pki/sensor-1.pem --key $pki/sensor-1.key -i sensor-1 -t demo/sensor-2/temp -m 99

Renew sensor-1's certificate over EST with the one it holds (what a timer does when it is due):
  $bin enroll --server https://localhost:$EST_PORT --ca $pki/ca.pem --name sensor-1 --out $pki/sensor-1 --renew-below 100

List the live sessions and kick one (MQTT 5 clients get DISCONNECT 0x98), with the demo's admin token:
  export MQTT_GATEWAY_ADMIN=http://127.0.0.1:$ADMIN_PORT MQTT_GATEWAY_TOKEN=\$(cat $demo/admin-token)
  $bin sessions
  $bin kick ID

Revoke the device: its live session is closed within a second, and it cannot come back (nor renew):
  $bin pki revoke $pki sensor-1
(or through the admin API, answered once its sessions are cut: $bin revoke sensor-1)

Stop everything: bash scripts/demo.sh stop
EOF
