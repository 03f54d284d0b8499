#!/usr/bin/env bash
# Runs every fuzz target in the module for a bounded time each. A crasher
# (a new file under testdata/fuzz) fails the run; a fuzzing-engine hiccup
# with no crasher (e.g. a worker timing out on a loaded machine) is printed
# and the target is run once more.
set -euo pipefail
fuzztime=${1:-5s}
cd "$(dirname "$0")/.."
run() { go test -run '^$' -fuzz "^$2\$" -fuzztime "$fuzztime" "$1" >"$log" 2>&1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "fuzz $pkg $target ($fuzztime)"
		run "$pkg" "$target" && continue
		cat "$log"
		if [ -n "$(git status --porcelain -- "$dir/testdata/fuzz/$target")" ]; then
			echo "fuzz: $target found a failing input (saved under $dir/testdata/fuzz/$target)" >&2
			exit 1
		fi
		echo "fuzz: $target failed without a crasher; running it once more" >&2
		run "$pkg" "$target" || { cat "$log"; exit 1; }
	done
done
