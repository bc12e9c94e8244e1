#!/usr/bin/env bash
# Build the test rig once into a cache outside the repository:
#
#   Kubernetes                 kube-apiserver, kube-controller-manager, kube-scheduler,
#                              kubelet, kube-proxy, etcd and kwok, built by `go build`
#                              from the Go module proxy (go.mod here pins the releases)
#   CoreDNS                    the real node's cluster DNS, `go build` of coredns/ (a
#                              module of its own: CoreDNS with the plugins it needs)
#   metrics-server             the real node's resource metrics (what the HPA reads),
#                              `go build` of its release, pinned in metrics-server/go.mod
#   Prometheus                 scrapes the real node's Pods with the chart's scrape
#                              configs (Kubernetes discovery, which Debian's package
#                              lacks), `go build` of its release, pinned in prometheus/go.mod,
#                              with no other discovery linked in
#   Apache Kafka               the broker's jars from Maven Central (pom.xml here)
#
# The cache directory is ${DRIFTLINE_RIG_CACHE:-~/.cache/driftline-rig}/<key>, where
# the key names the pinned versions and a hash of this directory's inputs (go.mod,
# go.sum, pom.xml, log4j2.properties, coredns/, metrics-server/, prometheus/ and this
# script): any change builds into a new directory, and an unchanged rig is not built
# again. Go's module and build caches
# (~/go/pkg/mod, ~/.cache/go-build) and Maven's (~/.m2) stay where they are, so even
# a new key rebuilds mostly from cache. Builds of one key take turns (flock), so
# several checkouts may run `make test` at once.
#
#   bash tests/rig/build.sh            build what is missing, print timings
#   bash tests/rig/build.sh --print    print the rig directory and exit
#   bash tests/rig/build.sh k8s|coredns|metrics-server|prometheus|kafka  build one part only
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${DRIFTLINE_RIG_CACHE:-$HOME/.cache/driftline-rig}"

mod_version() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"; }
k8s_version="$(mod_version k8s.io/kubernetes)"
etcd_version="$(mod_version go.etcd.io/etcd/server/v3)"
kwok_version="$(mod_version sigs.k8s.io/kwok)"
coredns_version="$(awk '$2 == "github.com/coredns/coredns" { print $3; exit }' "$here/coredns/go.mod")"
metrics_version="$(awk '$1 == "sigs.k8s.io/metrics-server" { print $2; exit }' "$here/metrics-server/go.mod")"
prometheus_version="$(awk '$1 == "github.com/prometheus/prometheus" { print $2; exit }' "$here/prometheus/go.mod")"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
# Keep in step with rig_key() in tests/support/driftline_testing/rig.py.
inputs=(go.mod go.sum pom.xml log4j2.properties coredns/go.mod coredns/go.sum coredns/main.go
  metrics-server/go.mod metrics-server/go.sum prometheus/go.mod prometheus/go.sum
  prometheus/plugins.go.in build.sh)
digest="$(cd "$here" && cat "${inputs[@]}" | sha256sum | cut -c1-10)"
key="k8s-${k8s_version}-kafka-${kafka_version}-${digest}"
rig="$cache_root/$key"

if [[ "${1:-}" == "--print" ]]; then
  echo "$rig"
  exit 0
fi
what="${1:-all}"

started=$(date +%s)
stamp() { printf '%-34s %4ss\n' "$1" "$(($(date +%s) - started))"; }

build_k8s() {
  if [[ -f "$rig/k8s.done" ]]; then
    stamp "kubernetes $k8s_version: cached"
    return
  fi
  command -v go >/dev/null || { echo "build.sh: Go is needed to build the rig" >&2; exit 1; }
  local out="$rig/bin.partial"
  rm -rf "$out" && mkdir -p "$out"
  local minor="${k8s_version#v1.}"
  minor="${minor%%.*}"
  # What Kubernetes' own build stamps in (hack/lib/version.sh), so clients see
  # the real version instead of v0.0.0-master.
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  (
    cd "$here"
    # Static binaries, no cgo: faster to build and nothing to link against.
    CGO_ENABLED=0 nice -n "${DRIFTLINE_RIG_NICE:-10}" go build -trimpath -ldflags "$ldflags" \
      -o "$out/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy \
      go.etcd.io/etcd/server/v3 \
      sigs.k8s.io/kwok/cmd/kwok
  )
  # go names the etcd binary after its module path (".../server/v3").
  mv "$out/server" "$out/etcd"
  # kwok simulates nodes and pods by "stages"; take the defaults kwokctl uses
  # (nodes ready at once with lease heartbeats, pods ready at once) from the module.
  local kwok_dir
  kwok_dir="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  mkdir -p "$out/kwok-stages"
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    cp "$kwok_dir/kustomize/stage/$stage.yaml" "$out/kwok-stages/"
  done
  chmod -R u+w "$out/kwok-stages"
  mkdir -p "$rig"
  # CoreDNS, metrics-server and Prometheus have builds of their own into the same bin/.
  for own in coredns metrics-server prometheus; do
    if [[ -f "$rig/bin/$own" ]]; then mv "$rig/bin/$own" "$out/"; fi
  done
  rm -rf "$rig/bin" && mv "$out" "$rig/bin"
  printf 'kubernetes %s\netcd %s\nkwok %s\n' "$k8s_version" "$etcd_version" "$kwok_version" \
    >"$rig/k8s.done"
  stamp "kubernetes $k8s_version: built"
}

