#!/usr/bin/env bash
# Runs each libFuzzer target for N seconds: scripts/fuzz.sh SECONDS TARGET...
# Corpora are seeded from files in the repository (schemas, pipelines, tables, expressions);
# a crash, leak, timeout or out-of-memory is written to .build-fuzz/findings and fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=$1; shift
bin=.build-fuzz/release/streamfirst-fuzz
mkdir -p .build-fuzz/findings
status=0
for target in "$@"; do
  corpus=.build-fuzz/corpus/$target
  mkdir -p "$corpus"
  case $target in
    json|schema) cp -n pipelines/schemas/*.json pipelines/schemas/*/*.json "$corpus"/ 2>/dev/null
                 head -c 2000 pipelines/data/orders.ndjson > "$corpus/orders.ndjson" ;;
    expression)  grep -ho '"[^"]*([^"]*)[^"]*"' pipelines/*.yaml docs/EXPRESSIONS.md 2>/dev/null | head -200 | \
                   awk '{ f = sprintf("'"$corpus"'/seed-%03d", NR); print substr($0, 2, length($0) - 2) > f }' ;;
    csv)         cp -n pipelines/tables/*.csv "$corpus"/ 2>/dev/null ;;
    config)      cp -n pipelines/*.yaml pipelines/schemas/*/subject.yaml "$corpus"/ 2>/dev/null ;;
  esac
  log=.build-fuzz/findings/$target.log
  FUZZ_TARGET=$target "$bin" -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=.build-fuzz/findings/$target- -print_final_stats=1 "$corpus" > "$log" 2>&1
  rc=$?
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  if [ $rc -ne 0 ]; then
    echo "fuzz $target: FAILED after ${runs:-?} runs (see $log)"; grep -E 'ERROR|SUMMARY|Fatal error' "$log" | head -5
    status=1
  else
    echo "fuzz $target: ${runs:-?} runs in ${seconds}s, no findings (corpus $(ls "$corpus" | wc -l) inputs)"
  fi
done
exit $status
