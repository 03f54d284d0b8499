package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type daemonProc struct {
	cmd *exec.Cmd
	t0  time.Time
}

// startDaemon runs `ip netns exec NS weft daemon FLAGS…`; ip execs the
// daemon in place, so the pid is the daemon's.
func startDaemon(ipPath, nsName, weft string, flags []string, logPath string) (*daemonProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(ipPath, append([]string{"netns", "exec", nsName, weft, "daemon"}, flags...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &daemonProc{cmd: cmd, t0: t0}, nil
}

func (d *daemonProc) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
		return errors.New("daemon did not stop within 10s of SIGTERM; killed")
	}
}

// waitReady polls url every 2 ms until it answers 200 or timeout passes.
func waitReady(url string, t0 time.Time, timeout time.Duration, exited <-chan struct{}) (time.Duration, error) {
	hc := &http.Client{Timeout: 200 * time.Millisecond}
	deadline := t0.Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return 0, errors.New("daemon exited before it was ready")
		default:
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(t0), nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s not ready after %s", url, timeout)
}

// rss returns VmRSS and VmHWM of pid in MiB.
func rss(pid int) (float64, float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return math.NaN(), math.NaN()
	}
	get := func(key string) float64 {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, key+":"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					return kb / 1024
				}
			}
		}
		return math.NaN()
	}
	return get("VmRSS"), get("VmHWM")
}

func exitedChan(cmd *exec.Cmd) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for {
			if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
				close(ch)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return ch
}

// start measures `weft daemon` start to /readyz 200: a first start that
// acquires a lease, then restarts that find it.
func start(args []string) error {
	fs := flag.NewFlagSet("start", flag.ContinueOnError)
	endpoint := fs.String("etcd", "http://10.4.7.12:2379", "etcd endpoint")
	weft := fs.String("weft", "weft", "weft binary")
	nsName := fs.String("netns", "", "node namespace name (ip netns)")
	addr := fs.String("addr", "", "node address to serve /readyz on")
	port := fs.Int("port", 2401, "healthz port")
	subnetFile := fs.String("subnet-file", "", "the node's subnet file")
	logPath := fs.String("log", "/dev/null", "daemon log")
	runs := fs.Int("runs", 5, "starts: the first acquires the lease, the rest reuse it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 || *runs > 20 {
		return errors.New("-runs must be 1..20")
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return err
	}
	flags := []string{"--etcd-endpoints=" + *endpoint, "--iface=eth0", "--subnet-file=" + *subnetFile,
		"--healthz-ip=" + *addr, fmt.Sprintf("--healthz-port=%d", *port)}
	url := fmt.Sprintf("http://%s:%d/readyz", *addr, *port)
	var first float64
	var restarts []float64
	for i := range *runs {
		d, err := startDaemon(ipPath, *nsName, *weft, flags, *logPath)
		if err != nil {
			return err
		}
		el, err := waitReady(url, d.t0, 30*time.Second, exitedChan(d.cmd))
		stopErr := d.stop()
		if err != nil {
			return err
		}
		if stopErr != nil {
			fmt.Fprintf(os.Stderr, "ctlplane start: run %d: %v\n", i, stopErr)
		}
		if i == 0 {
			first = ms(el)
		} else {
			restarts = append(restarts, ms(el))
		}
	}
	fmt.Printf("| daemon start → /readyz 200 | n | p50 ms | max ms |\n|---|---:|---:|---:|\n")
	fmt.Printf("| first start: no subnet file, lease acquired in etcd | 1 | %.1f | %.1f |\n", first, first)
	if len(restarts) > 0 {
		fmt.Printf("| restart: subnet file and lease present | %d | %.1f | %.1f |\n", len(restarts), pct(restarts, 50), pct(restarts, 100))
	}
	fmt.Fprintf(os.Stderr, "summary first=%.1f restart_p50=%.1f\n", first, pct(restarts, 50))
	return nil
}
