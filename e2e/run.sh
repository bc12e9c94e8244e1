#!/usr/bin/env bash
# End to end on kind: build the images, install the chart in dev mode, run the SEA
# demo model, send traffic and outcomes with a concept switch, and assert the loop
# closes: drift detected -> candidate registered -> candidate promoted.
#
#   make e2e            (or: bash e2e/run.sh)
#
# Needs docker, kind, kubectl and helm on PATH. Environment:
#   E2E_CLUSTER      kind cluster name (default driftline-e2e); created unless it exists
#   E2E_KEEP=1       keep the cluster afterwards (default: delete a cluster this run created)
#   E2E_BUILD=0      use driftline/{operator,services,inference,dev-*}:$E2E_TAG as they are
#   E2E_TAG          image tag (default e2e)
#   E2E_TIMEOUT      seconds for the drift -> promotion cycle (default 1800)
#   TORCH_INDEX      package index for torch in the services image (default: the
#                    PyTorch CPU wheels, which keep the image small)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${E2E_CLUSTER:-driftline-e2e}
TAG=${E2E_TAG:-e2e}
TIMEOUT=${E2E_TIMEOUT:-1800}
SYSTEM=driftline-system
NS=demo
MODEL=sea
ARTIFACTS=${E2E_ARTIFACTS:-e2e/artifacts}

log() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
die() { echo "e2e: $*" >&2; exit 1; }
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "needs $tool on PATH"
done

