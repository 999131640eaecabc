#!/usr/bin/env bash
# The ClusterMesh walkthrough (issue 4, steps 1-6) on two real kind clusters,
# cluster1 (id 1, pods 10.10/16, services 10.11/16) and cluster2 (id 2, pods
# 10.20/16, services 10.21/16), on the docker network "kind", connected both
# ways through a mesh etcd per cluster, with rebel-base and x-wing in both.
#
#   e2e/run-clustermesh.sh
#
# Environment:
#   KEEP=1             leave both clusters up afterwards (default: delete them)
#   IMAGE=causeway/causeway:dev
#   ROUTING=native     causeway-config routing for steps 1-5: native, hybrid
#                      or tunnel (tunnel: see README, "Routing on kind")
#   STEP6_ROUTING="native hybrid tunnel"
#                      the routing modes step 6 checks, one after another
#   REQUESTS=24        requests from every x-wing pod per judged batch
#   NODE_LIBS=no       fail, instead of installing the plugin's shared
#                      libraries on the kind nodes when they lack them
#
# Needs docker (a working daemon), kind, kubectl, make and openssl; exits 2
# with a message when any is missing or a cluster named cluster1 or cluster2
# exists, 1 when a check fails, 0 when all pass.
#
# manifests/daemonset.yaml mounts the cilium-clustermesh Secret and passes
# --clustermesh-config; against an older DaemonSet that does not,
# patch_daemonset below adds both with `kubectl patch`.
set -euo pipefail

KEEP=${KEEP:-0}
IMAGE=${IMAGE:-causeway/causeway:dev}
ROUTING=${ROUTING:-native}
STEP6_ROUTING=${STEP6_ROUTING:-native hybrid tunnel}
REQUESTS=${REQUESTS:-24}

CLUSTERS="cluster1 cluster2"
SYS=causeway-system
ETCD_PORT=12379 # e2e/mesh-etcd.yaml
MESH_DIR=/etc/causeway/clustermesh
MESH_TLS_DIR=/etc/causeway/clustermesh-tls
CONVERGE_TIMEOUT=120 # seconds for requests to be answered as a step expects

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

say() { printf 'e2e: %s\n' "$*"; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }
cannot() { printf 'e2e: cannot run: %s\n' "$*" >&2; exit 2; }

# --- prerequisites -----------------------------------------------------------
missing=()
for tool in docker kind kubectl make openssl; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
	cannot "${missing[*]} not installed (needs docker, kind, kubectl, make, openssl)"
fi
docker info >/dev/null 2>&1 ||
	cannot "docker is installed but no daemon answers (docker info failed)"
for c in $CLUSTERS; do
	if kind get clusters 2>/dev/null | grep -qx "$c"; then
		cannot "a kind cluster named $c exists; delete it (kind delete cluster --name $c)"
	fi
done
case $ROUTING in tunnel | native | hybrid) ;; *) cannot "ROUTING=$ROUTING is not tunnel, native or hybrid" ;; esac
for m in $STEP6_ROUTING; do
	case $m in tunnel | native | hybrid) ;; *) cannot "STEP6_ROUTING: $m is not tunnel, native or hybrid" ;; esac
