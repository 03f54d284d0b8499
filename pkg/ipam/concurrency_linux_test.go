package ipam

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Environment of a helper process: TestMain runs allocateHelper instead of
// the tests when helperEnv is set.
const (
	helperEnv   = "WEFT_IPAM_TEST_HELPER"
	helperDir   = "WEFT_IPAM_TEST_DIR"
	helperID    = "WEFT_IPAM_TEST_ID"
	helperAlloc = "allocate"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == helperAlloc {
		os.Exit(allocateHelper())
	}
	os.Exit(m.Run())
}

// allocateHelper waits for its stdin to close, so that all helpers start
// together, then allocates one address and prints it.
func allocateHelper() int {
	if _, err := io.Copy(io.Discard, os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := OpenDiskStore(os.Getenv(helperDir), testNetwork)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	ip, err := NewPool(s, subnet24).Allocate(context.Background(), Attachment{os.Getenv(helperID), "eth0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ip)
	return 0
}

// assertDistinct fails unless ips has n distinct addresses in the subnet,
// none of them reserved.
func assertDistinct(t *testing.T, ips []netip.Addr, n int) {
	t.Helper()
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if seen[ip] || !subnet24.Contains(ip) || ip == gateway(subnet24) || ip == subnet24.Addr() {
			t.Fatalf("duplicate or bad address %s in %v", ip, ips)
		}
		seen[ip] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct addresses, want %d", len(seen), n)
	}
}

// concurrentAllocate runs one goroutine per store, allocating and then
// releasing.
func concurrentAllocate(t *testing.T, stores []Store) {
	n := len(stores)
	ctx := context.Background()
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ips[i], errs[i] = NewPool(stores[i], subnet24).Allocate(ctx, Attachment{fmt.Sprintf("c%02d", i), "eth0"})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	assertDistinct(t, ips, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = NewPool(stores[i], subnet24).Release(ctx, Attachment{fmt.Sprintf("c%02d", i), "eth0"})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if left := mustList(t, NewPool(stores[0], subnet24)); len(left) != 0 {
		t.Fatalf("after releasing all: %v", left)
	}
}

func TestDiskStoreConcurrentStores(t *testing.T) {
	dataDir := t.TempDir()
	stores := make([]Store, 30)
	for i := range stores {
		stores[i] = openStore(t, dataDir)
	}
	concurrentAllocate(t, stores)
}

func TestDiskStoreSharedStore(t *testing.T) {
	s := openStore(t, t.TempDir())
	stores := make([]Store, 30)
	for i := range stores {
		stores[i] = s
	}
	concurrentAllocate(t, stores)
}

// TestDiskStoreConcurrentProcesses runs 20 copies of the test binary that
// allocate at the same moment, one CNI invocation each.
func TestDiskStoreConcurrentProcesses(t *testing.T) {
	const n = 20
	dataDir := t.TempDir()
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	starts := make([]io.WriteCloser, n)
	for i := range n {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+helperAlloc, helperDir+"="+dataDir,
			fmt.Sprintf("%s=proc%02d", helperID, i))
		outs[i] = new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = outs[i], outs[i]
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i], starts[i] = cmd, stdin
		t.Cleanup(func() { // a failure midway leaves no helper behind
			stdin.Close()
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
	}
	for _, w := range starts {
		w.Close() // go
	}
	ips := make([]netip.Addr, n)
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v: %s", i, err, outs[i])
		}
		ip, err := netip.ParseAddr(strings.TrimSpace(outs[i].String()))
		if err != nil {
			t.Fatalf("helper %d printed %q", i, outs[i])
		}
		ips[i] = ip
	}
	assertDistinct(t, ips, n)
	stored := mustList(t, NewPool(openStore(t, dataDir), subnet24))
	for i, ip := range ips {
		if got := stored[Attachment{fmt.Sprintf("proc%02d", i), "eth0"}]; got != ip {
			t.Errorf("proc%02d: stored %s, printed %s", i, got, ip)
		}
	}
}

// BenchmarkAllocateRelease: one Allocate and one Release with 250 live
// allocations in a /24. "disk" includes two state writes with their fsyncs
// (file and directory); "fake" is the Pool and allocator alone.
func BenchmarkAllocateRelease(b *testing.B) {
	b.Run("disk", func(b *testing.B) {
		benchAllocateRelease(b, openStore(b, b.TempDir()))
	})
	b.Run("fake", func(b *testing.B) {
		benchAllocateRelease(b, newFakeStore())
	})
}

func benchAllocateRelease(b *testing.B, s Store) {
	p := NewPool(s, subnet24)
	ctx := context.Background()
	for i := range 250 {
		mustAllocate(b, p, Attachment{fmt.Sprintf("%064x", i), "eth0"})
	}
	pod := Attachment{strings.Repeat("f", 64), "eth0"}
	for b.Loop() {
		if _, err := p.Allocate(ctx, pod); err != nil {
			b.Fatal(err)
		}
		if err := p.Release(ctx, pod); err != nil {
			b.Fatal(err)
		}
	}
}
