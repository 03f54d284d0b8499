package subnetfile

import (
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestWriteIsAtomic: readers racing a writer that alternates two leases
// only ever see one whole file or the other, never a mix or nothing.
func TestWriteIsAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	network := netip.MustParsePrefix("172.7.0.0/16")
	a := ForLease(network, netip.MustParsePrefix("172.7.21.0/24"), 1500, true)
	b := ForLease(network, netip.MustParsePrefix("172.7.122.0/24"), 1450, false)
	if err := Write(path, a); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				got, err := Read(path)
				if err != nil {
					t.Errorf("a reader saw a broken subnet file: %v", err)
					return
				}
				if *got != *a && *got != *b {
					t.Errorf("a reader saw a mix: %+v", got)
					return
				}
			}
		}()
	}
	for i := range 300 {
		f := a
		if i%2 == 0 {
			f = b
		}
		if err := Write(path, f); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
}

// TestWriteReplacesSymlink: a symlink planted at the subnet file's path is
// replaced, never written through.
func TestWriteReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "subnet.env")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	f := ForLease(netip.MustParsePrefix("172.7.0.0/16"), netip.MustParsePrefix("172.7.21.0/24"), 1500, true)
	if err := Write(path, f); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(victim); err != nil || string(data) != "keep me\n" {
		t.Errorf("symlink target changed: %q, %v", data, err)
	}
	if st, err := os.Lstat(path); err != nil || !st.Mode().IsRegular() {
		t.Errorf("subnet file is not a regular file after the write: %v, %v", st, err)
	}
}
