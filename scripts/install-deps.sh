#!/usr/bin/env bash
# Installs the Debian packages that tests, the demo and benchmarks use.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v ping >/dev/null || need+=(iputils-ping)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v gcc >/dev/null || need+=(gcc libc6-dev) # go test -race needs cgo
command -v git >/dev/null || need+=(git)
command -v make >/dev/null || need+=(make)
# `make bench` also splits the ADD path with perf (scripts/install-deps.sh bench).
if [ "${1:-}" = bench ]; then
	command -v perf >/dev/null || need+=(linux-perf)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing packages (${need[*]}); run as root to install them" >&2
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
