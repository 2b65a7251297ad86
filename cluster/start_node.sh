#!/usr/bin/env bash
# Start this machine as a node of the real cluster, as topology/nodes.yaml defines it.
#   cluster/start_node.sh titan                  # the head (GCS on 6390: Redis owns 6379)
#   HEAD=<titan-ip>:6390 cluster/start_node.sh panda
# Ray 2.60 cluster token auth: every node and every ray/serve command needs the
# same token. It is read from $RAY_AUTH_TOKEN, else ~/.her-serve/ray-auth-token
# (made on Titan on first start: copy that file to Panda with scp).
set -euo pipefail
node=${1:?usage: start_node.sh titan|panda}
token_file=${HER_SERVE_TOKEN_FILE:-$HOME/.her-serve/ray-auth-token}
if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  if [ ! -f "$token_file" ]; then
    [ "$node" = titan ] || { echo "no token: copy $token_file from Titan first" >&2; exit 2; }
    mkdir -p "$(dirname "$token_file")"; (umask 077; python3 -c 'import secrets; print(secrets.token_hex(32))' >"$token_file")
  fi
  RAY_AUTH_TOKEN=$(cat "$token_file")
fi
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN
# Notice a dead node in ~1.5 s instead of ~30 s (TTS failover depends on it).
export RAY_health_check_period_ms=500 RAY_health_check_timeout_ms=1000 RAY_health_check_failure_threshold=3
# Serve's throughput-optimized mode: this node's Gateway answers HTTP itself on :30000
# (direct ingress; the proxy on :8000 stays on Titan as a fallback), gRPC between
# replicas, buffered request logs (docs/performance.md).
export RAY_SERVE_THROUGHPUT_OPTIMIZED=${RAY_SERVE_THROUGHPUT_OPTIMIZED:-1}
# gRPC between replicas refuses messages over 4 MiB by default; an upload (25 MiB) must pass.
export RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH=67108864
# A proxy slow to start (a busy machine) is waited for, not killed after 5 s.
export RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S=30
if [ "$node" = titan ]; then
  # GCS fault tolerance: the head keeps cluster state in the Redis already on Titan,
  # so a restarted head picks up the running cluster instead of starting a new one.
  export RAY_REDIS_ADDRESS=${RAY_REDIS_ADDRESS:-127.0.0.1:6379}
  export RAY_external_storage_namespace=${RAY_external_storage_namespace:-her-serve}
else
  # While Titan is down, Panda's raylet, proxy and replicas keep serving what they
  # can (TTS for the phone) and wait this long for the head before giving up.
  export RAY_gcs_rpc_server_reconnect_timeout_s=${RAY_gcs_rpc_server_reconnect_timeout_s:-3600}
fi
cd "$(dirname "$0")/.."
cmd=$(python3 -m cluster.start_node "$node" "${HEAD:-}")
echo "+ $cmd"
eval "$cmd"
