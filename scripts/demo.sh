#!/bin/bash
# Single-node demo: a container runtime's view.  Three pods are wired by the
# causeway plugin through libcni (the library containerd and CRI-O use), they
# reach each other over the BPF datapath, and DEL takes everything away.
set -euo pipefail
cd "$(dirname "$0")/.."

B=build
ROOT=/sys/fs/bpf/causeway-demo
STATE=$(mktemp -d /tmp/causeway-demo.XXXXXX)
PODS=(frontend backend cache)
NETNS_PREFIX=cwdemo

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
	for p in "${PODS[@]}"; do
		"$B"/cnirunner --path "$PWD/$B:/usr/lib/cni" --cache-dir "$STATE/cache" \
			--conflist "$STATE/net.conflist" del "demo-$p" "/var/run/netns/$NETNS_PREFIX-$p" eth0 \
			>/dev/null 2>&1 || true
		ip netns del "$NETNS_PREFIX-$p" 2>/dev/null || true
	done
	"$B"/causeway-helper unload --bpf-root "$ROOT" 2>/dev/null || true
	rm -rf "$STATE"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root" >&2; exit 2; }
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
make -s all

cat > "$STATE/net.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "causeway-demo",
  "plugins": [
    { "type": "causeway", "podCIDR": "10.244.7.0/24", "mtu": 1500,
      "bpfRoot": "$ROOT", "stateDir": "$STATE", "logFile": "$STATE/cni.log", "logLevel": "info" }
  ]
}
JSON
say "Network config (what /etc/cni/net.d would hold)"
cat "$STATE/net.conflist"

declare -A IP
say "ADD: three pods, each in its own network namespace, through libcni"
for p in "${PODS[@]}"; do
	ip netns add "$NETNS_PREFIX-$p"
	ip -n "$NETNS_PREFIX-$p" link set lo up
	start=$(date +%s%N)
	res=$("$B"/cnirunner --path "$PWD/$B:/usr/lib/cni" --cache-dir "$STATE/cache" \
		--conflist "$STATE/net.conflist" add "demo-$p" "/var/run/netns/$NETNS_PREFIX-$p" eth0 \
		--args "K8S_POD_NAMESPACE=default;K8S_POD_NAME=$p")
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	IP[$p]=$(printf '%s' "$res" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
	host=$(printf '%s' "$res" | python3 -c 'import json,sys; print(json.load(sys.stdin)["interfaces"][0]["name"])')
	printf '  %-9s %-12s host veth %s  (ADD took %d ms)\n' "$p" "${IP[$p]}" "$host" "$ms"
done

say "Inside the frontend pod: its address, routes and gateway neighbour"
ip -n "$NETNS_PREFIX-frontend" -br addr show eth0
ip -n "$NETNS_PREFIX-frontend" route
ip -n "$NETNS_PREFIX-frontend" neigh show dev eth0

say "Endpoint map the BPF programs use (causeway-helper bpf-endpoints)"
"$B"/causeway-helper bpf-endpoints --bpf-root "$ROOT"

say "Every pod pings every other pod"
ok=0; total=0
for a in "${PODS[@]}"; do
	for b in "${PODS[@]}"; do
		[ "$a" = "$b" ] && continue
		total=$((total + 1))
		if ip netns exec "$NETNS_PREFIX-$a" ping -c1 -W2 "${IP[$b]}" >/dev/null; then
			ok=$((ok + 1)); printf '  %-9s -> %-9s ok\n' "$a" "$b"
		else
			printf '  %-9s -> %-9s FAILED\n' "$a" "$b"
		fi
	done
done

say "TCP between every ordered pair of pods (meshcheck)"
for p in "${PODS[@]}"; do echo "/var/run/netns/$NETNS_PREFIX-$p ${IP[$p]}"; done |
	"$B"/tools/meshcheck -a -t 10

say "Datapath counters (causeway-helper metrics): forwarded by BPF redirect, drops by reason"
"$B"/causeway-helper metrics --bpf-root "$ROOT"

say "DEL every pod"
for p in "${PODS[@]}"; do
	"$B"/cnirunner --path "$PWD/$B:/usr/lib/cni" --cache-dir "$STATE/cache" \
		--conflist "$STATE/net.conflist" del "demo-$p" "/var/run/netns/$NETNS_PREFIX-$p" eth0
	ip netns del "$NETNS_PREFIX-$p"
done
left_veth=$(ip -br link | grep -c '^cw' || true)
left_ips=$(find "$STATE/ipam" -type f -name '10.*' | wc -l)
left_eps=$("$B"/causeway-helper bpf-endpoints --bpf-root "$ROOT" -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
printf '  veths left: %s, IP allocations left: %s, endpoint map entries left: %s\n' \
	"$left_veth" "$left_ips" "$left_eps"

say "Result: $ok of $total pings answered"
[ "$ok" -eq "$total" ] && [ "$left_ips" -eq 0 ] && [ "$left_eps" -eq 0 ]
