#!/usr/bin/env bash
# Device tokens for mqtt-gateway's [auth.token] with nothing but openssl, base64 and date
# (docs/guide-device-tokens.md). Ed25519 (EdDSA): openssl signs it raw, as a JWS needs.
#
#   device-token.sh keygen KEY KID            new signing key in KEY; prints its JWKS entry set
#   device-token.sh mint KEY KID SUB SECONDS [AUDIENCE] [ISSUER]
#                                             prints a token for SUB, valid for SECONDS
set -euo pipefail

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

case "${1:-}" in
keygen)
    key=$2 kid=$3
    (umask 077 && openssl genpkey -algorithm ed25519 -out "$key")
    # The raw public key is the last 32 bytes of its DER SubjectPublicKeyInfo.
    x=$(openssl pkey -in "$key" -pubout -outform DER | tail -c 32 | b64url)
    printf '{"keys": [{"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "%s", "x": "%s"}]}\n' \
        "$kid" "$x"
    ;;
mint)
    key=$2 kid=$3 sub=$4 seconds=$5 aud=${6:-mqtt-gateway} iss=${7:-}
    now=$(date +%s)
    header=$(printf '{"alg":"EdDSA","typ":"JWT","kid":"%s"}' "$kid" | b64url)
    claims=$(printf '"sub":"%s","aud":"%s","iat":%d,"exp":%d' "$sub" "$aud" "$now" $((now + seconds)))
    if [ -n "$iss" ]; then claims="$claims,\"iss\":\"$iss\""; fi
    payload=$(printf '{%s}' "$claims" | b64url)
    input=$(mktemp)
    trap 'rm -f "$input"' EXIT
    printf '%s.%s' "$header" "$payload" >"$input"
    sig=$(openssl pkeyutl -sign -inkey "$key" -rawin -in "$input" | b64url)
    printf '%s.%s.%s\n' "$header" "$payload" "$sig"
    ;;
*)
    sed -n '5,7p' "$0" >&2
    exit 2
    ;;
esac
