// Package clitest runs a CNI plugin binary the way a runtime does (env,
// stdin, exit code) for tests that feed it hostile input, in a sandbox
// network namespace with an etcd of its own, and records the files, the
// kernel state and etcd's revision so a test can prove that a refused
// request changed nothing.
package clitest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/weft-cni/weft/internal/etcdembed"
	"github.com/weft-cni/weft/internal/nstest"
	"github.com/weft-cni/weft/pkg/ipamcni"
	"github.com/weft-cni/weft/pkg/subnetfile"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// Main is a TestMain body: it builds the package in the current directory
// into a temporary directory, stores the binary's path in *bin, runs the
// tests, removes the build and exits with the tests' status.
func Main(m *testing.M, name string, bin *string) {
	dir, err := os.MkdirTemp("", name+"-test")
	if err != nil {
		panic(err)
	}
	*bin = filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", *bin, ".").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic(fmt.Sprintf("building %s: %v: %s", name, err, out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Sandbox is where a table of hostile requests runs. As root it is a
// network namespace the test creates, with loopback up: a request that
// wrongly got through could only change that namespace, and Kernel shows
// whether it did. Without root it is the test's own namespace, where the
// plugin cannot change anything in the kernel.
type Sandbox struct {
	netns ns.NetNS // nil without root
}

// NewSandbox makes the sandbox; the namespace goes when the test ends.
func NewSandbox(t *testing.T) *Sandbox {
	t.Helper()
	if os.Geteuid() != 0 {
		return &Sandbox{}
	}
	s := &Sandbox{netns: nstest.New(t, "hostile requests")}
	err := s.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		return err
	})
	if err != nil {
		t.Fatalf("bringing up loopback in the sandbox: %v", err)
	}
	return s
}

// Do runs fn in the sandbox's namespace (sockets it opens stay there).
func (s *Sandbox) Do(fn func() error) error {
	if s.netns == nil {
		return fn()
	}
	return s.netns.Do(func(ns.NetNS) error { return fn() })
}

// Run executes bin in the sandbox with exactly env and stdin, as a runtime
// does. A panic fails the test.
func (s *Sandbox) Run(t testing.TB, bin string, env map[string]string, stdin string) (stdout []byte, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	// The child inherits the namespace of the thread that forks it.
	if err := s.Do(cmd.Start); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	err := cmd.Wait()
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s: %v", bin, err)
	}
	if strings.Contains(se.String(), "panic") || strings.Contains(se.String(), "goroutine ") {
		t.Fatalf("%s panicked:\n%s", bin, se.String())
	}
	return so.Bytes(), se.String(), code
}

