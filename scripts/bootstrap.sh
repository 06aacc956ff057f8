#!/usr/bin/env bash
# Installs what the project needs, from nothing: system packages (as root, or prints the command),
# uv in .tools/, and the locked Python dependencies in .venv/.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.9"
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ -z "${DATABASE_URL:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  need+=(redis-server)
fi
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# wrk drives the benchmarks (and the bench harness's own tests, skipped without it): installed
# when we can, never required.
if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  need+=(wrk)
fi

# chromium runs the QR pages' browser tests (Playwright drives Debian's build; no browser is
# downloaded): installed when we can. Without it those tests fail as root or in CI, else skip.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  need+=(chromium)
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian releases without nginx-light ship the same modules in the nginx package.
    apt-get install -y -qq "${need[@]}" || apt-get install -y -qq "${need[@]/nginx-light/nginx}"
  else
    echo "bootstrap: missing system packages. Run:"
    echo "  sudo apt-get update && sudo apt-get install -y ${need[*]}"
    exit 1
  fi
fi

UV=.tools/bin/uv
if [ ! -x "$UV" ] || [ "$("$UV" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into .tools/"
  python3 -m venv .tools
  .tools/bin/pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
export UV_PYTHON_DOWNLOADS=never
if ! "$UV" sync --frozen --check --quiet --python python3 >/dev/null 2>&1; then
  # First run (or uv.lock changed): say so, and let uv show its progress.
  echo "bootstrap: installing the locked Python dependencies into .venv/ (a first run takes a minute or two)"
  started=$(date +%s)
  if ! "$UV" sync --frozen --python python3; then
    echo "bootstrap: installing the Python dependencies failed (output above)." >&2
    echo "  What to do: check the network access to the package index, then run 'make install' again;" >&2
    echo "  'rm -rf .venv' first if the environment is damaged." >&2
    exit 1
  fi
  echo "bootstrap: Python dependencies ready in $(( $(date +%s) - started )) s"
fi