done
case $REQUESTS in '' | *[!0-9]* | 0) cannot "REQUESTS=$REQUESTS is not a positive number" ;; esac
# kustomize's images: wants name and tag apart
case $IMAGE in
*:*) image_name=${IMAGE%:*} image_tag=${IMAGE##*:} ;;
*) cannot "IMAGE=$IMAGE has no tag (NAME:TAG)" ;;
esac
case $image_tag in '' | */*) cannot "IMAGE=$IMAGE has no tag (NAME:TAG)" ;; esac

kc() { # kc CLUSTER ARGS...: kubectl against that kind cluster
	local c=$1
	shift
	kubectl --context "kind-$c" "$@"
}
run_kc() { # as kc, printing the command as the walkthrough's user types it
	say "\$ kubectl --context kind-$1 ${*:2}"
	kc "$@"
}
id_of() { [[ $1 == cluster1 ]] && echo 1 || echo 2; }
other_of() { [[ $1 == cluster1 ]] && echo cluster2 || echo cluster1; }
subnet_of() { [[ $1 == cluster1 ]] && echo 10.10.0.0/16 || echo 10.20.0.0/16; }
svc_subnet_of() { [[ $1 == cluster1 ]] && echo 10.11.0.0/16 || echo 10.21.0.0/16; }

created=""
tmp=""
cleanup() {
	local rc=$? c
	for c in $created; do
		if [[ $KEEP == 1 ]]; then
			say "KEEP=1: cluster $c left up (kubectl --context kind-$c ...;" \
				"kind delete cluster --name $c when done)"
		else
			say "deleting cluster $c"
			kind delete cluster --name "$c" >/dev/null 2>&1 || true
		fi
	done
	# keys and passwords: the clusters' Secrets hold what is still needed
	[[ -n $tmp ]] && rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
tmp=$(mktemp -d)

# ds_pod CLUSTER NODE: the causeway DaemonSet pod on NODE (not one going away)
ds_pod() {
	kc "$1" -n "$SYS" get pods -l app.kubernetes.io/name=causeway \
		--field-selector "spec.nodeName=$2" \
		-o jsonpath='{range .items[*]}{.metadata.name}{" "}{.metadata.deletionTimestamp}{"\n"}{end}' |
		awk 'NF == 1 { print $1; exit }'
}
helper_cli() { # helper_cli CLUSTER NODE ARGS...: causeway-helper ARGS on that node
	local c=$1 node=$2 pod
	shift 2
	pod=$(ds_pod "$c" "$node")
	[[ -n $pod ]] || { echo "no causeway pod on $node"; return 1; }
	kc "$c" -n "$SYS" exec "$pod" -c causeway -- causeway-helper "$@" </dev/null
}
nodes_of() { kc "$1" get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'; }

# Shown when something fails, so a CI log says why without a rerun.
diagnose() {
	local c n
	say "--- diagnostics"
	for c in $CLUSTERS; do
		[[ " $created " == *" $c "* ]] || continue
		say "--- $c"
		kc "$c" get nodes -o wide || true
		kc "$c" -n "$SYS" get pods -o wide || true
		kc "$c" -n "$SYS" logs -l app.kubernetes.io/name=causeway -c causeway --tail=30 --prefix || true
		kc "$c" -n "$SYS" logs deploy/causeway-mesh-apiserver --tail=30 || true
		kc "$c" -n "$SYS" logs deploy/causeway-mesh-etcd --tail=15 || true
		for n in $(nodes_of "$c" 2>/dev/null); do
			say "causeway-helper clusters, services on $n:"
			helper_cli "$c" "$n" clusters || true
			helper_cli "$c" "$n" services || true
			docker exec "$n" sh -c 'ip -4 route show proto 193; tail -n 10 /var/log/causeway-cni.log' || true
		done
		kc "$c" get pods -o wide || true
		kc "$c" -n kube-system get pods -l k8s-app=kube-dns -o wide || true
		kc "$c" get events --sort-by=.lastTimestamp | tail -n 20 || true
	done
}

passed=0
failed=0
pass() { say "PASS $*"; passed=$((passed + 1)); }
fail() { say "FAIL $*"; failed=$((failed + 1)); }
check() { # check DESCRIPTION EXPECTED COMMAND...
	local what=$1 want=$2 got
	shift 2
	if got=$("$@" 2>&1) && [[ $got == "$want" ]]; then
		pass "$what: got \"$got\""
	else
		fail "$what: wanted \"$want\", got \"$got\""
	fi
}
# Setup failures end the run (after diagnostics); the walkthrough's do not.
fatal() { diagnose; die "$*"; }

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

# --- certificates ------------------------------------------------------------
# As test/etcd/fixture makes them (DESIGN.md, "The mesh store"): P-256, and no
# Common Name in any certificate a client or the gateway presents, since etcd's
# gateway refuses a request whose certificate has one once auth is on.  Only
# -extfile, no -addext: LibreSSL (macOS) lacks the latter.
issue() { # issue DIR NAME EXTENSIONS: DIR/NAME.{key,crt} signed by DIR/ca
	local dir=$1 name=$2 ext=$3
	openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name.key" 2>/dev/null
	openssl req -new -key "$dir/$name.key" -subj "/O=causeway" -out "$dir/$name.csr"
	printf '%s\n' "$ext" >"$dir/$name.ext"
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
		-CAcreateserial -CAserial "$dir/ca.srl" -days 30 -sha256 \
		-extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
	rm -f "$dir/$name.csr" "$dir/$name.ext"
	chmod 600 "$dir/$name.key"
}
make_pki() { # make_pki DIR CLUSTER CP_IP CP_NODE: CA, server, local and remote client
	local dir=$1 c=$2 ip=$3 node=$4 f
	mkdir -p "$dir"
	(umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null)
	openssl req -new -key "$dir/ca.key" -subj "/O=causeway-e2e/CN=causeway e2e $c mesh etcd CA" \
		-out "$dir/ca.csr"
	printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$dir/ca.ext"
	openssl x509 -req -in "$dir/ca.csr" -signkey "$dir/ca.key" -days 30 -sha256 \
		-extfile "$dir/ca.ext" -out "$dir/ca.crt" 2>/dev/null
	rm -f "$dir/ca.csr" "$dir/ca.ext"
	# The gateway inside etcd dials the member with the server certificate,
	# so it needs clientAuth too.
	issue "$dir" server "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:$ip,IP:127.0.0.1,DNS:localhost,DNS:$node"
	issue "$dir" local "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
subjectAltName=DNS:causeway-local"
	issue "$dir" remote "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
subjectAltName=DNS:causeway-remote"
	for f in root local remote; do
		(umask 077 && openssl rand -hex 16 >"$dir/$f.password")
	done
}

# etcd_config ENDPOINT CA CERT KEY USER PASSWORD: a Cilium-style etcd config
etcd_config() {
	printf 'endpoints:\n- %s\ntrusted-ca-file: %s\ncert-file: %s\nkey-file: %s\nusername: %s\npassword: %s\n' \
		"$@"
}

# --- the mesh etcd -------------------------------------------------------------
etcdctl_in() { # etcdctl_in CLUSTER ARGS...: etcdctl in the cluster's mesh etcd container
	local c=$1
	shift
	kc "$c" -n "$SYS" exec deploy/causeway-mesh-etcd -c etcd -- etcdctl "$@" </dev/null
}
etcd_add_user() { # etcd_add_user CLUSTER USER PASSWORD-FILE ROLE: password on stdin
	kc "$1" -n "$SYS" exec -i deploy/causeway-mesh-etcd -c etcd -- \
		etcdctl user add "$2" --interactive=false <"$3" >/dev/null &&
		etcdctl_in "$1" user grant-role "$2" "$4" >/dev/null
}

start_etcd() { # start_etcd CLUSTER: certificates, the etcd, its users
	local c=$1 d=$tmp/$1 node=$1-control-plane ip img="" i
	ip=$(kc "$c" get node "$node" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
	[[ -n $ip ]] || fatal "no InternalIP for $node"
	# the mirror pod of kubeadm's etcd may lag the API by a few seconds
	for ((i = 0; i < 60; i++)); do
		img=$(kc "$c" -n kube-system get pods -l component=etcd \
			-o jsonpath='{.items[0].spec.containers[0].image}' 2>/dev/null) || true
		[[ -n $img ]] && break
		sleep 2
	done
	[[ -n $img ]] || fatal "$c: cannot tell the image of the control plane's etcd"
	echo "$ip" >"$tmp/$c.cp-ip"
	say "$c: mesh etcd on $node, https://$ip:$ETCD_PORT (image $img)"
	make_pki "$d" "$c" "$ip" "$node"

	kc "$c" apply -f "$repo/manifests/namespace.yaml" >/dev/null
	kc "$c" -n "$SYS" create secret generic causeway-mesh-etcd-tls \
		--from-file=ca.crt="$d/ca.crt" --from-file=server.crt="$d/server.crt" \
		--from-file=server.key="$d/server.key" >/dev/null
	sed "s|ETCD_IMAGE|$img|" "$here/mesh-etcd.yaml" | kc "$c" apply -f - >/dev/null
}

setup_etcd_users() { # setup_etcd_users CLUSTER: wait for it, then users and auth
	local c=$1 d=$tmp/$1 i
	kc "$c" -n "$SYS" rollout status deploy/causeway-mesh-etcd --timeout=180s ||
		fatal "$c: the mesh etcd did not start"
	for ((i = 0; i < 60; i++)); do
		etcdctl_in "$c" endpoint health >/dev/null 2>&1 && break
		sleep 2
	done
	etcdctl_in "$c" endpoint health || fatal "$c: the mesh etcd is not healthy"
	# As test/etcd/fixture: root; causeway-local (local-writer: readwrite on
	# cilium/ and causeway/) for this cluster's helpers; causeway-remote
	# (remote-reader: read on cilium/) handed to the other cluster.
	if ! {
		etcdctl_in "$c" role add root >/dev/null &&
			etcd_add_user "$c" root "$d/root.password" root &&
			etcdctl_in "$c" role add local-writer >/dev/null &&
			etcdctl_in "$c" role grant-permission local-writer --prefix=true readwrite cilium/ >/dev/null &&
			etcdctl_in "$c" role grant-permission local-writer --prefix=true readwrite causeway/ >/dev/null &&
			etcdctl_in "$c" role add remote-reader >/dev/null &&
			etcdctl_in "$c" role grant-permission remote-reader --prefix=true read cilium/ >/dev/null &&
			etcd_add_user "$c" causeway-local "$d/local.password" local-writer &&
			etcd_add_user "$c" causeway-remote "$d/remote.password" remote-reader &&
			etcdctl_in "$c" auth enable >/dev/null
	}; then
		fatal "$c: could not create the mesh etcd's users and roles"
	fi
	say "$c: etcd users root, causeway-local (readwrite cilium/), causeway-remote (read cilium/); auth on"
}

# The Secrets the helpers read: causeway-etcd (this cluster's etcd, as the
# writer), cilium-clustermesh (one file, named after the other cluster: its
# etcd, as the reader) and causeway-clustermesh-tls (that file's CA and
# client certificate; kept out of cilium-clustermesh, whose every file the
# helper takes for a cluster).
make_secrets() {
	local c=$1 o d=$tmp/$1 od ip oip
	o=$(other_of "$c")
	od=$tmp/$o
	ip=$(cat "$tmp/$c.cp-ip")
	oip=$(cat "$tmp/$o.cp-ip")
	etcd_config "https://$ip:$ETCD_PORT" /etc/causeway/etcd/ca.crt /etc/causeway/etcd/client.crt \
		/etc/causeway/etcd/client.key causeway-local "$(cat "$d/local.password")" >"$d/config.yaml"
	etcd_config "https://$oip:$ETCD_PORT" "$MESH_TLS_DIR/$o-ca.crt" "$MESH_TLS_DIR/$o-client.crt" \
		"$MESH_TLS_DIR/$o-client.key" causeway-remote "$(cat "$od/remote.password")" >"$d/$o"
	kc "$c" -n "$SYS" create secret generic causeway-etcd \
		--from-file=config.yaml="$d/config.yaml" --from-file=ca.crt="$d/ca.crt" \
		--from-file=client.crt="$d/local.crt" --from-file=client.key="$d/local.key" >/dev/null
	kc "$c" -n "$SYS" create secret generic cilium-clustermesh \
		--from-file="$o=$d/$o" >/dev/null
	kc "$c" -n "$SYS" create secret generic causeway-clustermesh-tls \
		--from-file="$o-ca.crt=$od/ca.crt" --from-file="$o-client.crt=$od/remote.crt" \
		--from-file="$o-client.key=$od/remote.key" >/dev/null
}

# --- causeway ------------------------------------------------------------------
json_str() { # json_str STRING: STRING as a JSON string literal
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\n'/\\n}
	s=${s//$'\t'/\\t}
	s=${s//$'\r'/\\r}
	printf '"%s"' "$s"
}

# manifests/ into CLUSTER through a kustomize overlay of a copy of them (kustomize
# takes no absolute path to a base): causeway-config with this cluster's name,
# id and routing; the causeway image as IMAGE.
install_causeway() {
	local c=$1 ov=$tmp/overlay-$1
	mkdir -p "$ov"
	cat >"$ov/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../base
images:
  - name: causeway/causeway
    newName: $image_name
    newTag: "$image_tag"
patches:
  - target: {kind: ConfigMap, name: causeway-config}
    patch: |-
      - {op: replace, path: /data/cluster-name, value: "$c"}
      - {op: replace, path: /data/cluster-id, value: "$(id_of "$c")"}
      - {op: replace, path: /data/routing, value: "$ROUTING"}
EOF
	say "$c: installing causeway (manifests/, cluster-name $c, cluster-id $(id_of "$c"), routing $ROUTING)"
	kc "$c" apply -k "$ov" >/dev/null
}

# manifests/daemonset.yaml neither mounts a clustermesh directory nor passes
# --clustermesh-config, so `causeway-helper node` would never connect to a
# remote cluster.  Add both here, leaving manifests/ alone: the two Secrets
# as volumes (optional, as Cilium mounts cilium-clustermesh) and the flag at
# the end of the container's command, which is read back from the live
# object so that the manifest's other flags stay as they are.  The "test"
# operation makes the patch fail as a whole if containers[0] is not causeway.
patch_daemonset() {
	local c=$1 cmd joined patch secrets
	secrets=$(kc "$c" -n "$SYS" get ds causeway -o jsonpath='{.spec.template.spec.volumes[*].secret.secretName}')
	if [[ " $secrets " == *" cilium-clustermesh "* ]]; then
		say "$c: the DaemonSet mounts cilium-clustermesh already; not patching it"
		return 0
	fi
	cmd=$(kc "$c" -n "$SYS" get ds causeway -o jsonpath='{.spec.template.spec.containers[0].command[2]}')
	joined=${cmd//\\$'\n'/ }
	if [[ $cmd != *"causeway-helper node"* || $cmd == *--clustermesh-config* ||
		$joined == *$'\n'* ]]; then
		fatal "$c: the DaemonSet's command is not the one command line this script" \
			"knows how to extend: $cmd"
	fi
	patch='[
 {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "causeway"},
 {"op": "replace", "path": "/spec/template/spec/containers/0/command/2",
  "value": '"$(json_str "$cmd --clustermesh-config $MESH_DIR")"'},
 {"op": "add", "path": "/spec/template/spec/volumes/-", "value": {"name": "clustermesh",
  "secret": {"secretName": "cilium-clustermesh", "defaultMode": 256, "optional": true}}},
 {"op": "add", "path": "/spec/template/spec/volumes/-", "value": {"name": "clustermesh-tls",
  "secret": {"secretName": "causeway-clustermesh-tls", "defaultMode": 256, "optional": true}}},
 {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-",
  "value": {"name": "clustermesh", "mountPath": "'"$MESH_DIR"'", "readOnly": true}},
 {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-",
  "value": {"name": "clustermesh-tls", "mountPath": "'"$MESH_TLS_DIR"'", "readOnly": true}}
]'
	say "$c: kubectl patch ds/causeway: mount Secret cilium-clustermesh at $MESH_DIR" \
		"(and causeway-clustermesh-tls at $MESH_TLS_DIR), add --clustermesh-config $MESH_DIR"
	kc "$c" -n "$SYS" patch ds causeway --type json -p "$patch" >/dev/null
}

# The plugin runs on the node itself, not in the image: it must find its
# shared libraries there, and a kind node image lacks libbpf and friends.
# As run-single-cluster.sh: install them on each node (kind nodes are Debian
# 12) unless NODE_LIBS=no, and say so.
plugin_version() { # plugin_version NODE: the plugin's VERSION answer on NODE
	docker exec "$1" sh -c \
		'echo "{\"cniVersion\":\"1.0.0\"}" | CNI_COMMAND=VERSION /opt/cni/bin/causeway' 2>&1
}
node_libs() {
	local node=$1 out
	if out=$(plugin_version "$node"); then
		say "plugin on $node: $out"
		return 0
	fi
	say "the plugin does not run on node $node: $out"
	docker exec "$node" ldd /opt/cni/bin/causeway | grep 'not found' || true
	[[ ${NODE_LIBS:-install} != no ]] || fatal "causeway cannot run on kind node $node (NODE_LIBS=no)"
	say "WARNING: installing the plugin's shared libraries on $node with apt-get;" \
		"a real node would need the same, or a statically linked plugin"
	docker exec "$node" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends libbpf1 libcjson1 libelf1 zlib1g \
		libnl-3-200 libnl-route-3-200 >/dev/null' ||
		fatal "could not install the plugin's libraries on $node"
	out=$(plugin_version "$node") || fatal "the plugin still does not run on $node: $out"
	say "plugin on $node: $out"
}

wait_causeway() { # wait_causeway CLUSTER: DaemonSet, plugin, nodes, mesh-apiserver, DNS
	local c=$1 node
	kc "$c" -n "$SYS" rollout status ds/causeway --timeout=240s ||
		fatal "$c: DaemonSet causeway did not become ready"
	for node in $(kind get nodes --name "$c"); do
		node_libs "$node"
	done
	kc "$c" wait --for=condition=Ready nodes --all --timeout=180s ||
		fatal "$c: nodes did not become Ready with causeway installed"
	kc "$c" -n "$SYS" rollout status deploy/causeway-mesh-apiserver --timeout=180s ||
		fatal "$c: causeway-mesh-apiserver did not become ready"
	kc "$c" -n kube-system rollout status deploy/coredns --timeout=180s ||
		fatal "$c: CoreDNS did not become ready (pods reaching the API server?)"
}

# Every node of every cluster has the other cluster connected and synced
# (`causeway-helper clusters`), or the run ends.
wait_connected() {
	local deadline=$((SECONDS + 240)) c o node out lagging
	while :; do
		lagging=""
		for c in $CLUSTERS; do
			o=$(other_of "$c")
			for node in $(nodes_of "$c"); do
				out=$(helper_cli "$c" "$node" clusters 2>&1) || true
				# "cluster2 (id 2): connected, id 2" / "  … services; synced"
				if [[ $'\n'$out != *$'\n'"$o (id $(id_of "$o")): connected"* ||
					$out$'\n' != *"; synced"$'\n'* ]]; then
					lagging="$lagging
  $c/$node: $(printf '%s' "$out" | head -n 2 | tr '\n' ' ')"
				fi
			done
		done
		[[ -z $lagging ]] && break
		((SECONDS < deadline)) || fatal "the clusters did not connect:$lagging"
		sleep 5
	done
	pass "every node of cluster1 and cluster2 has the other cluster connected and synced"
}

# From a node of CLUSTER, with that node's copy of the other cluster's
# credentials (the file in cilium-clustermesh and causeway-clustermesh-tls),
# over the docker network, through etcd's JSON gateway as the helper talks to
# it: authenticate, read cilium/, and a write there refused.
# shellcheck disable=SC2016 # expanded by the node's sh
PROBE='f=$1
get() { sed -n "s/^$1:[[:space:]]*//p" "$f" | head -n 1; }
ep=$(sed -n "s/^-[[:space:]]*//p" "$f" | head -n 1)
ca=$(get trusted-ca-file) cert=$(get cert-file) key=$(get key-file)
user=$(get username) pw=$(get password)
post() { curl -sS -m 5 --cacert "$ca" --cert "$cert" --key "$key" -X POST "$@"; }
gw() { post "$ep/v3/$1" -H "Authorization: $tok" -d "$2"; }
tok=$(post "$ep/v3/auth/authenticate" -d "{\"name\":\"$user\",\"password\":\"$pw\"}" |
  sed -n "s/.*\"token\":\"\([^\"]*\)\".*/\1/p")
