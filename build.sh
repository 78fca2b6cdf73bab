#!/usr/bin/env bash
#
# build.sh: install Debian dependencies, build the nginx module, run, test.
#
#   ./build.sh            build (installing packages first when missing)
#   ./build.sh run        build, then run nginx in the foreground on loopback
#   ./build.sh test       build, then run every test (unit + integration)
#   ./build.sh deps       only install packages
#
# Environment: RELAY_PREFIX (run prefix, default ./var), BUILD_DIR (./build).

set -euo pipefail

top=$(cd "$(dirname "$0")" && pwd)
build_dir=${BUILD_DIR:-$top/build}
prefix=${RELAY_PREFIX:-$top/var}

packages=(
    nginx nginx-dev libnginx-mod-stream
    libpcre2-dev zlib1g-dev libssl-dev libcrypt-dev
    libc-ares-dev libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
    protobuf-compiler protobuf-compiler-grpc
    python3-pytest python3-grpcio python3-protobuf
    prometheus python3-prometheus-client
    swaks postfix dnsmasq-base bind9-dnsutils openssl curl
    libio-socket-ssl-perl libnet-ssleay-perl make gcc
)

log() { printf 'build.sh: %s\n' "$*" >&2; }

install_deps() {
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null \
            | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    log "installing: ${missing[*]}"
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q >/dev/null
    # postfix only provides smtp-source/smtp-sink and a private benchmark
    # instance: never let its package start a system-wide MTA.
    echo "postfix postfix/main_mailer_type select No configuration" \
        | $sudo debconf-set-selections
    $sudo apt-get install -y -q "${missing[@]}" >/dev/null
}

build_module() {
    local src=$build_dir/nginx-src objs=$build_dir/objs
    mkdir -p "$build_dir"

    # protobuf-c code shared by the module and controld
    make -s -C "$top/controld" BUILD_DIR="$build_dir" gen >&2
    export RELAY_GEN_DIR=$build_dir/gen

    # configure cds into the nginx source tree: work on a private copy so
    # the build needs no write access to /usr/share/nginx/src.
    if [ ! -f "$src/configure" ]; then
        rm -rf "$src"
        cp -a /usr/share/nginx/src "$src"
    fi

    if [ ! -f "$objs/Makefile" ] \
       || [ "$top/module/config" -nt "$objs/Makefile" ] \
       || [ "$top/lib/lib.mk" -nt "$objs/Makefile" ] \
       || ! grep -q "$RELAY_GEN_DIR" "$objs/Makefile"; then
        log "configuring"
        (
            cd "$src"
            # shellcheck disable=SC1091
            . ./conf_flags
            ./configure \
                --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)" \
                --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC" \
                "${NGX_CONF_FLAGS[@]}" \
                --with-stream --with-stream_ssl_module \
                --add-dynamic-module="$top/module" \
                --builddir="$objs"
        ) > "$build_dir/configure.log" 2>&1 \
            || { cat "$build_dir/configure.log" >&2; exit 1; }
    fi

    make -s -j2 -f "$objs/Makefile" -C "$src" modules >&2
    local sig
    sig=$(strings "$objs/ngx_stream_relay_module.so" | grep -E '^8,4,8,' || true)
    local want
    want=$(strings /usr/lib/nginx/modules/ngx_stream_module.so | grep -E '^8,4,8,')
    if [ "$sig" != "$want" ]; then
        log "module signature $sig does not match nginx's $want"
        exit 1
    fi
}

build_controld() {
    make -s -C "$top/controld" BUILD_DIR="$build_dir" all >&2
}

cmd=${1:-build}
case "$cmd" in
deps)
    install_deps
    ;;
build)
    install_deps
    build_module
    build_controld
    ;;
run)
    install_deps
    build_module
    build_controld
    exec "$top/deploy/run-dev.sh" "$prefix" \
        "$build_dir/objs/ngx_stream_relay_module.so" "$build_dir/controld"
    ;;
test)
    install_deps
    build_module
    build_controld
    exec "$top/tests/run-all.sh" "$build_dir"
    ;;
*)
    echo "usage: $0 [build|run|test|deps]" >&2
    exit 2
    ;;
esac
