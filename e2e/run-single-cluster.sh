#!/usr/bin/env bash
# One kind cluster with causeway as its CNI; two pods on one worker reach
# each other over HTTP, and the node reaches both.
#
#   e2e/run-single-cluster.sh
#
# Environment:
#   CLUSTER=causeway   kind cluster name (kubectl context kind-$CLUSTER)
#   KEEP=1             leave the cluster up afterwards (default: delete it)
#   IMAGE=causeway/causeway:dev
#   NODE_LIBS=no       fail, instead of installing the plugin's shared
#                      libraries on the kind nodes when they lack them
#
# Same-node only for now: cross-node pod routing is not in the plugin yet.
# Needs docker (a working daemon), kind and kubectl; exits 2 with a message
# when any is missing, 1 when a check fails.
set -euo pipefail

CLUSTER=${CLUSTER:-causeway}
KEEP=${KEEP:-0}
IMAGE=${IMAGE:-causeway/causeway:dev}
NS=causeway-e2e

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ctx="kind-$CLUSTER"

say() { printf 'e2e: %s\n' "$*"; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }

# --- prerequisites -----------------------------------------------------------
missing=()
for tool in docker kind kubectl make; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
	printf 'e2e: cannot run: %s not installed (needs docker, kind, kubectl, make)\n' \
		"${missing[*]}" >&2
	exit 2
fi
if ! docker info >/dev/null 2>&1; then
	echo "e2e: cannot run: docker is installed but no daemon answers (docker info failed)" >&2
	exit 2
fi
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
	echo "e2e: cannot run: a kind cluster named $CLUSTER exists; delete it" \
		"(kind delete cluster --name $CLUSTER) or set CLUSTER=another-name" >&2
	exit 2
fi

k() { kubectl --context "$ctx" "$@"; }

created=0
cleanup() {
	local rc=$?
	if [[ $created -eq 1 ]]; then
		if [[ $KEEP == 1 ]]; then
			say "KEEP=1: cluster $CLUSTER left up (kubectl --context $ctx ...;" \
				"kind delete cluster --name $CLUSTER when done)"
		else
			say "deleting cluster $CLUSTER"
			kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
		fi
	fi
	[[ -n ${build_ctx:-} ]] && rm -rf "$build_ctx"
	exit "$rc"
}
trap cleanup EXIT

# Shown when something fails, so a CI log says why without a rerun.
diagnose() {
	say "--- diagnostics"
	k get nodes -o wide || true
	k -n causeway-system get pods -o wide || true
	k -n causeway-system logs ds/causeway -c install-cni --tail=50 || true
	k -n causeway-system logs ds/causeway -c causeway --tail=50 || true
	k -n "$NS" get pods -o wide || true
	k -n "$NS" describe pods || true
	if [[ -n ${worker:-} ]]; then
		docker exec "$worker" sh -c 'tail -n 50 /var/log/causeway-cni.log' || true
	fi
}

# --- build -------------------------------------------------------------------
say "building (make)"
make -C "$repo" -s
for f in causeway causeway-helper; do
	[[ -x $repo/build/$f ]] || die "make did not produce build/$f"
done

# A context of two files, not the whole tree.
build_ctx=$(mktemp -d)
mkdir -p "$build_ctx/build"
cp "$repo/build/causeway" "$repo/build/causeway-helper" "$build_ctx/build/"
say "building image $IMAGE"
docker build -q -f "$here/Dockerfile" -t "$IMAGE" "$build_ctx" >/dev/null

# --- cluster -----------------------------------------------------------------
say "creating kind cluster $CLUSTER"
created=1
kind create cluster --name "$CLUSTER" --config "$here/kind-cluster.yaml" --wait 0s
kind load docker-image "$IMAGE" --name "$CLUSTER"

say "installing causeway (kubectl apply -k manifests/)"
k apply -k "$repo/manifests/"
if ! k -n causeway-system rollout status ds/causeway --timeout=240s; then
	diagnose
	die "DaemonSet causeway did not become ready"
fi

worker=$(k get nodes -l '!node-role.kubernetes.io/control-plane' \
	-o jsonpath='{.items[0].metadata.name}')
[[ -n $worker ]] || die "no worker node found"
pod_cidr=$(k get node "$worker" -o jsonpath='{.spec.podCIDR}')
say "worker $worker, podCIDR $pod_cidr"

