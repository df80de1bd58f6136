# Sourced by the scripts: make .venv with a Python >= 3.11 and install Tandem into it.
# Usage: install_tandem ".[dev]"   (or "." for the server alone)
# The install is editable, so only a change to pyproject.toml calls for another: pip runs
# again only then (or without .venv/.tandem-installed, which records what was installed).
install_tandem() {
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "Tandem needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        "$python" -m venv .venv
    fi
    local stamp=.venv/.tandem-installed digest
    digest=$(.venv/bin/python -c \
        'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
    # Each line: the digest of pyproject.toml, then what was installed with it; ".[dev]"
    # holds everything "." does.
    if [ -f "$stamp" ] && { grep -qxF "$digest $1" "$stamp" \
        || { [ "$1" = "." ] && grep -qxF "$digest .[dev]" "$stamp"; }; }; then
        return 0
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$1"
    { grep -sF "$digest " "$stamp" || true; echo "$digest $1"; } > "$stamp.new"
    mv "$stamp.new" "$stamp"
}
