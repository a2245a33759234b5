#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests in deploy/kubernetes (no cluster
# is needed, none is contacted):
#
#   1. every manifest except kustomization.yaml against the Kubernetes JSON
#      schemas, strict (unknown fields are errors), with kubernetes-validate
#      from PyPI, which carries the schemas: installed when missing, and run
#      without a network (unshare -n) where the machine allows it;
#   2. kustomization.yaml: parseable YAML listing exactly the other manifests;
#   3. what the schemas cannot see: namespace poolscope everywhere, selectors
#      that select, Service targetPorts and probe ports that name a container
#      port, mounts, Secret and ConfigMap keys, *_FILE paths that exist, URLs
#      that name a Service and one of its ports, the restricted Pod Security
#      Standard, resources, and the connection budget against max_connections;
#   4. where kubectl is installed, `kubectl kustomize` renders the directory
#      (offline) and the rendered stream is schema-checked too.
#
# One line per file or check; exit 0 only when all pass.
#
# Usage: scripts/validate-k8s.sh
# Env:   K8S_VERSION                   schema version (default 1.30.0)
#        KUBERNETES_VALIDATE_VERSION   version installed when missing (default 1.37.0)
#        PYTHON                        interpreter (default python3)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$repo/deploy/kubernetes
k8s_version=${K8S_VERSION:-1.30.0}
kv_pin=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
py=${PYTHON:-python3}
failed=0

[ -d "$dir" ] || { echo "FAIL no directory $dir" >&2; exit 1; }

# --- kubernetes-validate, with its schemas -----------------------------------
if ! "$py" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing kubernetes-validate==$kv_pin from PyPI"
  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$py" -m pip install --quiet "kubernetes-validate==$kv_pin"
fi
kv_version=$("$py" -c 'from kubernetes_validate.version import __version__; print(__version__)')

# Validation must not need the network: cut it where we can (root, or user
# namespaces), so a package that fetched schemas at run time would fail here.
offline=()
if unshare -n true 2>/dev/null; then
  offline=(unshare -n)
  net="run with no network (unshare -n)"
else
  net="network not cut (unshare -n unavailable here)"
fi

# The package must carry the strict schemas for this version on disk.
if ! schema_info=$("$py" - "$k8s_version" <<'PY'
import sys
import importlib_resources
import kubernetes_validate.utils as u

want = sys.argv[1].lstrip("v")
mm = u.major_minor(want)
versions = u.all_versions()
if mm not in {u.major_minor(v) for v in versions}:
    sys.exit(f"kubernetes-validate has no schemas for Kubernetes {mm} (it has {versions[0]} to {versions[-1]})")
exact = [v for v in versions if u.major_minor(v) == mm][-1]
root = importlib_resources.files("kubernetes_validate").joinpath("kubernetes-json-schema", f"v{exact}-local-strict")
n = sum(1 for f in root.iterdir() if f.name.endswith(".json"))
if n == 0:
    sys.exit(f"no strict schema files under {root}")
print(f"{exact} ({n} strict schema files bundled)")
PY
); then
  echo "FAIL kubernetes-validate $kv_version: no usable schemas for Kubernetes $k8s_version" >&2
  exit 1
fi
echo "kubernetes-validate $kv_version, Kubernetes schemas $schema_info, --strict, $net"

# Runs kubernetes-validate on one file and prints one line for it. A kind
# without a schema is only a WARN with exit 0 for the tool; here it fails.
validate_file() {
  local file=$1 label=$2 out rc=0
  out=$(${offline[@]+"${offline[@]}"} "$py" -m kubernetes_validate --strict \
    -k "$k8s_version" "$file" 2>&1) || rc=$?
  local resources bad
  resources=$(printf '%s\n' "$out" | sed -n 's/^INFO .* passed for resource \([^ ]*\) against version .*/\1/p' | paste -sd, - | sed 's/,/, /g')
  bad=$(printf '%s\n' "$out" | grep -v '^INFO ' | grep -v '^$' || true)
  if [ "$rc" -eq 0 ] && [ -z "$bad" ] && [ -n "$resources" ]; then
    echo "ok    $label: $resources"
  else
    [ -n "$resources" ] || [ -n "$bad" ] || bad="no Kubernetes resource in the file"
    echo "FAIL  $label (exit $rc)"
    printf '%s\n' "$bad" | sed 's/^/        /'
    failed=1
  fi
}

