#!/usr/bin/env bash
# The CONTA confounding study (docs/context.md, "Does CONTA reduce the confounding?"):
# none / placebo / CONTA nwgm / CONTA exact, round 1 through the real workflow, common random
# numbers (every condition of a seed shares data, pre-training and round 0), measured by the
# pre-registered confounding measures of conta_core.evaluation.confounding.
#
#   tools/conta_study.sh OUT [PART ...]      parts: default dose size rounds (default: all, in that order)
#
# default: the default confounding strength, 160 train images, none / placebo / nwgm / exact,
#          seeds $DEFAULT_SEEDS (2 3 4)
# dose:    $DOSE_PLAN: level:conditions, s0 = control (no confounder), smax = 1.0 on every knob,
#          s05 = 0.5 x the default (default plan "smax:placebo,nwgm s0:placebo,nwgm"),
#          seeds $DOSE_SEEDS (2 3 4)
# size:    the default strength at 4x the train images (640), $SIZE_CONDITIONS (placebo nwgm),
#          seeds $SIZE_SEEDS (2)
# rounds:  rounds 1-3 at the default strength (stage pseudo), $ROUND_CONDITIONS (placebo nwgm),
#          seeds $ROUND_SEEDS (2)
# [OURS] study settings: round 0 is shared per dataset (base run), X_m and the confounder set
# come from the pseudo-masks (context.confounder_source: pseudo) so that no round needs the
# segmentation network, and the runs stop at the CAMs (stage cam; rounds: stage pseudo).
# Reruns reuse finished runs. On a 2-core CPU, about: default 25 min, dose 25 min, size 20 min,
# rounds 20 min.
set -euo pipefail
OUT=$(realpath -m "${1:?usage: tools/conta_study.sh OUT [dose|size|rounds ...]}")
shift
PARTS=${*:-default dose size rounds}
DEFAULT_SEEDS=${DEFAULT_SEEDS:-2 3 4}
DOSE_SEEDS=${DOSE_SEEDS:-2 3 4}
SIZE_SEEDS=${SIZE_SEEDS:-2}
ROUND_SEEDS=${ROUND_SEEDS:-2}
DOSE_PLAN=${DOSE_PLAN:-smax:placebo,nwgm s0:placebo,nwgm}
SIZE_CONDITIONS=${SIZE_CONDITIONS:-placebo nwgm}
ROUND_CONDITIONS=${ROUND_CONDITIONS:-placebo nwgm}
HERE=$(cd "$(dirname "$0")" && pwd)
STUDY="python $HERE/context_study.py"
declare -A OVERLAY=([none]='{"context": {"mode": "none"}}' [placebo]='{"context": {"mode": "placebo"}}'
                    [nwgm]='{"context": {"adjustment": "nwgm"}}' [exact]='{"context": {"adjustment": "exact"}}')
declare -A KNOBS=([s1]="0.9 0.9 0.7" [s0]="0 0 0" [smax]="1.0 1.0 1.0" [s05]="0.45 0.45 0.35")
conditions() {  # NAME ... or NAME,NAME,... -> --condition NAME JSON ...
  for c in ${*//,/ }; do printf '%s\0%s\0%s\0' --condition "$c" "${OVERLAY[$c]}"; done
}
mapfile -d '' COND < <(conditions none placebo nwgm exact)
SRC='"context": {"confounder_source": "pseudo"}'
knobs() {  # cooccurrence background_context part_context [num_train]
  echo "{$SRC, \"dataset\": {\"synthetic\": {\"cooccurrence\": $1, \"background_context\": $2, \"part_context\": $3, \"num_train\": ${4:-160}}}}"
}
for part in $PARTS; do
  case $part in
    default)
      $STUDY --base "$OUT/bases/s1" --base-overlay "$(knobs 0.9 0.9 0.7)" --out "$OUT/dose/s1" \
        --seeds $DEFAULT_SEEDS --stage cam "${COND[@]}" ;;
    dose)
      for entry in $DOSE_PLAN; do
        level=${entry%%:*}
        mapfile -d '' DCOND < <(conditions ${entry#*:})
        $STUDY --base "$OUT/bases/$level" --base-overlay "$(knobs ${KNOBS[$level]})" --out "$OUT/dose/$level" \
          --seeds $DOSE_SEEDS --stage cam "${DCOND[@]}"
      done ;;
    size)
      mapfile -d '' SCOND < <(conditions $SIZE_CONDITIONS)
      $STUDY --base "$OUT/bases/n640" --base-overlay "$(knobs 0.9 0.9 0.7 640)" --out "$OUT/size/n640" \
        --seeds $SIZE_SEEDS --stage cam "${SCOND[@]}" ;;
    rounds)
      mapfile -d '' RCOND < <(conditions $ROUND_CONDITIONS)
      $STUDY --base "$OUT/bases/s1" --base-overlay "$(knobs 0.9 0.9 0.7)" --out "$OUT/rounds/s1" \
        --seeds $ROUND_SEEDS --stage pseudo --rounds 3 "${RCOND[@]}" ;;
    *) echo "unknown part $part (default | dose | size | rounds)" >&2; exit 2 ;;
  esac
done