# A Go binary of a module of its own under tests/rig (its dependency pins apart from
# the control plane's): build_go_module <name> <version> <folder> <package> [go build
# flags], where <folder> is under tests/rig or an absolute path.
build_go_module() {
  local name="$1" version="$2" folder="$3" package="$4"
  shift 4
  if [[ -f "$rig/$name.done" ]]; then
    stamp "$name $version: cached"
    return
  fi
  command -v go >/dev/null || { echo "build.sh: Go is needed to build the rig" >&2; exit 1; }
  local out="$rig/$name.partial"
  rm -rf "$out" && mkdir -p "$out"
  (
    cd "$here" && cd "$folder"
    CGO_ENABLED=0 nice -n "${DRIFTLINE_RIG_NICE:-10}" go build -trimpath -ldflags "-s -w" "$@" \
      -o "$out/$name" "$package"
  )
  mkdir -p "$rig/bin"
  mv "$out/$name" "$rig/bin/$name" && rmdir "$out"
  echo "$name $version" >"$rig/$name.done"
  stamp "$name $version: built"
}

# CoreDNS: main.go links only the plugins the rig's Corefile uses.
build_coredns() { build_go_module coredns "$coredns_version" coredns .; }
# metrics-server and Prometheus: a `tool` of their module (go.mod's `tool` line).
build_metrics_server() {
  build_go_module metrics-server "$metrics_version" metrics-server \
    sigs.k8s.io/metrics-server/cmd/metrics-server
}
# Module v0.X.Y is Prometheus 3.X.Y. Only Kubernetes service discovery is linked in:
# prometheus/plugins.go.in stands in for the release's generated list of every cloud's
# discovery, whose SDKs were a third of a cold build. Go lets an overlay replace no file of
# its module cache, so the build runs in a vendored copy of prometheus/ (its go.mod and
# go.sum; `go mod vendor` copies the sources from the module cache).
build_prometheus() {
  if [[ -f "$rig/prometheus.done" ]]; then
    stamp "prometheus $prometheus_version: cached"
    return
  fi
  local src="$rig/prometheus-src"
  rm -rf "$src" && mkdir -p "$src"
  cp "$here/prometheus/go.mod" "$here/prometheus/go.sum" "$src/"
  (cd "$src" && go mod vendor)
  local listed="$src/vendor/github.com/prometheus/prometheus/plugins/plugins.go"
  [[ -f "$listed" ]] || { echo "build.sh: $listed is missing" >&2; exit 1; }
  printf '{"Replace": {"%s": "%s"}}\n' "$listed" "$here/prometheus/plugins.go.in" \
    >"$src/overlay.json"
  build_go_module prometheus "$prometheus_version" "$src" \
    github.com/prometheus/prometheus/cmd/prometheus -overlay "$src/overlay.json"
  rm -rf "$src"
}

build_kafka() {
  if [[ -f "$rig/kafka.done" ]]; then
    stamp "apache kafka $kafka_version: cached"
    return
  fi
  command -v mvn >/dev/null || { echo "build.sh: Maven is needed to build the rig" >&2; exit 1; }
  local out="$rig/kafka.partial"
  rm -rf "$out" && mkdir -p "$out"
  # Maven keeps its downloads in ~/.m2; the rig gets a flat copy of the jars.
  # (sed: Maven 3.8 prints colour resets even in batch mode)
  nice -n "${DRIFTLINE_RIG_NICE:-10}" mvn -q -B -f "$here/pom.xml" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs" 2>&1 |
    sed 's/\x1b\[[0-9;]*m//g'
  test -f "$out/libs/kafka_2.13-$kafka_version.jar"
  cp "$here/log4j2.properties" "$out/"
  mkdir -p "$rig"
  rm -rf "$rig/kafka" && mv "$out" "$rig/kafka"
  echo "kafka $kafka_version" >"$rig/kafka.done"
  stamp "apache kafka $kafka_version: built"
}

# Keep the three newest rigs (other branches may pin other versions); a rig is
# about 400 MB.
prune() {
  local old
  old="$(cd "$cache_root" && ls -dt k8s-*/ 2>/dev/null | tail -n +4 || true)"
  for dir in $old; do
    [[ "$cache_root/$dir" -ef "$rig" ]] || rm -rf "${cache_root:?}/$dir" "$cache_root/.${dir%/}.lock"
  done
}

echo "rig: $rig"
mkdir -p "$cache_root"
if command -v flock >/dev/null; then
  exec 9>"$cache_root/.$key.lock"
  flock 9
fi
case "$what" in
  all) build_kafka; build_k8s; build_coredns; build_metrics_server; build_prometheus ;;
  k8s) build_k8s ;;
  coredns) build_coredns ;;
  metrics-server) build_metrics_server ;;
  prometheus) build_prometheus ;;
  kafka) build_kafka ;;
  *) echo "usage: build.sh [--print|all|k8s|coredns|metrics-server|prometheus|kafka]" >&2; exit 2 ;;
esac
prune
stamp "rig ready"