# --- 1. schemas ----------------------------------------------------------------
mapfile -t manifests < <(cd "$dir" && find . -type f \( -name '*.yaml' -o -name '*.yml' \) \
  ! -path ./kustomization.yaml ! -path ./kustomization.yml | sed 's|^\./||' | LC_ALL=C sort)
[ "${#manifests[@]}" -gt 0 ] || { echo "FAIL no manifests under $dir" >&2; exit 1; }
for m in "${manifests[@]}"; do
  validate_file "$dir/$m" "deploy/kubernetes/$m"
done

# --- 2 and 3. kustomization.yaml and what the schemas cannot see ---------------
if ! "$py" - "$dir" "${manifests[@]}" <<'PY'
import os
import re
import sys
from urllib.parse import urlsplit

import yaml

NS = "poolscope"
directory, manifests = sys.argv[1], sys.argv[2:]
problems = []


def check(name, errors):
    """One line per check; its errors indented under it."""
    print(("ok    " if not errors else "FAIL  ") + name)
    for e in errors:
        print("        " + e)
    problems.extend(errors)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML keeps the last)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path):
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]


# --- kustomization.yaml ---
errs = []
kpath = os.path.join(directory, "kustomization.yaml")
try:
    kdocs = load(kpath)
except (OSError, yaml.YAMLError) as e:
    kdocs, errs = [], [f"kustomization.yaml: {e}"]
