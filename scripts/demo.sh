#!/bin/bash
# The demo: Cilium's ClusterMesh walkthrough ("Load-balancing with Global
# Services", x-wing and rebel-base) on two Kubernetes clusters made of
# network namespaces (the lab, test/lab/), each with its own etcd, API
# stand-in, DNS, causeway helpers and pods wired by the causeway plugin
# through libcni, connected both ways (each helper reads the other
# cluster's etcd, read-only).  cluster1 tunnels (VXLAN) between its nodes,
# cluster2 routes natively.
#
# It applies test/lab/manifests/rebel-base.yaml to both clusters with the
# real kubectl, shows what the helpers publish and program, then runs the
# walkthrough, printing each kubectl command as a user types it and, after
# each step, which cluster answered requests from x-wing to rebel-base:
#
#   1. both clusters answer, from cluster1 and from cluster2
#   2. cluster2 scaled to 0: cluster1 answers everyone; scaled back
#   3. shared="false" on cluster1: cluster1 sees both, cluster2 only itself
#   4. affinity=local on cluster1: cluster1 stays home, cluster2 sees both;
#      cluster1 scaled to 0: cluster1 fails over to cluster2
#   5. affinity=remote on cluster1: cluster1 is served by cluster2 only
#   6. every pod reaches every pod by IP, in and across clusters (meshcheck)
#
# A tally is REQUESTS requests from x-wing (lab exec, standing in for the
# walkthrough's kubectl exec: the pod's resolv.conf, its cluster's DNS),
# taken once a bounded wait has seen the expected answers or given up.  The
# walkthrough sends 10; 20 makes "both clusters answer" (4 backends, 2 per
# cluster) fail by chance once in 500,000 rather than once in 500.  Then
# it takes everything down and checks nothing is left.  It exits non-zero
# if any tally is wrong (after the teardown) or anything else fails.
set -euo pipefail
cd "$(dirname "$0")/.."

B=build
LAB=test/lab/lab
NAME=demo
TOPO=$(mktemp /tmp/causeway-demo.XXXXXX.yaml)
REQUESTS=20
WRONG=()
DEAD=0   # set once a tally got no answer at all: later ones do not wait, and give up sooner

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# shown CMD...: print CMD as typed at a prompt, then run it.
shown() {
	printf '$ %s\n' "$*"
	"$@"
}

# shoot CLUSTER N: N requests from x-wing in CLUSTER to rebel-base, a new
# connection each; prints how many cluster1, cluster2 and nobody answered.
shoot() {
	"$LAB" exec "$1" deployment/x-wing -- sh -c \
		"i=0; while [ \$i -lt $2 ]; do curl -s -m $((2 - DEAD)) http://rebel-base/ || echo FAIL; echo; i=\$((i+1)); done" |
		awk '/"cluster":"cluster1"/ { a++ } /"cluster":"cluster2"/ { b++ } /^FAIL/ { f++ }
		     END { printf "%d %d %d\n", a, b, f }'
}

# right WANT C1 C2 NONE: whether a tally is what WANT (both, cluster1 or
# cluster2) says: every request answered, by both clusters or only WANT.
right() {
	[ "$4" -eq 0 ] || return 1
	case $1 in
	both) [ "$2" -gt 0 ] && [ "$3" -gt 0 ] ;;
	cluster1) [ "$2" -gt 0 ] && [ "$3" -eq 0 ] ;;
	cluster2) [ "$2" -eq 0 ] && [ "$3" -gt 0 ] ;;
	esac
}

