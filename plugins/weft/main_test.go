package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var pluginBin string

// TestMain builds the plugin once: bad requests are tested on the real
// binary, as a runtime would call it.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "weft-plugin-test")
	if err != nil {
		panic(err)
	}
	pluginBin = filepath.Join(dir, "weft")
	if out, err := exec.Command("go", "build", "-o", pluginBin, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type cniError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
}

func runPlugin(t *testing.T, env map[string]string, stdin string) (cniError, int) {
	t.Helper()
	cmd := exec.Command(pluginBin)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("running plugin: %v", err)
	}
	var out cniError
	if code != 0 {
		if jerr := json.Unmarshal(stdout.Bytes(), &out); jerr != nil {
			t.Fatalf("exit %d with non-JSON stdout %q (stderr %q)", code, stdout.String(), stderr.String())
		}
	}
	return out, code
}

const goodConf = `{"cniVersion":"1.1.0","name":"weft","type":"weft","subnetFile":"/nonexistent/weft-test/subnet.env","ipam":{"dataDir":"/nonexistent/weft-test/ipam"}}`

func env(cmd, containerID, netns, ifname string) map[string]string {
	return map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": containerID, "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": "/nonexistent"}
}

// TestBadRequests: every bad request gets the spec's JSON error with the
// right code and a non-zero exit, before any state could change.
func TestBadRequests(t *testing.T) {
	long := strings.Repeat("a", 10000)
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
		{"status without lease or etcd", env("STATUS", "", "", ""), goodConf, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, exit := runPlugin(t, tt.env, tt.stdin)
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
