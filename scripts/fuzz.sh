#!/usr/bin/env bash
# Run every podnet fuzz target for DURATION (default 10s) one after the
# other. Crashers are written by `go test` to the package's
# testdata/fuzz/<Target>/ directory, where plain `go test` replays them as
# regression cases from then on: commit them with the fix.
#
#   scripts/fuzz.sh            # 10s per target (CI)
#   scripts/fuzz.sh 10m        # the soak run
#   FUZZ_PARALLEL=1 scripts/fuzz.sh 3m   # fuzz workers per target (default: GOMAXPROCS)
#   FUZZ_ONLY=FuzzParse scripts/fuzz.sh  # only targets whose name matches (grep -E)
#   FUZZ_SHARD=0/3 scripts/fuzz.sh 10m   # every 3rd target from the 1st: run
#                                        # shards 0/3 1/3 2/3 side by side
set -u
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
PAR=${FUZZ_PARALLEL:+-parallel=$FUZZ_PARALLEL}

# package target
TARGETS="
./internal/cniplugin FuzzPrevResult
./ipam/hostlocal FuzzLoadConfig
./ipam/hostlocal FuzzLoadStoreConfig
./ipam/hostlocal FuzzStoreFiles
./ipam/hostlocal FuzzParseOwner
./ipam/static FuzzLoadConfig
./ipam/internal/ipamconf FuzzCNIArgs
./ipam/internal/ipamconf FuzzParseRoutes
./plugins/bridge FuzzParse
./plugins/ptp FuzzParse
./plugins/macvlan FuzzParse
./plugins/tap FuzzParse
./plugins/hostdevice FuzzParse
./plugins/portmap FuzzParseConfig
./plugins/firewall FuzzParseConfig
./plugins/bandwidth FuzzParseConfig
./plugins/tuning FuzzParseConfig
./plugins/tuning FuzzStateDir
./plugins/sbr FuzzParseConfig
./plugins/loopback FuzzParse
./agent/overlay FuzzCompute
./agent/policy FuzzCompile
"

fail=0
summary=""
i=-1
while read -r pkg target; do
	[ -z "$pkg" ] && continue
	i=$((i + 1))
	if [ -n "${FUZZ_SHARD:-}" ] && [ $((i % ${FUZZ_SHARD#*/})) != "${FUZZ_SHARD%/*}" ]; then
		continue
	fi
	if [ -n "${FUZZ_ONLY:-}" ] && ! echo "$target" | grep -Eq "$FUZZ_ONLY"; then
		continue
	fi
	echo "=== $pkg $target ($DURATION)"
	start=$(date +%s)
	# -run '^$' skips the package's ordinary tests; the fuzz target's seeds
	# and saved corpus still run first.
	log=$(mktemp)
	before=$(ls "$pkg/testdata/fuzz/$target" 2>/dev/null | wc -l)
	if go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$DURATION" $PAR 2>&1 | tee "$log"; [ "${PIPESTATUS[0]}" = 0 ]; then
		res=ok
	elif grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log" &&
		[ "$(ls "$pkg/testdata/fuzz/$target" 2>/dev/null | wc -l)" = "$before" ]; then
		# The fuzzing engine's own shutdown race (a slow worker at the
		# deadline), not a crasher: no failing input was written.
		res=ok-deadline
	else
		res=FAIL
		fail=1
	fi
	rm -f "$log"
	summary="$summary$(printf '%-28s %-22s %-4s %ss' "$pkg" "$target" "$res" "$(( $(date +%s) - start ))")\n"
done <<<"$TARGETS"
printf "\n%b" "$summary"
exit $fail