if not errs:
    if len(kdocs) != 1 or not isinstance(kdocs[0], dict):
        errs.append("kustomization.yaml: expected one mapping")
    else:
        k = kdocs[0]
        if k.get("kind") != "Kustomization" or not str(k.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
            errs.append("kustomization.yaml: not a kustomize.config.k8s.io Kustomization")
        if k.get("namespace", NS) != NS:
            errs.append(f"kustomization.yaml: namespace {k.get('namespace')!r}, want {NS!r}")
        listed = k.get("resources") or []
        dupes = sorted({r for r in listed if listed.count(r) > 1})
        if dupes:
            errs.append(f"kustomization.yaml: listed twice: {dupes}")
        if set(listed) - set(manifests):
            errs.append(f"kustomization.yaml lists missing files: {sorted(set(listed) - set(manifests))}")
        if set(manifests) - set(listed):
            errs.append(f"kustomization.yaml leaves out: {sorted(set(manifests) - set(listed))}")
check(f"deploy/kubernetes/kustomization.yaml: Kustomization listing exactly the {len(manifests)} other manifests", errs)

# --- every document ---
docs = []  # (file, doc)
errs = []
for m in manifests:
    try:
        for d in load(os.path.join(directory, m)):
            docs.append((m, d))
    except yaml.YAMLError as e:
        errs.append(f"{m}: {e}")
check("every manifest parses as YAML without duplicate keys", errs)

by_kind = {}
errs = []
for f, d in docs:
    kind, meta = d.get("kind"), d.get("metadata") or {}
    name = meta.get("name")
    if (kind, name) in by_kind:
        errs.append(f"{f}: {kind}/{name} defined twice")
    by_kind[(kind, name)] = d
    if kind == "Namespace":
        if name != NS:
            errs.append(f"{f}: Namespace {name!r}, want {NS!r}")
    elif meta.get("namespace") != NS:
        errs.append(f"{f}: {kind}/{name} has metadata.namespace {meta.get('namespace')!r}, want {NS!r}")
check(f"metadata.namespace is {NS} on all {len(docs)} documents (the Namespace itself aside)", errs)


def of_kind(kind):
    return {n: d for (k, n), d in by_kind.items() if k == kind}


services, secrets, configmaps = of_kind("Service"), of_kind("Secret"), of_kind("ConfigMap")
workloads = {}  # "Kind/name" -> (doc, pod template)
for kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet", "Pod"):
    for n, d in of_kind(kind).items():
        tpl = d if kind == "Pod" else (d.get("spec") or {}).get("template") or {}
        workloads[f"{kind}/{n}"] = (d, tpl)


def containers(pod, init=True):
    out = list(pod.get("containers") or [])
    return out + list(pod.get("initContainers") or []) if init else out


def resolve_port(port, ctrs):
    """The containerPort a numeric or named port means in these containers, or None."""
    for c in ctrs:
        for p in c.get("ports") or []:
            if port == p.get("containerPort") or port == p.get("name"):
                return p.get("containerPort")
    return None


def secret_keys(name):
    s = secrets.get(name) or {}
    return set((s.get("data") or {}).keys()) | set((s.get("stringData") or {}).keys())


def cm_keys(name):
    c = configmaps.get(name) or {}
    return set((c.get("data") or {}).keys()) | set((c.get("binaryData") or {}).keys())


def volume_files(vol):
    """Relative paths a secret/configMap volume provides, or None when not one."""
    for src, keys in (("secret", secret_keys), ("configMap", cm_keys)):
        if src in vol:
            v = vol[src]
            ref = v.get("secretName") if src == "secret" else v.get("name")
            items = v.get("items")
            return {i["path"] for i in items} if items else keys(ref)
    return None


# --- selectors, ports, probes ---
errs = []
for wname, (d, tpl) in workloads.items():
    labels = (tpl.get("metadata") or {}).get("labels") or {}
    sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels")
    if wname.split("/")[0] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        if not sel:
            errs.append(f"{wname}: no spec.selector.matchLabels")
        elif any(labels.get(k) != v for k, v in sel.items()):
            errs.append(f"{wname}: selector {sel} does not match template labels {labels}")
    if wname.startswith("StatefulSet/"):
        svc = services.get(d["spec"].get("serviceName"))
        if svc is None:
            errs.append(f"{wname}: serviceName {d['spec'].get('serviceName')!r} is no Service here")
        elif (svc.get("spec") or {}).get("clusterIP") != "None":
            errs.append(f"{wname}: its governing Service is not headless")
    pod = tpl.get("spec") or {}
    names = [p["name"] for c in containers(pod) for p in c.get("ports") or [] if "name" in p]
    if len(names) != len(set(names)):
        errs.append(f"{wname}: port names repeat: {names}")
    for c in containers(pod):
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            pr = c.get(probe) or {}
            for how in ("httpGet", "tcpSocket", "grpc"):
                if how in pr and resolve_port(pr[how].get("port"), [c]) is None:
                    errs.append(f"{wname} {c['name']}: {probe}.{how}.port {pr[how].get('port')!r} is none of its containerPorts")
for sname, svc in services.items():
    spec = svc.get("spec") or {}
    sel = spec.get("selector") or {}
    chosen = [(w, tpl) for w, (_, tpl) in workloads.items()
              if sel and all(((tpl.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in sel.items())]
    if not chosen:
        errs.append(f"Service/{sname}: selector {sel} selects no pod template")
    for p in spec.get("ports") or []:
        target = p.get("targetPort", p.get("port"))
        for w, tpl in chosen:
            if resolve_port(target, containers(tpl.get("spec") or {}, init=False)) is None:
                errs.append(f"Service/{sname} port {p.get('port')}: targetPort {target!r} is no containerPort of {w}")
check("selectors match their templates; every Service selects pods and its targetPorts and every probe port name a containerPort", errs)

# --- the app: the brief's ports and probes ---
errs = []
app = workloads.get("Deployment/app")
if app is None:
    errs.append("no Deployment/app")
else:
    ctr = next((c for c in containers(app[1]["spec"], init=False) if c["name"] == "app"), None)
    env = {e["name"]: e.get("value") for e in (ctr or {}).get("env") or []}
    ports = [p.get("containerPort") for p in (ctr or {}).get("ports") or []]
    if ports != [8080]:
        errs.append(f"app containerPorts {ports}, want [8080]")
    if env.get("APP_PORT") != "8080":
        errs.append(f"APP_PORT {env.get('APP_PORT')!r}, want '8080' (the containerPort)")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        hg = ((ctr or {}).get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != path or resolve_port(hg.get("port"), [ctr]) != 8080:
            errs.append(f"app {probe}: {hg}, want GET {path} on 8080")
    svc_ports = [(p.get("port"), resolve_port(p.get("targetPort", p.get("port")), [ctr]))
                 for p in (services.get("app") or {}).get("spec", {}).get("ports", [])]
    if svc_ports != [(8080, 8080)]:
        errs.append(f"Service/app (port, target) {svc_ports}, want [(8080, 8080)]")
check("app: containerPort 8080 = APP_PORT = Service app 8080 -> 8080; readiness GET /readyz, liveness GET /healthz on 8080", errs)

# --- volumes, Secret and ConfigMap keys, *_FILE paths, URLs ---
errs = []
url_re = re.compile(r"\b(?:postgres(?:ql)?|https?)://[^\s\"';]+")
urls_seen = 0
for wname, (d, tpl) in workloads.items():
    pod = tpl.get("spec") or {}
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    claims = {t["metadata"]["name"] for t in (d.get("spec") or {}).get("volumeClaimTemplates") or []}
    for v in vols.values():
        if "secret" in v:
            ref = v["secret"].get("secretName")
            if ref not in secrets:
                errs.append(f"{wname}: volume {v['name']}: no Secret {ref!r}")
            for i in v["secret"].get("items") or []:
                if i["key"] not in secret_keys(ref):
                    errs.append(f"{wname}: volume {v['name']}: Secret {ref} has no key {i['key']!r}")
        if "configMap" in v:
            ref = v["configMap"].get("name")
            if ref not in configmaps:
                errs.append(f"{wname}: volume {v['name']}: no ConfigMap {ref!r}")
            for i in v["configMap"].get("items") or []:
                if i["key"] not in cm_keys(ref):
                    errs.append(f"{wname}: volume {v['name']}: ConfigMap {ref} has no key {i['key']!r}")
    for c in containers(pod):
        mounts = {}
        for vm in c.get("volumeMounts") or []:
            if vm["name"] not in vols and vm["name"] not in claims:
                errs.append(f"{wname} {c['name']}: mounts undefined volume {vm['name']!r}")
            mounts[vm["mountPath"].rstrip("/")] = vols.get(vm["name"])
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {})
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                if r.get("key") not in secret_keys(r.get("name")):
                    errs.append(f"{wname} {c['name']}: env {e['name']}: no key {r.get('key')!r} in Secret {r.get('name')!r}")
            if "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                if r.get("key") not in cm_keys(r.get("name")):
                    errs.append(f"{wname} {c['name']}: env {e['name']}: no key {r.get('key')!r} in ConfigMap {r.get('name')!r}")
            val = e.get("value") or ""
            if e["name"].endswith("_FILE"):
                where = [m for m in mounts if val.startswith(m + "/")]
                if not where:
                    errs.append(f"{wname} {c['name']}: {e['name']}={val} is under no volume mount")
                else:
                    m = max(where, key=len)
                    files = volume_files(mounts[m] or {})
                    if files is not None and val[len(m) + 1:] not in files:
                        errs.append(f"{wname} {c['name']}: {e['name']}={val}: the volume at {m} provides only {sorted(files)}")
        texts = [e.get("value") or "" for e in c.get("env") or []] + [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        for text in texts:
            for url in url_re.findall(text):
                urls_seen += 1
                u = urlsplit(url)
                host = u.hostname or ""
                svc_name = host.split(".")[0]
                local = host == svc_name or host.startswith(f"{svc_name}.{NS}")
                port = u.port or {"http": 80, "https": 443}.get(u.scheme, 5432)
                svc = services.get(svc_name)
                if not local or svc is None:
                    errs.append(f"{wname} {c['name']}: {url}: host {host!r} is no Service in {NS}")
                elif port not in [p.get("port") for p in svc["spec"].get("ports") or []]:
                    errs.append(f"{wname} {c['name']}: {url}: Service {svc_name} has no port {port}")
                if u.password:
                    errs.append(f"{wname} {c['name']}: {u.scheme}://...: a password in a URL")
check(f"mounts, Secret/ConfigMap keys and *_FILE paths exist; {urls_seen} URLs in env/args each name a Service and one of its ports, with no password", errs)

# --- the restricted Pod Security Standard, resources, no service links ---
errs = []
allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
for wname, (d, tpl) in workloads.items():
    pod = tpl.get("spec") or {}
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            errs.append(f"{wname}: {flag}")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= allowed_volumes:
            errs.append(f"{wname}: volume {v['name']} of type {sorted(kinds)}")
    if pod.get("enableServiceLinks") is not False:
        errs.append(f"{wname}: enableServiceLinks is not false (Service `app` would inject APP_PORT=tcp://...)")
    if pod.get("automountServiceAccountToken") is not False:
        errs.append(f"{wname}: automountServiceAccountToken is not false")
    for c in containers(pod):
        sc = c.get("securityContext") or {}
        who = f"{wname} {c['name']}"
        if sc.get("privileged"):
            errs.append(f"{who}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            errs.append(f"{who}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            errs.append(f"{who}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            errs.append(f"{who}: runAsUser 0")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            errs.append(f"{who}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            errs.append(f"{who}: adds capabilities {caps.get('add')}")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            errs.append(f"{who}: seccompProfile {seccomp!r}")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(res.get(part) or {})
            if missing:
                errs.append(f"{who}: resources.{part} lacks {sorted(missing)}")
check("every pod meets the restricted Pod Security Standard, sets no service links or token, and every container has cpu/memory requests and limits", errs)

# --- names and quantities: formats the schemas leave as plain strings ---
errs = []
label_re = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label
port_name_re = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # IANA service name
qty_re = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
factor = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
          "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def quantity(raw, where):
    m = qty_re.match(str(raw))
    if not m:
        errs.append(f"{where}: {raw!r} is not a Kubernetes quantity")
        return None
    suffix = m.group(2) or ""
    return float(m.group(1)) * (factor[suffix] if suffix in factor else 10 ** int(suffix[1:]))


for (kind, name), d in by_kind.items():
    if not name or len(name) > 63 or not label_re.match(name):
        errs.append(f"{kind}/{name}: name is not an RFC 1123 label of at most 63 characters")
for wname, (d, tpl) in workloads.items():
    for t in (d.get("spec") or {}).get("volumeClaimTemplates") or []:
        quantity(t["spec"]["resources"]["requests"]["storage"], f"{wname}: claim {t['metadata']['name']} storage")
    for v in (tpl.get("spec") or {}).get("volumes") or []:
        if "sizeLimit" in (v.get("emptyDir") or {}):
            quantity(v["emptyDir"]["sizeLimit"], f"{wname}: volume {v['name']} sizeLimit")
    for c in containers(tpl.get("spec") or {}):
        who = f"{wname} {c['name']}"
        if not label_re.match(c["name"]):
            errs.append(f"{who}: container name is not an RFC 1123 label")
        for p in c.get("ports") or []:
            if "name" in p and (len(p["name"]) > 15 or not port_name_re.match(p["name"])):
                errs.append(f"{who}: port name {p['name']!r} is not an IANA service name (<= 15 characters)")
        env_names = [e["name"] for e in c.get("env") or []]
        if len(env_names) != len(set(env_names)):
            errs.append(f"{who}: env names repeat: {sorted({n for n in env_names if env_names.count(n) > 1})}")
        res = c.get("resources") or {}
        for r in ("cpu", "memory"):
            req = (res.get("requests") or {}).get(r)
            lim = (res.get("limits") or {}).get(r)
            q_req = quantity(req, f"{who}: requests.{r}") if req is not None else None
            q_lim = quantity(lim, f"{who}: limits.{r}") if lim is not None else None
            if q_req is not None and q_lim is not None and q_req > q_lim:
                errs.append(f"{who}: requests.{r} {req} above limits.{r} {lim}")
for sname, svc in services.items():
    for p in (svc.get("spec") or {}).get("ports") or []:
        if "name" in p and (len(p["name"]) > 15 or not port_name_re.match(p["name"])):
            errs.append(f"Service/{sname}: port name {p['name']!r} is not an IANA service name")
check("names are RFC 1123 labels, port names IANA names, env names unique; quantities parse and requests <= limits", errs)

# --- the connection budget ---
errs = []
try:
    def env_of(wname, cname):
        pod = workloads[wname][1]["spec"]
        c = next(c for c in containers(pod, init=False) if c["name"] == cname)
        return {e["name"]: e.get("value") for e in c.get("env") or []}, c
    app_env, _ = env_of("Deployment/app", "app")
    bouncer_env, _ = env_of("Deployment/pgbouncer", "pgbouncer")
    _, pg = env_of("StatefulSet/db", "postgres")
    replicas = workloads["Deployment/app"][0]["spec"].get("replicas", 1)
    bouncers = workloads["Deployment/pgbouncer"][0]["spec"].get("replicas", 1)
    per_replica = int(app_env["DB_POOL_SIZE"]) + int(app_env["DB_MAX_OVERFLOW"])
    server_pool = int(bouncer_env["PGBOUNCER_DEFAULT_POOL_SIZE"])
    args = [str(a) for a in pg.get("args") or []]
    max_conn = next(int(a.split("=", 1)[1]) for a in args if a.startswith("max_connections="))
    reserved = next((int(a.split("=", 1)[1]) for a in args if a.startswith("superuser_reserved_connections=")), 3)
    servers = bouncers * server_pool + replicas  # + one monitor connection per replica
    line = (f"{replicas} replicas x ({app_env['DB_POOL_SIZE']}+{app_env['DB_MAX_OVERFLOW']}) = {replicas * per_replica} app connections "
            f"-> {bouncers} PgBouncer x {server_pool} + {replicas} monitors = {servers} server connections "
            f"<= {max_conn} max_connections - {reserved} reserved = {max_conn - reserved}")
    if servers > max_conn - reserved:
        errs.append(f"over budget: {servers} > {max_conn - reserved}")
except (KeyError, StopIteration, ValueError) as e:
    line, errs = "connection budget", [f"cannot compute it: {e!r}"]
check(line, errs)

sys.exit(1 if problems else 0)
PY
then
  failed=1
fi

# --- 4. what kubectl would apply ------------------------------------------------
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  rendered=$(mktemp --suffix=.yaml)
  trap 'rm -f "$rendered"' EXIT
  kz_version=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')
  if kubectl kustomize "$dir" >"$rendered" 2>"$rendered.err"; then
    validate_file "$rendered" "kubectl kustomize deploy/kubernetes (kustomize ${kz_version:-?}), rendered"
  else
    echo "FAIL  kubectl kustomize deploy/kubernetes"
    sed 's/^/        /' "$rendered.err"
    failed=1
  fi
  rm -f "$rendered.err"
else
  echo "skip  kubectl kustomize deploy/kubernetes: kubectl is not installed"
fi

if [ "$failed" -ne 0 ]; then
  echo "validate-k8s: FAILED"
  exit 1
fi
echo "validate-k8s: all passed (offline: schemas and static checks only; nothing was run on a cluster)"
