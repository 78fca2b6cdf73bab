#!/usr/bin/env bash
#
# build.sh: install Debian dependencies, build the nginx module, run, test.
#
#   ./build.sh            build (installing packages first when missing)
#   ./build.sh run        build, then run nginx in the foreground on loopback
#   ./build.sh test       build (the packages too), then run every test
#                         (unit, fuzz seeds, integration, packages)
#   ./build.sh fuzz [S]   build, then run each fuzz harness for S seconds
#                         (default 60; tests/fuzz/run.sh)
#   ./build.sh deps       only install packages
#   ./build.sh deb        build the Debian packages into BUILD_DIR/deb/
#                         (dpkg-buildpackage on a copy of the tree, lintian)
#   ./build.sh test-deb   build the packages, then only their test
#                         (tests/deb: install, run, purge; root)
#
#   SANITIZE=1 ./build.sh test
#                         the module, controld and relayctl built with
#                         AddressSanitizer and UndefinedBehaviorSanitizer
#                         (into ./build-san), every test run against them;
#                         nginx loads the module with ASan's runtime
#                         preloaded, and any sanitizer report fails the run
#
# Environment: RELAY_PREFIX (run prefix, default ./var), BUILD_DIR (./build,
# ./build-san with SANITIZE=1), SANITIZE.

set -euo pipefail

top=$(cd "$(dirname "$0")" && pwd)
sanitize=${SANITIZE:-0}
[ "$sanitize" = 1 ] && build_dir=${BUILD_DIR:-$top/build-san} \
                    || build_dir=${BUILD_DIR:-$top/build}
prefix=${RELAY_PREFIX:-$top/var}

# gcc's sanitizers: nginx itself is not built with them, so its processes
# get the runtimes preloaded (tests/run-all.sh) to load the module
san_flags="-fsanitize=address,undefined -fno-omit-frame-pointer"

packages=(
    nginx nginx-dev libnginx-mod-stream
    libpcre2-dev zlib1g-dev libssl-dev libcrypt-dev
    libc-ares-dev libidn2-dev libcurl4-openssl-dev libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
    libhiredis-dev redis-server
    protobuf-compiler protobuf-compiler-grpc
    python3-pytest python3-grpcio python3-protobuf python3-dkim python3-nacl
    prometheus python3-prometheus-client
    swaks postfix dnsmasq-base bind9-dnsutils openssl curl
    etcd-server etcd-client
    libio-socket-ssl-perl libnet-ssleay-perl make gcc
    debhelper dpkg-dev fakeroot lintian pkg-config python3
    man-db groff-base logrotate
    clang libclang-rt-14-dev
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

    local cc_san= ld_san=
    if [ "$sanitize" = 1 ]; then
        cc_san=" $san_flags"
        ld_san=" -fsanitize=address,undefined"
    fi

    if [ ! -f "$objs/Makefile" ] \
       || [ "$top/module/config" -nt "$objs/Makefile" ] \
       || [ "$top/lib/lib.mk" -nt "$objs/Makefile" ] \
       || [ "$top/VERSION" -nt "$objs/Makefile" ] \
       || ! grep -q "$RELAY_GEN_DIR" "$objs/Makefile"; then
        log "configuring"
        (
            cd "$src"
            # shellcheck disable=SC1091
            . ./conf_flags
            ./configure \
                --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)$cc_san" \
                --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC$ld_san" \
                "${NGX_CONF_FLAGS[@]}" \
                --with-stream --with-stream_ssl_module \
                --add-dynamic-module="$top/module" \
                --builddir="$objs"
        ) > "$build_dir/configure.log" 2>&1 \
            || { cat "$build_dir/configure.log" >&2; exit 1; }
    fi

    make -s -j2 -f "$objs/Makefile" -C "$src" modules >&2
    local sig
    sig=$(strings "$objs/ngx_stream_relay_module.so" | grep -E '^8,4,8,' \
          | sort -u || true)
    local want
    want=$(strings /usr/lib/nginx/modules/ngx_stream_module.so \
           | grep -E '^8,4,8,' | sort -u)
    if [ "$sig" != "$want" ]; then
        log "module signature $sig does not match nginx's $want"
        exit 1
    fi
}

