#!/usr/bin/env bash
# Create (once) a separate virtual environment holding Label Studio 1.23.2 for the end-to-end test,
# then print the path of its `label-studio` executable on stdout (and nothing else on stdout).
#
#   usage: .ci/labelstudio.sh [VENV_DIR]        (default: $LABEL_STUDIO_VENV or .venv-labelstudio)
#   export GENPROMP_TEST_LABEL_STUDIO="$(.ci/labelstudio.sh)"
#
# Label Studio pins its own Django/DRF/pydantic stack, so it never shares the project's venv.
set -euo pipefail

LS_VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${LABEL_STUDIO_VENV:-$ROOT/.venv-labelstudio}}"
PYTHON="${LABEL_STUDIO_PYTHON:-python3}"
EXE="$VENV/bin/label-studio"

installed_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))' 2>/dev/null || true
}

if [[ ! -x "$EXE" || "$(installed_version)" != "$LS_VERSION" ]]; then
    echo "installing label-studio==$LS_VERSION into $VENV (a few minutes)" >&2
    "$PYTHON" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet "label-studio==$LS_VERSION" >&2
fi

if [[ ! -x "$EXE" ]]; then
    echo "error: $EXE is missing after installing label-studio==$LS_VERSION" >&2
    exit 1
fi
echo "$EXE"
