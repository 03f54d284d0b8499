package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/weft-cni/weft/internal/clitest"
)

var ipamBin string

// TestMain builds weft-ipam once: bad requests are tested on the real
// binary, as a runtime (or the bridge plugin) would call it.
func TestMain(m *testing.M) { clitest.Main(m, "weft-ipam", &ipamBin) }

func (s stateDir) run(t *testing.T, env map[string]string, stdin string) ([]byte, string, int) {
	t.Helper()
	return s.Sandbox.Run(t, ipamBin, env, stdin)
}

func env(cmd, containerID, netns, ifname string) map[string]string {
	m := map[string]string{"CNI_PATH": "/nonexistent"}
	for k, v := range map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": containerID, "CNI_NETNS": netns, "CNI_IFNAME": ifname} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// stateDir is a node in use (clitest.Node) whose store holds one
// allocation, "keep", made by weft-ipam itself for a pod in netns.
type stateDir struct {
	*clitest.Node
	netns string
}

func newStateDir(t *testing.T) stateDir {
	t.Helper()
	s := stateDir{Node: clitest.NewNode(t), netns: clitest.ForeignNetns(t)}
	out, stderr, code := s.run(t, env("ADD", "keep", s.netns, "eth0"), s.conf(""))
	if code != 0 {
		t.Fatalf("setup ADD failed: %s %s", out, stderr)
	}
	return s
}

// conf is a valid netconf for the state dir with extra fields spliced in
// (extra is `"key":value,...` or "").
func (s stateDir) conf(extra string) string {
	if extra != "" {
		extra = "," + extra
	}
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft-ipam","etcdEndpoints":%s,"subnetFile":%q,"dataDir":%q%s}`, s.EtcdJSON(), s.SubnetFile, s.DataDir, extra)
}

// TestBadRequests: every bad request gets the spec's JSON error with the
// right code and a non-zero exit, no panic, and leaves the subnet file and
// the store exactly as they were.
func TestBadRequests(t *testing.T) {
	s := newStateDir(t)
	long := strings.Repeat("a", 10000)
	good := s.conf("")
	add := env("ADD", "c1", s.netns, "eth0")
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	prev := func(ip string) string {
		return s.conf(`"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"` + ip + `/24","gateway":"172.7.21.1"}]}`)
	}
	const (
		decode  = 6
		envVar  = 4
		badConf = 7
		compat  = 1
		other   = 999
	)
	tests := []struct {
		name  string
		env   map[string]string
		stdin string
		code  uint
	}{
		// Malformed input.
		{"truncated json", add, good[:len(good)/2], decode},
		{"not json", add, "weft please", decode},
		{"empty stdin", add, "", decode},
		{"json array", add, `[1,2,3]`, decode},
		{"nested 20000 deep", add, deep, decode},
		{"name is a number", add, `{"cniVersion":"1.1.0","name":7,"type":"weft-ipam"}`, decode},
		{"cniVersion is a number", add, `{"cniVersion":1.1,"name":"weft","type":"weft-ipam"}`, decode},
		{"etcdEndpoints is a string", add, s.conf(`"etcdEndpoints":"http://x:2379"`), decode},
		{"ipam is a string", add, s.conf(`"ipam":"weft-ipam"`), decode},
		{"dataDir is a number", add, s.conf(`"ipam":{"dataDir":42}`), decode},
		{"ipMasq is a string", add, s.conf(`"ipMasq":"yes"`), decode},
		{"mtu is a string", add, s.conf(`"mtu":"big"`), decode},
		{"prevResult ips not a list", env("CHECK", "keep", s.netns, "eth0"), s.conf(`"prevResult":{"cniVersion":"1.1.0","ips":"nope"}`), decode},
		{"valid-attachments not a list", env("GC", "", "", ""), s.conf(`"cni.dev/valid-attachments":"keep"`), decode},
		// Versions.
		{"unknown cniVersion", add, `{"cniVersion":"9.9.9","name":"weft","type":"weft-ipam"}`, compat},
		{"GC before 1.1.0", env("GC", "", "", ""), strings.Replace(good, `"1.1.0"`, `"0.4.0"`, 1), compat},
		{"STATUS before 1.1.0", env("STATUS", "", "", ""), strings.Replace(good, `"1.1.0"`, `"1.0.0"`, 1), compat},
		// CNI_* variables.
		{"unknown command", env("FROB", "c1", s.netns, "eth0"), good, envVar},
		{"lower-case command", env("add", "c1", s.netns, "eth0"), good, envVar},
		{"missing container id", clitest.Without(add, "CNI_CONTAINERID"), good, envVar},
		{"container id ../etc", env("ADD", "../etc", s.netns, "eth0"), good, envVar},
		{"container id a/b", env("ADD", "a/b", s.netns, "eth0"), good, envVar},
		{"container id .", env("ADD", ".", s.netns, "eth0"), good, envVar},
		{"container id 10k chars", env("ADD", long, s.netns, "eth0"), good, envVar},
		{"container id with newline", env("ADD", "c1\nip 172.7.21.9 x eth0", s.netns, "eth0"), good, envVar},
		{"container id with space", env("ADD", "c 1", s.netns, "eth0"), good, envVar},
		{"container id with tab", env("ADD", "c\t1", s.netns, "eth0"), good, envVar},
		{"missing ifname", clitest.Without(add, "CNI_IFNAME"), good, envVar},
		{"ifname with /", env("ADD", "c1", s.netns, "e/0"), good, envVar},
		{"ifname ..", env("ADD", "c1", s.netns, ".."), good, envVar},
		{"ifname 10k chars", env("ADD", "c1", s.netns, long), good, envVar},
		{"missing netns", clitest.Without(add, "CNI_NETNS"), good, envVar},
		{"netns does not exist", env("ADD", "c1", "/var/run/netns/weft-no-such-ns", "eth0"), good, envVar},
		{"netns is a directory", env("ADD", "c1", s.Dir, "eth0"), good, envVar},
		{"netns is a mount namespace", env("ADD", "c1", "/proc/self/ns/mnt", "eth0"), good, envVar},
		{"netns is the plugin's own", clitest.Override(env("ADD", "c1", "/proc/self/ns/net", "eth0")), good, envVar},
		{"missing CNI_PATH", clitest.Without(add, "CNI_PATH"), good, envVar},
		{"DEL container id ../", env("DEL", "../keep", s.netns, "eth0"), good, envVar},
		{"DEL container id 10k", env("DEL", long, s.netns, "eth0"), good, envVar},
		{"CHECK container id ../", env("CHECK", "../keep", s.netns, "eth0"), prev("172.7.21.2"), envVar},
		// Network config.
		{"network name ../x", add, `{"cniVersion":"1.1.0","name":"../x","type":"weft-ipam"}`, badConf},
		{"network name missing", add, `{"cniVersion":"1.1.0","type":"weft-ipam"}`, badConf},
		{"network name 10k chars", add, `{"cniVersion":"1.1.0","name":"` + long + `","type":"weft-ipam"}`, badConf},
		{"network name with NUL", add, `{"cniVersion":"1.1.0","name":"we\u0000ft","type":"weft-ipam"}`, badConf},
		{"relative dataDir", add, s.conf(`"ipam":{"dataDir":"ipam"}`), badConf},
		{"dataDir ..", add, s.conf(`"ipam":{"dataDir":".."}`), badConf},
		{"relative subnetFile", add, s.conf(`"ipam":{"subnetFile":"run/subnet.env"}`), badConf},
		{"publicIP not an address", add, s.conf(`"publicIP":"10.0.0.300"`), badConf},
		{"publicIPCIDR not a CIDR", add, s.conf(`"publicIPCIDR":"10.4.7.0/33"`), badConf},
		{"publicIP IPv6", add, s.conf(`"publicIP":"fe80::1"`), badConf},
		{"publicIP unspecified", add, s.conf(`"publicIP":"0.0.0.0"`), badConf},
		{"publicIP multicast", add, s.conf(`"publicIP":"224.0.0.1"`), badConf},
		{"mtu out of range", add, s.conf(`"mtu":70000`), badConf},
		{"mtu too small", add, s.conf(`"mtu":100`), badConf},
		{"iface too long", add, s.conf(`"iface":"averyveryverylongiface"`), badConf},
		{"empty etcd endpoint", add, s.conf(`"etcdEndpoints":[""]`), badConf},
		{"GC with relative dataDir", env("GC", "", "", ""), s.conf(`"ipam":{"dataDir":"x"}`), badConf},
		{"STATUS with no name", env("STATUS", "", "", ""), `{"cniVersion":"1.1.0","type":"weft-ipam"}`, badConf},
		// A node whose daemon has not written the subnet file yet, with no
		// etcd to ask: the runtime should retry, not give up on the config.
		{"ADD before the subnet file exists", add, fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft-ipam","subnetFile":%q,"dataDir":%q}`, s.Dir+"/no-such/subnet.env", s.DataDir), 11},
		// prevResult that does not match the store.
		{"CHECK prevResult names another address", env("CHECK", "keep", s.netns, "eth0"), prev("172.7.21.77"), other},
		{"CHECK of an unknown attachment", env("CHECK", "nobody", s.netns, "eth0"), prev("172.7.21.2"), other},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
	unchanged := s.Unchanged(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer unchanged(t)
			out, stderr, exit := s.run(t, tt.env, tt.stdin)
			if exit == 0 {
				t.Fatalf("weft-ipam exited 0, want failure; stdout %s", out)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatalf("weft-ipam panicked:\n%s", stderr)
			}
			var got clitest.CNIError
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("exit %d with non-JSON stdout %q (stderr %q)", exit, out, stderr)
			}
			if got.Code != tt.code {
				t.Errorf("code %d (%q), want %d", got.Code, got.Msg, tt.code)
			}
			if got.Msg == "" {
				t.Error("error has no message")
			}
		})
	}
}

