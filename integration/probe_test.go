//go:build integration

package integration

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The probes run integration/cmd/srcip inside the namespaces (a process per
// probe, rather than a goroutine switched into the netns), so they need no
// ping, curl or nc on the machine and behave like any other program there.

var tools sync.Map // name -> *toolBuild

type toolBuild struct {
	once sync.Once
	path string
	err  error
}

// SrcIP returns the path of the srcip probe, built once per test process.
func SrcIP() (string, error) { return Tool("srcip") }

// Tool builds ./integration/cmd/<name> into bin/<name> once per test process
// (so it is never stale) and returns its path.
func Tool(name string) (string, error) {
	v, _ := tools.LoadOrStore(name, &toolBuild{})
	b := v.(*toolBuild)
	b.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		root := RepoRoot()
		dst := filepath.Join(root, "bin", name)
		tmp := fmt.Sprintf("%s.%d.tmp", dst, os.Getpid())
		cmd := exec.Command(goBin, "build", "-o", tmp, "./integration/cmd/"+name)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			b.err = fmt.Errorf("building %s: %w: %s", name, err, out)
			return
		}
		if err := os.Rename(tmp, dst); err != nil {
			b.err = fmt.Errorf("installing %s: %w", name, err)
			return
		}
		b.path = dst
	})
	return b.path, b.err
}

// mustSrcIP is SrcIP that fails the test.
func mustSrcIP(t testing.TB) string {
	t.Helper()
	p, err := SrcIP()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Ping sends one ICMP echo request to ip from the namespace and waits up to
// a second for the reply (ping -c1 -W1).
func Ping[N NSRef](ref N, ip netip.Addr) error {
	bin, err := SrcIP()
	if err != nil {
		return err
	}
	_, err = TryIn(ref, bin, "ping", "-t", "1s", ip.String())
	return err
}

// Connect opens and closes a TCP connection to addr from the namespace.
func Connect[N NSRef](ref N, addr netip.AddrPort) error {
	bin, err := SrcIP()
	if err != nil {
		return err
	}
	_, err = TryIn(ref, bin, "connect", "-t", "3s", addr.String())
	return err
}

// Routes returns `ip route` (IPv4 main table) in the namespace.
func Routes[N NSRef](t testing.TB, ref N) string {
	t.Helper()
	return RunIn(t, ref, "ip", "route")
}

// ServeSrcIP starts a srcip server in the namespace on ip and a free port,
// stopped at t's cleanup. The server prints one line per connection (the
// peer's IP) on stdout and tells each peer what it saw.
func ServeSrcIP[N NSRef](t testing.TB, ref N, ip netip.Addr) (*Proc, netip.AddrPort) {
	t.Helper()
	p := StartIn(t, ref, mustSrcIP(t), "serve", netip.AddrPortFrom(ip, 0).String())
	line := p.WaitStderrLine(t, 10*time.Second, "listening ")
	addr, err := netip.ParseAddrPort(strings.TrimPrefix(line, "listening "))
	if err != nil {
		t.Fatalf("srcip listening line %q: %v", line, err)
	}
	return p, addr
}

// DialSrcIP connects from the namespace to a srcip server and returns the
// source address the server saw.
func DialSrcIP[N NSRef](ref N, addr netip.AddrPort) (netip.Addr, error) {
	bin, err := SrcIP()
	if err != nil {
		return netip.Addr{}, err
	}
	out, err := TryIn(ref, bin, "dial", "-t", "3s", addr.String())
	if err != nil {
		return netip.Addr{}, err
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(out))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("srcip dial printed %q: %w", out, err)
	}
	return ip, nil
}

// SourceIPSeen listens on serverIP in server, connects from client, and
// returns the source IP the server saw (the client's own address, or the
// one it was masqueraded to). It fails the test if the connection fails.
func SourceIPSeen[S, C NSRef](t testing.TB, server S, serverIP netip.Addr, client C) netip.Addr {
	t.Helper()
	srv, addr := ServeSrcIP(t, server, serverIP)
	defer srv.Stop()
	ip, err := DialSrcIP(client, addr)
	if err != nil {
		t.Fatalf("connecting from %s to %s in %s: %v", nsName(client), addr, nsName(server), err)
	}
	return ip
}
