// Command podsetup times pod network setup as a container runtime drives it:
// one cnitool process per ADD or DEL, each pod in its own network namespace,
// the plugins running in the node's namespace. It measures two or more
// "sides" (a CNI network config on a node) in the same run, so their ratios
// are comparable on a shared machine:
//
//   - warm-up: one ADD and DEL per side on a pod of its own;
//   - serial: N ADDs one at a time, then N DELs one at a time, the sides
//     interleaved call by call (side order alternating per pod), so slow
//     drift of the machine hits both alike;
//   - parallel: N ADDs with P at a time, then N DELs with P at a time, one
//     side after the other (side order reversed for the DEL phase).
//
// Each call is timed from the driver: from just before fork to the end of
// wait. Results go to -json (raw samples) and stdout (a markdown table).
//
// A side is NAME=NODE_NETNS,CNI_PATH,NETCONF_DIR,NETWORK,POD_NETNS_PREFIX.
// Pod namespaces POD_NETNS_PREFIX000 … (N-1) and POD_NETNS_PREFIXwarm must
// exist (the driver creates no namespace and touches none but these).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/weft-cni/weft/scripts/bench/internal/stats"
)

type side struct {
	Name      string `json:"name"`
	NodeNS    string `json:"node_netns"`
	CNIPath   string `json:"cni_path"`
	ConfDir   string `json:"netconf_dir"`
	Network   string `json:"network"`
	PodPrefix string `json:"pod_prefix"`
}

func parseSide(s string) (side, error) {
	name, rest, ok := strings.Cut(s, "=")
	f := strings.Split(rest, ",")
	if !ok || len(f) != 5 {
		return side{}, fmt.Errorf("side %q: want NAME=NODE_NETNS,CNI_PATH,NETCONF_DIR,NETWORK,POD_NETNS_PREFIX", s)
	}
	return side{Name: name, NodeNS: f[0], CNIPath: f[1], ConfDir: f[2], Network: f[3], PodPrefix: f[4]}, nil
}

type sides []side

func (s *sides) String() string { return fmt.Sprint(*s) }
func (s *sides) Set(v string) error {
	sd, err := parseSide(v)
	if err == nil {
		*s = append(*s, sd)
	}
	return err
}

type driver struct {
	cnitool string
	timeout time.Duration
}

