#!/bin/sh
# Install every Debian package Causeway's build, tests, demo and benchmarks use.
# Idempotent: a machine that has them all does nothing but check.
set -eu

PKGS="build-essential pkg-config clang llvm libbpf-dev bpftool libcjson-dev
libcurl4-openssl-dev libsodium-dev libnl-3-dev libnl-route-3-dev libnl-genl-3-dev
libcmocka-dev libclang-rt-14-dev golang-go golang-github-appc-cni-dev
containernetworking-plugins iproute2 iptables nftables iputils-ping iperf3 sockperf
python3 python3-pytest python3-yaml etcd-server etcd-client dnsmasq curl jq openssl procps"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
# kubectl: kept if present (the lab wants 1.32); Debian's client otherwise.
command -v kubectl >/dev/null 2>&1 || missing="$missing kubernetes-client"

if [ -n "$missing" ]; then
	echo "deps: installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
echo "deps: all present"
