// cnirunner drives CNI plugins the way containerd does: through libcni, with
// a result cache, so ADD/CHECK/DEL see exactly what a real runtime passes
// (prevResult from the cache, capability args filtered by "capabilities",
// name and cniVersion injected into every plugin of the list).
//
//	cnirunner [--path DIR1:DIR2] [--cache-dir DIR] (--conf FILE | --conflist FILE)
//	          add|del|check CONTAINERID NETNS IFNAME [--args K=V;K=V] [--capability-args JSON]
//	cnirunner ... gc [--valid JSON]
//	cnirunner ... status
//	cnirunner [--path ...] [--conf|--conflist FILE] version [TYPE...]
//
// add prints the result JSON on stdout.  Any failure prints one JSON object
// {"code":N,"msg":...,"details":...} on stdout and exits 1; code is the
// plugin's CNI error code, or -1 when the failure is the runner's or
// libcni's own (file not found, plugin not in path, unparsable result).
//
// libcni 1.1.2 predates CNI 1.1.0: it has no GC or STATUS and cannot parse
// 1.1.0 results.  gc and status are done here by hand with pkg/invoke, as the
// 1.1.0 spec describes them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

const usage = `usage: cnirunner [--path DIR1:DIR2] [--cache-dir DIR] (--conf FILE | --conflist FILE)
         add|del|check CONTAINERID NETNS IFNAME [--args K=V;K=V] [--capability-args JSON]
       cnirunner [options] gc [--valid '[{"containerID":ID,"ifname":IF},...]']
       cnirunner [options] status
       cnirunner [--path DIRS] [--conf FILE | --conflist FILE] version [TYPE...]
`

type options struct {
	path     []string
	cacheDir string
	conf     string
	conflist string
	cniArgs  string
	capArgs  string
	valid    string
	pos      []string
}

// attachment is one entry of cni.dev/valid-attachments (CNI 1.1.0, GC).
type attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// fail prints err as the one JSON document on stdout and exits 1.  libcni
// wraps plugin errors ("plugin type=... failed (add): %w"), so the plugin's
// own *types.Error is dug out with errors.As to keep its code and message.
func fail(err error) {
	out := struct {
		Code    int    `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details,omitempty"`
	}{Code: -1, Msg: err.Error()}
	var perr *types.Error
	if errors.As(err, &perr) {
		out.Code = int(perr.Code)
		out.Msg = perr.Msg
		out.Details = perr.Details
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	os.Exit(1)
}

// parseArgs accepts options before and after the positional arguments, as
// the usage line places them on both sides.  A positional argument may be
// empty (DEL with an empty NETNS).
func parseArgs(argv []string) (*options, error) {
	o := &options{path: []string{"/opt/cni/bin"}, cacheDir: libcni.CacheDir}
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "--") {
			o.pos = append(o.pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(a[2:], "=")
		if !hasVal {
			if i+1 >= len(argv) {
				return nil, fmt.Errorf("option --%s needs a value", name)
			}
			i++
			val = argv[i]
		}
		switch name {
		case "path":
			o.path = filepath.SplitList(val)
		case "cache-dir":
			o.cacheDir = val
		case "conf":
			o.conf = val
		case "conflist":
			o.conflist = val
		case "args":
			o.cniArgs = val
		case "capability-args":
			o.capArgs = val
		case "valid":
			o.valid = val
		default:
			return nil, fmt.Errorf("unknown option --%s", name)
		}
	}
	if len(o.pos) == 0 {
		return nil, errors.New("no command")
	}
	return o, nil
}

// loadList reads the network configuration; a single .conf is turned into a
// one-plugin list, as containerd's go-cni does, so one code path serves both.
func loadList(o *options) (*libcni.NetworkConfigList, error) {
	switch {
	case o.conflist != "" && o.conf != "":
		return nil, errors.New("give --conf or --conflist, not both")
	case o.conflist != "":
		return libcni.ConfListFromFile(o.conflist)
	case o.conf != "":
		c, err := libcni.ConfFromFile(o.conf)
		if err != nil {
			return nil, err
		}
		return libcni.ConfListFromConf(c)
	}
	return nil, errors.New("--conf or --conflist is required")
}

// runtimeConf builds what containerd would pass for one attachment.
func runtimeConf(o *options, cid, netns, ifname string) (*libcni.RuntimeConf, error) {
	rt := &libcni.RuntimeConf{ContainerID: cid, NetNS: netns, IfName: ifname}
	if o.cniArgs != "" {
		for _, kv := range strings.Split(o.cniArgs, ";") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("--args: %q is not K=V", kv)
			}
			rt.Args = append(rt.Args, [2]string{k, v})
		}
	}
	if o.capArgs != "" {
		if err := json.Unmarshal([]byte(o.capArgs), &rt.CapabilityArgs); err != nil {
			return nil, fmt.Errorf("--capability-args: %w", err)
		}
	}
	return rt, nil
}

