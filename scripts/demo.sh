#!/bin/bash
# The demo: two Kubernetes clusters made of network namespaces (the lab,
# test/lab/), each with its own etcd, API stand-in, DNS, causeway helpers
# and pods wired by the causeway plugin through libcni.  It applies the
# rebel-base / x-wing manifests with the real kubectl, shows what the
# helpers publish and program, and proves pod-to-pod traffic across nodes
# in each cluster (VXLAN in cluster1, native routes in cluster2), then takes
# everything down and checks nothing is left.  The clusters are connected
# both ways (each helper reads the other cluster's etcd, read-only), so pods
# also reach each other by IP across clusters — step 6 of Cilium's
# ClusterMesh walkthrough.  Global services (steps 1-5) are not in yet: the
# demo says so where the walkthrough would show them.
set -euo pipefail
cd "$(dirname "$0")/.."

B=build
LAB=test/lab/lab
NAME=demo
TOPO=$(mktemp /tmp/causeway-demo.XXXXXX.yaml)

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

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

for c in cluster1 cluster2; do
	say "Every pod of $c reaches every other pod over TCP, across nodes (meshcheck)"
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

say "Remote clusters as cluster1-node1 sees them (causeway-helper clusters)"
"$LAB" helper cluster1 cluster1-node1 clusters

say "Every pod reaches every pod across the two clusters (meshcheck over 10 pods)"
"$LAB" status "$NAME" -o json | /usr/bin/python3 -c '
import json, sys
for c in json.load(sys.stdin)["clusters"]:
    for p in c["pods"]:
        if p.get("ip") and p.get("netns"):
            print("/run/netns/" + p["netns"], p["ip"])' > /tmp/causeway-demo-all.pods
"$B"/tools/meshcheck -a < /tmp/causeway-demo-all.pods
rm -f /tmp/causeway-demo-all.pods

say "An x-wing pod asks a rebel-base pod by IP, and resolves the Service name by DNS"
xwing=$(kubectl --context kind-cluster1 get pods -l name=x-wing \
	-o jsonpath='{.items[0].metadata.name}')
base_ip=$(kubectl --context kind-cluster1 get pods -l name=rebel-base \
	-o jsonpath='{.items[0].status.podIP}')
"$LAB" exec cluster1 "$xwing" curl -s "http://$base_ip/"
"$LAB" exec cluster1 "$xwing" getent hosts rebel-base

say "Not in yet: global services, affinity and failover (curl http://rebel-base/ across clusters)"

say "Taking the lab down (lab down checks nothing is left)"
"$LAB" down "$NAME"
trap - EXIT
rm -f "$TOPO"
say "Done"
