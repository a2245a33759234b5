#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/kubernetes.

No cluster is needed and none is contacted:

  1. every manifest except kustomization.yaml against the Kubernetes JSON
     schemas, strict (unknown fields are errors), with kubernetes-validate,
     which carries the schemas, run without a network (unshare -n) where the
     machine allows it, so a tool that fetched schemas at run time would fail;
  2. kustomization.yaml: parseable YAML listing exactly the other manifests;
  3. what the schemas cannot see: namespace poolscope everywhere, selectors
     that select, Service targetPorts and probe ports that name a container
     port, mounts, Secret and ConfigMap keys, *_FILE paths that exist, URLs
     that name a Service and one of its ports, the restricted Pod Security
     Standard, resources, and the connection budget against max_connections;
  4. where kubectl is installed, `kubectl kustomize` renders the directory
     (offline) and the rendered stream is schema-checked too.

One line per file or check; exit 0 only when all pass. Needs the
kubernetes-validate package (and PyYAML, which it brings);
scripts/validate-k8s.sh installs it when missing and runs this.

Env: K8S_VERSION  schema version (default 1.30.0)
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from urllib.parse import urlsplit

import importlib_resources
import kubernetes_validate.utils as kv_utils
import yaml
from kubernetes_validate.version import __version__ as KV_VERSION

NS = "poolscope"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRECTORY = os.path.join(REPO, "deploy", "kubernetes")
INDENT = "        "


def main():
    sys.stdout.reconfigure(line_buffering=True)
    k8s_version = os.environ.get("K8S_VERSION", "1.30.0")
    if not os.path.isdir(DIRECTORY):
        sys.exit(f"FAIL no directory {DIRECTORY}")

    # Validation must not need the network: cut it where we can (root, or user
    # namespaces), so a package that fetched schemas at run time would fail here.
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], check=False, stderr=subprocess.DEVNULL).returncode == 0:
        offline, net = ["unshare", "-n"], "run with no network (unshare -n)"
    else:
        offline, net = [], "network not cut (unshare -n unavailable here)"

    try:
        schema_info = bundled_schemas(k8s_version)
    except LookupError as e:
        print(e, file=sys.stderr)
        sys.exit(f"FAIL kubernetes-validate {KV_VERSION}: no usable schemas for Kubernetes {k8s_version}")
    print(f"kubernetes-validate {KV_VERSION}, Kubernetes schemas {schema_info}, --strict, {net}")

    def schema_check(path, label):
        return validate_file([*offline, sys.executable, "-m", "kubernetes_validate",
                              "--strict", "-k", k8s_version, path], label)

    # 1. schemas
    manifests = list_manifests(DIRECTORY)
    if not manifests:
        sys.exit(f"FAIL no manifests under {DIRECTORY}")
    passed = True
    for m in manifests:
        passed &= schema_check(os.path.join(DIRECTORY, m), f"deploy/kubernetes/{m}")

    # 2 and 3. kustomization.yaml and what the schemas cannot see
    try:
        passed &= static_checks(DIRECTORY, manifests)
    except Exception:  # noqa: BLE001 -- a manifest shaped unlike any check expects: say where, go on
        traceback.print_exc()
        passed = False

    # 4. what kubectl would apply
    passed &= kustomize_check(schema_check)

    if not passed:
        print("validate-k8s: FAILED")
        sys.exit(1)
    print("validate-k8s: all passed (offline: schemas and static checks only; nothing was run on a cluster)")


def bundled_schemas(k8s_version):
    """The exact schema version kubernetes-validate carries on disk for the
    asked major.minor, and how many strict schema files; LookupError if none."""
    mm = kv_utils.major_minor(k8s_version.lstrip("v"))
    versions = kv_utils.all_versions()
    if mm not in {kv_utils.major_minor(v) for v in versions}:
        raise LookupError(f"kubernetes-validate has no schemas for Kubernetes {mm} "
                          f"(it has {versions[0]} to {versions[-1]})")
    exact = [v for v in versions if kv_utils.major_minor(v) == mm][-1]
    root = importlib_resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"v{exact}-local-strict")
    n = sum(1 for f in root.iterdir() if f.name.endswith(".json"))
    if n == 0:
        raise LookupError(f"no strict schema files under {root}")
    return f"{exact} ({n} strict schema files bundled)"


