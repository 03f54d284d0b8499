package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weft-cni/weft/internal/clitest"
)

// TestAddAfterAnotherPlugin: weft second in a chain outputs the prevResult
// it was given with its own interface, address and routes added (the
// spec's MUST), its address pointing at its own interface; a CHECK given
// that result checks weft's entries and passes; DEL leaves no address.
func TestAddAfterAnotherPlugin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a real ADD in a network namespace the test creates")
	}
	st := newStateDir(t)
	pod := clitest.ForeignNetns(t)
	for _, v := range []string{"0.4.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			prev := fmt.Sprintf(`{"cniVersion":%q,"interfaces":[{"name":"net1","mac":"02:00:00:00:00:01","sandbox":%q}],
				"ips":[{"version":"4","address":"10.9.0.5/24","gateway":"10.9.0.1","interface":0}],
				"dns":{"nameservers":["10.96.0.10"]}}`, v, pod)
			conf := func(prevResult string) string {
				return fmt.Sprintf(`{"cniVersion":%q,"name":"weft","type":"weft","subnetFile":%q,"ipam":{"dataDir":%q},"prevResult":%s}`,
					v, st.SubnetFile, st.DataDir, prevResult)
			}
			stdout, stderr, code := st.Sandbox.Run(t, pluginBin, env("ADD", "c-"+v, pod, "eth0"), conf(prev))
			if code != 0 {
				t.Fatalf("ADD after another plugin: exit %d %s %s", code, stdout, stderr)
			}
			t.Cleanup(func() { st.Sandbox.Run(t, pluginBin, env("DEL", "c-"+v, pod, "eth0"), conf(prev)) })
			res := decodeResult(t, v, stdout)
			if len(res.Interfaces) != 4 || res.Interfaces[0].Name != "net1" || res.Interfaces[3].Name != "eth0" || res.Interfaces[3].Sandbox != pod {
				t.Fatalf("interfaces %s, want net1 then weft's three", stdout)
			}
			if len(res.IPs) != 2 || res.IPs[0].Address.String() != "10.9.0.5/24" || *res.IPs[0].Interface != 0 || *res.IPs[1].Interface != 3 {
				t.Fatalf("ips %s, want 10.9.0.5 on net1 then weft's on eth0", stdout)
			}
			if len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != "10.96.0.10" {
				t.Errorf("dns %+v, want the prevResult's", res.DNS)
			}
			// The runtime's CHECK gets the chain's result.
			if out, stderr, code := st.Sandbox.Run(t, pluginBin, env("CHECK", "c-"+v, pod, "eth0"), conf(string(stdout))); code != 0 {
				t.Errorf("CHECK with the chain's result: exit %d %s %s", code, out, stderr)
			}
			// A prevResult that is not weft's: no eth0 in it. It is refused
			// as such, not for an address that happens not to match.
			if out, _, code := st.Sandbox.Run(t, pluginBin, env("CHECK", "c-"+v, pod, "eth0"), conf(prev)); code == 0 {
				t.Errorf("CHECK with a prevResult naming only net1 passed: %s", out)
			} else if !strings.Contains(string(out), "lists no pod interface eth0") {
				t.Errorf("CHECK with a prevResult naming only net1 failed for another reason: %s", out)
			}
		})
	}
}

// decodeResult parses a plugin's result of cniVersion v and checks that it
// says v.
func decodeResult(t *testing.T, v string, stdout []byte) *current.Result {
	t.Helper()
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(stdout, &head); err != nil || head.CNIVersion != v {
		t.Fatalf("result says cniVersion %q (%v), want %s: %s", head.CNIVersion, err, v, stdout)
	}
	r, err := version.NewResult(v, stdout)
	if err != nil {
		t.Fatal(err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCheckAfterChainWithUnindexedIPs: an earlier plugin's addresses that
// name no interface (allowed by the spec) are not weft's: the CHECK given
// the chain's result must not look for them on weft's pod interface, nor
// ask weft's IPAM store about them.
func TestCheckAfterChainWithUnindexedIPs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a real ADD in a network namespace the test creates")
	}
	st := newStateDir(t)
	pod := clitest.ForeignNetns(t)
	for _, tc := range []struct{ name, ifName, prev string }{
		{"with interfaces", "eth1", fmt.Sprintf(`{"cniVersion":"1.1.0","interfaces":[{"name":"net1","sandbox":%q}],
			"ips":[{"address":"10.9.0.5/24","gateway":"10.9.0.1"}]}`, pod)},
		{"no interfaces", "eth2", `{"cniVersion":"1.1.0","ips":[{"address":"10.9.0.6/24"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, ifName, prev := "c-"+tc.ifName, tc.ifName, tc.prev
			conf := func(prevResult string) string {
				return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft","subnetFile":%q,"ipam":{"dataDir":%q},"prevResult":%s}`,
					st.SubnetFile, st.DataDir, prevResult)
			}
			stdout, stderr, code := st.Sandbox.Run(t, pluginBin, env("ADD", id, pod, ifName), conf(prev))
			if code != 0 {
				t.Fatalf("ADD after another plugin: exit %d %s %s", code, stdout, stderr)
			}
			t.Cleanup(func() { st.Sandbox.Run(t, pluginBin, env("DEL", id, pod, ifName), conf(prev)) })
			if out, stderr, code := st.Sandbox.Run(t, pluginBin, env("CHECK", id, pod, ifName), conf(string(stdout))); code != 0 {
				t.Errorf("CHECK with the chain's result %s: exit %d %s %s", stdout, code, out, stderr)
			}
		})
	}
}
