#!/usr/bin/env bash
# Runs a test command (make test: `swift test --skip-build --no-parallel`) under a watchdog.
#
# A test that waits forever would otherwise hold CI until CI's own limit, with nothing to go on but
# the last lines of the log. After STREAMFIRST_TEST_TIMEOUT seconds (default 2400; a whole run takes
# 8-15 minutes here) the watchdog writes every thread's stack of the test processes to
# $log.stacks (gdb, else lldb), stops the run, and prints last the tests that started and never
# finished. The output is also kept in $log (STREAMFIRST_TEST_LOG, default .build/test-output.log).
#
#   bash scripts/test-watchdog.sh swift test --skip-build --no-parallel
set -uo pipefail
limit="${STREAMFIRST_TEST_TIMEOUT:-2400}"
log="${STREAMFIRST_TEST_LOG:-.build/test-output.log}"
mkdir -p "$(dirname "$log")"
rm -f "$log.rc" "$log.stacks"

# Line-buffered output (stdbuf): the test runner's stdout is a pipe here, and a block-buffered
# "◇ Test X started." would still sit in its buffer when X hangs.
{ stdbuf -oL -eL "$@"; echo $? >"$log.rc"; } 2>&1 | tee "$log" &
job=$!

# Every process below this script (swift test, the test runner, the brokers and workers it started:
# they run in process groups of their own, so the tree is walked by parent pid).
descendants() {
  local table queue=("$$") p c
  table=$(ps -e -o pid=,ppid=)
  while ((${#queue[@]})); do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    for c in $(awk -v p="$p" '$2 == p { print $1 }' <<<"$table"); do
      echo "$c"
      queue+=("$c")
    done
  done
}

# The tests that printed "◇ Test X started." and neither "✔ Test X passed…" nor "✘ Test X failed…".
unfinished() {
  awk '
    /^◇ Test (case passing|run started)/ { next }
    /^◇ Test .* started\.$/ { name = substr($0, index($0, "Test ") + 5); sub(/ started\.$/, "", name); open[name] = 1; order[++n] = name; next }
    /^(✔|✘) Test .* (passed|failed) after/ {
      name = substr($0, index($0, "Test ") + 5); sub(/ (passed|failed) after.*$/, "", name); sub(/ with [0-9]+ test cases?$/, "", name)
      delete open[name]
    }
    END { for (i = 1; i <= n; i++) if (order[i] in open) { print "  " order[i]; delete open[order[i]] } }
  ' "$log"
}

deadline=$((SECONDS + limit))
while kill -0 "$job" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    echo "test-watchdog: the run exceeded ${limit} s; writing the test processes' stacks to $log.stacks"
    # Freeze the test runners first, so that no worker or broker is started after the list of
    # processes to stop is taken (one started later would outlive the run as an orphan).
    runners=""
    for p in $(descendants); do
      cmd=$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null || true)
      case "$cmd" in
        *xctest* | *swiftpm-testing-helper*) runners="$runners $p" ;;
      esac
    done
    kill -STOP $runners 2>/dev/null
    procs=$(descendants)
    for p in $runners; do
      echo "=== pid $p: $({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null)" >>"$log.stacks"
      if command -v gdb >/dev/null; then
        timeout 120 gdb -p "$p" -batch -ex "thread apply all bt" >>"$log.stacks" 2>&1
      else
        timeout 120 lldb -p "$p" --batch -o "thread backtrace all" >>"$log.stacks" 2>&1
      fi
    done
    kill -STOP $runners 2>/dev/null  # in case a debugger's detach let one go on
    kill -KILL $procs $(descendants) 2>/dev/null
    wait "$job" 2>/dev/null
    # One line per thread that is inside this project's code: its innermost frame there.
    echo "test-watchdog: threads inside Sources/ or Tests/ (innermost such frame; all of them in $log.stacks):"
    awk '
      /^Thread / { name = $0; sub(/^Thread [0-9]+ \(Thread 0x[0-9a-f]+ /, "", name); seen = 0; next }
      !seen && /\/(Sources|Tests)\// { seen = 1; frame = $0; sub(/^#[0-9]+ +(0x[0-9a-f]+ in )?/, "", frame); print "  " name " " substr(frame, 1, 200) }
    ' "$log.stacks" 2>/dev/null
    echo "test-watchdog: stopped after ${limit} s. Started and never finished:"
    unfinished
    exit 1
  fi
  sleep 5
done
wait "$job"
rc=$(cat "$log.rc" 2>/dev/null || echo 1)
exit "$rc"
