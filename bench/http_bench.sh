#!/usr/bin/env bash
# The HTTP scenario (edge + mock upstream + peer-bench harness): see bench/README.md.
#   bench/http_bench.sh [--quick] [--also litellm=http://127.0.0.1:4000] [peer-bench bench.py options]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec "${PYTHON:-$ROOT/.venv/bin/python}" -m bench.http_bench "$@"
