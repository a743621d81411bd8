"""The paper's result tables as runs to make, and the published numbers to set beside them.

Each table has rows (a data set and imbalance factor, or a method) and columns (how
the row is trained, or the MaxNorm second stage on the row's own runs). A cell is
trained once per seed by `main.py` with the README command of its data set plus
the cell's flags; a "+ MaxNorm" cell trains nothing: it runs the second stage on
the runs of the row's `updated` cell (`maxnorm`) or `glmc` cell (`glmc-maxnorm`).

Published top-1 (%, the best test accuracy over epochs, as the released code
reports), attributed:
- "GLMC": the CVPR 2023 paper (Du et al., "Global and Local Mixture Consistency
  Cumulative Learning for Long-tailed Visual Recognitions"), made with the first
  release, which drew the CIFAR-LT subsets with replacement; the CIFAR-10 values
  are those of the authors' README correction of 2023/5/15;
- "GLMC + MaxNorm": the authors' README, the same runs with the MaxNorm stage of
  Alshammari et al. 2022 added;
- "GLMC updated" and "updated + MaxNorm": the authors' README after the subset
  draw was fixed (choice without replacement), for models the authors say they
  "fine-tuned" with settings they did not publish;
- ImageNet-LT (ResNeXt-50; many / medium / few / all) and iNaturalist 2018: the
  paper ("GLMC + BS": with balanced softmax).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

CIFAR_COMMAND = {
    "cifar10": "--dataset cifar10 -a resnet32 --num_classes 10 --beta 0.5 --lr 0.01 --epochs 200 -b 64 "
               "--momentum 0.9 --weight_decay 5e-3 --resample_weighting 0.0 --label_weighting 1.2 --contrast_weight 4",
    "cifar100": "--dataset cifar100 -a resnet32 --num_classes 100 --beta 0.5 --lr 0.01 --epochs 200 -b 64 "
                "--momentum 0.9 --weight_decay 5e-3 --resample_weighting 0.0 --label_weighting 1.2 "
                "--contrast_weight 10",
}
IMAGENET_COMMAND = ("--dataset ImageNet-LT -a resnext50_32x4d --num_classes 1000 --beta 0.5 --lr 0.1 --epochs 135 "
                    "-b 120 --momentum 0.9 --weight_decay 2e-4 --resample_weighting 0.2 --label_weighting 1.0 "
                    "--contrast_weight 10")
INAT_COMMAND = ("--dataset iNaturelist2018 -a resnext50_32x4d --num_classes 8142 --beta 0.5 --lr 0.1 --epochs 120 "
                "-b 128 --momentum 0.9 --weight_decay 1e-4 --resample_weighting 0.2 --label_weighting 1.0 "
                "--contrast_weight 10")

MAXNORM = "maxnorm"  # the second stage on the `updated` runs, instead of training
GLMC_MAXNORM = "glmc-maxnorm"  # the second stage on the `glmc` runs (the paper's split)


@dataclass(frozen=True)
class Cell:
    column: str  # e.g. "updated"
    flags: str  # main.py flags, or for a MaxNorm cell the column whose runs it starts from
    published: Dict[str, float] = field(default_factory=dict)  # {"top1": ..., "many": ...}

    @property
    def is_stage(self) -> bool:
        return self.column in (MAXNORM, GLMC_MAXNORM)


@dataclass(frozen=True)
class Row:
    name: str  # e.g. "cifar10-if100"
    label: str  # e.g. "CIFAR-10-LT, IF 100"
    cells: Tuple[Cell, ...]


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    rows: Tuple[Row, ...]
    columns: Dict[str, str]  # column -> what it is
    torchrun: bool = False  # rows that take every listed GPU through torchrun
    network: Tuple[str, Optional[int]] = ("", None)  # (-a, --width) of the published runs
    network_words: str = ""  # how the title names that network


NETWORK_NAMES = {"resnet32": "ResNet-32", "resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
                 "resnext50_32x4d": "ResNeXt-50"}


def network_label(arch: str, width: Optional[int]) -> str:
    """'ResNet-32 width 8', 'ResNeXt-50': a network as a title names it (the width only where it applies)."""
    return NETWORK_NAMES.get(arch, arch) + (f" width {width}" if arch == "resnet32" and width else "")


# Published top-1 of the CIFAR tables:
# {(data set, IF): (GLMC, GLMC updated, updated + MaxNorm, GLMC + MaxNorm)}.
CIFAR_PUBLISHED = {
    ("cifar100", 100): (55.88, 57.99, 58.41, 57.11), ("cifar100", 50): (61.08, 63.85, 64.57, 62.32),
    ("cifar100", 10): (70.74, 73.47, 74.28, 72.33),
    ("cifar10", 100): (87.75, 88.49, 89.58, 87.57), ("cifar10", 50): (90.18, 91.04, 92.04, 90.22),
    ("cifar10", 10): (94.04, 94.85, 95.00, 94.03),
}
CIFAR_COLUMNS = {"glmc": "GLMC as in the paper (the first release's subset drawn with replacement; CIFAR-10's "
                         "published values are the authors' README correction of 2023/5/15)",
                 "updated": "GLMC updated (the fixed subset draw, the released code's default; published for "
                            "models the authors fine-tuned with settings they did not publish)",
                 MAXNORM: "updated + MaxNorm (the second stage on the updated runs' best checkpoints)",
                 GLMC_MAXNORM: "GLMC + MaxNorm (the second stage on the glmc runs' best checkpoints, the authors' "
                               "README rows on the paper's split)"}


def cifar_rows(dataset: str, with_published: bool, extra: str = "", split: Optional[str] = None) -> List[Row]:
    label = {"cifar10": "CIFAR-10-LT", "cifar100": "CIFAR-100-LT"}[dataset]
    rows = []
    for imbalance in (100, 50, 10):
        base = f"{CIFAR_COMMAND[dataset]} --imbanlance_rate {1 / imbalance:g}{extra}"
        glmc, updated, maxnorm, glmc_maxnorm = (CIFAR_PUBLISHED[(dataset, imbalance)] if with_published
                                                else (None,) * 4)
        if split:  # one column: the standard protocol
            cells = (Cell("standard", f"{base} --split {split}"),)
        else:
            cells = (Cell("glmc", f"{base} --split replacement", {"top1": glmc}),
                     Cell("updated", f"{base} --split released", {"top1": updated}),
                     Cell(MAXNORM, "updated", {"top1": maxnorm}),
                     Cell(GLMC_MAXNORM, "glmc", {"top1": glmc_maxnorm}))
        rows.append(Row(f"{dataset}-if{imbalance}", f"{label}, IF {imbalance}", cells))
    return rows


TABLES: Dict[str, Table] = {
    "cifar10-lt": Table("cifar10-lt", "CIFAR-10-LT, ResNet-32 (width 64, as released)",
                        tuple(cifar_rows("cifar10", True)), CIFAR_COLUMNS, network=("resnet32", 64),
                        network_words="ResNet-32 (width 64, as released)"),
    "cifar100-lt": Table("cifar100-lt", "CIFAR-100-LT, ResNet-32 (width 64, as released)",
                         tuple(cifar_rows("cifar100", True)), CIFAR_COLUMNS, network=("resnet32", 64),
                         network_words="ResNet-32 (width 64, as released)"),
    "imagenet-lt": Table("imagenet-lt", "ImageNet-LT, ResNeXt-50", (
        Row("imagenet-lt-glmc", "GLMC", (Cell("glmc", IMAGENET_COMMAND,
                                              {"many": 70.1, "medium": 52.4, "few": 30.4, "top1": 56.3}),)),
        Row("imagenet-lt-bs", "GLMC + BS", (Cell("glmc", IMAGENET_COMMAND + " --balanced_softmax",
                                                 {"many": 64.76, "medium": 55.67, "few": 42.19, "top1": 57.21}),)),
    ), {"glmc": "as in the paper"}, torchrun=True, network=("resnext50_32x4d", None), network_words="ResNeXt-50"),
    "inat2018": Table("inat2018", "iNaturalist 2018, ResNeXt-50", (
        Row("inat2018-glmc", "GLMC", (Cell("glmc", INAT_COMMAND,
                                           {"many": 64.60, "medium": 73.16, "few": 73.01, "top1": 72.21}),)),
    ), {"glmc": "as in the paper"}, torchrun=True, network=("resnext50_32x4d", None), network_words="ResNeXt-50"),
    "cifar-lt-standard": Table(
        "cifar-lt-standard", "CIFAR-10/100-LT under the common protocol: ResNet-32 at width 16, the Cao et al. "
                             "2019 split (no published GLMC figures)",
        tuple(cifar_rows("cifar10", False, " --width 16", "cao") + cifar_rows("cifar100", False, " --width 16", "cao")),
        {"standard": "GLMC, ResNet-32 width 16, --split cao"}, network=("resnet32", 16),
        network_words="ResNet-32 at width 16"),
}


# ---------------------------------------------------------------- the released models

@dataclass(frozen=True)
class ReleasedModel:
    """A model the authors released, evaluated as it is by test.py beside the figures published for it."""
    name: str  # the row; `<name>.pth.tar` (or .pth) in --checkpoints is its checkpoint, or ROW=FILE says which
    label: str
    test_flags: str  # test.py flags that rebuild its test set and training counts, and its network
    published: Dict[str, float]  # {"top1": ..., "many": ...}
    link: str  # where the authors' README links it


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view?usp=share_link"


CIFAR_RELEASED_IDS = {  # the "GLMC(Updated)" links of the authors' README update of 2023/5/23
    ("cifar100", 100): "1QNusy82tFNCK_Urz7cdztpHRV-9gQoW3", ("cifar100", 50): "1QEoDpwIDnK57vK-DPU6wjIYTxoG3dj98",
    ("cifar100", 10): "1ZOqNwi83dW4Rj3lsEE_xuVFQMYAKrhjc", ("cifar10", 100): "1doBLTL9-Y1Sv_2BZ-OFcFlt3rL0JxqZ0",
    ("cifar10", 50): "1n7ieuDZSMODeAs20kutBbEncn3RUavqe", ("cifar10", 10): "1YYxqUR90J1ab0UKs4S2Qb09yi_9jFOjD",
}
RELEASED: Tuple[ReleasedModel, ...] = tuple(
    ReleasedModel(f"{data}-if{imbalance}", f"{'CIFAR-10-LT' if data == 'cifar10' else 'CIFAR-100-LT'}, IF "
                  f"{imbalance}, GLMC updated",
                  f"--dataset {data} -a resnet32 --num_classes {10 if data == 'cifar10' else 100} --imbanlance_rate "
                  f"{1 / imbalance:g}", {"top1": CIFAR_PUBLISHED[(data, imbalance)][1]},
                  _drive(file_id))
    for (data, imbalance), file_id in CIFAR_RELEASED_IDS.items()) + (
    ReleasedModel("imagenet-lt-glmc", "ImageNet-LT, GLMC",
                  "--dataset ImageNet-LT -a resnext50_32x4d --num_classes 1000",
                  {"many": 70.1, "medium": 52.4, "few": 30.4, "top1": 56.3},
                  _drive("1om0ZRuC0PYrYHA1mAsdxm31RYQ_sqDUc")),
    ReleasedModel("imagenet-lt-bs", "ImageNet-LT, GLMC + BS",
                  "--dataset ImageNet-LT -a resnext50_32x4d --num_classes 1000",
                  {"many": 64.76, "medium": 55.67, "few": 42.19, "top1": 57.21},
                  _drive("1GILBAR5fPcpICtM6uUwmYGkEN11wyEOV")),
    ReleasedModel("inat2018-glmc", "iNaturalist 2018, GLMC",
                  "--dataset iNaturelist2018 -a resnext50_32x4d --num_classes 8142",
                  {"many": 64.60, "medium": 73.16, "few": 73.01, "top1": 72.21},
                  _drive("1dcE1eJaRAtMmIF3qTzALnMzTb9AbC3mb")),
)
