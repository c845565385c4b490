#!/usr/bin/env bash
# Makes sure the services the tests use answer: PostgreSQL (usage records, multi-instance
# option) on 127.0.0.1:5432 with trust auth and a database `test`, Redis (shared limits and
# budgets) on 127.0.0.1:6379, and Debian's Chromium for the dashboard's browser test. Installs and starts them from Debian packages when missing.
# Idempotent; prints what it did. SLMGATE_SKIP_SERVICES=1 skips everything.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SLMGATE_SKIP_SERVICES:-0}" = "1" ] && { echo "services: skipped"; exit 0; }

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

pg_ok() { psql -h 127.0.0.1 -U postgres -d test -tAc 'select 1' >/dev/null 2>&1; }

# --- PostgreSQL -------------------------------------------------------------------------
if pg_ok; then
  echo "services: PostgreSQL answers on 127.0.0.1:5432"
else
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "services: installing PostgreSQL (Debian package)"
    apt_install postgresql postgresql-client
  fi
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [ -z "$ver" ]; then
    echo "services: no PostgreSQL cluster found after install" >&2; exit 1
  fi
  conf=/etc/postgresql/$ver/main
  # Loopback TCP with trust auth, as the tests expect (a throwaway test server).
  if ! grep -q "slmgate-tests" "$conf/pg_hba.conf"; then
    $SUDO sh -c "printf '%s\n' '# slmgate-tests' 'host all all 127.0.0.1/32 trust' 'host all all ::1/128 trust' | cat - '$conf/pg_hba.conf' > /tmp/pg_hba.$$ && cp /tmp/pg_hba.$$ '$conf/pg_hba.conf' && rm /tmp/pg_hba.$$"
  fi
  $SUDO pg_ctlcluster "$ver" main start 2>/dev/null || $SUDO pg_ctlcluster "$ver" main restart
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -q && break; sleep 1; done
  $SUDO pg_ctlcluster "$ver" main reload || true
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c 'create database test' >/dev/null
  fi
  pg_ok || { echo "services: PostgreSQL still does not answer" >&2; exit 1; }
  echo "services: PostgreSQL started"
fi

# --- Redis (state.redis: shared rate limits and budgets) ------------------------------
redis_ok() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if redis_ok; then
  echo "services: Redis answers on 127.0.0.1:6379"
else
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "services: installing Redis (Debian package)"
    apt_install redis-server redis-tools
  fi
  # A throwaway test server: loopback only, no persistence.
  $SUDO redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 1 30); do redis_ok && break; sleep 0.2; done
  redis_ok || { echo "services: Redis still does not answer" >&2; exit 1; }
  echo "services: Redis started"
fi

# --- Chromium (dashboard browser test) ---------------------------------------------------
if command -v chromium >/dev/null 2>&1; then
  echo "services: $(chromium --version 2>/dev/null | head -1)"
else
  echo "services: installing Debian's chromium"
  apt_install chromium
fi
