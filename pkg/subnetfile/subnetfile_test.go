package subnetfile

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const seed = "FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=172.7.21.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\nWEFT_IPMASQ=false\n"

func TestRoundTrip(t *testing.T) {
	f := ForLease(netip.MustParsePrefix("172.7.0.0/16"), netip.MustParsePrefix("172.7.21.0/24"), 1500, false)
	if got := string(f.Marshal()); got != seed {
		t.Fatalf("Marshal = %q, want flannel's keys and weft's %q", got, seed)
	}
	path := filepath.Join(t.TempDir(), "run", "subnet.env")
	if err := Write(path, f); err != nil {
		t.Fatal(err)
	}
	back, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if *back != *f || back.Lease() != netip.MustParsePrefix("172.7.21.0/24") || back.Gateway() != netip.MustParseAddr("172.7.21.1") {
		t.Fatalf("read back %+v, want %+v", back, f)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", st.Mode())
	}
}

func TestReadMissing(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err %v, want ErrNotExist", err)
	}
}

func TestParseFlannelExtras(t *testing.T) {
	f, err := Parse([]byte("# written by flanneld\nFLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.MTU != 1450 || !f.IPMasq || f.Weft || f.Lease().String() != "10.244.3.0/24" {
		t.Fatalf("got %+v", f)
	}
}

// WEFT_IPMASQ marks a file weft wrote and carries weft's setting for the
// node, whatever FLANNEL_IPMASQ says and in whichever order.
func TestParseWeftMasquerade(t *testing.T) {
	for data, want := range map[string]bool{
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPMASQ=true\nWEFT_IPMASQ=false\n": false,
		"WEFT_IPMASQ=true\nFLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPMASQ=false\n": true,
	} {
		f, err := Parse([]byte(data))
		if err != nil {
			t.Fatal(err)
		}
		if !f.Weft || f.IPMasq != want {
			t.Errorf("%q: Weft %t IPMasq %t, want true %t", data, f.Weft, f.IPMasq, want)
		}
	}
	if _, err := Parse([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nWEFT_IPMASQ=maybe\n")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "WEFT_IPMASQ") {
		t.Fatalf("bad WEFT_IPMASQ: err %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct{ data, want string }{
		"empty":           {"", "FLANNEL_NETWORK missing"},
		"no subnet":       {"FLANNEL_NETWORK=172.7.0.0/16\n", "FLANNEL_SUBNET missing"},
		"no equals":       {"FLANNEL_NETWORK\n", "no '='"},
		"bad network":     {"FLANNEL_NETWORK=x\nFLANNEL_SUBNET=172.7.21.1/24\n", "not an IPv4 CIDR"},
		"ipv6 subnet":     {"FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=fd00::1/64\n", "not an IPv4 CIDR"},
		"outside":         {"FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=10.0.0.1/24\n", "not inside"},
		"wider than net":  {"FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=172.7.0.1/8\n", "not inside"},
		"tiny subnet":     {"FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=172.7.0.1/32\n", "too small"},
		"gateway not .1":  {"FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=172.7.21.5/24\n", "first address, 172.7.21.1/24"},
		"network address": {"FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=172.7.21.0/24\n", "first address"},
		"bad mtu":         {seed + "FLANNEL_MTU=-3\n", "not an MTU"},
		"bad masq":        {seed + "FLANNEL_IPMASQ=maybe\n", "not a boolean"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.data))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(seed))
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00::/56\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		again, err := Parse(file.Marshal())
		if err != nil || *again != *file {
			t.Fatalf("round trip of %+v: %+v, %v", file, again, err)
		}
	})
}
