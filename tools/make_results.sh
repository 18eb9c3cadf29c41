#!/usr/bin/env bash
# Regenerate every measured table of README.md, docs/ and benchmarks/RESULTS.md from the
# current commit, on the CPU. About 1.5 h on an idle 2-core machine (2026-12: pretrain 2 min,
# one round 3-4 min, one round-1 study run 1.5 min).
#
#   bash tools/make_results.sh OUT_DIR
#
# What varies across machines: nothing on the same CPU type with the same torch build (the
# CPU runs are deterministic; a rerun of the same command reproduces every number). Another
# CPU type or BLAS build changes float32 rounding in the last bits, and training amplifies
# that: on the confounded data one training seed already moves round-1 CAM mIoU by up to
# 8 points, so single-run numbers move by that much across machines; the paired differences
# of the study are the numbers to compare.
set -euo pipefail
OUT=$(realpath -m "${1:?usage: bash tools/make_results.sh OUT_DIR}")
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
mkdir -p "$OUT"
cat > "$OUT/control.yaml" <<EOF
run: control
results_dir: $OUT/results
dataset: {synthetic: {control: true}}
EOF

echo "== README 'Results': rounds 0-3, default (confounded) and control data"
snakemake --cores 2 round3 --config results_dir="$OUT/results"
snakemake --cores 2 round3 --configfile "$OUT/control.yaml"
cat "$OUT/results/default/round3/summary.csv" "$OUT/results/control/round3/summary.csv"

echo "== docs/context.md: the settings sweep (round 1, seed 1, CAM stage)"
python tools/context_study.py --base "$OUT/results/default" --out "$OUT/sweep" --seeds 1 2 --stage cam \
  --condition paper '{"context": {"init_std": 0.02, "lr_mult": 1, "m_scale": 1}}' \
  --condition mscale8 '{"context": {"init_std": 0.02, "lr_mult": 1, "m_scale": 8}}' \
  --condition std02 '{"context": {"init_std": 0.2, "lr_mult": 1, "m_scale": 1}}' \
  --condition std02_ms8 '{"context": {"init_std": 0.2, "lr_mult": 1, "m_scale": 8}}' \
  --condition auto '{"context": {"init_std": 0.02, "lr_mult": 1, "m_scale": "auto"}}' \
  --condition auto_std02 '{"context": {"init_std": 0.2, "lr_mult": 1, "m_scale": "auto"}}' \
  --condition auto_std02_label '{"context": {"init_std": 0.2, "lr_mult": 1, "m_scale": "auto", "xm_encoding": "label_index"}}' \
  --condition auto_std02_b4 '{"context": {"init_std": 0.2, "lr_mult": 1, "m_scale": "auto", "block": 4}}' \
  --condition auto_std02_lr10 '{"context": {"init_std": 0.2, "lr_mult": 10, "m_scale": "auto"}}' \
  --condition auto_std05_lr10 '{"context": {"init_std": 0.5, "lr_mult": 10, "m_scale": "auto"}}' \
  --condition auto_std1 '{"context": {"init_std": 1.0, "lr_mult": 1, "m_scale": "auto"}}' \
  --condition auto_std02_lr100 '{"context": {"init_std": 0.2, "lr_mult": 100, "m_scale": "auto"}}'

echo "== docs/context.md: the study, CONTA vs placebo vs none, seeds 2-6, both datasets"
for data in default control; do
  extra=()
  [ "$data" = control ] && extra=(--configfile "$OUT/control.yaml")
  python tools/context_study.py --base "$OUT/results/$data" --out "$OUT/study_$data" --seeds 2 3 4 5 6 \
    --stage pseudo "${extra[@]}" \
    --condition conta '{}' --condition placebo '{"context": {"mode": "placebo"}}' \
    --condition none '{"context": {"mode": "none"}}'
done

echo "== docs/fidelity.md: agreement with the reference code"
python tools/parity_report.py

echo "== benchmarks/RESULTS.md 'Fidelity'"
python benchmarks/bench_fidelity.py --repeat 3 --json "$OUT/fidelity.jsonl"
