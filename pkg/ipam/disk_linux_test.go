package ipam

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const testNetwork = "weft-test"

func openStore(t testing.TB, dataDir string) *DiskStore {
	t.Helper()
	s, err := OpenDiskStore(dataDir, testNetwork)
	if err != nil {
		t.Fatalf("OpenDiskStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestDiskStoreCreatesPrivateDirs(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "var", "lib", "cni", "weft")
	openStore(t, dataDir)
	for _, dir := range []string{dataDir, filepath.Dir(dataDir), filepath.Join(dataDir, testNetwork)} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want drwx------", dir, fi.Mode())
		}
	}
	fi, err := os.Stat(filepath.Join(dataDir, testNetwork, lockName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, %v; want mode 0600", fi, err)
	}
}

func TestOpenDiskStoreRejectsNames(t *testing.T) {
	dataDir := t.TempDir()
	for _, network := range []string{"", ".", "..", "a/b", "../x", "a b"} {
		if _, err := OpenDiskStore(dataDir, network); !errors.Is(err, ErrInvalidName) ||
			!strings.Contains(err.Error(), "network name") {
			t.Errorf("OpenDiskStore(%q) = %v, want ErrInvalidName naming the network", network, err)
		}
	}
	if _, err := OpenDiskStore("", testNetwork); err == nil {
		t.Error("OpenDiskStore with empty dataDir succeeded")
	}
}

func TestDiskStorePersists(t *testing.T) {
	dataDir := t.TempDir()
	ctx := context.Background()
	s1, err := OpenDiskStore(dataDir, testNetwork)
	if err != nil {
		t.Fatal(err)
	}
	p1 := NewPool(s1, subnet24)
	a, b := mustAllocate(t, p1, podA), mustAllocate(t, p1, podB)
	if err := p1.Release(ctx, podA); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	p2 := NewPool(openStore(t, dataDir), subnet24)
	if got := mustList(t, p2); !maps.Equal(got, map[Attachment]netip.Addr{podB: b}) {
		t.Fatalf("after reopen: %v", got)
	}
	if again := mustAllocate(t, p2, podB); again != b {
		t.Fatalf("Allocate after reopen = %s, want %s", again, b)
	}
	// The last address survived too: a released one is not reused at once.
	if c := mustAllocate(t, p2, podC); c == a || c == b {
		t.Fatalf("Allocate after reopen reused %s", c)
	}
	if err := p2.Release(ctx, Attachment{"never", "eth0"}); err != nil {
		t.Fatalf("Release of unknown attachment: %v", err)
	}
	released, _, err := p2.GC(ctx, []Attachment{podC})
	if err != nil || len(released) != 1 || released[0] != b {
		t.Fatalf("GC = %v, %v; want [%s]", released, err, b)
	}
	if _, err := os.Lstat(filepath.Join(dataDir, testNetwork, tempName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file left behind: %v", err)
	}
}

func TestDiskStoreCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":   "\x00\x01garbage",
		"empty":     "",
		"truncated": goldenState[:40],
	} {
		t.Run(name, func(t *testing.T) {
			dataDir := t.TempDir()
			p := NewPool(openStore(t, dataDir), subnet24)
			statePath := filepath.Join(dataDir, testNetwork, stateName)
			if err := os.WriteFile(statePath, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Allocate(context.Background(), podA); !errors.Is(err, ErrCorrupt) ||
				!strings.Contains(err.Error(), statePath) {
				t.Fatalf("Allocate on corrupt state = %v, want ErrCorrupt naming %s", err, statePath)
			}
			if data, _ := os.ReadFile(statePath); string(data) != content {
				t.Fatalf("corrupt state was overwritten with %q", data)
			}
		})
	}
}

// plantSymlink makes name inside the network directory a symlink to a
// victim file and returns the victim's path.
func plantSymlink(t *testing.T, dataDir, name string) string {
	t.Helper()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte(goldenState), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(dataDir, testNetwork)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	return victim
}

func assertUntouched(t *testing.T, victim string) {
	t.Helper()
	if data, err := os.ReadFile(victim); err != nil || string(data) != goldenState {
		t.Errorf("symlink target changed: %q, %v", data, err)
	}
}

func TestDiskStoreRefusesSymlinks(t *testing.T) {
	t.Run("state", func(t *testing.T) {
		dataDir := t.TempDir()
		victim := plantSymlink(t, dataDir, stateName)
		p := NewPool(openStore(t, dataDir), subnet24)
		_, err := p.Allocate(context.Background(), podA)
		if !errors.Is(err, syscall.ELOOP) || !strings.Contains(err.Error(), "symlink") {
			t.Fatalf("Allocate with a symlink at state = %v, want refusal", err)
		}
		assertUntouched(t, victim)
	})
	t.Run("lock", func(t *testing.T) {
		dataDir := t.TempDir()
		victim := plantSymlink(t, dataDir, lockName)
		if _, err := OpenDiskStore(dataDir, testNetwork); !errors.Is(err, syscall.ELOOP) {
			t.Fatalf("OpenDiskStore with a symlink at lock = %v, want ELOOP", err)
		}
		assertUntouched(t, victim)
	})
	t.Run("network dir", func(t *testing.T) {
		dataDir, elsewhere := t.TempDir(), t.TempDir()
		if err := os.Symlink(elsewhere, filepath.Join(dataDir, testNetwork)); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenDiskStore(dataDir, testNetwork); err == nil {
			t.Fatal("OpenDiskStore followed a symlinked network directory")
		}
		if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
			t.Fatalf("files created through the symlink: %v", ents)
		}
	})
	t.Run("temp file", func(t *testing.T) {
		dataDir := t.TempDir()
		victim := plantSymlink(t, dataDir, tempName)
		p := NewPool(openStore(t, dataDir), subnet24)
		if ip := mustAllocate(t, p, podA); !ip.IsValid() {
			t.Fatal("no address")
		}
		assertUntouched(t, victim)
	})
}

