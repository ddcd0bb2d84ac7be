# shellcheck shell=bash
# .ci/mta-lib.sh: what .ci/exim-start, .ci/opensmtpd-start and .ci/lmtp-start share.
#
# Sourced, never run. The caller sets MTA_NAME (for messages) before sourcing. Helpers:
#   mta_log MSG...                 a line on stderr, prefixed with MTA_NAME
#   mta_require_root
#   mta_apt_install PKG...         installs the missing ones (one `apt-get update` first),
#                                  quietly, noninteractively, never starting a service
#   mta_unpack DIR PKG...          downloads the packages and unpacks them into DIR without
#                                  installing them (for MTAs that conflict with Postfix as
#                                  mail-transport-agent), then installs the libraries
#                                  they link against; nothing when DIR is already there
#   mta_check_libraries BINARY...  fails, naming them, if a shared library is missing
#   mta_system_user NAME HOME      a system user (and group NAME) with no login, if missing
#   mta_certs ROOT OWNER           a test CA and a certificate for localhost, 127.0.0.1,
#                                  ::1 in ROOT (ca.pem, server.pem, server.key readable
#                                  by OWNER); kept across starts
#   mta_running PIDFILE EXE        true when PIDFILE names a live process running EXE
#   mta_stop PIDFILE EXE           SIGTERM to that process (only that one), bounded wait
#   mta_wait_for PORT MODE LOG     waits for a 220 greeting (MODE plain, smtps, lmtp; with
#                                  MTA_PROBE_CAFILE, MTA_PROBE_USER, MTA_PROBE_PASSWORD
#                                  set, smtps also logs in with AUTH PLAIN); prints it
#   mta_write_env FILE             KEY=VALUE lines from stdin, written atomically
# Every server these scripts run listens on 127.0.0.1 only and is stopped by its PID.

MTA_HOST=127.0.0.1
MTA_START_TIMEOUT=${MTA_START_TIMEOUT:-30}
_mta_updated=no

mta_log() { printf '%s: %s\n' "$MTA_NAME" "$*" >&2; }

mta_require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        mta_log "must run as root (it installs packages and starts a server)"
        exit 1
    fi
}

_mta_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

_mta_apt_update() {
    if [ "$_mta_updated" = no ]; then
        apt-get update -q >/dev/null
        _mta_updated=yes
    fi
}

mta_apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        _mta_installed "$pkg" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    mta_log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    _mta_apt_update
    # A package's maintainer scripts must not start its system service (that one would
    # listen on every interface): invoke-rc.d asks policy-rc.d, which Debian's container
    # images set to "deny"; where it is absent, one is put in place for this install only.
    local policy=/usr/sbin/policy-rc.d own_policy=no
    if ! [ -e "$policy" ]; then
        printf '#!/bin/sh\n# smtpbee .ci/mta-lib.sh: no service starts during an install\nexit 101\n' \
            >"$policy"
        chmod 755 "$policy"
        own_policy=yes
    fi
    local status=0 output
    output=$(mktemp)
    apt-get install -y -q --no-install-recommends "${missing[@]}" >"$output" 2>&1 || status=$?
    [ "$own_policy" = no ] || rm -f "$policy"
    if [ "$status" -ne 0 ]; then
        mta_log "apt-get install ${missing[*]} failed:"
        tail -n 30 "$output" >&2
    fi
    rm -f "$output"
    return "$status"
}

mta_unpack() {
    local dir=$1
    shift
    if [ -f "$dir/.unpacked" ]; then
        return 0
    fi
    mta_log "downloading and unpacking $* into $dir (not installed: they conflict with Postfix)"
    rm -rf "${dir:?}"
    mkdir -p "$dir/debs"
    _mta_apt_update
    # apt's download sandbox user must be able to write there.
    chown _apt "$dir/debs" 2>/dev/null || true
    (cd "$dir/debs" && apt-get download -q "$@" >/dev/null)
    local deb libs=()
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
        # The shared libraries it links against: the lib* packages among its Depends
        # (the first of each set of alternatives, versions dropped).
        while read -r name; do
            libs+=("$name")
        done < <(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -e 's/|.*//' \
            -e 's/(.*)//' -e 's/:any//' -e 's/[[:space:]]//g' | grep -E '^(lib|zlib)' || true)
    done
    if [ "${#libs[@]}" -gt 0 ]; then
        mta_apt_install "${libs[@]}"
    fi
    touch "$dir/.unpacked"
}

mta_check_libraries() {
    local binary absent=""
    for binary in "$@"; do
        absent+=$(ldd "$binary" 2>/dev/null | grep 'not found' || true)
    done
    if [ -n "$absent" ]; then
        mta_log "libraries missing for $*:"
        printf '%s\n' "$absent" >&2
        exit 1
    fi
}

