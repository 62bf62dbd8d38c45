#!/usr/bin/env bash
# Every kvmem test, as the README's second command and CI run it:
#   1. dev build (Debug, -Werror): unit, model and stress tests, fuzz-corpus replays,
#      kvmem-bench --smoke, and the Python tests when the module is built;
#   2. the same tests under ASan+UBSan (asan preset);
#   3. the concurrent (stress) tests under TSan (tsan preset);
#   4. every libFuzzer target for a short run (fuzz preset, clang);
#   5. an install into a temporary prefix, and tests/install built against it;
#   6. `pip install --no-build-isolation .` into a venv over Debian's python3, and the Python
#      tests against that installed copy.
# Installs what it needs first (scripts/install_deps.sh). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${KVMEM_JOBS:-$(nproc)}
fuzz_seconds=${KVMEM_FUZZ_SECONDS:-20}

bash scripts/install_deps.sh

step() { printf '\n=== %s\n' "$*"; }

# Every runner's summary is added up here, for the closing "N passed, N failed" line.
counts=$(mktemp)
tally() {  # tally <log>: adds ctest's or pytest's summary line of that log to the counts
  sed -nE 's/^[0-9]+% tests passed, ([0-9]+) tests failed out of ([0-9]+)$/ctest \1 \2/p;
           s/^=*[ ]*([0-9]+) passed.*/pytest 0 \1/p' "$1" >> "$counts"
}

for preset in dev asan tsan; do
  step "configure + build: $preset"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  step "ctest: $preset"
  ctest --preset "$preset" -j "$jobs" --no-tests=error | tee "$counts.log"
  tally "$counts.log"
done

step "fuzz: every target for ${fuzz_seconds}s"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs"
shopt -s nullglob
for fuzzer in build/fuzz/tests/fuzz/*_fuzz; do
  name=$(basename "$fuzzer" _fuzz)
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$name/." "$work/" 2>/dev/null || true
  echo "fuzz: $name"
  "$fuzzer" "$work" -max_total_time="$fuzz_seconds" -print_final_stats=0 2>&1 | tail -n 2
  rm -rf "$work"
done

step "install + consumer project"
prefix=$(mktemp -d)
cmake --install build/dev --prefix "$prefix" >/dev/null
cmake -S tests/install -B build/install-consumer -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build build/install-consumer
ctest --test-dir build/install-consumer --output-on-failure | tee "$counts.log"
tally "$counts.log"
rm -rf "$prefix"

step "pip install --no-build-isolation . (Debian python3, venv with system site packages)"
venv=$(mktemp -d)
/usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --no-build-isolation --no-deps "$root"
(cd "$venv" && "$venv/bin/python" -m pytest -q -p no:cacheprovider "$root/python/tests") | tee "$counts.log"
tally "$counts.log"
rm -rf "$venv" "$root/build/lib."* "$root/build/temp."* "$root/build/bdist."* "$root"/python/*.egg-info

step "all tests passed"
awk '{ failed += $2; total += $3 } END { printf "%d passed, %d failed\n", total - failed, failed }' "$counts"
rm -f "$counts" "$counts.log"
