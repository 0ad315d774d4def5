#!/usr/bin/env bash
# The harness tables in README: Set5 bicubic baselines (validate) and a latency table of PyTorch official form,
# deploy form, ONNX Runtime and OpenVINO f32/bf16 at 180x320 -> 720x1280, measured in one bench run.
#   bash benchmarks/harness.sh [CHECKPOINT] [OUT_DIR]
set -euo pipefail
CKPT="${1:-../shared/fixtures/official/scnet_t_x4_mlp.pth}"
OUT="${2:-benchmarks/results/harness}"
SET5="${SET5:-../shared/datasets/Set5}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
for s in 2 3 4; do
  scnet-deploy validate --dataset "$SET5" --scale "$s" --method bicubic --json "$OUT/set5_bicubic_x$s.json" >/dev/null
done
scnet-deploy export "$CKPT" -f onnx,openvino -o "$TMP/fp32" >/dev/null
scnet-deploy export "$CKPT" -f openvino --precision bf16 -o "$TMP/bf16" >/dev/null
scnet-deploy bench "$TMP/fp32/onnx" "$TMP/fp32/openvino" "$TMP/bf16" --shape 180x320 --runs 10 \
  --json "$OUT/bench_180x320.json" --report "$OUT"
python - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| scale | PSNR-Y | SSIM-Y |\n|---|---|---|")
for s in (2, 3, 4):
    m = json.loads((out / f"set5_bicubic_x{s}.json").read_text())["models"][0]
    print(f"| x{s} | {m['psnr_y']:.2f} | {m['ssim_y']:.4f} |")
PY