[ -n "$tok" ] || { echo "$user could not authenticate at $ep"; exit 1; }
# cilium/ .. cilium0, base64
r=$(gw kv/range "{\"key\":\"Y2lsaXVtLw==\",\"range_end\":\"Y2lsaXVtMA==\",\"keys_only\":true}")
case $r in *\"header\"*) ;; *) echo "$user may not read cilium/: $r"; exit 1 ;; esac
case $r in *\"error\"*) echo "$user may not read cilium/: $r"; exit 1 ;; esac
# cilium/e2e-probe = x
w=$(gw kv/put "{\"key\":\"Y2lsaXVtL2UyZS1wcm9iZQ==\",\"value\":\"eA==\"}")
case $w in *"permission denied"*) echo "read ok, write refused" ;; *) echo "$user may write: $w"; exit 1 ;; esac'

check_readonly() {
	local c=$1 o node
	o=$(other_of "$c")
	node=$(kc "$c" get nodes -l '!node-role.kubernetes.io/control-plane' \
		-o jsonpath='{.items[0].metadata.name}')
	check "$c/$node as $o's causeway-remote: reads $o's cilium/, may not write there" \
		"read ok, write refused" \
		kc "$c" -n "$SYS" exec "$(ds_pod "$c" "$node")" -c causeway -- sh -c "$PROBE" sh "$MESH_DIR/$o"
}

