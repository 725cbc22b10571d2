#!/usr/bin/env bash
# The suite against the newest versions pyproject.toml's ranges admit today, in a throwaway
# virtual environment (the lock and your own environment are untouched): run it before
# requirements/lock.sh, so that an upgrade is a deliberate, tested step.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade -e ".[test]"
"$work/venv/bin/python" -m pip freeze --exclude-editable > "$work/latest.txt"
echo "versions under test (differences from requirements/test.txt):"
diff <(grep -oE '^[A-Za-z0-9_.-]+==[^ ;\\]+' requirements/test.txt | tr 'A-Z_' 'a-z-' | sort) \
     <(tr 'A-Z_' 'a-z-' < "$work/latest.txt" | sort) | grep '^[<>]' || echo "  none"
PATH="$work/venv/bin:$PATH" python -m pytest -q "$@"