created=0
diagnose() {
  # What a failed run leaves behind to read: status, events and every part's logs.
  mkdir -p "$ARTIFACTS"
  kubectl get dynamicmodels -A -o yaml >"$ARTIFACTS/dynamicmodels.yaml" 2>&1 || true
  kubectl get pods,deployments,jobs -A -o wide >"$ARTIFACTS/pods.txt" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$ARTIFACTS/events.txt" 2>&1 || true
  for ns in "$SYSTEM" "$NS"; do
    for pod in $(kubectl get pods -n "$ns" -o name 2>/dev/null); do
      kubectl logs -n "$ns" "$pod" --all-containers --tail=400 >"$ARTIFACTS/$ns-${pod#pod/}.log" 2>&1 || true
    done
  done
}
finish() {
  status=$?
  if [[ $status != 0 ]]; then
    diagnose
    echo "e2e: FAILED; logs in $ARTIFACTS" >&2
  fi
  if [[ $created == 1 && ${E2E_KEEP:-0} != 1 ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap finish EXIT

# --- images ---------------------------------------------------------------------------
if [[ ${E2E_BUILD:-1} == 1 ]]; then
  log "building images (tag $TAG)"
  docker build -f docker/operator.Dockerfile -t "driftline/operator:$TAG" .
  docker build -f docker/services.Dockerfile -t "driftline/services:$TAG" \
    --build-arg "TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}" .
  docker build -f docker/services.Dockerfile -t "driftline/inference:$TAG" \
    --build-arg EXTRAS=inference,joiner,drift,cpu --build-arg IMAGE_TITLE=driftline-inference \
    --build-arg HEALTH_PORT=8080 .
  for server in redis kafka mlflow; do
    docker build -f "docker/dev/$server.Dockerfile" -t "driftline/dev-$server:$TAG" .
  done
fi

# --- cluster --------------------------------------------------------------------------
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 180s
  created=1
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
log "loading images into the cluster"
kind load docker-image --name "$CLUSTER" "driftline/operator:$TAG" "driftline/services:$TAG" \
  "driftline/inference:$TAG" "driftline/dev-redis:$TAG" "driftline/dev-kafka:$TAG" \
  "driftline/dev-mlflow:$TAG"

# --- the chart in dev mode ------------------------------------------------------------
log "installing the chart (dev mode)"
kubectl create namespace "$SYSTEM" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$SYSTEM" --overwrite pod-security.kubernetes.io/enforce=restricted
helm upgrade --install driftline charts/driftline --namespace "$SYSTEM" \
  --values e2e/values.yaml --set "image.tag=$TAG" --wait --timeout 10m
kubectl -n "$SYSTEM" rollout status deployment/driftline-operator --timeout=5m

# --- the model ------------------------------------------------------------------------
log "applying the DynamicModel $NS/$MODEL"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted
# The sample, pointed at the dev-mode servers.
sed -e "s#http://127.0.0.1:5000#http://driftline-mlflow.$SYSTEM.svc.cluster.local:5000#" \
    -e "s#127.0.0.1:9092#driftline-kafka.$SYSTEM.svc.cluster.local:9092#" \
    -e "s#redis://127.0.0.1:6379/0#redis://driftline-redis.$SYSTEM.svc.cluster.local:6379/0#" \
    -e "s#namespace: demo#namespace: $NS#" \
    manifests/samples/sea-demo.yaml | kubectl apply -f -
wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local limit=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
    sleep 5
  done
}
wait_for 120 "the model's ConfigMap" kubectl -n "$NS" get configmap "$MODEL-config"

log "registering the first version (trainer bootstrap)"
job() {  # job NAME IMAGE-COMMAND-JSON: a Job with the services image and the model file
  cat <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: $1, namespace: $NS}
spec:
  backoffLimit: 3
  ttlSecondsAfterFinished: 3600
  template:
    spec:
      restartPolicy: OnFailure
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: main
        image: driftline/services:$TAG
        imagePullPolicy: IfNotPresent
        command: $2
        env:
        - {name: DRIFTLINE_TRAINER_MODEL_FILE, value: /etc/driftline/model.yaml}
        - {name: HOME, value: /tmp}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts:
        - {name: model, mountPath: /etc/driftline}
        - {name: e2e, mountPath: /e2e}
        - {name: tmp, mountPath: /tmp}
      volumes:
      - name: model
        configMap: {name: $MODEL-config}
      - name: e2e
        configMap: {name: e2e-traffic}
      - name: tmp
        emptyDir: {}
YAML
}
kubectl -n "$NS" create configmap e2e-traffic --from-file=traffic.py=e2e/traffic.py \
  --dry-run=client -o yaml | kubectl apply -f -
job bootstrap '[python, -m, driftline.trainer, bootstrap, --stream, sea, --seed, "1", --samples, "20000"]' \
  | kubectl apply -f -
kubectl -n "$NS" wait --for=condition=Complete job/bootstrap --timeout=15m

log "waiting for the model to be Ready"
kubectl -n "$NS" wait --for=condition=Ready "dynamicmodel/$MODEL" --timeout=15m
field() { kubectl -n "$NS" get "dynamicmodel/$MODEL" -o "jsonpath={$1}"; }
first=$(field .status.stableVersion)
[[ -n $first ]] || die "Ready without a stable version"
echo "serving version $first"

# --- traffic, drift, candidate, promotion ---------------------------------------------
log "sending traffic and outcomes (concept switch after 6000 rows)"
job traffic "[python, /e2e/traffic.py, --model-file, /etc/driftline/model.yaml, --url, \"http://$MODEL-inference.$NS.svc:8080\", --switch-after, \"6000\", --seconds, \"$TIMEOUT\"]" \
  | kubectl apply -f -

drift_seen='' candidate='' promoted=''
deadline=$((SECONDS + TIMEOUT))
while ((SECONDS < deadline)); do
  phase=$(field .status.phase)
  stage=$(field .status.rollout.stage)
  stable=$(field .status.stableVersion)
  cand=$(field .status.candidateVersion)
  drift=$(field '.status.conditions[?(@.type=="DriftDetected")].status')
  [[ $(field .status.drift.detected) == true ]] && drift=True
  printf '%5ss phase=%s stable=%s candidate=%s stage=%s drift=%s\n' \
    "$SECONDS" "$phase" "$stable" "${cand:--}" "${stage:--}" "${drift:--}"
  [[ $drift == True && -z $drift_seen ]] && drift_seen=$SECONDS
  [[ -n $cand && $cand != "$first" && -z $candidate ]] && candidate=$cand
  if [[ -n $stable && $stable != "$first" ]]; then
    promoted=$stable
    break
  fi
  sleep 5
done
kubectl -n "$NS" delete job traffic --wait=false >/dev/null 2>&1 || true

[[ -n $drift_seen ]] || die "no drift detected within ${TIMEOUT}s"
[[ -n $candidate ]] || die "no candidate version registered within ${TIMEOUT}s"
[[ -n $promoted ]] || die "candidate $candidate not promoted within ${TIMEOUT}s"
(( promoted >= candidate )) || die "promoted $promoted is older than the candidate $candidate"
log "PASS: drift at ${drift_seen}s, candidate $candidate, promoted $promoted (was $first)"