build_controld() {
    if [ "$sanitize" = 1 ]; then
        CFLAGS="-O1 -g $san_flags" \
            make -s -C "$top/controld" BUILD_DIR="$build_dir" all >&2
    else
        make -s -C "$top/controld" BUILD_DIR="$build_dir" all >&2
    fi
}

# the manual pages, from README.md (deploy/man/mkman.py)
build_man() {
    /usr/bin/python3 "$top/deploy/man/mkman.py" "$top/README.md" \
        "$build_dir/man"
}

# The packages, as Debian builds them: the tree (without .git and the
# build folder) is copied to BUILD_DIR/deb/nginx-relay-VERSION, where
# deploy/debian becomes debian/ and gets a changelog entry for VERSION; then
# dpkg-buildpackage -b, and lintian, which must find no error.
build_deb() {
    local out=$build_dir/deb version src date rel
    version=$(sed -n 1p "$top/VERSION")
    src=$out/nginx-relay-$version
    rm -rf "$out"
    mkdir -p "$src"

    rel=${build_dir#"$top"/}
    tar -C "$top" --exclude-vcs --exclude="./$rel" --exclude=./var \
        --exclude=__pycache__ -cf - . | tar -C "$src" -xf -
    mv "$src/deploy/debian" "$src/debian"

    date=$(git -C "$top" log -1 --format=%cD 2>/dev/null || date -R)
    cat > "$src/debian/changelog" <<CHANGELOG
nginx-relay ($version) unstable; urgency=medium

  * nginx-relay $version, built from its source tree (VERSION).

 -- nginx-relay maintainers <maintainers@nginx-relay.invalid>  $date
CHANGELOG

    log "building the packages of nginx-relay $version in $out"
    if ! (cd "$src" && DEB_BUILD_OPTIONS="parallel=2 ${DEB_BUILD_OPTIONS:-}" \
              dpkg-buildpackage -b -us -uc) > "$out/build.log" 2>&1; then
        tail -n 40 "$out/build.log" >&2
        log "dpkg-buildpackage failed: $out/build.log"
        exit 1
    fi

    # errors fail the build; accepted warnings: deploy/debian/PACKAGING.md
    if ! lintian --fail-on error --display-info \
             "$out"/nginx-relay_"$version"_*.changes > "$out/lintian.log" 2>&1
    then
        cat "$out/lintian.log" >&2
        log "lintian found errors: $out/lintian.log"
        exit 1
    fi
    log "lintian: $(grep -c '^E:' "$out/lintian.log" || true) errors," \
        "$(grep -c '^W:' "$out/lintian.log" || true) warnings" \
        "($out/lintian.log)"
    ls "$out"/*.deb
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
    build_man
    ;;
run)
    install_deps
    build_module
    build_controld
    build_man
    exec "$top/deploy/run-dev.sh" "$prefix" \
        "$build_dir/objs/ngx_stream_relay_module.so" "$build_dir/controld"
    ;;
test)
    install_deps
    build_module
    build_controld
    if [ "$sanitize" = 1 ]; then
        # the packages are built without the sanitizers: not again here
        export RELAY_SANITIZE=1
    else
        build_man
        build_deb
    fi
    exec "$top/tests/run-all.sh" "$build_dir"
    ;;
test-deb)
    install_deps
    build_deb
    cd "$top"
    RELAY_DEB_DIR=$build_dir/deb /usr/bin/python3 -m pytest \
        -p no:cacheprovider -q tests/deb
    ;;
deb)
    install_deps
    build_deb
    ;;
fuzz)
    install_deps
    build_module
    build_controld
    exec "$top/tests/fuzz/run.sh" "$build_dir" "${2:-60}"
    ;;
*)
    echo "usage: $0 [build|run|test|fuzz [SECONDS]|deps|deb|test-deb]" >&2
    exit 2
    ;;
esac
