#!/usr/bin/env bash
# Remake docs/img/langflow-canvas.png: a throwaway Langflow server with the flowcloud nodes
# (`flowcloud langflow`, from .venv-langflow), then canvas.mjs in Debian's headless chromium.
# A docs artefact, not a test. Needs: `make langflow-server`, `apt-get install chromium`, npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${PORT:-7870}"
tmp="$(mktemp -d)"

[ -d "$here/node_modules/playwright-core" ] || (cd "$here" && npm ci --no-fund --no-audit)

# A fresh database, so the flow is the only one and keeps its own name. `python -m flowcloud.cli`
# from the checkout is `flowcloud`, with the checkout's flows/ importable.
cd "$root"
LANGFLOW_AUTO_LOGIN=true LANGFLOW_CONFIG_DIR="$tmp/config" LANGFLOW_DATABASE_URL="sqlite:///$tmp/langflow.db" \
  LANGFLOW_DO_NOT_TRACK=true LITELLM_LOCAL_MODEL_COST_MAP=True \
  .venv/bin/python -m flowcloud.cli langflow --langflow-bin "$root/.venv-langflow/bin/langflow" --port "$port" \
  --no-open-browser >"$tmp/langflow.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$tmp"' EXIT

for _ in $(seq 180); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { tail -40 "$tmp/langflow.log"; exit 1; }
  sleep 1
done
cd "$here"
LANGFLOW_URL="http://127.0.0.1:$port" node canvas.mjs "$@"
