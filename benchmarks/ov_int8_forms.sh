#!/usr/bin/env bash
# Which deploy forms the OpenVINO INT8 autotuner should build on a CPU: each candidate form's INT8 engine as the
# pipeline builds it (its calibration count, the 0.1 dB budget loop run to its end), then timed by OpenVINO's own
# benchmark_app in fresh processes at 180x320 -> 720x1280 (latency hint, f32 float parts), the forms alternated
# three times in one run.
#   bash benchmarks/ov_int8_forms.sh WORKDIR [OUT.md]
set -euo pipefail
DIR="$1"
OUT="${2:-benchmarks/results/ov_int8_forms.md}"
# fold+conv_before_upsample is the form of the engine issue 16 started from ("today's OpenVINO INT8")
FORMS=("dwconv" "dwconv+conv_before_upsample" "fold+conv_before_upsample" "dwconv+skip_as_conv"
       "dwconv+conv_before_upsample+skip_as_conv")
mkdir -p "$DIR"
for form in "${FORMS[@]}"; do
  shift_form="${form%%+*}"
  cbu=$([[ "$form" == *conv_before_upsample* ]] && echo --conv-before-upsample || echo --no-conv-before-upsample)
  skip=$([[ "$form" == *skip_as_conv* ]] && echo --skip-as-conv || echo --no-skip-as-conv)
  [ -f "$DIR/$form/manifest.json" ] || scnet-deploy export scnet_deploy/weights/scnet_t_x4_reference.safetensors \
    -o "$DIR/$form" -f openvino --int8 --calib-count 16 --shift "$shift_form" "$cbu" "$skip" > "$DIR/$form.log" 2>&1
done
median() { sed -n 's/.*Median: *\([0-9.]*\) ms.*/\1/p' | head -1; }
declare -A RUNS
for round in 1 2 3; do
  for form in "${FORMS[@]}"; do
    ms=$(benchmark_app -m "$(ls "$DIR/$form"/*.xml | head -1)" -d CPU -hint latency -infer_precision f32 \
         -shape "[1,3,180,320]" -t 10 2>&1 | median)
    RUNS[$form]="${RUNS[$form]:-} $ms"
  done
done
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
amx=$(grep -qm1 amx_int8 /proc/cpuinfo && echo "with AMX-INT8" || echo "without AMX")
{
  echo "OpenVINO INT8 engines per deploy form, as the pipeline builds them (calibration count 16, 0.1 dB budget loop"
  echo "to its end): benchmark_app median latency (ms), 180x320 -> 720x1280, -hint latency -infer_precision f32 -t 10,"
  echo "three alternating rounds, each a fresh process; $cpu $amx, $(nproc) cores."
  echo
  echo "| form | float layers | hold-out drift dB | round 1 | round 2 | round 3 |"
  echo "|---|---|---|---|---|---|"
  for form in "${FORMS[@]}"; do
    info=$(python -c "import json,sys; i=json.load(open(sys.argv[1]))['int8']; print(len(i['float_layers']), '|', f\"{i['drift_db']:+.3f}\")" "$DIR/$form/manifest.json")
    echo "| $form | $info | $(echo ${RUNS[$form]} | sed 's/ / | /g') |"
  done
} | tee "$OUT"
