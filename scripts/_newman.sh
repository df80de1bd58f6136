# Sourced by scripts/test (and by the newman test, when run on its own): install newman,
# Postman's command-line runner, into postman/node_modules at the versions that
# postman/package-lock.json pins, unless they are there already. Without npm it says so
# and the collection's test is skipped.
install_newman() {
    if ! command -v npm >/dev/null 2>&1; then
        echo "npm not found: the Postman collection's newman test will be skipped" >&2
        return 0
    fi
    local stamp=postman/node_modules/.tandem-package-lock.json
    if [ -x postman/node_modules/.bin/newman ] && cmp -s postman/package-lock.json "$stamp"; then
        return 0
    fi
    npm ci --prefix postman --no-audit --no-fund --loglevel=error
    cp postman/package-lock.json "$stamp"
}
