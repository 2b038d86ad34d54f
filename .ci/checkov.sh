#!/usr/bin/env bash
# checkov over tf/, offline (no policy download, no Bridgecrew mapping): any failed check fails
# the build. Every skip sits next to its resource as `#checkov:skip=<ID>:<reason>`.
# Usage: bash .ci/checkov.sh <path to checkov>   (the Makefile passes .venv-checkov/bin/checkov)
set -euo pipefail
cd "$(dirname "$0")/.."

checkov=${1:-.venv-checkov/bin/checkov}
if [ ! -x "$checkov" ]; then
    echo "checkov.sh: $checkov not found (make .venv-checkov/.installed creates it)" >&2
    exit 2
fi

export BC_SKIP_MAPPING=TRUE LOG_LEVEL=ERROR
exec "$checkov" --directory tf --framework terraform --skip-download --download-external-modules false \
    --compact --quiet