mta_system_user() {
    local name=$1 home=$2
    getent group "$name" >/dev/null || groupadd --system "$name"
    if ! id -u "$name" >/dev/null 2>&1; then
        mta_log "adding the system user $name (no home, no login shell)"
        useradd --system --no-create-home --home-dir "$home" --shell /usr/sbin/nologin \
            -g "$name" "$name"
    fi
}

mta_certs() {
    local root=$1 owner=$2
    if ! [ -s "$root/ca.pem" ] || ! [ -s "$root/server.pem" ] || ! [ -s "$root/server.key" ]; then
        mta_log "generating the test CA and server certificate"
        local work
        work=$(mktemp -d)
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout "$work/ca.key" -out "$work/ca.pem" -days 3650 \
            -subj "/CN=smtpbee $MTA_NAME test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" 2>/dev/null
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout "$work/server.key" -out "$work/server.csr" -subj "/CN=localhost" 2>/dev/null
        cat >"$work/server.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
        openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
            -CAcreateserial -out "$work/server.pem" -days 3650 -extfile "$work/server.ext" \
            2>/dev/null
        install -m 644 "$work/ca.pem" "$root/ca.pem"
        install -m 644 "$work/server.pem" "$root/server.pem"
        install -m 600 "$work/server.key" "$root/server.key"
        rm -rf "$work"
    fi
    chown "$owner" "$root/server.key"
}

mta_running() {
    local pidfile=$1 exe=$2 pid
    [ -s "$pidfile" ] || return 1
    pid=$(head -n 1 "$pidfile" | tr -dc '0-9')
    [ -n "$pid" ] || return 1
    # The PID must still be the server: a stale file may name a reused PID.
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$exe")" ]
}

mta_stop() {
    local pidfile=$1 exe=$2 pid
    if ! mta_running "$pidfile" "$exe"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(head -n 1 "$pidfile" | tr -dc '0-9')
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        # Gone, or a zombie waiting for whoever adopted it (it no longer serves).
        if ! [ -e "/proc/$pid" ] || [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null |
            cut -d ' ' -f 1)" = Z ]; then
            rm -f "$pidfile"
            return 0
        fi
        sleep 0.1
    done
    mta_log "process $pid ($exe) is still running after 10s"
    return 1
}

# _mta_probe PORT MODE prints the greeting, or nothing while the port is not ready.
# "plain" reads the greeting; "lmtp" also says LHLO; "smtps" does the TLS handshake first
# (verifying against MTA_PROBE_CAFILE) and, with MTA_PROBE_USER set, logs in with AUTH
# PLAIN, so a broken authenticator fails here, with the log, instead of in the tests.
_mta_probe() {
    python3 - "$MTA_HOST" "$1" "$2" "${MTA_PROBE_CAFILE:-}" "${MTA_PROBE_USER:-}" \
        "${MTA_PROBE_PASSWORD:-}" <<'EOF' 2>/dev/null || true
import base64, socket, ssl, sys
host, port, mode, cafile, user, password = sys.argv[1:]
with socket.create_connection((host, int(port)), timeout=2) as raw:
    sock = raw
    if mode == "smtps":
        context = ssl.create_default_context(cafile=cafile)
        sock = context.wrap_socket(raw, server_hostname=host)
    reader = sock.makefile("rb")

    def reply():
        while True:
            line = reader.readline(1024).decode("ascii", "replace")
            if line[3:4] != "-":
                return line.strip()

    greeting = reply()
    if greeting.startswith("220") and mode != "plain":
        sock.sendall(b"LHLO probe.localhost\r\n" if mode == "lmtp" else b"EHLO probe.localhost\r\n")
        hello = reply()
        if not hello.startswith("250"):
            greeting = "HELLO failed: " + hello
        elif mode == "smtps" and user:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            sock.sendall(f"AUTH PLAIN {token}\r\n".encode())
            auth = reply()
            if not auth.startswith("235"):
                greeting = "AUTH PLAIN failed: " + auth
    sock.sendall(b"QUIT\r\n")
print(greeting)
EOF
}

mta_wait_for() {
    local port=$1 mode=$2 logfile=$3 answer=""
    local deadline=$((SECONDS + MTA_START_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        answer=$(_mta_probe "$port" "$mode")
        case "$answer" in
            220*) printf '%s\n' "$answer"; return 0 ;;
            *failed:*) break ;;
        esac
        sleep 0.2
    done
    mta_log "port $port ($mode) did not answer 220${answer:+ (last: $answer)}" \
        "within ${MTA_START_TIMEOUT}s; the log follows"
    tail -n 40 "$logfile" >&2 2>/dev/null || true
    return 1
}

mta_write_env() {
    local file=$1
    cat >"$file.tmp"
    mv "$file.tmp" "$file"
}
