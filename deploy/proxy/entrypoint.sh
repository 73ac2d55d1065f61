#!/bin/sh
# nginx reads no environment variables: write its configuration from the template and the
# environment into /tmp (the root file system is read-only), check the values, then exec nginx.
set -eu

UPSTREAM=${UPSTREAM:-api:8000}
GRPC_UPSTREAM=${GRPC_UPSTREAM:-api:8081}
MAX_REQUEST_BYTES=${MAX_REQUEST_BYTES:-16777216}
TIMEOUT=${TIMEOUT:-30}
case $MAX_REQUEST_BYTES in ''|*[!0-9]*) echo "error: MAX_REQUEST_BYTES must be a number of bytes, got '$MAX_REQUEST_BYTES'" >&2; exit 2 ;; esac
case $TIMEOUT in ''|*[!0-9]*) echo "error: TIMEOUT must be a number of seconds, got '$TIMEOUT'" >&2; exit 2 ;; esac
case $UPSTREAM in *[!A-Za-z0-9.:_-]*|'') echo "error: UPSTREAM must be HOST:PORT, got '$UPSTREAM'" >&2; exit 2 ;; esac
case $GRPC_UPSTREAM in *[!A-Za-z0-9.:_-]*|'') echo "error: GRPC_UPSTREAM must be HOST:PORT, got '$GRPC_UPSTREAM'" >&2; exit 2 ;; esac
case $(printf %s "${ACCESS_LOG:-false}" | tr 'A-Z' 'a-z') in
  1|true|yes|on) ACCESS_LOG_DIRECTIVE='/dev/stdout json' ;;
  *) ACCESS_LOG_DIRECTIVE=off ;;
esac
# The container network's DNS server (docker: 127.0.0.11; podman: the network's gateway): nginx
# asks it for UPSTREAM's addresses every few seconds, so scaled replicas all get traffic.
RESOLVER=${RESOLVER:-$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf)}
case $RESOLVER in
  '') echo "error: no nameserver in /etc/resolv.conf; set RESOLVER" >&2; exit 2 ;;
  *:*) RESOLVER="[$RESOLVER]" ;;  # IPv6
esac

sed -e "s|@UPSTREAM@|$UPSTREAM|g" \
    -e "s|@GRPC_UPSTREAM@|$GRPC_UPSTREAM|g" \
    -e "s|@MAX_REQUEST_BYTES@|$MAX_REQUEST_BYTES|g" \
    -e "s|@READ_TIMEOUT@|$((TIMEOUT + 5))|g" \
    -e "s|@RESOLVER@|$RESOLVER|g" \
    -e "s|@ACCESS_LOG@|$ACCESS_LOG_DIRECTIVE|g" \
    /etc/nginx/digits.conf.template > /tmp/nginx.conf
exec nginx -e stderr -c /tmp/nginx.conf -g 'daemon off;'
