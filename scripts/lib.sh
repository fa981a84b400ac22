# Shell helpers shared by the test scripts; sourced, not run. Callers define `log`.

# Runs a command as root: directly when root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run: $*"
        return 1
    fi
}

# Checks BAYEUX_SERVER_BIN names an executable, makes it absolute and exports it; exits 2 if not.
require_server_bin() {
    if [ -z "${BAYEUX_SERVER_BIN:-}" ]; then
        echo "run.sh: set BAYEUX_SERVER_BIN to the bayeux-server binary" >&2
        exit 2
    fi
    case "$BAYEUX_SERVER_BIN" in
        /*) ;;
        *) BAYEUX_SERVER_BIN="$PWD/$BAYEUX_SERVER_BIN" ;;
    esac
    if [ ! -x "$BAYEUX_SERVER_BIN" ]; then
        echo "run.sh: BAYEUX_SERVER_BIN=$BAYEUX_SERVER_BIN is not an executable file" >&2
        exit 2
    fi
    export BAYEUX_SERVER_BIN
}
