#!/bin/sh
#
# Development certificates for controld's mTLS, made with openssl:
#
#   deploy/dev-certs.sh DIR [NODE-ID ...]        (default node: node1)
#
#   DIR/ca.pem, ca.key                 the dev CA (10 years)
#   DIR/controld.pem, controld.key     server: SAN DNS:localhost, IP:127.0.0.1
#   DIR/node-ID.pem, node-ID.key       client: CN node:ID
#   DIR/operator.pem, operator.key     client: CN operator:admin
#
# Idempotent: existing files are kept, missing ones are made (a new node id
# on a later run gets its certificate from the same CA).  Development only:
# the keys are not encrypted.

set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 DIR [NODE-ID ...]" >&2
    exit 2
fi

dir=$1
shift
[ $# -gt 0 ] || set -- node1

mkdir -p "$dir"
umask 077

ext=$(mktemp)
trap 'rm -f "$ext" "$dir"/*.csr' EXIT

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" \
        -subj "/CN=relay controld dev CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    # a new CA invalidates every certificate made by the old one
    rm -f "$dir/controld.pem" "$dir/operator.pem" "$dir"/node-*.pem
fi

issue() {   # issue NAME CN EKU [SAN]
    name=$1 cn=$2 eku=$3 san=${4:-}

    [ -s "$dir/$name.pem" ] && [ -s "$dir/$name.key" ] && return 0

    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$eku"
        [ -n "$san" ] && echo "subjectAltName=$san"
    } > "$ext"

    openssl req -newkey rsa:2048 -nodes -keyout "$dir/$name.key" \
        -out "$dir/$name.csr" -subj "/CN=$cn" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" \
        -CAkey "$dir/ca.key" -CAcreateserial -days 825 \
        -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
    rm -f "$dir/$name.csr"
    echo "$dir/$name.pem: CN $cn"
}

issue controld "controld" serverAuth "DNS:localhost,IP:127.0.0.1"
issue operator "operator:admin" clientAuth

for id in "$@"; do
    case $id in
    *[!A-Za-z0-9._-]*|'')
        echo "$0: node id \"$id\": only [A-Za-z0-9._-]" >&2
        exit 2
        ;;
    esac

    issue "node-$id" "node:$id" clientAuth
done