# --- the walkthrough ---------------------------------------------------------------
# pods_of CLUSTER APP: "name ip" of its pods that run, are ready and stay
pods_of() {
	kc "$1" get pods -l "name=$2" -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.podIP}{" "}{.status.phase}{" "}{.status.conditions[?(@.type=="Ready")].status}{" "}{.metadata.deletionTimestamp}{"\n"}{end}' |
		awk '$3 == "Running" && $4 == "True" && NF == 4 { print $1, $2 }'
}
xwings() { pods_of "$1" x-wing | awk '{ print $1 }'; }

wait_rebels() { # wait_rebels CLUSTER N: N rebel-base pods ready, none going away
	local c=$1 n=$2 deadline=$((SECONDS + 120)) all ready
	while :; do
		all=$(kc "$c" get pods -l name=rebel-base -o name | grep -c . || true)
		ready=$(pods_of "$c" rebel-base | grep -c . || true)
		[[ $all -eq $n && $ready -eq $n ]] && return 0
		if ((SECONDS >= deadline)); then
			fail "$c: $n rebel-base pods ready: $ready ready of $all"
			return 1
		fi
		sleep 2
	done
}

# The walkthrough's starting point: no shared or affinity annotation, 2
# rebel-base replicas in each cluster.
start() {
	local c
	for c in $CLUSTERS; do
		kc "$c" annotate service rebel-base service.cilium.io/shared- \
			service.cilium.io/affinity- >/dev/null
		kc "$c" scale deployment rebel-base --replicas=2 >/dev/null
	done
	for c in $CLUSTERS; do wait_rebels "$c" 2 || true; done
}

