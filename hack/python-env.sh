#!/usr/bin/env bash
# Creates (once) the virtualenv with the pinned Celery and client libraries the oracle and the
# end-to-end tests use, in the cache outside the repository. `--print` only prints its python.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
REQ="$HERE/../tests/oracle/requirements.txt"
sum=$(sha256sum "$REQ" | cut -c1-12)
VENV=$CBO_CACHE/venv-celery-$CELERY_VERSION-$sum
if [ "${1:-}" = "--print" ]; then echo "$VENV/bin/python"; exit 0; fi
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.complete" ]; then echo "$VENV/bin/python"; exit 0; fi
command -v python3 >/dev/null || { echo "python-env: python3 is required" >&2; exit 1; }
start=$(date +%s)
rm -rf "$VENV"
python3 -m venv "$VENV" || { echo "python-env: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2 || { echo "python-env: pip install failed; see above" >&2; exit 1; }
touch "$VENV/.complete"
echo "python-env: created $VENV in $(( $(date +%s) - start ))s" >&2
echo "$VENV/bin/python"
