// Command cnirun drives CNI plugins the way container runtimes do, from
// inside a node's network namespace (run it with `ip netns exec`), so the
// plugins it starts run there too:
//
//	cnirun gocni setup|remove|check CONFDIR ID NETNS   via containerd/go-cni
//	cnirun gocni status CONFDIR
//	cnirun gc CONFLIST ID:IFNAME...                   libcni GC with valid attachments
//
// It prints the go-cni result as JSON for setup.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var err error
	switch {
	case len(os.Args) >= 4 && os.Args[1] == "gocni":
		err = runGoCNI(ctx, os.Args[2], os.Args[3], os.Args[4:])
	case len(os.Args) >= 3 && os.Args[1] == "gc":
		err = runGC(ctx, os.Args[2], os.Args[3:])
	default:
		err = fmt.Errorf("usage: cnirun gocni setup|remove|check CONFDIR ID NETNS | gocni status CONFDIR | gc CONFLIST ID:IF...")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnirun:", err)
		os.Exit(1)
	}
}

func pluginDirs() []string { return filepath.SplitList(os.Getenv("CNI_PATH")) }

func runGoCNI(ctx context.Context, verb, confDir string, rest []string) error {
	c, err := gocni.New(gocni.WithPluginDir(pluginDirs()), gocni.WithPluginConfDir(confDir), gocni.WithMinNetworkCount(1))
	if err != nil {
		return err
	}
	if err := c.Load(gocni.WithAllConf); err != nil {
		return fmt.Errorf("loading %s: %w", confDir, err)
	}
	if verb == "status" {
		return c.Status()
	}
	if len(rest) != 2 {
		return fmt.Errorf("%s needs ID and NETNS", verb)
	}
	id, netns := rest[0], rest[1]
	switch verb {
	case "setup":
		res, err := c.Setup(ctx, id, netns)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	case "remove":
		return c.Remove(ctx, id, netns)
	case "check":
		return c.Check(ctx, id, netns)
	}
	return fmt.Errorf("unknown verb %q", verb)
}

func runGC(ctx context.Context, conflist string, valid []string) error {
	list, err := libcni.ConfListFromFile(conflist)
	if err != nil {
		return err
	}
	args := &libcni.GCArgs{}
	for _, v := range valid {
		id, ifname, ok := strings.Cut(v, ":")
		if !ok {
			return fmt.Errorf("attachment %q is not ID:IFNAME", v)
		}
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: id, IfName: ifname})
	}
	return libcni.NewCNIConfig(pluginDirs(), nil).GCNetworkList(ctx, list, args)
}
