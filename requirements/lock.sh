#!/usr/bin/env bash
# Refresh the locks from pyproject.toml's ranges: the newest versions PyPI has today, with
# the hashes of every file of each, for every platform (--universal) and Python >= 3.11.
# test.txt is resolved first; runtime.txt is held to the same versions, so the set a user
# runs is the set the tests ran. Commit both only after the suite passes on them
# (requirements/test-latest.sh shows what a refresh would change, in a throwaway venv).
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
command -v "$uv" >/dev/null 2>&1 || { echo "needs uv: pip install uv" >&2; exit 2; }
common=(--universal --python-version 3.11 --generate-hashes --no-header --quiet)
"$uv" pip compile "${common[@]}" --upgrade pyproject.toml --extra test -o requirements/test.txt
"$uv" pip compile "${common[@]}" pyproject.toml -c requirements/test.txt -o requirements/runtime.txt
echo "requirements/test.txt and requirements/runtime.txt refreshed; run the suite before committing"