// call runs `cnitool VERB NETWORK POD` in the side's node namespace and
// returns its wall time and stdout.
func (d *driver) call(sd side, verb, pod string) (time.Duration, []byte, error) {
	var (
		elapsed time.Duration
		out     bytes.Buffer
		runErr  error
	)
	err := ns.WithNetNSPath(sd.NodeNS, func(ns.NetNS) error {
		var stderr bytes.Buffer
		cmd := exec.Command(d.cnitool, verb, sd.Network, pod)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH=" + sd.CNIPath, "NETCONFPATH=" + sd.ConfDir}
		cmd.Stdout, cmd.Stderr = &out, &stderr
		cmd.WaitDelay = time.Second
		start := time.Now()
		if err := cmd.Start(); err != nil {
			runErr = err
			return nil
		}
		timer := time.AfterFunc(d.timeout, func() { _ = cmd.Process.Kill() })
		runErr = cmd.Wait()
		elapsed = time.Since(start)
		timer.Stop()
		if runErr != nil {
			runErr = fmt.Errorf("cnitool %s %s %s: %w: %s%s", verb, sd.Network, pod,
				runErr, strings.TrimSpace(out.String()), strings.TrimSpace(stderr.String()))
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("entering %s: %w", sd.NodeNS, err)
	}
	return elapsed, out.Bytes(), runErr
}

func podPath(sd side, i int) string { return fmt.Sprintf("%s%03d", sd.PodPrefix, i) }

// resultIP is the first address of a CNI result.
func resultIP(out []byte) (netip.Addr, error) {
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) == 0 {
		return netip.Addr{}, fmt.Errorf("no address in CNI result %q: %v", out, err)
	}
	p, err := netip.ParsePrefix(res.IPs[0].Address)
	return p.Addr(), err
}

// phase is the samples of one verb on one side in one mode.
type phase struct {
	Side    string    `json:"side"`
	Mode    string    `json:"mode"` // serial or parallel
	Verb    string    `json:"verb"`
	Samples []float64 `json:"samples_ms"`
	WallMS  float64   `json:"wall_ms"`         // the phase, first start to last end (summed over rounds)
	Rates   []float64 `json:"rates,omitempty"` // pods/s of each parallel round
	Errors  []string  `json:"errors,omitempty"`
}

// rate is pods/s: the median over the parallel rounds.
func (p *phase) rate() float64 {
	if len(p.Rates) == 0 {
		return math.NaN()
	}
	return stats.Percentile(p.Rates, 50)
}

// checkIPs reports duplicate or missing addresses of a phase of ADDs.
func checkIPs(ips map[int]netip.Addr, n int) error {
	seen := map[netip.Addr]int{}
	for i := range n {
		ip, ok := ips[i]
		if !ok {
			return fmt.Errorf("pod %03d has no address", i)
		}
		if j, dup := seen[ip]; dup {
			return fmt.Errorf("pods %03d and %03d both got %s", j, i, ip)
		}
		seen[ip] = i
	}
	return nil
}

type run struct {
	d      *driver
	sides  []side
	n      int
	par    int
	rounds int
	mu     sync.Mutex
	out    []*phase
}

func (r *run) newPhase(sd side, mode, verb string) *phase {
	p := &phase{Side: sd.Name, Mode: mode, Verb: verb}
	r.out = append(r.out, p)
	return p
}

func (r *run) warmup() error {
	for _, sd := range r.sides {
		pod := sd.PodPrefix + "warm"
		for _, verb := range []string{"add", "del"} {
			if _, _, err := r.d.call(sd, verb, pod); err != nil {
				return fmt.Errorf("warm-up on %s: %w", sd.Name, err)
			}
		}
	}
	return nil
}

// serial interleaves the sides call by call.
func (r *run) serial(verb string) error {
	phases := make([]*phase, len(r.sides))
	ips := make([]map[int]netip.Addr, len(r.sides))
	for k, sd := range r.sides {
		phases[k] = r.newPhase(sd, "serial", verb)
		ips[k] = map[int]netip.Addr{}
	}
	for i := range r.n {
		for j := range r.sides {
			k := j
			if i%2 == 1 {
				k = len(r.sides) - 1 - j
			}
			sd := r.sides[k]
			el, out, err := r.d.call(sd, verb, podPath(sd, i))
			if err != nil {
				phases[k].Errors = append(phases[k].Errors, err.Error())
				continue
			}
			phases[k].Samples = append(phases[k].Samples, stats.MS(el))
			phases[k].WallMS += stats.MS(el)
			if verb == "add" {
				if ip, err := resultIP(out); err == nil {
					ips[k][i] = ip
				}
			}
		}
	}
	if verb == "add" {
		for k, sd := range r.sides {
			if err := checkIPs(ips[k], r.n); err != nil {
				return fmt.Errorf("%s serial add: %w", sd.Name, err)
			}
		}
	}
	return nil
}

// parallel runs N calls of verb on one side with r.par workers.
// parallel runs N calls of verb on one side with r.par workers, adding
// the samples and the round's pods/s to the side's parallel phase.
func (r *run) parallel(sd side, verb string) error {
	p := r.find(sd.Name, "parallel", verb)
	if p == nil {
		p = r.newPhase(sd, "parallel", verb)
	}
	done := 0
	next := make(chan int)
	ips := map[int]netip.Addr{}
	var wg sync.WaitGroup
	start := time.Now()
	for range r.par {
		wg.Go(func() {
			for i := range next {
				el, out, err := r.d.call(sd, verb, podPath(sd, i))
				r.mu.Lock()
				if err != nil {
					p.Errors = append(p.Errors, err.Error())
				} else {
					p.Samples = append(p.Samples, stats.MS(el))
					done++
					if verb == "add" {
						if ip, err := resultIP(out); err == nil {
							ips[i] = ip
						}
					}
				}
				r.mu.Unlock()
			}
		})
	}
	for i := range r.n {
		next <- i
	}
	close(next)
	wg.Wait()
	wall := stats.MS(time.Since(start))
	p.WallMS += wall
	p.Rates = append(p.Rates, float64(done)/(wall/1000))
	if verb == "add" {
		if err := checkIPs(ips, r.n); err != nil {
			return fmt.Errorf("%s parallel add: %w", sd.Name, err)
		}
	}
	return nil
}

func (r *run) all() error {
	if err := r.warmup(); err != nil {
		return err
	}
	if err := r.serial("add"); err != nil {
		return err
	}
	if err := r.serial("del"); err != nil {
		return err
	}
	// Each round rotates which side goes first, so no side always runs on a
	// machine just warmed (or tired) by another.
	for round := range r.rounds {
		order := slices.Clone(r.sides)
		k := round % len(order)
		order = append(order[k:], order[:k]...)
		for _, sd := range order {
			if err := r.parallel(sd, "add"); err != nil {
				return err
			}
		}
		for _, sd := range slices.Backward(order) {
			if err := r.parallel(sd, "del"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *run) find(sideName, mode, verb string) *phase {
	for _, p := range r.out {
		if p.Side == sideName && p.Mode == mode && p.Verb == verb {
			return p
		}
	}
	return nil
}

// report prints the markdown tables: per side, then the first side's ratios
// to each other side, judged against issue 5's targets except for the sides
// in untargeted. Target rows also go to targets (| what | measured | target
// | result |), when it is not nil.
func (r *run) report(targets io.Writer, untargeted []string) {
	fmt.Printf("| side | mode | verb | n | errors | p50 ms | p90 ms | p99 ms | mean ms | pods/s |\n")
	fmt.Printf("|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.out {
		mean := 0.0
		for _, x := range p.Samples {
			mean += x
		}
		mean /= float64(max(len(p.Samples), 1))
		rate := "-"
		if p.Mode == "parallel" {
			rate = fmt.Sprintf("%.1f", p.rate())
			if len(p.Rates) > 1 {
				var each []string
				for _, x := range p.Rates {
					each = append(each, fmt.Sprintf("%.0f", x))
				}
				rate += " (" + strings.Join(each, ", ") + ")"
			}
		}
		fmt.Printf("| %s | %s | %s | %d | %d | %.1f | %.1f | %.1f | %.1f | %s |\n", p.Side, p.Mode, strings.ToUpper(p.Verb),
			len(p.Samples), len(p.Errors), stats.Percentile(p.Samples, 50), stats.Percentile(p.Samples, 90), stats.Percentile(p.Samples, 99), mean, rate)
	}
	if len(r.sides) < 2 {
		return
	}
	// Ratios of the first side to each other side. Targets (issue 5): serial
	// ADD and DEL p50 at most 0.5x; parallel pods/s at least 2x.
	a := r.sides[0].Name
	others := r.sides[1:]
	fmt.Printf("\nRatios %s/other (times: lower is better; pods/s: higher is better):\n\n| metric | target | %s |", a, a)
	sep := "|---|---|---:|"
	for _, o := range others {
		fmt.Printf(" %s | ratio | result |", o.Name)
		sep += "---:|---:|---|"
	}
	fmt.Printf("\n%s\n", sep)
	type metric struct {
		name, target string
		value        func(*phase) float64
		pass         func(ratio float64) bool
	}
	p := func(pc float64) func(*phase) float64 {
		return func(ph *phase) float64 { return stats.Percentile(ph.Samples, pc) }
	}
	rate := func(ph *phase) float64 { return ph.rate() }
	atMostHalf := func(x float64) bool { return x <= 0.5 }
	atLeast2 := func(x float64) bool { return x >= 2 }
	for _, mode := range []string{"serial", "parallel"} {
		for _, verb := range []string{"add", "del"} {
			V := strings.ToUpper(verb)
			ms := []metric{
				{fmt.Sprintf("%s %s p50 ms", mode, V), "", p(50), nil},
				{fmt.Sprintf("%s %s p90 ms", mode, V), "", p(90), nil},
				{fmt.Sprintf("%s %s p99 ms", mode, V), "", p(99), nil},
			}
			if mode == "serial" {
				ms[0].target, ms[0].pass = "<= 0.5x", atMostHalf
			} else {
				ms = append(ms, metric{fmt.Sprintf("parallel %s pods/s", V), ">= 2x", rate, atLeast2})
			}
			for _, m := range ms {
				target := m.target
				if target == "" {
					target = "-"
				}
				x := m.value(r.find(a, mode, verb))
				fmt.Printf("| %s | %s | %.1f |", m.name, target, x)
				for _, o := range others {
					y := m.value(r.find(o.Name, mode, verb))
					res := "-"
					judged := m.pass != nil && !slices.Contains(untargeted, o.Name)
					if judged {
						res = "MISS"
						if m.pass(x / y) {
							res = "PASS"
						}
					}
					fmt.Printf(" %.1f | %.2fx | %s |", y, x/y, res)
					if judged && targets != nil {
						fmt.Fprintf(targets, "| pods: %s, %s/%s | %.2fx (%.1f vs %.1f) | %s | %s |\n", m.name, a, o.Name, x/y, x, y, m.target, res)
					}
				}
				fmt.Println()
			}
		}
	}
}

func main() {
	var (
		ss      sides
		cnitool = flag.String("cnitool", "cnitool", "cnitool binary")
		n       = flag.Int("n", 100, "pods per phase")
		par     = flag.Int("par", 20, "concurrent calls in the parallel phases")
		rounds  = flag.Int("rounds", 3, "parallel rounds (ADD all, DEL all) per side")
		timeout = flag.Duration("timeout", 60*time.Second, "kill a call after this long")
		jsonOut = flag.String("json", "", "write raw samples here")
		tgtOut  = flag.String("targets", "", "write the target rows (markdown) here")
		noTgt   = flag.String("untargeted", "", "comma-separated sides compared without a target")
	)
	flag.Var(&ss, "side", "NAME=NODE_NETNS,CNI_PATH,NETCONF_DIR,NETWORK,POD_NETNS_PREFIX (repeat)")
	flag.Parse()
	if len(ss) == 0 || *n < 1 || *n > 1000 || *par < 1 || *rounds < 1 || *rounds > 10 {
		fmt.Fprintln(os.Stderr, "podsetup: need -side, 1 <= -n <= 1000, -par >= 1, 1 <= -rounds <= 10")
		os.Exit(2)
	}
	for _, sd := range ss {
		for _, p := range []string{sd.NodeNS, sd.PodPrefix + "warm", podPath(sd, 0), podPath(sd, *n-1)} {
			if _, err := os.Stat(p); err != nil {
				fmt.Fprintf(os.Stderr, "podsetup: side %s: %v\n", sd.Name, err)
				os.Exit(2)
			}
		}
	}
	r := &run{d: &driver{cnitool: *cnitool, timeout: *timeout}, sides: ss, n: *n, par: *par, rounds: *rounds}
	err := r.all()
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(map[string]any{"sides": ss, "n": *n, "par": *par, "rounds": *rounds, "phases": r.out}, "", "  ")
		if werr := os.WriteFile(*jsonOut, data, 0o644); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "podsetup: %v\n", err)
		for _, p := range r.out {
			for _, e := range p.Errors[:min(len(p.Errors), 3)] {
				fmt.Fprintf(os.Stderr, "  %s %s %s: %s\n", p.Side, p.Mode, p.Verb, e)
			}
		}
		os.Exit(1)
	}
	var targets io.Writer
	if *tgtOut != "" {
		f, err := os.Create(*tgtOut)
		if err != nil {
			fmt.Fprintf(os.Stderr, "podsetup: %v\n", err)
			os.Exit(1)
		}
		defer f.Close()
		targets = f
	}
	r.report(targets, strings.Split(*noTgt, ","))
}
