// Package clitest runs a CNI plugin binary the way a runtime does (env,
// stdin, exit code) for tests that feed it hostile input, and snapshots a
// directory so a test can prove that a refused request changed nothing.
package clitest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
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

// Run executes bin with exactly env and stdin. As root it runs in a network
// namespace of its own, so a request that wrongly got through cannot touch
// the host's network. A panic fails the test.
func Run(t testing.TB, bin string, env map[string]string, stdin string) (stdout []byte, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
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
	cmd := exec.Command("sleep", "3600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if uid, gid := os.Geteuid(), os.Getegid(); uid != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a process in a network namespace of its own: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
}
