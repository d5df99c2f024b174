# rtun's two roles on loopback, for the bench scripts that run them (run.sh, ab.sh, pgo.sh,
# instructions.sh): sourced, not executed. A responder and an initiator of one node, the
# initiator's one route going to a local service at SERVICE_PORT over HTTP/1.1. The caller
# owns PIDS (an array it kills on exit): every process started here is added to it.
#
#   free_port                          a free TCP port on 127.0.0.1
#   roles_config DIR NAME SHARDS SERVICE_PORT TUNNEL_PORT EGRESS_PORT NODE
#                [RESPONDER_LINES] [INITIATOR_LINES] [TUNNEL_TLS_LINES] [LISTENER_TLS_LINES]
#                                      writes DIR/NAME-responder.yaml and DIR/NAME-initiator.yaml;
#                                      the optional YAML lines go at the top level of each file
#                                      (an admin listener, say), under the initiator's
#                                      `responder` cluster and under the tunnel listener
#   roles_start BIN DIR NAME LOG_DIR [WRAPPER...]
#                                      starts both roles of binary BIN with those files
#                                      (RUST_LOG=warn, logs in LOG_DIR/NAME-<role>.log; under
#                                      WRAPPER, valgrind say, with RTUN_BENCH_ROLE set to the
#                                      role); sets ROLE_R and ROLE_I to their pids
#   roles_ready URL NODE [SECONDS]     waits (default 20 s) for URL to answer 200 for NODE

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

roles_config() {
  local dir=$1 name=$2 shards=$3 svc=$4 tun=$5 egr=$6 node=$7
  local r_lines=${8:-} i_lines=${9:-} client_tls=${10:-} server_tls=${11:-}
  cat >"$dir/$name-responder.yaml" <<EOF
shards: $shards
$r_lines
responder:
  tunnel_listener:
    listen: 127.0.0.1:$tun
    max_tunnels: 20000
$server_tls
  egress_listener:
    listen: 127.0.0.1:$egr
    routes: [{ prefix: / }]
EOF
  cat >"$dir/$name-initiator.yaml" <<EOF
shards: $shards
$i_lines
node: { id: $node, cluster: bench, tenant: bench }
clusters:
  service:
    endpoints: ["127.0.0.1:$svc"]
    protocol: http1
    max_idle_per_shard: 256
  responder:
    endpoints: ["127.0.0.1:$tun"]
$client_tls
initiator:
  tunnels: [{ cluster: responder, connections: $shards }]
  routes: [{ prefix: /, cluster: service }]
EOF
}

roles_start() {
  local bin=$1 dir=$2 name=$3 logs=$4
  shift 4
  RTUN_BENCH_ROLE=responder RUST_LOG=warn "$@" "$bin" run -c "$dir/$name-responder.yaml" \
    >"$logs/$name-responder.log" 2>&1 &
  ROLE_R=$!; PIDS+=("$ROLE_R")
  RTUN_BENCH_ROLE=initiator RUST_LOG=warn "$@" "$bin" run -c "$dir/$name-initiator.yaml" \
    >"$logs/$name-initiator.log" 2>&1 &
  ROLE_I=$!; PIDS+=("$ROLE_I")
}

roles_ready() {
  local url=$1 node=$2 tries=$((${3:-20} * 10))
  for _ in $(seq 1 "$tries"); do
    curl -fs -o /dev/null -m 1 -H "x-node-id: $node" "$url" && return 0
    sleep 0.1
  done
  return 1
}
