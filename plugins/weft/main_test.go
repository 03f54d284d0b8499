package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-cni/weft/internal/clitest"

	"github.com/weft-cni/weft/pkg/ipam"
)

var pluginBin string

// TestMain builds the plugin once: bad requests are tested on the real
// binary, as a runtime would call it.
func TestMain(m *testing.M) { clitest.Main(m, "weft", &pluginBin) }

// run runs the plugin in the state dir's sandbox; on failure stdout must be
// the spec's JSON error.
func (s stateDir) run(t *testing.T, env map[string]string, stdin string) (clitest.CNIError, int) {
	t.Helper()
	stdout, stderr, code := s.Sandbox.Run(t, pluginBin, env, stdin)
	var out clitest.CNIError
	if code != 0 {
		if err := json.Unmarshal(stdout, &out); err != nil {
			t.Fatalf("exit %d with non-JSON stdout %q (stderr %q)", code, stdout, stderr)
		}
	}
	return out, code
}

// noLeaseConf names a subnet file that does not exist and no etcd.
const noLeaseConf = `{"cniVersion":"1.1.0","name":"weft","type":"weft","subnetFile":"/nonexistent/weft-test/subnet.env","ipam":{"dataDir":"/nonexistent/weft-test/ipam"}}`

func env(cmd, containerID, netns, ifname string) map[string]string {
	return map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": containerID, "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": "/nonexistent"}
}

// stateDir is a node in use (clitest.Node) whose IPAM store holds one
// allocation, "keep".
type stateDir struct{ *clitest.Node }