# tally STEP CLUSTER WANT: wait up to 30 s for answers as WANT says, then
# print a tally of REQUESTS requests; a wrong one is remembered.
tally() {
	local step=$1 c=$2 want=$3 end=$((SECONDS + 30 * (1 - DEAD))) t
	until [ $DEAD = 1 ] || right "$want" $(shoot "$c" 6); do
		[ $SECONDS -lt $end ] || break
		sleep 1
	done
	printf '$ for i in $(seq 1 %d); do %s exec %s deployment/x-wing -- curl -s rebel-base; done\n' \
		"$REQUESTS" "$LAB" "$c"
	t=$(shoot "$c" "$REQUESTS")
	set -- $t
	[ "$3" -lt "$REQUESTS" ] || DEAD=1
	printf '  from %s: cluster1 answered %2d, cluster2 %2d, nobody %d (want: %s)' "$c" "$1" "$2" "$3" \
		"$([ "$want" = both ] && echo "both clusters" || echo "only $want")"
	if right "$want" $t; then
		printf '  \033[32mok\033[0m\n'
	else
		printf '  \033[31mWRONG\033[0m\n'
		WRONG+=("step $step, from $c: cluster1 $1, cluster2 $2, nobody $3; want $want")
	fi
}

# services: rebel-base as cluster1-node1 balances it (a failure is remembered).
services() {
	"$LAB" helper cluster1 cluster1-node1 services || WRONG+=("causeway-helper services failed")
}

# replicas CLUSTER N: wait until N rebel-base pods run there and none is terminating.
replicas() {
	local end=$((SECONDS + 90)) out
	while :; do
		out=$(kubectl --context "kind-$1" get pods -l name=rebel-base --no-headers 2>/dev/null || true)
		[ "$(grep -c ' Running ' <<<"$out" || true)" -eq "$2" ] &&
			[ "$(grep -c . <<<"$out" || true)" -eq "$2" ] && return 0
		[ $SECONDS -lt $end ] || { echo "demo: $1 never had $2 running rebel-base pods:" >&2; echo "$out" >&2; return 1; }
		sleep 0.5
	done
}

