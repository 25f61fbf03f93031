#!/usr/bin/env bash
# Device enrollment over EST (RFC 7030) with nothing but openssl and curl
# (docs/guide-device-enrollment.md), against mqtt-gateway's [enrollment] listener.
#
#   est-enroll.sh cacerts URL BOOTSTRAP_CA OUT_CA     the CA certificates (PEM) into OUT_CA
#   est-enroll.sh enroll URL CA NAME TOKEN STEM       first enrollment: new key STEM.key, cert STEM.pem
#   est-enroll.sh renew URL CA NAME STEM              renewal with STEM.pem/STEM.key; both replaced
#
# URL is the EST server, e.g. https://gateway.example:8443. The token is read from the command
# line here for brevity; it goes to curl on its standard input, so it never shows in `ps`.
# Key and certificate are replaced together, only once the new certificate is in hand.
set -euo pipefail

est=/.well-known/est
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A base64 PKCS#7 certs-only answer to PEM certificates.
certs() { openssl base64 -d -in "$1" | openssl pkcs7 -inform DER -print_certs -out "$2"; }

# A new P-256 key and a base64 DER CSR for CN=$1.
request() {
    (umask 077 && openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$work/new.key" -subj "/CN=$1" -outform DER -out "$work/csr.der" 2>/dev/null)
    openssl base64 -in "$work/csr.der" -out "$work/csr.b64"
}

# POST the CSR to $1 with the extra curl arguments after it; the PKCS#7 answer to $work/answer.
post() {
    local url=$1
    shift
    curl -sS --fail-with-body --max-time 30 "$@" \
        -H 'Content-Type: application/pkcs10' -H 'Content-Transfer-Encoding: base64' \
        --data-binary "@$work/csr.b64" -o "$work/answer" "$url"
}

# The new key and certificate replace STEM.key and STEM.pem (each by a rename).
install() {
    certs "$work/answer" "$work/new.pem"
    mv -f "$work/new.key" "$1.key"
    mv -f "$work/new.pem" "$1.pem"
}

case "${1:-}" in
cacerts)
    url=$2 ca=$3 out=$4
    curl -sS --fail --max-time 30 --cacert "$ca" -o "$work/answer" "$url$est/cacerts"
    certs "$work/answer" "$out"
    ;;
enroll)
    url=$2 ca=$3 name=$4 token=$5 stem=$6
    request "$name"
    printf 'user = "%s:%s"\n' "$name" "$token" | post "$url$est/simpleenroll" --cacert "$ca" -K -
    install "$stem"
    ;;
renew)
    url=$2 ca=$3 name=$4 stem=$5
    request "$name"
    post "$url$est/simplereenroll" --cacert "$ca" --cert "$stem.pem" --key "$stem.key"
    install "$stem"
    ;;
*)
    sed -n '4,7p' "$0" >&2
    exit 2
    ;;
esac
