# Sourced by scripts/test: Debian's Chromium for the playground's browser test
# (tests/playground/test_browser.py). Playwright drives /usr/bin/chromium; it never
# downloads a browser of its own (there is no `playwright install` anywhere).
ensure_chromium() {
    [ -x /usr/bin/chromium ] && return 0
    local run_as_root=()
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            run_as_root=(sudo -n)
        else
            _chromium_missing "installing it needs root (or passwordless sudo)"
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        _chromium_missing "there is no apt-get on this machine"
        return 0
    fi
    echo "Installing Debian's chromium for the browser test (once)..." >&2
    local install=("${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
    # A fresh machine may have no package lists yet: update them and try again.
    if ! "${install[@]}" >/dev/null; then
        "${run_as_root[@]}" apt-get update -qq >/dev/null && "${install[@]}" >/dev/null || true
    fi
    [ -x /usr/bin/chromium ] || _chromium_missing "apt-get could not install it"
}

_chromium_missing() {
    {
        printf '!%.0s' {1..78}; echo
        echo "!! Chromium is not installed: $1."
        echo "!! The playground's BROWSER TEST WILL BE SKIPPED. Install it with:"
        echo "!!     apt-get install chromium"
        printf '!%.0s' {1..78}; echo
    } >&2
}