# The plugin runs on the node itself, not in the image: it must find its
# shared libraries there, and a kind node image does not have libbpf and
# friends.  Until the plugin is linked statically, install them on each node
# (kind nodes are Debian 12) unless NODE_LIBS=no, and say so.
plugin_version() { # plugin_version NODE: the plugin's VERSION answer on NODE
	docker exec "$1" sh -c \
		'echo "{\"cniVersion\":\"1.0.0\"}" | CNI_COMMAND=VERSION /opt/cni/bin/causeway' 2>&1
}
for node in $(kind get nodes --name "$CLUSTER"); do
	if out=$(plugin_version "$node"); then
		say "plugin on $node: $out"
		continue
	fi
	say "the plugin does not run on node $node: $out"
	docker exec "$node" ldd /opt/cni/bin/causeway | grep 'not found' || true
	if [[ ${NODE_LIBS:-install} == no ]]; then
		die "causeway cannot run on kind node $node (NODE_LIBS=no)"
	fi
	say "WARNING: installing the plugin's shared libraries on $node with apt-get;" \
		"a real node would need the same, or a statically linked plugin"
	docker exec "$node" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends libbpf1 libcjson1 libelf1 zlib1g \
		libnl-3-200 libnl-route-3-200 >/dev/null' ||
		die "could not install the plugin's libraries on $node"
	out=$(plugin_version "$node") || die "the plugin still does not run on $node: $out"
	say "plugin on $node: $out"
done

if ! k wait --for=condition=Ready "node/$worker" --timeout=180s; then
	diagnose
	die "node $worker did not become Ready with causeway installed"
fi

# --- two pods on one worker --------------------------------------------------
say "starting pods pod-a and pod-b on $worker"
k create namespace "$NS" >/dev/null
for name in pod-a pod-b; do
	k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: $NS
  labels: {app: causeway-e2e}
spec:
  nodeName: $worker
  terminationGracePeriodSeconds: 1
  containers:
    - name: web
      image: $IMAGE
      imagePullPolicy: Never
      command: ["/bin/sh", "-c"]
      args:
        - "mkdir -p /www && echo $name > /www/index.html && exec busybox httpd -f -p 8080 -h /www"
EOF
done
if ! k -n "$NS" wait --for=condition=Ready pod/pod-a pod/pod-b --timeout=120s; then
	diagnose
	die "pods did not become Ready"
fi

ip_a=$(k -n "$NS" get pod pod-a -o jsonpath='{.status.podIP}')
ip_b=$(k -n "$NS" get pod pod-b -o jsonpath='{.status.podIP}')
say "pod-a $ip_a, pod-b $ip_b"

ip2int() {
	local a b c d
	IFS=. read -r a b c d <<<"$1"
	echo $(((a << 24) | (b << 16) | (c << 8) | d))
}
in_cidr() { # in_cidr IP CIDR: prints yes or no
	local ip net len mask
	ip=$(ip2int "$1")
	net=$(ip2int "${2%/*}")
	len=${2#*/}
	mask=$(((0xffffffff << (32 - len)) & 0xffffffff))
	if (((ip & mask) == (net & mask))); then echo yes; else echo no; fi
}

passed=0
failed=0
check() { # check DESCRIPTION EXPECTED COMMAND...
	local what=$1 want=$2 got
	shift 2
	if got=$("$@" 2>&1) && [[ $got == "$want" ]]; then
		say "PASS $what: got \"$got\""
		passed=$((passed + 1))
	else
		say "FAIL $what: wanted \"$want\", got \"$got\""
		failed=$((failed + 1))
	fi
}

check "pod-a ($ip_a) -> pod-b ($ip_b):8080" pod-b \
	k -n "$NS" exec pod-a -- busybox wget -q -T 5 -O - "http://$ip_b:8080/"
check "pod-b ($ip_b) -> pod-a ($ip_a):8080" pod-a \
	k -n "$NS" exec pod-b -- busybox wget -q -T 5 -O - "http://$ip_a:8080/"
check "node $worker -> pod-a ($ip_a):8080" pod-a \
	docker exec "$worker" curl -sS --max-time 5 "http://$ip_a:8080/"
check "pod-a address $ip_a inside node podCIDR $pod_cidr" yes in_cidr "$ip_a" "$pod_cidr"
check "pod-b address $ip_b inside node podCIDR $pod_cidr" yes in_cidr "$ip_b" "$pod_cidr"

if [[ $failed -gt 0 ]]; then
	diagnose
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