cleanup() {
	"$LAB" down "$NAME" >/dev/null 2>&1 || "$LAB" down "$NAME" || true
	rm -f "$TOPO"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root" >&2; exit 2; }
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
make -s all

cat > "$TOPO" <<EOF
name: $NAME
underlay: shared
clusters:
- name: cluster1
  id: 1
  podSubnet: 10.10.0.0/16
  serviceSubnet: 10.11.0.0/16
  routing: tunnel
  nodes: 2
- name: cluster2
  id: 2
  podSubnet: 10.20.0.0/16
  serviceSubnet: 10.21.0.0/16
  routing: native
  nodes: 2
EOF

say "Bringing up two clusters of two nodes (lab up)"
"$LAB" up "$TOPO"
eval "$("$LAB" env "$NAME")"

say "kubectl apply -f test/lab/manifests/rebel-base.yaml in both clusters"
for c in cluster1 cluster2; do
	kubectl --context "kind-$c" apply -f test/lab/manifests/rebel-base.yaml
done
for c in cluster1 cluster2; do
	kubectl --context "kind-$c" wait --for=condition=Ready pod --all --timeout=120s >/dev/null
	say "kubectl --context kind-$c get pods -o wide"
	kubectl --context "kind-$c" get pods -o wide
done

say "Helper status on cluster1-node1 (causeway-helper status)"
"$LAB" helper cluster1 cluster1-node1 status

say "Endpoints and identities the helper published (causeway-helper endpoints)"
"$LAB" helper cluster1 cluster1-node1 endpoints

say "cluster1-node1's ipcache (pod IP -> identity, VXLAN tunnel endpoint) and tunnel map"
"$LAB" helper cluster1 cluster1-node1 ipcache
"$LAB" helper cluster1 cluster1-node1 tunnels

say "cluster2-node1's native routes to the other node's PodCIDR (proto 193 = causeway)"
"$LAB" node cluster2 cluster2-node1 ip route show proto 193

say "Remote clusters as cluster1-node1 sees them (causeway-helper clusters)"
"$LAB" helper cluster1 cluster1-node1 clusters

say "Step 1: rebel-base is a global Service in both clusters; both clusters answer"
shown kubectl --context kind-cluster1 get service rebel-base \
	-o jsonpath='{.metadata.annotations.service\.cilium\.io/global}{"\n"}'
tally 1 cluster1 both
tally 1 cluster2 both
say "rebel-base as cluster1-node1 balances it (causeway-helper services)"
services

say "Step 2: no rebel-base left in cluster2: cluster1 serves both clusters"
shown kubectl --context kind-cluster2 scale deployment rebel-base --replicas=0
replicas cluster2 0
tally 2 cluster1 cluster1
tally 2 cluster2 cluster1
shown kubectl --context kind-cluster2 scale deployment rebel-base --replicas=2
replicas cluster2 2
tally 2 cluster2 both

say "Step 3: cluster1's rebel-base not shared: cluster1 sees both, cluster2 only itself"
shown kubectl --context kind-cluster1 annotate service rebel-base service.cilium.io/shared="false" --overwrite
tally 3 cluster1 both
tally 3 cluster2 cluster2
shown kubectl --context kind-cluster1 annotate service rebel-base service.cilium.io/shared-
tally 3 cluster2 both

say "Step 4: affinity local on cluster1: cluster1 stays home, cluster2 sees both"
shown kubectl --context kind-cluster1 annotate service rebel-base service.cilium.io/affinity=local --overwrite
tally 4 cluster1 cluster1
tally 4 cluster2 both
services
say "Step 4: ... and with no rebel-base left in cluster1, cluster1 fails over to cluster2"
shown kubectl --context kind-cluster1 scale deployment rebel-base --replicas=0
replicas cluster1 0
tally 4 cluster1 cluster2
shown kubectl --context kind-cluster1 scale deployment rebel-base --replicas=2
replicas cluster1 2
tally 4 cluster1 cluster1

say "Step 5: affinity remote on cluster1: cluster2 serves cluster1"
shown kubectl --context kind-cluster1 annotate service rebel-base service.cilium.io/affinity=remote --overwrite
tally 5 cluster1 cluster2
services
shown kubectl --context kind-cluster1 annotate service rebel-base service.cilium.io/affinity-
tally 5 cluster1 both

for c in cluster1 cluster2; do
	say "Step 6: every pod of $c reaches every other pod over TCP, across nodes (meshcheck)"
	"$LAB" status "$NAME" -o json | /usr/bin/python3 -c '
import json, sys
for c in json.load(sys.stdin)["clusters"]:
    if c["name"] == sys.argv[1]:
        for p in c["pods"]:
            if p.get("ip") and p.get("netns"):
                print("/run/netns/" + p["netns"], p["ip"])' "$c" > "/tmp/causeway-demo-$c.pods"
	"$B"/tools/meshcheck -a < "/tmp/causeway-demo-$c.pods"
	rm -f "/tmp/causeway-demo-$c.pods"
done

say "Step 6: every pod reaches every pod across the two clusters (meshcheck over 8 pods)"
"$LAB" status "$NAME" -o json | /usr/bin/python3 -c '
import json, sys
for c in json.load(sys.stdin)["clusters"]:
    for p in c["pods"]:
        if p.get("ip") and p.get("netns"):
            print("/run/netns/" + p["netns"], p["ip"])' > /tmp/causeway-demo-all.pods
"$B"/tools/meshcheck -a < /tmp/causeway-demo-all.pods
rm -f /tmp/causeway-demo-all.pods

say "An x-wing pod of cluster1 asks a rebel-base pod of cluster2 by IP, and resolves rebel-base by DNS"
base_ip=$(kubectl --context kind-cluster2 get pods -l name=rebel-base \
	-o jsonpath='{.items[0].status.podIP}')
shown "$LAB" exec cluster1 deployment/x-wing -- curl -s "http://$base_ip/"
echo
shown "$LAB" exec cluster1 deployment/x-wing -- getent hosts rebel-base

say "Taking the lab down (lab down checks nothing is left)"
"$LAB" down "$NAME"
trap - EXIT
rm -f "$TOPO"
if [ ${#WRONG[@]} -gt 0 ]; then
	printf '\n\033[1;31m%d wrong tally(ies):\033[0m\n' "${#WRONG[@]}" >&2
	printf '  %s\n' "${WRONG[@]}" >&2
	exit 1
fi
say "Done: every step answered as the walkthrough says"
