# Sourced by scripts that need a throwaway registry (try.sh, bench-wan.sh):
#
#   . scripts/lib/registry.sh
#   start_registry DIR      # Debian's docker-registry on a free 127.0.0.1 port, config,
#                           # storage and log under DIR; sets REGISTRY_PORT and REGISTRY_PID
#                           # and returns once /v2/ answers (non-zero, with the log, if not).
#   free_port               # prints a free 127.0.0.1 TCP port
#
# The caller stops it: kill "$REGISTRY_PID".

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_registry() {
  local dir=$1
  REGISTRY_PORT=$(free_port)
  mkdir -p "$dir/storage"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
  /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  REGISTRY_PID=$!
  local _
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "docker-registry did not start:" >&2
  cat "$dir/log" >&2
  return 1
}