// TestGoodRequests: the state dir the table runs against works: CHECK of
// the kept attachment passes, and a repeated ADD returns its address.
func TestGoodRequests(t *testing.T) {
	s := newStateDir(t)
	out, stderr, code := s.run(t, env("ADD", "keep", s.netns, "eth0"), s.conf(""))
	if code != 0 || !strings.Contains(string(out), "172.7.21.2/24") {
		t.Fatalf("repeated ADD: exit %d, %s %s", code, out, stderr)
	}
	prev := s.conf(`"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"172.7.21.2/24","gateway":"172.7.21.1"}]}`)
	if out, stderr, code := s.run(t, env("CHECK", "keep", s.netns, "eth0"), prev); code != 0 {
		t.Fatalf("CHECK: exit %d, %s %s", code, out, stderr)
	}
	// In a chain whose earlier plugin added an address of its own, the
	// prevResult lists that one first; weft-ipam's is among the others.
	chained := s.conf(`"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"net1","sandbox":"` + s.netns + `"},{"name":"eth0","sandbox":"` + s.netns + `"}],` +
		`"ips":[{"address":"10.9.0.5/24","interface":0},{"address":"172.7.21.2/24","gateway":"172.7.21.1","interface":1}]}`)
	if out, stderr, code := s.run(t, env("CHECK", "keep", s.netns, "eth0"), chained); code != 0 {
		t.Fatalf("CHECK with another plugin's address first: exit %d, %s %s", code, out, stderr)
	}
}
