#!/bin/sh
# The image's entrypoint: writes this node's configuration file from the cluster's shared
# template, then runs `smarthost` with the arguments given (`ingress --config FILE`, ...).
#
# The template is a complete configuration file (docs/configuration.md) in which three quoted
# placeholders stand for what differs from node to node:
#   "@NODE_ID@"      node.id: $SMARTHOST_NODE_ID, else the host name (a Kubernetes pod's name,
#                    which a StatefulSet keeps stable: delivery-0, delivery-1, ...)
#   "@NODE_IP@"      the address in node.admin_listen, which other nodes reach it at (the node
#                    registry announces it): $SMARTHOST_NODE_IP, else the host name's first
#                    address; an IPv6 address is put in brackets
#   "@ADMIN_TOKEN@"  node.admin_token: the contents of $SMARTHOST_ADMIN_TOKEN_FILE
#                    (a mounted Secret), of letters, digits and . _ ~ + / = - (hex or
#                    base64, as `openssl rand -hex 32` prints it)
# Files: $SMARTHOST_CONFIG_TEMPLATE (default /etc/smarthost/config/cluster.yaml.in) is read,
# $SMARTHOST_CONFIG (default /run/smarthost/cluster.yaml) written, mode 0600. Without a
# template nothing is written and the arguments run as they are.
#
# `smarthost-entrypoint --render-only` writes the file and exits: after a changed ConfigMap,
# `kubectl exec POD -- sh -c 'smarthost-entrypoint --render-only && kill -HUP 1'` makes a
# delivery node reload its limits and shaping rules.
set -eu

template=${SMARTHOST_CONFIG_TEMPLATE:-/etc/smarthost/config/cluster.yaml.in}
config=${SMARTHOST_CONFIG:-/run/smarthost/cluster.yaml}
token_file=${SMARTHOST_ADMIN_TOKEN_FILE:-/etc/smarthost/secret/admin_token}

fail() { echo "smarthost-entrypoint: $*" >&2; exit 2; }
# The value as sed's replacement text: | (the delimiter), & and \ escaped.
escaped() { printf '%s' "$1" | sed -e 's/[|&\\]/\\&/g'; }

render() {
  node_id=${SMARTHOST_NODE_ID:-${HOSTNAME:-$(cat /proc/sys/kernel/hostname)}}
  node_ip=${SMARTHOST_NODE_IP:-$(hostname -i 2>/dev/null | cut -d' ' -f1)}
  [ -n "$node_ip" ] || fail "no address for @NODE_IP@: set SMARTHOST_NODE_IP"
  case "$node_ip" in *:*) node_ip="[$node_ip]" ;; esac
  token=""
  if grep -q '@ADMIN_TOKEN@' "$template"; then
    [ -r "$token_file" ] || fail "$template uses @ADMIN_TOKEN@ but $token_file cannot be read (mount the admin token Secret)"
    token=$(tr -d '\r\n' <"$token_file")
    case "$token" in
      "" | *[!A-Za-z0-9._~+/=-]*) fail "$token_file: expected letters, digits and . _ ~ + / = - only (openssl rand -hex 32)" ;;
    esac
  fi
  mkdir -p "$(dirname "$config")"
  umask 077
  sed -e "s|@NODE_ID@|$(escaped "$node_id")|g" -e "s|@NODE_IP@|$(escaped "$node_ip")|g" \
      -e "s|@ADMIN_TOKEN@|$(escaped "$token")|g" "$template" >"$config.new"
  mv "$config.new" "$config"
}

if [ -f "$template" ]; then render; fi
if [ "${1:-}" = "--render-only" ]; then exit 0; fi
exec smarthost "$@"