# N requests from x-wing POD of CLUSTER to rebel-base, each `curl -s
# rebel-base` (a new connection each, so a new flow to balance), in one exec;
# prints the tally, sorted: "cluster1:12 cluster2:12", failed:N for a request
# without an answer, garbage:N for an answer naming no cluster.
# shellcheck disable=SC2016 # expanded by the pod's sh
SHOOT='i=0; while [ $i -lt "$1" ]; do curl -s -m 2 http://rebel-base/ || printf "FAIL %s" $?; echo; i=$((i + 1)); done'
shoot() {
	local c=$1 pod=$2 n=$3 out
	out=$(kc "$c" exec "$pod" -- sh -c "$SHOOT" sh "$n" 2>&1) || out="$out
EXEC-ERROR"
	printf '%s\n' "$out" | awk '
		NF == 0 { next }
		/^FAIL/ { t["failed"]++; next }
		/^EXEC-ERROR$/ { t["exec-error"]++; next }
		match($0, /"cluster":"[^"]*"/) { t[substr($0, RSTART + 11, RLENGTH - 12)]++; next }
		{ t["garbage"]++ }
		END { for (k in t) print k ":" t[k] }' | sort | tr '\n' ' ' | sed 's/ $//'
}
# judge TALLY N WANT: every one of N requests answered, by exactly the
# clusters of WANT ("cluster1 cluster2" or one name) and no other
judge() {
	local kv key sum=0 got=""
	for kv in $1; do
		key=${kv%%:*}
		case $key in cluster1 | cluster2) got="$got $key" ;; *) return 1 ;; esac
		sum=$((sum + ${kv##*:}))
	done
	[[ $sum -eq $2 && ${got# } == "$3" ]]
}

# expect WHAT WANT1 WANT2: requests from cluster1's x-wing pods are answered by
# exactly the clusters of WANT1, cluster2's by WANT2.  As the lab's
# Mesh.expect: wait (bounded) until a batch of 8 from every x-wing pod is
# answered so, then REQUESTS more from every pod, every one answered, by
# exactly those clusters, each at least once.  "Both" with 2 backends in each
# cluster fails by chance with probability 2^-23 per pod at 24 requests.
expect() {
	local what=$1 want1=$2 want2=$3 deadline=$((SECONDS + CONVERGE_TIMEOUT))
	local ok c want pod pods tally last
	while :; do
		ok=1 last=""
		for c in $CLUSTERS; do
			[[ $c == cluster1 ]] && want=$want1 || want=$want2
			pods=$(xwings "$c")
			if [[ -z $pods ]]; then
				ok=0 last="$last
  from $c: no x-wing pod ready"
			fi
			for pod in $pods; do
				tally=$(shoot "$c" "$pod" 8)
				last="$last
  from $c/$pod: $tally (want $want)"
				judge "$tally" 8 "$want" || ok=0
			done
		done
		[[ $ok -eq 1 ]] && break
		if ((SECONDS >= deadline)); then
			fail "$what: not answered as expected within ${CONVERGE_TIMEOUT}s; last batch:$last"
			diagnose
			return 0
		fi
		sleep 2
	done
	for c in $CLUSTERS; do
		[[ $c == cluster1 ]] && want=$want1 || want=$want2
		for pod in $(xwings "$c"); do
			tally=$(shoot "$c" "$pod" "$REQUESTS")
			if judge "$tally" "$REQUESTS" "$want"; then
				pass "$what: $REQUESTS requests from $c/$pod answered by $tally"
			else
				fail "$what: $REQUESTS requests from $c/$pod: $tally; want every one answered by $want (each at least once)"
			fi
		done
	done
}

BOTH="cluster1 cluster2"
resolve() { # resolve CLUSTER NAME: the address NAME has for x-wing there
	kc "$1" exec deploy/x-wing -- getent hosts "$2" </dev/null | awk '{ print $1; exit }'
}

step1() {
	local c ip
	say "=== step 1: requests from x-wing reach both clusters"
	start
	for c in $CLUSTERS; do
		ip=$(kc "$c" get service rebel-base -o jsonpath='{.spec.clusterIP}')
		check "$c: rebel-base's ClusterIP $ip inside $(svc_subnet_of "$c")" yes \
			in_cidr "$ip" "$(svc_subnet_of "$c")"
		# the name resolves, through the pod's resolv.conf and its cluster's
		# DNS, to the ClusterIP of the pod's own cluster
		check "$c: x-wing resolves rebel-base to $ip" "$ip" resolve "$c" rebel-base
	done
	run_kc cluster1 exec deploy/x-wing -- curl -s rebel-base || true
	echo
	expect "step 1" "$BOTH" "$BOTH"
}

step2() {
	say "=== step 2: cluster2 scaled to 0 fails over to cluster1"
	start
	expect "step 2, before" "$BOTH" "$BOTH"
	run_kc cluster2 scale deployment rebel-base --replicas=0
	wait_rebels cluster2 0 || true
	expect "step 2: cluster2 scaled to 0" cluster1 cluster1
	run_kc cluster2 scale deployment rebel-base --replicas=2
	wait_rebels cluster2 2 || true
	expect "step 2: cluster2 scaled back" "$BOTH" "$BOTH"
}

step3() {
	say "=== step 3: shared=false on cluster1 keeps its backends home"
	start
	expect "step 3, before" "$BOTH" "$BOTH"
	run_kc cluster1 annotate service rebel-base service.cilium.io/shared="false" --overwrite
	expect "step 3: shared=false on cluster1" "$BOTH" cluster2
	run_kc cluster1 annotate service rebel-base service.cilium.io/shared-
	expect "step 3: annotation removed" "$BOTH" "$BOTH"
}

step4() {
	say "=== step 4: affinity=local on cluster1, then failover"
	start
	expect "step 4, before" "$BOTH" "$BOTH"
	run_kc cluster1 annotate service rebel-base service.cilium.io/affinity=local --overwrite
	expect "step 4: affinity=local on cluster1" cluster1 "$BOTH"
	run_kc cluster1 scale deployment rebel-base --replicas=0
	wait_rebels cluster1 0 || true
	expect "step 4: affinity=local, cluster1 scaled to 0" cluster2 cluster2
	run_kc cluster1 scale deployment rebel-base --replicas=2
	wait_rebels cluster1 2 || true
	expect "step 4: affinity=local, cluster1 scaled back" cluster1 "$BOTH"
	run_kc cluster1 annotate service rebel-base service.cilium.io/affinity-
	expect "step 4: annotation removed" "$BOTH" "$BOTH"
}

step5() {
	say "=== step 5: affinity=remote on cluster1"
	start
	expect "step 5, before" "$BOTH" "$BOTH"
	run_kc cluster1 annotate service rebel-base service.cilium.io/affinity=remote --overwrite
	expect "step 5: affinity=remote on cluster1" cluster2 "$BOTH"
	run_kc cluster2 scale deployment rebel-base --replicas=0
	wait_rebels cluster2 0 || true
	expect "step 5: affinity=remote, cluster2 scaled to 0" cluster1 cluster1
	run_kc cluster2 scale deployment rebel-base --replicas=2
	wait_rebels cluster2 2 || true
	run_kc cluster1 annotate service rebel-base service.cilium.io/affinity-
	expect "step 5: annotation removed" "$BOTH" "$BOTH"
}

# --- step 6: pods by IP across clusters, per routing mode -------------------------
current_routing=$ROUTING

set_routing() { # set_routing MODE: causeway-config's routing in both clusters, helpers restarted
	local m=$1 c
	[[ $m == "$current_routing" ]] && return 0
	for c in $CLUSTERS; do
		run_kc "$c" -n "$SYS" patch configmap causeway-config --type merge \
			-p "{\"data\":{\"routing\":\"$m\"}}"
		run_kc "$c" -n "$SYS" rollout restart ds/causeway
	done
	for c in $CLUSTERS; do
		kc "$c" -n "$SYS" rollout status ds/causeway --timeout=240s ||
			fatal "$c: DaemonSet causeway did not come back with routing $m"
	done
	current_routing=$m
}

# node_table: "cluster node podCIDR ip" for every node of both clusters
node_table() {
	local c
	for c in $CLUSTERS; do
		kc "$c" get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' |
			awk -v c="$c" 'NF == 3 { print c, $0 }'
	done
}

# datapath_problems MODE TABLE: what differs, on any node, from MODE's way to
# every other node's PodCIDR.  On kind every node is on one L2 segment, so
# hybrid is native everywhere (DESIGN.md): a route (proto 193) via that node
# and no tunnel map entry; tunnel: the entry and no route via that node (the
# node's own traffic has a route into cw_vxlan, which this does not count).
datapath_problems() {
	local mode=$1 table=$2 c node ip routes tunnels oc onode ocidr oip r t
	while read -r c node _ ip <&3; do
		routes=$(docker exec "$node" ip -4 route show proto 193 </dev/null |
			awk '{ print $1, $3 }') || routes=""
		tunnels=$(helper_cli "$c" "$node" tunnels 2>/dev/null | awk 'NR > 1 { print $1, $2 }') || tunnels=""
		while read -r oc onode ocidr oip <&4; do
			[[ $onode == "$node" ]] && continue
			r=no t=no
			printf '%s\n' "$routes" | grep -qx "$ocidr $oip" && r=yes
			printf '%s\n' "$tunnels" | grep -qx "$ocidr $oip" && t=yes
			if [[ $mode == tunnel && ($t != yes || $r != no) ]] ||
				[[ $mode != tunnel && ($r != yes || $t != no) ]]; then
				echo "  $node -> $oc/$onode $ocidr via $oip: route $r, tunnel entry $t"
			fi
		done 4<<<"$table"
	done 3<<<"$table"
}

step6() {
	local mode=$1 table problems deadline c o xw name ip
	say "=== step 6 ($mode): pods reach each other by IP across clusters"
	set_routing "$mode"
	table=$(node_table)
	deadline=$((SECONDS + 90))
	while :; do
		problems=$(datapath_problems "$mode" "$table")
		[[ -z $problems ]] && break
		((SECONDS < deadline)) || break
		sleep 3
	done
	if [[ -z $problems ]]; then
		pass "step 6 ($mode): every node reaches every other node's PodCIDR as $mode routing says"
	else
		fail "step 6 ($mode): nodes' routes and tunnel entries:
$problems"
	fi
	for c in $CLUSTERS; do
		o=$(other_of "$c")
		for xw in $(xwings "$c"); do
			while read -r name ip <&3; do
				[[ -n $name ]] || continue
				check "step 6 ($mode): $c/$xw -> $o/$name ($ip) by IP" \
					"{\"pod\":\"$name\",\"namespace\":\"default\",\"cluster\":\"$o\"}" \
					kc "$c" exec "$xw" -- curl -sS -m 5 "http://$ip/"
			done 3<<<"$(pods_of "$o" rebel-base)"
		done
	done
}

# --- run ---------------------------------------------------------------------------
say "building (make)"
make -C "$repo" -s
for f in causeway causeway-helper; do
	[[ -x $repo/build/$f ]] || die "make did not produce build/$f"
done
# A context of two files, not the whole tree.
mkdir -p "$tmp/image/build"
cp "$repo/build/causeway" "$repo/build/causeway-helper" "$tmp/image/build/"
say "building image $IMAGE"
docker build -q -f "$here/Dockerfile" -t "$IMAGE" "$tmp/image" >/dev/null

for c in $CLUSTERS; do
	say "creating kind cluster $c"
	created="$created $c"
	kind create cluster --name "$c" --config "$here/kind-$c.yaml" --wait 0s
	kind load docker-image "$IMAGE" --name "$c"
done

for c in $CLUSTERS; do start_etcd "$c"; done
for c in $CLUSTERS; do setup_etcd_users "$c"; done
# Every Secret before causeway: its pods mount causeway-etcd (not optional),
# and should find the other cluster's file at their first start.
for c in $CLUSTERS; do make_secrets "$c"; done
cp -R "$repo/manifests" "$tmp/base"
for c in $CLUSTERS; do
	install_causeway "$c"
	patch_daemonset "$c"
done
for c in $CLUSTERS; do wait_causeway "$c"; done

for c in $CLUSTERS; do check_readonly "$c"; done
wait_connected

say "applying rebel-base (e2e/rebel-base.yaml) in both clusters"
for c in $CLUSTERS; do
	kc "$c" create configmap rebel-base-response --from-literal=cluster="$c" >/dev/null
	sed "s|causeway/causeway:dev|$IMAGE|" "$here/rebel-base.yaml" | kc "$c" apply -f - >/dev/null
done
for c in $CLUSTERS; do
	wait_rebels "$c" 2 || fatal "$c: rebel-base did not start"
	kc "$c" rollout status deploy/x-wing --timeout=120s || fatal "$c: x-wing did not start"
	while read -r name ip <&3; do
		[[ -n $name ]] || continue
		check "$c: pod $name address $ip inside $(subnet_of "$c")" yes in_cidr "$ip" "$(subnet_of "$c")"
	done 3<<<"$(pods_of "$c" rebel-base; pods_of "$c" x-wing)"
done

step1
step2
step3
step4
step5
# the routing of steps 1-5 first, so that it needs no restart, then the
# others; KEEP=1 leaves the clusters in the routing of steps 1-5 again
modes=""
for m in $STEP6_ROUTING; do
	if [[ $m == "$ROUTING" ]]; then modes="$m $modes"; else modes="$modes $m"; fi
done
for m in $modes; do step6 "$m"; done
if [[ $KEEP == 1 && $current_routing != "$ROUTING" ]]; then
	say "KEEP=1: back to routing $ROUTING"
	set_routing "$ROUTING"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
