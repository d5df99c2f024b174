# The bench's nginx configurations, for the bench scripts that run nginx (run.sh: the nginx
# setup and the --cross-check backend; instructions.sh: the nginx baseline): sourced, not
# executed. One shape for all of them: one worker, not a daemon, `user root` when run as root,
# the pid file, error log and temp directories in the instance's own directory, no access log,
# client connections kept alive for the whole run, up to 256 h2 streams per connection.
#
#   nginx_conf FILE DIR MASTER HTTP_LINES
#                                      writes FILE: that shape, with DIR/nginx.pid,
#                                      DIR/error.log and DIR/{body,proxy,fcgi,uwsgi,scgi} (nginx
#                                      makes those; DIR must exist); MASTER on|off (off: one
#                                      process, no master, as under callgrind); HTTP_LINES (the
#                                      upstreams and servers, from the functions below or
#                                      written out) go at the end of the http block
#   nginx_upstream NAME PORT           prints an upstream NAME: 127.0.0.1:PORT, a keep-alive
#                                      pool of 256 connections, each kept for 10^8 requests
#   nginx_proxy UPSTREAM               prints the directives that proxy a location to UPSTREAM
#                                      over HTTP/1.1 on the pool's kept-alive connections
#   nginx_bulk_locations UPSTREAM      prints the bulk loads' locations (/bytes/, /upload)
#                                      proxying to UPSTREAM unbuffered, for LOCATIONS below
#   nginx_proxy_server LISTEN UPSTREAM [LOCATIONS]
#                                      prints a server on LISTEN ("127.0.0.1:PORT [http2]")
#                                      proxying / to UPSTREAM, then LOCATIONS (more location
#                                      blocks, written out)

nginx_conf() {
  local file=$1 dir=$2 master=$3 lines=$4
  {
    [ "$(id -u)" = 0 ] && echo "user root;"
    [ "$master" = off ] && echo "master_process off;"
    cat <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  http2_max_concurrent_streams 256;
$lines
}
EOF
  } >"$file"
}

nginx_upstream() {
  cat <<EOF
  upstream $1 {
    server 127.0.0.1:$2;
    keepalive 256;
    keepalive_requests 100000000;
  }
EOF
}

nginx_proxy() {
  echo "proxy_pass http://$1; proxy_http_version 1.1; proxy_set_header Connection \"\";"
}

nginx_bulk_locations() {
  local prx; prx=$(nginx_proxy "$1")
  printf '\n    location /bytes/ { %s proxy_buffering off; }\n    location /upload { %s proxy_request_buffering off; client_max_body_size 0; }' "$prx" "$prx"
}

nginx_proxy_server() {
  cat <<EOF
  server {
    listen $1;
    location / { $(nginx_proxy "$2") }${3:-}
  }
EOF
}