// cachedAttachments lists the attachments of network name that libcni has
// cached results for: that is the runtime's own idea of what is alive,
// which is what a runtime hands to GC.
func cachedAttachments(cacheDir, name string) ([]attachment, error) {
	files, err := filepath.Glob(filepath.Join(cacheDir, "results", "*"))
	if err != nil {
		return nil, err
	}
	atts := []attachment{}
	for _, f := range files {
		b, err := ioutil.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var c struct {
			Kind        string `json:"kind"`
			ContainerID string `json:"containerId"`
			IfName      string `json:"ifName"`
			NetworkName string `json:"networkName"`
		}
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("cache file %s: %w", f, err)
		}
		if c.Kind == libcni.CNICacheV1 && c.NetworkName == name {
			atts = append(atts, attachment{c.ContainerID, c.IfName})
		}
	}
	return atts, nil
}

// execEach runs command on every plugin of the list in order, each with the
// list's name and cniVersion plus extra injected, stopping at the first
// error (CNI 1.1.0 spec, "GC" and "STATUS").
func execEach(ctx context.Context, o *options, list *libcni.NetworkConfigList, command string, extra map[string]interface{}) error {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
	for _, net := range list.Plugins {
		inject := map[string]interface{}{"name": list.Name, "cniVersion": list.CNIVersion}
		for k, v := range extra {
			inject[k] = v
		}
		conf, err := libcni.InjectConf(net, inject)
		if err != nil {
			return err
		}
		pluginPath, err := exec.FindInPath(net.Network.Type, o.path)
		if err != nil {
			return err
		}
		args := &invoke.Args{Command: command, Path: strings.Join(o.path, string(os.PathListSeparator))}
		if err := invoke.ExecPluginWithoutResult(ctx, pluginPath, conf.Bytes, args, exec); err != nil {
			return fmt.Errorf("plugin type=%q failed (%s): %w", net.Network.Type, strings.ToLower(command), err)
		}
	}
	return nil
}

func cmdVersion(ctx context.Context, o *options, cni *libcni.CNIConfig) error {
	names := o.pos[1:]
	if len(names) == 0 {
		list, err := loadList(o)
		if err != nil {
			return err
		}
		for _, p := range list.Plugins {
			names = append(names, p.Network.Type)
		}
	}
	out := map[string][]string{}
	for _, t := range names {
		info, err := cni.GetVersionInfo(ctx, t)
		if err != nil {
			return err
		}
		out[t] = info.SupportedVersions()
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

func run() error {
	o, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprint(os.Stderr, usage)
		return err
	}
	ctx := context.Background()
	cni := libcni.NewCNIConfigWithCacheDir(o.path, o.cacheDir, nil)
	cmd := o.pos[0]

	if cmd == "version" {
		return cmdVersion(ctx, o, cni)
	}
	list, err := loadList(o)
	if err != nil {
		return err
	}

	switch cmd {
	case "add", "del", "check":
		if len(o.pos) != 4 {
			fmt.Fprint(os.Stderr, usage)
			return fmt.Errorf("%s needs CONTAINERID NETNS IFNAME", cmd)
		}
		rt, err := runtimeConf(o, o.pos[1], o.pos[2], o.pos[3])
		if err != nil {
			return err
		}
		switch cmd {
		case "add":
			res, err := cni.AddNetworkList(ctx, list, rt)
			if err != nil {
				return err
			}
			b, err := json.Marshal(res)
			if err != nil {
				return err
			}
			fmt.Println(string(b))
		case "del":
			return cni.DelNetworkList(ctx, list, rt)
		case "check":
			return cni.CheckNetworkList(ctx, list, rt)
		}
	case "gc":
		var atts []attachment
		if o.valid != "" {
			if err := json.Unmarshal([]byte(o.valid), &atts); err != nil {
				return fmt.Errorf("--valid: %w", err)
			}
		} else if atts, err = cachedAttachments(o.cacheDir, list.Name); err != nil {
			return err
		}
		if atts == nil {
			atts = []attachment{} // an empty list, never null: GC everything
		}
		return execEach(ctx, o, list, "GC", map[string]interface{}{"cni.dev/valid-attachments": atts})
	case "status":
		return execEach(ctx, o, list, "STATUS", nil)
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fail(err)
	}
}
