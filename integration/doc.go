// Package integration holds weft's root-only tests: they build their own
// network namespaces (an L2 segment as a bridge, hosts, pods), run a real
// etcd and the real binaries from bin/, and touch nothing in the root
// network namespace.
//
// Run them as root, after building the binaries (weft's, cnitool and the
// reference plugins):
//
//	make build tools
//	go test -tags integration ./integration/
//
// or just `make integration`. Without root every test skips, unless
// WEFT_REQUIRE_INTEGRATION is set (CI), which turns skips into failures. The harness (topology_test.go, exec_test.go,
// probe_test.go) is compiled only with the integration build tag.
package integration
