"""GLMC itself (Du et al., CVPR 2023): the pieces of the method, free of run machinery.

    mixing.py      global MixUp and local CutMix of each uniform / re-sampled pair
    losses.py      the GLMC loss (balance, re-balance, consistency terms), the CE baseline,
                   the cumulative alpha and the classifier each run is evaluated with
    train_step.py  the loss of one batch and the optimiser step, optionally compiled
    schedule.py    the learning-rate schedules (cosine; warm-up + cosine for ImageNet-LT, iNat)
    maxnorm.py     the MaxNorm second stage (weight-norm cap, class-balanced losses)
    args.py        the method's command-line flags and their checks
    paper_tables.py the published GLMC results and the commands of each table row

Imports: `glmc/` never imports `datasets/` or `models/` (a network or a data set reaches it as
an argument), and from `utils/` only what a method step truly needs: errors, the precision
setting of the forward pass (`utils.speed`) and the per-class weights it shares with the
re-sampling loader (`utils.class_weights`). `datasets/`, `models/` and `utils/` never import
`glmc/`; main.py, test.py, scripts/ and bench/ sit on top of all four.
"""