func TestDiskStoreRefusesFIFO(t *testing.T) {
	dataDir := t.TempDir()
	s := openStore(t, dataDir)
	if err := syscall.Mkfifo(filepath.Join(dataDir, testNetwork, stateName), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPool(s, subnet24).Allocate(context.Background(), podA); err == nil ||
		!strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Allocate with a FIFO at state = %v", err)
	}
}

func TestDiskStoreLocking(t *testing.T) {
	dataDir := t.TempDir()
	holder, waiter := openStore(t, dataDir), openStore(t, dataDir)
	ctx := context.Background()

	if _, err := holder.Load(); !errors.Is(err, ErrNotLocked) {
		t.Errorf("Load without lock = %v, want ErrNotLocked", err)
	}
	if err := holder.Save(NewState()); !errors.Is(err, ErrNotLocked) {
		t.Errorf("Save without lock = %v, want ErrNotLocked", err)
	}
	if err := holder.Unlock(); !errors.Is(err, ErrNotLocked) {
		t.Errorf("Unlock without lock = %v, want ErrNotLocked", err)
	}

	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := waiter.Lock(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while another store holds it = %v, want DeadlineExceeded", err)
	}
	// A second goroutine on the same store waits for the first as well.
	short2, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if err := holder.Lock(short2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock on the same store = %v, want DeadlineExceeded", err)
	}

	got := make(chan error, 1)
	go func() { got <- waiter.Lock(ctx) }()
	if err := holder.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	if err := waiter.Unlock(); err != nil {
		t.Fatal(err)
	}

	canceled, cancel3 := context.WithCancel(ctx)
	cancel3()
	if err := waiter.Lock(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock with canceled ctx = %v", err)
	}
	if err := waiter.Close(); err != nil {
		t.Fatal(err)
	}
	if err := waiter.Lock(ctx); err == nil {
		t.Error("Lock on a closed store succeeded")
	}
}

// TestDiskStoreCloseReleasesLock: a process that dies holding the lock does
// not block the others, since closing the descriptor drops the flock.
func TestDiskStoreCloseReleasesLock(t *testing.T) {
	dataDir := t.TempDir()
	s, err := OpenDiskStore(dataDir, testNetwork)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	other := openStore(t, dataDir)
	if err := other.Lock(ctx); err != nil {
		t.Fatalf("Lock after holder closed: %v", err)
	}
	other.Unlock()
}

// TestDiskStoreReadOnly: a store whose files cannot be written (its file
// system remounted read-only after an I/O error, say) still serves what
// needs no write: DEL of an attachment it does not hold succeeds, CHECK and
// a repeated ADD find the address held. A change fails and leaves the state
// as it was.
func TestDiskStoreReadOnly(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	held := mustAllocate(t, NewPool(openStore(t, dataDir), subnet24), podA)
	dir := filepath.Join(dataDir, testNetwork)
	readOnly(t, filepath.Join(dir, lockName), dir)

	p := NewPool(openStore(t, dataDir), subnet24)
	if err := p.Release(ctx, podB); err != nil {
		t.Errorf("DEL of an attachment the store does not hold: %v", err)
	}
	if ip, ok, err := p.Lookup(ctx, podA); err != nil || !ok || ip != held {
		t.Errorf("CHECK: Lookup = %s, %t, %v; want %s", ip, ok, err, held)
	}
	if ip, err := p.Allocate(ctx, podA); err != nil || ip != held {
		t.Errorf("repeated ADD: Allocate = %s, %v; want %s", ip, err, held)
	}
	if err := p.Release(ctx, podA); err == nil {
		t.Error("DEL of a held address succeeded on a store that cannot be written")
	}
	if ip, ok, err := p.Lookup(ctx, podA); err != nil || !ok || ip != held {
		t.Errorf("after the failed DEL: Lookup = %s, %t, %v; want %s still held", ip, ok, err, held)
	}
}

// readOnly makes paths unwritable for this process until the test ends: the
// immutable attribute, which binds root too, or, where the file system or
// the process cannot set it, permissions (which bind everyone but root).
func readOnly(t *testing.T, paths ...string) {
	t.Helper()
	for _, path := range paths {
		if err := setImmutable(path, true); err == nil {
			t.Cleanup(func() {
				if err := setImmutable(path, false); err != nil {
					t.Errorf("clearing the immutable attribute of %s: %v", path, err)
				}
			})
			continue
		} else if os.Geteuid() == 0 {
			t.Skipf("cannot make %s read-only for root: %v", path, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, fi.Mode().Perm()&0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(path, fi.Mode().Perm()) })
	}
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h, which x/sys/unix lacks.
const fsImmutableFL = 0x10

func setImmutable(path string, on bool) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if on {
		flags |= fsImmutableFL
	} else {
		flags &^= fsImmutableFL
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags)
}

// TestDiskStoreLockOpenForWriting: where the lock file can be opened for
// writing it is, since flock on NFS is a byte-range lock underneath and an
// exclusive one needs a descriptor open for writing.
func TestDiskStoreLockOpenForWriting(t *testing.T) {
	s := openStore(t, t.TempDir())
	flags, err := unix.FcntlInt(uintptr(s.lockFD), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_ACCMODE != unix.O_RDWR {
		t.Errorf("lock file open with access mode %#o, want O_RDWR", flags&unix.O_ACCMODE)
	}
}
