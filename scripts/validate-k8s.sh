#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests in deploy/kubernetes against the
# Kubernetes JSON schemas and what the schemas cannot see; no cluster is
# needed. scripts/validate_k8s.py says what is checked. This wrapper installs
# its one dependency, kubernetes-validate from PyPI (it carries the schemas
# and brings PyYAML), when missing, then runs it.
#
# Usage: scripts/validate-k8s.sh      (exit 0 only when all checks pass)
# Env:   K8S_VERSION                   schema version (default 1.30.0)
#        KUBERNETES_VALIDATE_VERSION   version installed when missing (default 1.37.0)
#        PYTHON                        interpreter (default python3)
set -euo pipefail

py=${PYTHON:-python3}
if ! "$py" -c 'import kubernetes_validate' 2>/dev/null; then
  pin=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
  echo "installing kubernetes-validate==$pin from PyPI"
  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$py" -m pip install --quiet "kubernetes-validate==$pin"
fi
exec "$py" "$(dirname "${BASH_SOURCE[0]}")/validate_k8s.py"