func newStateDir(t *testing.T) stateDir {
	t.Helper()
	s := stateDir{clitest.NewNode(t)}
	store, err := ipam.OpenDiskStore(s.DataDir, "weft")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := ipam.NewPool(store, netip.MustParsePrefix("172.7.21.0/24")).Allocate(context.Background(), ipam.Attachment{ContainerID: "keep", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// conf is a valid netconf for the state dir with extra top-level fields
// (`"key":value,...`) and extra ipam fields spliced in.
func (s stateDir) conf(extra, ipamExtra string) string {
	if extra != "" {
		extra = "," + extra
	}
	if ipamExtra != "" {
		ipamExtra = "," + ipamExtra
	}
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft","etcdEndpoints":%s,"subnetFile":%q%s,"ipam":{"type":"weft-ipam","dataDir":%q%s}}`,
		s.EtcdJSON(), s.SubnetFile, extra, s.DataDir, ipamExtra)
}

// TestBadRequests: every bad request gets the spec's JSON error with the
// right code and a non-zero exit, no panic, and leaves the subnet file and
// the IPAM store as they were (as root each call runs in a fresh netns).
func TestBadRequests(t *testing.T) {
	st := newStateDir(t)
	goodConf := st.conf("", "")
	add := env("ADD", "c1", "/proc/self/ns/net", "eth0")
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	long := strings.Repeat("a", 10000)
	// A pod namespace and a config the node can be set up with, with no
	// etcd to ask: a request that got through would build the bridge and
	// rules in the sandbox before anything refused it.
	pod := clitest.ForeignNetns(t)
	fileConf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft","subnetFile":%q,"ipam":{"dataDir":%q}}`, st.SubnetFile, st.DataDir)
	noFileConf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft","subnetFile":%q,"ipam":{"dataDir":%q}}`, filepath.Join(st.Dir, "no-daemon-yet", "subnet.env"), st.DataDir)
	tests := []struct {
		name  string
		env   map[string]string
		stdin string
		code  uint
	}{
		{"truncated json", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":`, 6},
		{"not json", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `weft please`, 6},
		{"wrong type for mtu", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"weft","type":"weft","mtu":"big"}`, 6},
		{"unknown cniVersion", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"9.9.9","name":"weft","type":"weft"}`, 1},
		{"unknown command", env("FROB", "c1", "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"missing container id", env("ADD", "", "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"container id with ../", env("ADD", "../etc", "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"container id with /", env("ADD", "a/b", "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"container id 10k chars", env("ADD", long, "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"ifname too long", env("ADD", "c1", "/proc/self/ns/net", "eth0eth0eth0eth0"), goodConf, 4},
		{"ifname with /", env("ADD", "c1", "/proc/self/ns/net", "e/0"), goodConf, 4},
		{"ifname ..", env("ADD", "c1", "/proc/self/ns/net", ".."), goodConf, 4},
		{"netns does not exist", env("ADD", "c1", "/nonexistent/netns", "eth0"), goodConf, 4},
		{"netns is not a namespace", env("ADD", "c1", "/etc/hostname", "eth0"), goodConf, 4},
		{"network name with ../", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"../x","type":"weft"}`, 7},
		{"network name missing", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","type":"weft"}`, 7},
		{"bridge name too long", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"weft","type":"weft","bridge":"averyveryverylongbridge"}`, 7},
		{"bad publicIP", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"weft","type":"weft","publicIP":"10.0.0.300"}`, 7},
		{"relative subnetFile", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"weft","type":"weft","subnetFile":"run/subnet.env"}`, 7},
		{"mtu out of range", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"weft","type":"weft","mtu":70000}`, 7},
		{"ipam type escapes", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"weft","type":"weft","ipam":{"type":"../../bin/sh"}}`, 7},
		{"relative ipam dataDir", env("DEL", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"weft","type":"weft","ipam":{"dataDir":"x"}}`, 7},
		{"negative peerSyncInterval", env("ADD", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"weft","type":"weft","peerSyncInterval":-1}`, 7},
		{"check without prevResult", env("CHECK", "c1", "/proc/self/ns/net", "eth0"), goodConf, 7},
		{"check with garbage prevResult", env("CHECK", "c1", "/proc/self/ns/net", "eth0"), `{"cniVersion":"1.1.0","name":"weft","type":"weft","prevResult":{"ips":"nope"}}`, 6},
		{"status without lease or etcd", env("STATUS", "", "", ""), noLeaseConf, 50},
		// A node whose daemon has not written the subnet file yet: the
		// runtime should retry, not give up on the config.
		// Its subnet file's directory in the state dir, so that a lock or
		// a directory made for it counts as a change.
		{"ADD before the subnet file exists", env("ADD", "c1", pod, "eth0"), noFileConf, 11},
		// Malformed input and wrong types.
		{"empty stdin", add, "", 6},
		{"json array", add, `[1,2,3]`, 6},
		{"nested 20000 deep", add, deep, 6},
		{"cniVersion is a number", add, `{"cniVersion":1.1,"name":"weft","type":"weft"}`, 6},
		{"etcdEndpoints is a string", add, st.conf(`"etcdEndpoints":"http://x:2379"`, ""), 6},
		{"hairpinMode is a string", add, st.conf(`"hairpinMode":"on"`, ""), 6},
		{"ipMasq is a string", add, st.conf(`"ipMasq":"yes"`, ""), 6},
		{"ipam is a string", add, `{"cniVersion":"1.1.0","name":"weft","type":"weft","ipam":"weft-ipam"}`, 6},
		{"valid-attachments not a list", env("GC", "", "", ""), st.conf(`"cni.dev/valid-attachments":"keep"`, ""), 6},
		// Versions.
		{"GC before 1.1.0", env("GC", "", "", ""), strings.Replace(goodConf, `"1.1.0"`, `"0.4.0"`, 1), 1},
		{"STATUS before 1.1.0", env("STATUS", "", "", ""), strings.Replace(goodConf, `"1.1.0"`, `"1.0.0"`, 1), 1},
		// CNI_* variables.
		{"lower-case command", env("add", "c1", "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"missing netns", clitest.Without(add, "CNI_NETNS"), goodConf, 4},
		{"missing CNI_PATH", clitest.Without(add, "CNI_PATH"), goodConf, 4},
		{"missing ifname", clitest.Without(add, "CNI_IFNAME"), goodConf, 4},
		{"container id with newline", env("ADD", "c1\nip 172.7.21.9 x eth0", "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"container id with space", env("ADD", "c 1", "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"container id .", env("ADD", ".", "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"ifname with colon", env("ADD", "c1", "/proc/self/ns/net", "eth0:1"), goodConf, 4},
		{"ifname with space", env("ADD", "c1", "/proc/self/ns/net", "eth 0"), goodConf, 4},
		// The kernel takes control characters in a name; weft's records
		// (the IPAM store, the veth's mark) do not.
		{"ifname with control character", env("ADD", "c1", pod, "e\x01"), fileConf, 4},
		{"ifname with DEL character", env("ADD", "c1", pod, "e\x7f"), fileConf, 4},
		// A chain's prevResult is decoded before the node is touched.
		{"ADD with garbage prevResult", env("ADD", "c1", pod, "eth0"), strings.Replace(fileConf, `"type":"weft",`, `"type":"weft","prevResult":{"ips":"nope"},`, 1), 6},
		{"netns is a directory", env("ADD", "c1", "/tmp", "eth0"), goodConf, 4},
		{"netns is a relative path", env("ADD", "c1", "netns/pod", "eth0"), goodConf, 4},
		{"netns is a mount namespace", env("ADD", "c1", "/proc/self/ns/mnt", "eth0"), goodConf, 4},
		{"netns is the plugin's own", clitest.Override(env("ADD", "c1", "/proc/self/ns/net", "eth0")), goodConf, 4},
		{"netns 10k chars", env("ADD", "c1", "/"+long, "eth0"), goodConf, 4},
		{"DEL container id ../", env("DEL", "../keep", "/proc/self/ns/net", "eth0"), goodConf, 4},
		{"DEL ifname with /", env("DEL", "keep", "/proc/self/ns/net", "e/0"), goodConf, 4},
		{"CHECK container id ../", env("CHECK", "../keep", "/proc/self/ns/net", "eth0"), goodConf, 4},
		// Network config.
		{"network name 10k chars", add, `{"cniVersion":"1.1.0","name":"` + long + `","type":"weft"}`, 7},
		{"network name with NUL", add, `{"cniVersion":"1.1.0","name":"we\u0000ft","type":"weft"}`, 7},
		{"publicIP IPv6", add, st.conf(`"publicIP":"fe80::1"`, ""), 7},
		{"publicIP multicast", add, st.conf(`"publicIP":"224.0.0.1"`, ""), 7},
		{"publicIPCIDR not a CIDR", add, st.conf(`"publicIPCIDR":"10.4.7.0"`, ""), 7},
		{"iface too long", add, st.conf(`"iface":"averyveryverylongiface"`, ""), 7},
		{"empty etcd endpoint", add, st.conf(`"etcdEndpoints":[""]`, ""), 7},
		{"peerSyncInterval too large", add, st.conf(`"peerSyncInterval":100000000`, ""), 7},
		{"ipam type ..", add, st.conf("", `"type":".."`), 7},
		{"ADD with relative ipam dataDir", add, st.conf("", `"dataDir":"x"`), 7},
		{"ADD with relative ipam subnetFile", add, st.conf("", `"subnetFile":"run/subnet.env"`), 7},
		{"ADD with bad ipam publicIP", add, st.conf("", `"publicIP":"nope"`), 7},
		{"ipam subnetFile other than the plugin's", add, st.conf("", `"subnetFile":"/run/other/subnet.env"`), 7},
		{"ipam etcdPrefix other than the plugin's", add, st.conf("", `"etcdPrefix":"/other"`), 7},
		{"GC with relative ipam dataDir", env("GC", "", "", ""), st.conf("", `"dataDir":"x"`), 7},
		// prevResult that does not match the pod.
		{"CHECK prevResult for a missing interface", clitest.Override(env("CHECK", "keep", "/proc/self/ns/net", "eth0")),
			st.conf(`"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"172.7.21.2/24","gateway":"172.7.21.1"}]}`, ""), 999},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
	unchanged := st.Unchanged(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer unchanged(t)
			got, exit := st.run(t, tt.env, tt.stdin)
			if exit == 0 {
				t.Fatal("plugin exited 0, want failure")
			}
			if got.Code != tt.code {
				t.Fatalf("code %d (%q), want %d", got.Code, got.Msg, tt.code)
			}
			if got.Msg == "" {
				t.Fatal("error has no message")
			}
		})
	}
}

// TestAddRefusesIDTooLongForItsMark: a container ID that ValidateName
// takes but that would not fit in the veth's mark (worst case, with
// "weft0" and "eth0": 209 bytes) is refused with code 4, for that reason,
// and before anything changes. (Any other refusal of the request would
// also be code 4, so the message is what tells them apart.)
func TestAddRefusesIDTooLongForItsMark(t *testing.T) {
	st := newStateDir(t)
	unchanged := st.Unchanged(t)
	defer unchanged(t)
	got, exit := st.run(t, env("ADD", strings.Repeat("c", 210), "/proc/self/ns/net", "eth0"), st.conf("", ""))
	if exit == 0 || got.Code != 4 || !strings.Contains(got.Msg, "alias") {
		t.Fatalf("ADD with a 210-byte container ID: exit %d, code %d %q; want code 4 saying the mark would not fit", exit, got.Code, got.Msg)
	}
}

func TestVersion(t *testing.T) {
	cmd := exec.Command(pluginBin)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.1.0"}`)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Supported []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		if !strings.Contains(strings.Join(v.Supported, " "), want) {
			t.Errorf("supported versions %v lack %s", v.Supported, want)
		}
	}
}

