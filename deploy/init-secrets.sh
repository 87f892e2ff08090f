#!/usr/bin/env bash
# Creates the secret files deploy/compose.yaml mounts, once: the internal token, the PostgreSQL
# password and URL, and an API keys file with one development key (all scopes), which is
# printed once and kept in dev-api-key beside them. Existing files are left alone.
#
#   deploy/init-secrets.sh [DIR]        (default deploy/secrets; TRINE_GATEWAY_BIN, else go run)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$repo/deploy/secrets}"
umask 077
mkdir -p "$dir"

random() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
# Secret files are bind-mounted into containers that run as non-root users, so they must be
# readable by others; the directory itself stays private to you.
write() { [ -s "$dir/$1" ] || { printf '%s\n' "$2" > "$dir/$1"; chmod 0644 "$dir/$1"; }; }

write internal_token "$(random)"
write postgres_password "$(random)"
write database_url "postgresql://trine:$(head -n1 "$dir/postgres_password")@postgres:5432/trine"

if [ ! -s "$dir/keys.json" ]; then
  gateway=("${TRINE_GATEWAY_BIN:-$repo/bin/trine-gateway}")
  if [ ! -x "${gateway[0]}" ]; then
    # -trimpath as `make gateway` builds, so the two share Go's build cache.
    gateway=(go -C "$repo/gateway" run -trimpath ./cmd/trine-gateway)
  fi
  out="$("${gateway[@]}" keys create --keys-file "$dir/keys.json" --id dev \
    --name "compose development key" --scopes rag,ingest,sandbox,jobs,admin)"
  chmod 0644 "$dir/keys.json"
  printf '%s\n' "$out" > "$dir/dev-api-key"
  echo "$out"
fi
echo "init-secrets: secrets in $dir"
