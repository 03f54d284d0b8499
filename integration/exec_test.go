//go:build integration

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/var/run/netns"

// runTimeout bounds one Run/Try command; Start'ed processes have no bound.
const runTimeout = 2 * time.Minute

// stopGrace is how long a process gets after SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

// NSRef names a network namespace: a *Host, a netns name ("wft1a2b3c-node21")
// or its path ("/var/run/netns/wft1a2b3c-node21", as PodNS returns).
type NSRef interface{ *Host | string }

// nsName returns the `ip netns` name of ref.
func nsName[N NSRef](ref N) string {
	switch v := any(ref).(type) {
	case *Host:
		return v.NS()
	case string:
		for _, dir := range []string{netnsDir + "/", "/run/netns/"} {
			if name, ok := strings.CutPrefix(v, dir); ok {
				return name
			}
		}
		return v
	}
	panic("unreachable")
}

// RepoRoot returns the root of the weft module: the nearest directory above
// the working directory (the package directory under go test) with a go.mod.
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(fmt.Sprintf("getting working directory: %v", err))
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			panic(fmt.Sprintf("no go.mod above %s", dir))
		}
	}
}

// Bin returns <repo>/bin/<name>, skipping the test when it is not built.
func Bin(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(RepoRoot(), "bin", name)
	if _, err := os.Stat(p); err != nil {
		SkipUnlessRequired(t, fmt.Sprintf("bin/%s is not built; run `make build tools` first", name))
	}
	return p
}

// nsCommand prepares `ip netns exec <ns> args...` in its own process group,
// so that a kill reaches the children it forks.
func nsCommand(ctx context.Context, ns string, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Orphans that keep our pipes open must not hang Wait.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// TryIn runs args in the namespace and returns stdout; the error carries
// stderr. It gives up after runTimeout.
func TryIn[N NSRef](ref N, args ...string) (string, error) {
	ns := nsName(ref)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := nsCommand(ctx, ns, args)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("in netns %s: %s: %w: %s",
			ns, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// RunIn is TryIn that fails the test on error.
func RunIn[N NSRef](t testing.TB, ref N, args ...string) string {
	t.Helper()
	out, err := TryIn(ref, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Proc is a background process started in a namespace.
type Proc struct {
	Name   string // the command line, for messages
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	err    error // set before done is closed
	stop   sync.Once
}

// StartIn starts args in the namespace in the background. The process (and
// its process group) is stopped when t's cleanup runs; if t failed, its
// output is logged then.
func StartIn[N NSRef](t testing.TB, ref N, args ...string) *Proc {
	t.Helper()
	ns := nsName(ref)
	p := &Proc{Name: fmt.Sprintf("[%s] %s", ns, strings.Join(args, " ")), done: make(chan struct{})}
	p.cmd = nsCommand(context.Background(), ns, args)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.Name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s (pid %d, exit %v)\n--- stdout:\n%s\n--- stderr:\n%s",
				p.Name, p.Pid(), p.err, tail(p.Stdout(), 4096), tail(p.Stderr(), 4096))
		}
	})
	return p
}

// Pid returns the process id (that of `ip netns exec`, which execs args).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stdout returns everything the process wrote to stdout so far.
func (p *Proc) Stdout() string { return p.stdout.String() }

// Stderr returns everything the process wrote to stderr so far.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the exit error once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling %s: %w", p.Name, err)
	}
	return nil
}

// Stop sends SIGTERM to the process group, waits stopGrace, then SIGKILLs
// it, and returns once the process has exited. It is idempotent.
func (p *Proc) Stop() {
	p.stop.Do(func() {
		select {
		case <-p.done:
		default:
			p.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(stopGrace):
			}
		}
		// Whatever is left of the group (children of an exited leader too).
		p.Signal(syscall.SIGKILL)
		<-p.done
	})
}

// WaitLine waits until the process prints a stdout line starting with
// prefix and returns that line. It fails the test if the process exits
// first or the timeout passes.
func (p *Proc) WaitLine(t testing.TB, timeout time.Duration, prefix string) string {
	t.Helper()
	return p.waitLine(t, timeout, "stdout", &p.stdout, prefix)
}

// WaitStderrLine is WaitLine on stderr.
func (p *Proc) WaitStderrLine(t testing.TB, timeout time.Duration, prefix string) string {
	t.Helper()
	return p.waitLine(t, timeout, "stderr", &p.stderr, prefix)
}

func (p *Proc) waitLine(t testing.TB, timeout time.Duration, stream string, buf *syncBuffer, prefix string) string {
	t.Helper()
	var line string
	WaitFor(t, timeout, fmt.Sprintf("%q on %s of %s", prefix, stream, p.Name), func() (bool, error) {
		if l, ok := findLine(buf.String(), prefix); ok {
			line = l
			return true, nil
		}
		select {
		case <-p.done:
			// The copy of the last output may land after exit: look once more.
			if l, ok := findLine(buf.String(), prefix); ok {
				line = l
				return true, nil
			}
			t.Fatalf("%s exited (%v) before printing %q on %s\n--- stdout:\n%s\n--- stderr:\n%s",
				p.Name, p.err, prefix, stream, tail(p.Stdout(), 4096), tail(p.Stderr(), 4096))
		default:
		}
		return false, nil
	})
	return line
}

// findLine returns the first complete line of s that starts with prefix.
func findLine(s, prefix string) (string, bool) {
	lines := strings.Split(s, "\n")
	for _, l := range lines[:len(lines)-1] { // the last one is not complete
		if strings.HasPrefix(l, prefix) {
			return l, true
		}
	}
	return "", false
}

// WaitFor polls fn every 50ms until it returns true, failing the test with
// what and fn's last error when timeout passes. An error from fn means "not
// yet" (a ping that fails until routes exist); to give up at once, call
// t.Fatal inside fn.
func WaitFor(t testing.TB, timeout time.Duration, what string, fn func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := fn()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail returns at most the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
