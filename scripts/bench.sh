#!/usr/bin/env bash
# The main job, as the README's first command runs it: installs what is needed, builds the
# release preset, then runs kvmem-bench's default suite (`all`), writing the JSON, the charts
# and the tables as Markdown (the body of docs/benchmarks.md) to build/bench-results/.
# Extra arguments go to kvmem-bench (e.g. `offset --smoke`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target kvmem-bench
out=build/bench-results
mkdir -p "$out"
if [ "$#" -eq 0 ]; then set -- all; fi
./build/release/tools/kvmem-bench "$@" --json "$out/kvmem-bench.json" --plot "$out"
/usr/bin/python3 tools/kvmem_report.py "$out/kvmem-bench.json" --command "bash scripts/bench.sh $*" \
  --charts "$out" > "$out/benchmarks.md"
echo "kvmem-bench: tables as Markdown in $out/benchmarks.md, charts in $out/"
