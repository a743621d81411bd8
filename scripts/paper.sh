#!/usr/bin/env bash
# One command per row of the published CIFAR results (SPEC §10), for a GPU machine.
#
#   bash scripts/paper.sh list            # the rows
#   bash scripts/paper.sh ROW [FLAGS...]  # run one row; extra flags are appended (e.g. --root DIR --seeds 1,2,3)
#   bash scripts/paper.sh --print ROW     # print the command without running it
#
# Columns: 'glmc' is the paper's original number, from the first release that drew the long-tailed
# subset with replacement (--split replacement); 'updated' is the fixed release (choice without
# replacement, the default). Then summarise with: python scripts/results.py runs/
set -euo pipefail
cd "$(dirname "$0")/.."

cifar_command() {  # data set, imbalance rate, split
  local dataset=$1 rate=$2 split=$3 classes=10 cw=4
  if [ "$dataset" = cifar100 ]; then classes=100; cw=10; fi
  echo "python main.py --dataset $dataset -a resnet32 --num_classes $classes --imbanlance_rate $rate --beta 0.5" \
       "--lr 0.01 --epochs 200 -b 64 --momentum 0.9 --weight_decay 5e-3 --resample_weighting 0.0" \
       "--label_weighting 1.2 --contrast_weight $cw --split $split"
}

declare -A ROWS PUBLISHED
for dataset in cifar100 cifar10; do
  for imb in 100 50 10; do
    rate=$(python3 -c "print(1 / $imb)")
    ROWS[$dataset-if$imb-glmc]=$(cifar_command $dataset "$rate" replacement)
    ROWS[$dataset-if$imb-updated]=$(cifar_command $dataset "$rate" released)
  done
done
PUBLISHED=([cifar100-if100-glmc]=55.88 [cifar100-if100-updated]=57.99 [cifar100-if50-glmc]=61.08
           [cifar100-if50-updated]=63.85 [cifar100-if10-glmc]=70.74 [cifar100-if10-updated]=73.47
           [cifar10-if100-glmc]=87.75 [cifar10-if100-updated]=88.49 [cifar10-if50-glmc]=90.18
           [cifar10-if50-updated]=91.04 [cifar10-if10-glmc]=94.04 [cifar10-if10-updated]=94.85)

print_only=0
if [ "${1:-}" = "--print" ]; then print_only=1; shift; fi
row=${1:-list}
if [ "$row" = list ]; then
  for name in $(printf '%s\n' "${!ROWS[@]}" | sort); do
    printf '%-24s published top-1 %s\n' "$name" "${PUBLISHED[$name]}"
  done
  exit 0
fi
if [ -z "${ROWS[$row]+x}" ]; then
  echo "error: unknown row '$row'; 'bash scripts/paper.sh list' shows the rows" >&2
  exit 2
fi
shift
command="${ROWS[$row]} $*"
if [ $print_only = 1 ]; then echo "$command"; else echo "+ $command"; eval "$command"; fi
