#!/usr/bin/env bash
# One command per row of the published results, for a GPU machine.
#
#   bash scripts/paper.sh list            # the rows, with the published top-1
#   bash scripts/paper.sh ROW [FLAGS...]  # run one row; FLAGS are added to main.py (e.g. --root DIR), and
#                                         # for maxnorm rows to the second stage too (keep them to data flags)
#   bash scripts/paper.sh --print ROW     # print the command without running it
#
# Each row trains into runs/paper/ROW/. CIFAR columns: 'glmc' is the paper's original number, from
# the first release that drew the long-tailed subset with replacement (--split replacement);
# 'updated' is the fixed release (the default split); 'maxnorm' trains 'updated' and then runs the
# MaxNorm second stage on its best checkpoint. Summarise with: python scripts/results.py runs/paper
set -euo pipefail
cd "$(dirname "$0")/.."

cifar_command() {  # data set, imbalance rate, split
  local dataset=$1 rate=$2 split=$3 classes=10 cw=4
  if [ "$dataset" = cifar100 ]; then classes=100; cw=10; fi
  echo "python main.py --dataset $dataset -a resnet32 --num_classes $classes --imbanlance_rate $rate --beta 0.5" \
       "--lr 0.01 --epochs 200 -b 64 --momentum 0.9 --weight_decay 5e-3 --resample_weighting 0.0" \
       "--label_weighting 1.2 --contrast_weight $cw --split $split"
}
maxnorm_stage() {  # data set, row
  local classes=10
  if [ "$1" = cifar100 ]; then classes=100; fi
  echo "python scripts/maxnorm_stage.py --dataset $1 -a resnet32 --num_classes $classes" \
       "--resume \$(ls -d runs/paper/$2/*/ | head -n 1)ckpt.best.pth.tar STAGE_EXTRA"
}

declare -A ROWS PUBLISHED
for dataset in cifar100 cifar10; do
  for imb in 100 50 10; do
    rate=$(python3 -c "print(1 / $imb)")
    ROWS[$dataset-if$imb-glmc]=$(cifar_command $dataset "$rate" replacement)
    ROWS[$dataset-if$imb-updated]=$(cifar_command $dataset "$rate" released)
    ROWS[$dataset-if$imb-maxnorm]="$(cifar_command $dataset "$rate" released) EXTRA && $(maxnorm_stage $dataset $dataset-if$imb-maxnorm)"
  done
done
IMAGENET="python main.py --dataset ImageNet-LT -a resnext50_32x4d --num_classes 1000 --beta 0.5 --lr 0.1 --epochs 135 -b 120 --momentum 0.9 --weight_decay 2e-4 --resample_weighting 0.2 --label_weighting 1.0 --contrast_weight 10"
ROWS[imagenet-lt-glmc]=$IMAGENET
ROWS[imagenet-lt-glmc-bs]="$IMAGENET --balanced_softmax"
ROWS[inat2018-glmc]="python main.py --dataset iNaturelist2018 -a resnext50_32x4d --num_classes 8142 --beta 0.5 --lr 0.1 --epochs 120 -b 128 --momentum 0.9 --weight_decay 1e-4 --resample_weighting 0.2 --label_weighting 1.0 --contrast_weight 10"
PUBLISHED=([cifar100-if100-glmc]=55.88 [cifar100-if100-updated]=57.99 [cifar100-if100-maxnorm]=58.41
           [cifar100-if50-glmc]=61.08 [cifar100-if50-updated]=63.85 [cifar100-if50-maxnorm]=64.57
           [cifar100-if10-glmc]=70.74 [cifar100-if10-updated]=73.47 [cifar100-if10-maxnorm]=74.28
           [cifar10-if100-glmc]=87.75 [cifar10-if100-updated]=88.49 [cifar10-if100-maxnorm]=89.58
           [cifar10-if50-glmc]=90.18 [cifar10-if50-updated]=91.04 [cifar10-if50-maxnorm]=92.04
           [cifar10-if10-glmc]=94.04 [cifar10-if10-updated]=94.85 [cifar10-if10-maxnorm]=95.00
           [imagenet-lt-glmc]=56.3 [imagenet-lt-glmc-bs]=57.21 [inat2018-glmc]=72.21)

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
extra="--root_log runs/paper/$row $*"
command=${ROWS[$row]}
if [[ $command == *STAGE_EXTRA* ]]; then
  command=${command/STAGE_EXTRA/$*}
  command=${command/EXTRA/$extra}
else
  command="$command $extra"
fi
if [ $print_only = 1 ]; then echo "$command"; else echo "+ $command"; eval "$command"; fi