// Kernel describes the sandbox's network state: links, addresses, routes,
// sysctls a plugin sets, and iptables rules (when iptables-save is
// installed). Equal descriptions mean no request changed the kernel. Empty
// without root.
func (s *Sandbox) Kernel(t testing.TB) string {
	t.Helper()
	if s.netns == nil {
		return ""
	}
	var b strings.Builder
	err := s.Do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			fmt.Fprintf(&b, "link %s %s mtu %d master %d alias %q\n", a.Name, l.Type(), a.MTU, a.MasterIndex, a.Alias)
			addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			for _, addr := range addrs {
				fmt.Fprintf(&b, "  addr %s\n", addr.IPNet)
			}
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			fmt.Fprintf(&b, "route %s\n", r)
		}
		fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "ip_forward %s", fwd)
		if _, err := exec.LookPath("iptables-save"); err == nil {
			for _, table := range []string{"filter", "nat"} {
				out, err := exec.Command("iptables-save", "-t", table).Output()
				if err != nil {
					return fmt.Errorf("iptables-save -t %s: %w", table, err)
				}
				for line := range strings.Lines(string(out)) {
					if !strings.HasPrefix(line, "#") {
						b.WriteString(counters.ReplaceAllString(line, "[0:0]"))
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the sandbox's kernel state: %v", err)
	}
	return b.String()
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// Override lets a call name the caller's own netns (skel refuses that, but
// only after ADD has run).
func Override(env map[string]string) map[string]string {
	env = maps.Clone(env)
	env["CNI_NETNS_OVERRIDE"] = "1"
	return env
}

// Without returns env minus key.
func Without(env map[string]string, key string) map[string]string {
	env = maps.Clone(env)
	delete(env, key)
	return env
}

// Snapshot describes every file under dir: mode, size, mtime, and content
// hash or link target. Equal snapshots mean nothing on disk changed.
func Snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", info.Mode(), info.Size(), info.ModTime().UnixNano())
		switch {
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(data))
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			desc += " -> " + target
		}
		snap[path] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// Lines renders a snapshot sorted, one file a line, for error messages.
func Lines(snap map[string]string) []string {
	out := make([]string, 0, len(snap))
	for k, v := range snap {
		out = append(out, k+": "+v)
	}
	slices.Sort(out)
	return out
}

// ForeignNetns returns the path of a network namespace that is neither the
// test's nor the plugin's: a sleeping child in a new network namespace (and,
// without root, a new user namespace), killed at cleanup. Nothing is
// configured in it; it is where a good request's pod would live.
func ForeignNetns(t testing.TB) string {
	t.Helper()
	cmd := exec.Command("sleep", "600") // killed at cleanup, or when the test process dies
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	uid, gid := os.Geteuid(), os.Getegid()
	if uid != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	}
	if err := cmd.Start(); err != nil {
		if uid != 0 { // hosts may forbid unprivileged user namespaces
			t.Skipf("needs root or unprivileged user namespaces for a network namespace of its own: %v", err)
		}
		t.Fatalf("starting a process in a network namespace of its own: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
}

// Etcd starts an etcd server listening in the sandbox, holding the network
// config network, and returns its endpoints and a function that reads its
// revision: a request that changed anything in etcd moves the revision.
func (s *Sandbox) Etcd(t *testing.T, network string) (endpoints []string, revision func() int64) {
	t.Helper()
	var srv *etcdembed.Server
	err := s.Do(func() (err error) {
		srv, err = etcdembed.Start("", "")
		return err
	})
	if err != nil {
		t.Fatalf("starting etcd in the sandbox: %v", err)
	}
	t.Cleanup(srv.Close)
	cli := srv.Client()
	t.Cleanup(func() { cli.Close() })
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/coreos.com/network/config", network); err != nil {
		t.Fatalf("writing the network config: %v", err)
	}
	return srv.Endpoints(), func() int64 {
		resp, err := cli.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatalf("reading etcd's revision: %v", err)
		}
		return resp.Header.Revision
	}
}

// Unchanged records the state a refused request must leave alone: the files
// under dir, the sandbox's kernel state and etcd's revision. The returned
// check reports, on the subtest it is given, whatever differs now.
func (s *Sandbox) Unchanged(t *testing.T, dir string, revision func() int64) (check func(*testing.T)) {
	t.Helper()
	files, kernel, rev := Snapshot(t, dir), s.Kernel(t), revision()
	defaults := hostDefaults(t)
	return func(t *testing.T) {
		t.Helper()
		if after := Snapshot(t, dir); !maps.Equal(files, after) {
			t.Errorf("state changed on disk:\nbefore %v\nafter  %v", Lines(files), Lines(after))
		}
		if after := hostDefaults(t); !maps.Equal(defaults, after) {
			t.Errorf("state changed in the plugins' default paths on the host:\nbefore %v\nafter  %v", Lines(defaults), Lines(after))
		}
		if after := s.Kernel(t); after != kernel {
			t.Errorf("state changed in the kernel:\nbefore\n%s\nafter\n%s", kernel, after)
		}
		if after := revision(); after != rev {
			t.Errorf("etcd changed: revision %d -> %d", rev, after)
		}
	}
}

// hostDefaults describes the plugins' default paths on the host (subnet
// file and lock, IPAM store): a request that skipped validation would fall
// back to them, outside the test's directory.
func hostDefaults(t testing.TB) map[string]string {
	t.Helper()
	snap := map[string]string{}
	for _, dir := range []string{filepath.Dir(subnetfile.DefaultPath), ipamcni.DefaultDataDir} {
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			snap[dir] = "absent"
			continue
		}
		maps.Copy(snap, Snapshot(t, dir))
	}
	return snap
}

// CNIError is the error object of the CNI spec, as a plugin prints it.
type CNIError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
}

// Node is what a plugin call finds on a node in use: a subnet file for
// 172.7.21.0/24 under Dir/run, an IPAM data directory Dir/ipam (empty until
// the caller fills it), an etcd holding the network config, and the sandbox
// the calls run in.
type Node struct {
	Dir, SubnetFile, DataDir string
	Sandbox                  *Sandbox
	Etcd                     []string     // endpoints
	Revision                 func() int64 // etcd's
}

// NewNode makes the node's state; all of it goes when the test ends.
func NewNode(t *testing.T) *Node {
	t.Helper()
	d := t.TempDir()
	n := &Node{Dir: d, SubnetFile: filepath.Join(d, "run", "subnet.env"), DataDir: filepath.Join(d, "ipam"), Sandbox: NewSandbox(t)}
	n.Etcd, n.Revision = n.Sandbox.Etcd(t, `{"Network":"172.7.0.0/16"}`)
	if err := os.MkdirAll(filepath.Dir(n.SubnetFile), 0o755); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(n.SubnetFile, []byte("FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=172.7.21.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// EtcdJSON is the endpoints as a JSON list, for a netconf.
func (n *Node) EtcdJSON() string {
	data, _ := json.Marshal(n.Etcd)
	return string(data)
}

// Unchanged is Sandbox.Unchanged for the node's files and etcd.
func (n *Node) Unchanged(t *testing.T) (check func(*testing.T)) {
	t.Helper()
	return n.Sandbox.Unchanged(t, n.Dir, n.Revision)
}