// TestStatus: STATUS passes on a node with a lease and a readable IPAM
// store, fails with code 50 when the store cannot be read (every ADD would
// fail), and passes a delegated IPAM's STATUS error on, as the spec asks.
func TestStatus(t *testing.T) {
	st := newStateDir(t)
	status := env("STATUS", "", "", "")
	if out, code := st.run(t, status, st.conf("", "")); code != 0 {
		t.Fatalf("STATUS on a good node: exit %d %+v", code, out)
	}
	state := filepath.Join(st.DataDir, "weft", "state")
	good, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, []byte("not a state file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := st.run(t, status, st.conf("", "")); code == 0 || out.Code != 50 {
		t.Errorf("STATUS with a corrupt IPAM store: exit %d %+v, want code 50", code, out)
	}
	if err := os.WriteFile(state, good, 0o600); err != nil {
		t.Fatal(err)
	}

	bin := t.TempDir()
	fake := "#!/bin/sh\n[ \"$CNI_COMMAND\" = STATUS ] || exit 0\necho '{\"cniVersion\":\"1.1.0\",\"code\":51,\"msg\":\"ipam down\"}'\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "fake-ipam"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	delegated := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft","subnetFile":%q,"ipam":{"type":"fake-ipam"}}`, st.SubnetFile)
	status["CNI_PATH"] = bin
	if out, code := st.run(t, status, delegated); code == 0 || out.Code != 51 || !strings.Contains(out.Msg, "ipam down") {
		t.Errorf("STATUS with a failing delegated IPAM: exit %d %+v, want its code 51", code, out)
	}
}

// TestDelWithDifferingIPAMSettings: ADD refuses an ipam section whose node
// settings differ from the plugin's, but DEL goes on with the plugin's
// settings, so pods added before the conflist changed can still go.
func TestDelWithDifferingIPAMSettings(t *testing.T) {
	st := newStateDir(t)
	conf := st.conf("", `"subnetFile":"/run/other/subnet.env"`)
	del := env("DEL", "keep", "", "eth0")
	if out, code := st.run(t, del, conf); code != 0 {
		t.Fatalf("DEL with a differing ipam subnetFile: exit %d %+v, want it to go on", code, out)
	}
	store, err := ipam.OpenDiskStore(st.DataDir, "weft")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, ok, err := ipam.NewPool(store, netip.MustParsePrefix("172.7.21.0/24")).Lookup(context.Background(), ipam.Attachment{ContainerID: "keep", IfName: "eth0"}); err != nil || ok {
		t.Errorf("after DEL the store still holds keep (%t, %v)", ok, err)
	}
}
