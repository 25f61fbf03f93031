#!/usr/bin/env python3
"""Cross-checks the Kubernetes manifests of deploy/kubernetes/ beyond their schemas.

kubernetes-validate checks each object against the Kubernetes 1.37 OpenAPI schemas; it knows
nothing about the Prometheus Operator's ServiceMonitor and nothing about how the objects refer to
each other. This script checks what would silently not work:

- every selector (Services, NetworkPolicy, PodDisruptionBudget, ServiceMonitor) matches the pods
  or Service it is meant for, and every named port it uses exists;
- the Deployment mounts the ConfigMap and the Secret as directories (never subPath, which never
  sees updates), runs non-root with a read-only root file system, and probes /readyz and /healthz
  on the admin port;
- the config in the ConfigMap names only files that are mounted;
- the ServiceMonitor has the fields the operator needs.

Usage: check_kubernetes.py DIR (prints one line per problem, exits 1 if there is any).
"""

import pathlib
import re
import sys

import yaml


def load(directory):
    objects = []
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects.append((path.name, doc))
    return objects


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check(directory):
    problems = []
    objects = load(directory)
    by_kind = {}
    for name, obj in objects:
        for key in ("apiVersion", "kind", "metadata"):
            if key not in obj:
                problems.append(f"{name}: missing {key}")
        by_kind.setdefault(obj.get("kind"), []).append(obj)

    def one(kind, name=None):
        found = [o for o in by_kind.get(kind, []) if name is None or o["metadata"]["name"] == name]
        if len(found) != 1:
            problems.append(f"expected exactly one {kind} {name or ''}, found {len(found)}")
            return None
        return found[0]

    deploy = one("Deployment")
    if deploy is None:
        return problems
    pod = deploy["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    if not matches(deploy["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("Deployment selector does not match its pod labels")
    if deploy["spec"].get("replicas", 1) < 2:
        problems.append("Deployment: fewer than 2 replicas")
    spec = pod["spec"]
    sc = spec.get("securityContext", {})
    if sc.get("runAsNonRoot") is not True:
        problems.append("Deployment: pod securityContext.runAsNonRoot is not true")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    ports = {}
    for c in spec.get("initContainers", []) + spec["containers"]:
        csc = c.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"container {c['name']}: readOnlyRootFilesystem is not true")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {c['name']}: allowPrivilegeEscalation is not false")
        for m in c.get("volumeMounts", []):
            if "subPath" in m or "subPathExpr" in m:
                problems.append(f"container {c['name']}: {m['name']} uses subPath (never sees updates)")
            if m["name"] not in volumes:
                problems.append(f"container {c['name']}: mounts unknown volume {m['name']}")
        for p in c.get("ports", []):
            ports[p["name"]] = p["containerPort"]
    main = spec["containers"][0]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = main.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ports or ports.get(get.get("port")) != 9090:
            problems.append(f"{probe} is not GET {path} on the admin port 9090")
    if ports.get("mqtts") != 8883:
        problems.append("container port mqtts is not 8883")
    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != "9090":
        problems.append("pod template lacks prometheus.io/scrape and prometheus.io/port annotations")

    # Volumes point at the ConfigMap and Secret that exist; mount paths cover every file the config names.
    mounts = {m["name"]: m["mountPath"] for m in main.get("volumeMounts", [])}
    for vname, v in volumes.items():
        if "configMap" in v:
            cm = one("ConfigMap", v["configMap"]["name"])
            if cm is not None:
                config = cm["data"].get("gateway.toml", "")
                files = set(cm["data"])
                secret = next(
                    (s for s in by_kind.get("Secret", []) for w in volumes.values()
                     if "secret" in w and w["secret"]["secretName"] == s["metadata"]["name"]),
                    None,
                )
                secret_files = set((secret or {}).get("stringData", {})) | set((secret or {}).get("data", {}))
                live = "\n".join(l for l in config.splitlines() if not l.lstrip().startswith("#"))
                for path in re.findall(r'"(/[^"]+)"', live):
                    directory, _, base = path.rpartition("/")
                    if directory == mounts.get(vname):
                        ok = base in files
                    else:
                        ok = any(
                            directory == mounts.get(w) and "secret" in volumes[w] and base in secret_files
                            for w in volumes
                        )
                    if not ok:
                        problems.append(f"gateway.toml names {path}, which no mounted volume provides")
        elif "secret" in v:
            one("Secret", v["secret"]["secretName"])

    services = by_kind.get("Service", [])
    for svc in services:
        if not matches(svc["spec"].get("selector"), pod_labels):
            problems.append(f"Service {svc['metadata']['name']}: selector does not match the pods")
        for p in svc["spec"]["ports"]:
            if p.get("targetPort") not in ports:
                problems.append(f"Service {svc['metadata']['name']}: targetPort {p.get('targetPort')} is not a container port")
    lb = [s for s in services if s["spec"].get("type") in ("LoadBalancer", "NodePort")]
    if not any(p["port"] == 8883 for s in lb for p in s["spec"]["ports"]):
        problems.append("no LoadBalancer/NodePort Service exposes 8883")

    for np in by_kind.get("NetworkPolicy", []):
        if not matches(np["spec"]["podSelector"].get("matchLabels"), pod_labels):
            problems.append("NetworkPolicy does not select the pods")
        if set(np["spec"].get("policyTypes", [])) != {"Ingress", "Egress"}:
            problems.append("NetworkPolicy must restrict both Ingress and Egress")
        ingress_ports = {p["port"] for rule in np["spec"].get("ingress", []) for p in rule.get("ports", [])}
        egress_ports = {p["port"] for rule in np["spec"].get("egress", []) for p in rule.get("ports", [])}
        if ingress_ports != {8883, 9090}:
            problems.append(f"NetworkPolicy ingress ports are {sorted(ingress_ports)}, expected 8883 and 9090")
        if egress_ports != {1883, 53}:
            problems.append(f"NetworkPolicy egress ports are {sorted(egress_ports)}, expected 1883 and 53")
        for rule in np["spec"].get("ingress", []):
            if any(p["port"] == 9090 for p in rule.get("ports", [])) and not rule.get("from"):
                problems.append("NetworkPolicy admits the admin port 9090 from everywhere")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not matches(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
            problems.append("PodDisruptionBudget does not select the pods")

    sm = one("ServiceMonitor")
    if sm is not None:
        if sm.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append("ServiceMonitor apiVersion is not monitoring.coreos.com/v1")
        selected = [s for s in services if matches(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
        if len(selected) != 1:
            problems.append(f"ServiceMonitor selects {len(selected)} Services, expected the admin Service")
        for ep in sm["spec"].get("endpoints", []):
            names = {p.get("name") for s in selected for p in s["spec"]["ports"]}
            if ep.get("port") not in names or ep.get("path") != "/metrics":
                problems.append(f"ServiceMonitor endpoint {ep} is not /metrics on a port of the admin Service")
        if not sm["spec"].get("endpoints"):
            problems.append("ServiceMonitor has no endpoints")
    return problems


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    problems = check(sys.argv[1])
    for p in problems:
        print(f"{sys.argv[1]}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{sys.argv[1]}: cross-references ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
