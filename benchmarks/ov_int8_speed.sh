#!/usr/bin/env bash
# OpenVINO INT8 before/after this release's quantization settings, timed by OpenVINO's own benchmark_app at
# 180x320 -> 720x1280, latency hint, f32 float parts, the two IRs alternated three times in one run.
# The IRs come from: python benchmarks/int8_variants.py --only openvino --save-ir DIR
#   (ov_0.xml = "before" row, ov_2.xml = the default row: performance, minmax, photos)
#   bash benchmarks/ov_int8_speed.sh DIR [OUT.md]
set -euo pipefail
DIR="$1"
OUT="${2:-benchmarks/results/ov_int8_speed.md}"
median() { sed -n 's/.*Median: *\([0-9.]*\) ms.*/\1/p' | head -1; }
declare -A RUNS
for round in 1 2 3; do
  for ir in ov_0 ov_2; do
    ms=$(benchmark_app -m "$DIR/$ir.xml" -d CPU -hint latency -infer_precision f32 -shape "[1,3,180,320]" -t 15 \
         2>&1 | median)
    RUNS[$ir]="${RUNS[$ir]:-} $ms"
  done
done
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
{
  echo "benchmark_app median latency (ms), 180x320 -> 720x1280, -hint latency -infer_precision f32 -t 15, three"
  echo "alternating rounds; $cpu, $(nproc) cores."
  echo
  echo "| IR | round 1 | round 2 | round 3 |"
  echo "|---|---|---|---|"
  echo "| before (0.1.0 settings) | $(echo ${RUNS[ov_0]} | sed 's/ / | /g') |"
  echo "| default (this release) | $(echo ${RUNS[ov_2]} | sed 's/ / | /g') |"
} | tee "$OUT"
