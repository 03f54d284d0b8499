#!/usr/bin/env bash
# Long runs of the reliability tests (docs/reliability.md), as root:
#   scripts/reliability-soak.sh [KILL_ITERATIONS] [ROUNDS]
# kills ADD KILL_ITERATIONS times (default 1000, up to an hour) and repeats
# the load test ROUNDS times (default 20). Only namespaces the tests create
# are touched.
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-1000}
rounds=${2:-20}
make build tools >/dev/null
WEFT_KILL_ITERATIONS=$iters WEFT_KILL_BUDGET=1h \
	go test -tags integration -timeout 2h -count=1 -v -run 'TestReliabilityKillDuringAdd$' ./integration/ | grep -E 'RESULT|^(---|ok|FAIL)'
go test -tags integration -timeout 2h -count="$rounds" -v -run 'TestReliabilityLoad$' ./integration/ | grep -E 'RESULT|^(---|ok|FAIL)'
