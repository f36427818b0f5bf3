#!/usr/bin/env bash
# Docker for the container tests (tests/e2e/container.rs).
#   .ci/docker.sh start   installs docker.io from the OS packages when dockerd is missing and
#                         starts dockerd (no iptables, no bridge: the tests use --network host),
#                         unless a daemon already answers
#   .ci/docker.sh stop    stops the daemon `start` started, by its pid
# Failure is not fatal for CI: without docker the container tests run their checks on the static
# binary and say why.
set -uo pipefail
cd "$(dirname "$0")/.."
pidfile="${CARGO_TARGET_DIR:-target}/ci-dockerd.pid"

case "${1:-}" in
  start)
    if docker info >/dev/null 2>&1; then
      echo "docker: a daemon is already running"
      exit 0
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
      sudo=""
      [ "$(id -u)" = 0 ] || sudo="sudo -n"
      echo "docker: installing docker.io"
      { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker.io; } >/dev/null 2>&1 \
        || { echo "docker: cannot install docker.io"; exit 1; }
    fi
    mkdir -p "$(dirname "$pidfile")"
    log="${CARGO_TARGET_DIR:-target}/ci-dockerd.log"
    dockerd --iptables=false --bridge=none >"$log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 60); do
      if docker info >/dev/null 2>&1; then echo "docker: dockerd started (pid $(cat "$pidfile"))"; exit 0; fi
      kill -0 "$(cat "$pidfile")" 2>/dev/null || break
      sleep 0.5
    done
    echo "docker: dockerd did not start; last lines of $log:"
    tail -5 "$log"
    kill "$(cat "$pidfile")" 2>/dev/null
    rm -f "$pidfile"
    exit 1
    ;;
  stop)
    [ -f "$pidfile" ] || exit 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    rm -f "$pidfile"
    echo "docker: dockerd stopped"
    ;;
  *)
    echo "usage: .ci/docker.sh start|stop" >&2
    exit 2
    ;;
esac
