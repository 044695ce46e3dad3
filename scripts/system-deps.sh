#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use, once (idempotent, needs root or sudo).
set -euo pipefail
need=()
command -v swaks >/dev/null || need+=(swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(npm)
command -v smtp-sink >/dev/null || [[ -x /usr/sbin/smtp-sink ]] || need+=(postfix)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
# the PostgreSQL store's tests start a throwaway server from /usr/lib/postgresql/*/bin (tests/pg_server.py)
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || need+=(postgresql)
((${#need[@]})) || exit 0
SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# postfix: binaries only (smtp-source, smtp-sink, a private instance in bench/); no system MTA.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
# never start system services from package scripts
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