def validate_file(command, label):
    """Runs kubernetes-validate on one file and prints one line for it. A kind
    without a schema is only a WARN with exit 0 for the tool; here it fails."""
    run = subprocess.run(command, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = run.stdout.splitlines()
    passed_re = re.compile(r"^INFO .* passed for resource (\S*) against version ")
    resources = [m.group(1) for m in map(passed_re.match, lines) if m]
    bad = [line for line in lines if line and not line.startswith("INFO ")]
    if run.returncode == 0 and not bad and resources:
        print(f"ok    {label}: {', '.join(resources)}")
        return True
    print(f"FAIL  {label} (exit {run.returncode})")
    for line in bad or ["no Kubernetes resource in the file"]:
        print(INDENT + line)
    return False


def list_manifests(directory):
    """Every *.yaml / *.yml below directory but the kustomization, relative, sorted."""
    found = []
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if (name.endswith((".yaml", ".yml")) and not os.path.islink(path)
                    and rel not in ("kustomization.yaml", "kustomization.yml")):
                found.append(rel)
    return sorted(found)


def kustomize_check(schema_check):
    """Renders the directory with `kubectl kustomize` (offline) and schema-checks
    the result; skipped when kubectl is not installed."""
    label = "kubectl kustomize deploy/kubernetes"
    if not shutil.which("kubectl") or subprocess.run(
            ["kubectl", "kustomize", "--help"], check=False, capture_output=True).returncode != 0:
        print(f"skip  {label}: kubectl is not installed")
        return True
    version = subprocess.run(["kubectl", "version", "--client"], check=False, capture_output=True, text=True).stdout
    kz_version = next((line.removeprefix("Kustomize Version: ") for line in version.splitlines()
                       if line.startswith("Kustomize Version: ")), "") or "?"
    render = subprocess.run(["kubectl", "kustomize", DIRECTORY], check=False, capture_output=True, text=True)
    if render.returncode != 0:
        print(f"FAIL  {label}")
        for line in render.stderr.splitlines():
            print(INDENT + line)
        return False
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rendered:
        rendered.write(render.stdout)
        rendered.flush()
        return schema_check(rendered.name, f"{label} (kustomize {kz_version}), rendered")


# --- 2 and 3: what the schemas cannot see ---------------------------------------

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


def check(name, errors):
    """Prints one line for a check, its errors indented under it; True when none."""
    print(("ok    " if not errors else "FAIL  ") + name)
    for e in errors:
        print(INDENT + e)
    return not errors


def static_checks(directory, manifests):
    """Runs every check below, one line each; True when all pass."""
    passed = check(*kustomization(directory, manifests))
    docs, errs = [], []  # (file, doc)
    for m in manifests:
        try:
            docs.extend((m, d) for d in load(os.path.join(directory, m)))
        except yaml.YAMLError as e:
            errs.append(f"{m}: {e}")
    passed &= check("every manifest parses as YAML without duplicate keys", errs)
    passed &= check(*namespaces(docs))
    s = Stack(docs)
    for one in (selectors_and_ports, app_ports_and_probes, references, pod_security,
                names_and_quantities, connection_budget):
        passed &= check(*one(s))
    return passed


def kustomization(directory, manifests):
    errs = []
    try:
        kdocs = load(os.path.join(directory, "kustomization.yaml"))
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
    return f"deploy/kubernetes/kustomization.yaml: Kustomization listing exactly the {len(manifests)} other manifests", errs


def namespaces(docs):
    errs, seen = [], set()
    for f, d in docs:
        kind, meta = d.get("kind"), d.get("metadata") or {}
        name = meta.get("name")
        if (kind, name) in seen:
            errs.append(f"{f}: {kind}/{name} defined twice")
        seen.add((kind, name))
        if kind == "Namespace":
            if name != NS:
                errs.append(f"{f}: Namespace {name!r}, want {NS!r}")
        elif meta.get("namespace") != NS:
            errs.append(f"{f}: {kind}/{name} has metadata.namespace {meta.get('namespace')!r}, want {NS!r}")
    return f"metadata.namespace is {NS} on all {len(docs)} documents (the Namespace itself aside)", errs


class Stack:
    """The documents by kind and name, and the pod template of every workload."""

    def __init__(self, docs):
        self.by_kind = {}
        for _, d in docs:
            self.by_kind[(d.get("kind"), (d.get("metadata") or {}).get("name"))] = d
        self.services = self.of_kind("Service")
        self.secrets = self.of_kind("Secret")
        self.configmaps = self.of_kind("ConfigMap")
        self.workloads = {}  # "Kind/name" -> (doc, pod template)
        for kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet", "Pod"):
            for n, d in self.of_kind(kind).items():
                tpl = d if kind == "Pod" else (d.get("spec") or {}).get("template") or {}
                self.workloads[f"{kind}/{n}"] = (d, tpl)

    def of_kind(self, kind):
        return {n: d for (k, n), d in self.by_kind.items() if k == kind}

    def secret_keys(self, name):
        s = self.secrets.get(name) or {}
        return set((s.get("data") or {}).keys()) | set((s.get("stringData") or {}).keys())

    def cm_keys(self, name):
        c = self.configmaps.get(name) or {}
        return set((c.get("data") or {}).keys()) | set((c.get("binaryData") or {}).keys())

    def volume_sources(self, vol):
        """For each Secret or ConfigMap the volume projects: its kind, name,
        whether it is defined here, its keys, and the items the volume picks."""
        for field, kind, name_field, defined, keys in (
                ("secret", "Secret", "secretName", self.secrets, self.secret_keys),
                ("configMap", "ConfigMap", "name", self.configmaps, self.cm_keys)):
            if field in vol:
                ref = vol[field].get(name_field)
                yield kind, ref, ref in defined, keys(ref), vol[field].get("items")

    def volume_files(self, vol):
        """Relative paths a secret/configMap volume provides, or None when not one."""
        for _, _, _, keys, items in self.volume_sources(vol):
            return {i["path"] for i in items} if items else keys
        return None


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


def selectors_and_ports(s):
    errs = []
    for wname, (d, tpl) in s.workloads.items():
        labels = (tpl.get("metadata") or {}).get("labels") or {}
        sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels")
        if wname.split("/")[0] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
            if not sel:
                errs.append(f"{wname}: no spec.selector.matchLabels")
            elif any(labels.get(k) != v for k, v in sel.items()):
                errs.append(f"{wname}: selector {sel} does not match template labels {labels}")
        if wname.startswith("StatefulSet/"):
            svc = s.services.get(d["spec"].get("serviceName"))
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
    for sname, svc in s.services.items():
        spec = svc.get("spec") or {}
        sel = spec.get("selector") or {}
        chosen = [(w, tpl) for w, (_, tpl) in s.workloads.items()
                  if sel and all(((tpl.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in sel.items())]
        if not chosen:
            errs.append(f"Service/{sname}: selector {sel} selects no pod template")
        for p in spec.get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            for w, tpl in chosen:
                if resolve_port(target, containers(tpl.get("spec") or {}, init=False)) is None:
                    errs.append(f"Service/{sname} port {p.get('port')}: targetPort {target!r} is no containerPort of {w}")
    return "selectors match their templates; every Service selects pods and its targetPorts and every probe port name a containerPort", errs


def app_ports_and_probes(s):
    """The service's own contract: one port, 8080, and its two probe routes."""
    errs = []
    app = s.workloads.get("Deployment/app")
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
                     for p in (s.services.get("app") or {}).get("spec", {}).get("ports", [])]
        if svc_ports != [(8080, 8080)]:
            errs.append(f"Service/app (port, target) {svc_ports}, want [(8080, 8080)]")
    return "app: containerPort 8080 = APP_PORT = Service app 8080 -> 8080; readiness GET /readyz, liveness GET /healthz on 8080", errs


def references(s):
    """Volumes, Secret and ConfigMap keys, *_FILE paths and URLs point at something."""
    errs = []
    url_re = re.compile(r"\b(?:postgres(?:ql)?|https?)://[^\s\"';]+")
    urls_seen = 0
    for wname, (d, tpl) in s.workloads.items():
        pod = tpl.get("spec") or {}
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        claims = {t["metadata"]["name"] for t in (d.get("spec") or {}).get("volumeClaimTemplates") or []}
        for v in vols.values():
            for kind, ref, defined, keys, items in s.volume_sources(v):
                if not defined:
                    errs.append(f"{wname}: volume {v['name']}: no {kind} {ref!r}")
                for i in items or []:
                    if i["key"] not in keys:
                        errs.append(f"{wname}: volume {v['name']}: {kind} {ref} has no key {i['key']!r}")
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
                    if r.get("key") not in s.secret_keys(r.get("name")):
                        errs.append(f"{wname} {c['name']}: env {e['name']}: no key {r.get('key')!r} in Secret {r.get('name')!r}")
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    if r.get("key") not in s.cm_keys(r.get("name")):
                        errs.append(f"{wname} {c['name']}: env {e['name']}: no key {r.get('key')!r} in ConfigMap {r.get('name')!r}")
                val = e.get("value") or ""
                if e["name"].endswith("_FILE"):
                    where = [m for m in mounts if val.startswith(m + "/")]
                    if not where:
                        errs.append(f"{wname} {c['name']}: {e['name']}={val} is under no volume mount")
                    else:
                        m = max(where, key=len)
                        files = s.volume_files(mounts[m] or {})
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
                    svc = s.services.get(svc_name)
                    if not local or svc is None:
                        errs.append(f"{wname} {c['name']}: {url}: host {host!r} is no Service in {NS}")
                    elif port not in [p.get("port") for p in svc["spec"].get("ports") or []]:
                        errs.append(f"{wname} {c['name']}: {url}: Service {svc_name} has no port {port}")
                    if u.password:
                        errs.append(f"{wname} {c['name']}: {u.scheme}://...: a password in a URL")
    return f"mounts, Secret/ConfigMap keys and *_FILE paths exist; {urls_seen} URLs in env/args each name a Service and one of its ports, with no password", errs


def pod_security(s):
    """The restricted Pod Security Standard, resources, no service links."""
    errs = []
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                       "persistentVolumeClaim", "projected", "secret"}
    for wname, (_, tpl) in s.workloads.items():
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
    return "every pod meets the restricted Pod Security Standard, sets no service links or token, and every container has cpu/memory requests and limits", errs


LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label
PORT_NAME_RE = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # IANA service name
QTY_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
FACTOR = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
          "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def names_and_quantities(s):
    """Formats the schemas leave as plain strings."""
    errs = []

    def quantity(raw, where):
        m = QTY_RE.match(str(raw))
        if not m:
            errs.append(f"{where}: {raw!r} is not a Kubernetes quantity")
            return None
        suffix = m.group(2) or ""
        return float(m.group(1)) * (FACTOR[suffix] if suffix in FACTOR else 10 ** int(suffix[1:]))

    for kind, name in s.by_kind:
        if not name or len(name) > 63 or not LABEL_RE.match(name):
            errs.append(f"{kind}/{name}: name is not an RFC 1123 label of at most 63 characters")
    for wname, (d, tpl) in s.workloads.items():
        for t in (d.get("spec") or {}).get("volumeClaimTemplates") or []:
            quantity(t["spec"]["resources"]["requests"]["storage"], f"{wname}: claim {t['metadata']['name']} storage")
        for v in (tpl.get("spec") or {}).get("volumes") or []:
            if "sizeLimit" in (v.get("emptyDir") or {}):
                quantity(v["emptyDir"]["sizeLimit"], f"{wname}: volume {v['name']} sizeLimit")
        for c in containers(tpl.get("spec") or {}):
            who = f"{wname} {c['name']}"
            if not LABEL_RE.match(c["name"]):
                errs.append(f"{who}: container name is not an RFC 1123 label")
            for p in c.get("ports") or []:
                if "name" in p and (len(p["name"]) > 15 or not PORT_NAME_RE.match(p["name"])):
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
    for sname, svc in s.services.items():
        for p in (svc.get("spec") or {}).get("ports") or []:
            if "name" in p and (len(p["name"]) > 15 or not PORT_NAME_RE.match(p["name"])):
                errs.append(f"Service/{sname}: port name {p['name']!r} is not an IANA service name")
    return "names are RFC 1123 labels, port names IANA names, env names unique; quantities parse and requests <= limits", errs


def connection_budget(s):
    """Every server connection the stack may open fits in max_connections."""
    def env_of(wname, cname):
        pod = s.workloads[wname][1]["spec"]
        c = next(c for c in containers(pod, init=False) if c["name"] == cname)
        return {e["name"]: e.get("value") for e in c.get("env") or []}, c

    try:
        app_env, _ = env_of("Deployment/app", "app")
        bouncer_env, _ = env_of("Deployment/pgbouncer", "pgbouncer")
        _, pg = env_of("StatefulSet/db", "postgres")
        replicas = s.workloads["Deployment/app"][0]["spec"].get("replicas", 1)
        bouncers = s.workloads["Deployment/pgbouncer"][0]["spec"].get("replicas", 1)
        per_replica = int(app_env["DB_POOL_SIZE"]) + int(app_env["DB_MAX_OVERFLOW"])
        server_pool = int(bouncer_env["PGBOUNCER_DEFAULT_POOL_SIZE"])
        args = [str(a) for a in pg.get("args") or []]
        max_conn = next(int(a.split("=", 1)[1]) for a in args if a.startswith("max_connections="))
        reserved = next((int(a.split("=", 1)[1]) for a in args if a.startswith("superuser_reserved_connections=")), 3)
    except (KeyError, StopIteration, ValueError) as e:
        return "connection budget", [f"cannot compute it: {e!r}"]
    servers = bouncers * server_pool + replicas  # + one monitor connection per replica
    line = (f"{replicas} replicas x ({app_env['DB_POOL_SIZE']}+{app_env['DB_MAX_OVERFLOW']}) = {replicas * per_replica} app connections "
            f"-> {bouncers} PgBouncer x {server_pool} + {replicas} monitors = {servers} server connections "
            f"<= {max_conn} max_connections - {reserved} reserved = {max_conn - reserved}")
    errs = [f"over budget: {servers} > {max_conn - reserved}"] if servers > max_conn - reserved else []
    return line, errs


if __name__ == "__main__":
    main()
