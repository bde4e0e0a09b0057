#!/usr/bin/env bash
# Style checks, as .pre-commit-config.yaml runs them (settings in setup.cfg): flake8 at 100
# columns, isort, codespell. Exits non-zero naming what failed. `bash tools/lint.sh --fix` sorts
# imports in place instead of checking them.
set -uo pipefail
cd "$(dirname "$0")/.."
PATHS=(projects tools tests configs setup.py)
status=0
if [[ "${1:-}" == "--fix" ]]; then
    isort "${PATHS[@]}"
else
    isort --check-only --diff "${PATHS[@]}" || { echo "isort: imports out of order (bash tools/lint.sh --fix)"; status=1; }
fi
flake8 "${PATHS[@]}" || { echo "flake8: see above"; status=1; }
codespell "${PATHS[@]}" docs README.md || { echo "codespell: see above"; status=1; }
exit $status
