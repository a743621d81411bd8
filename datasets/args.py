"""The data flags of main.py, test.py and the MaxNorm stage, and their checks."""
import argparse

from datasets import DATASETS, LIST_DATASETS
from datasets.cifar_lt import CIFAR_INFO, SPLITS
from utils.errors import UsageError


ALIASES = {"inaturalist2018": "iNaturelist2018", "inat2018": "iNaturelist2018", "inaturalist18": "iNaturelist2018",
           "inat": "iNaturelist2018"}


def dataset_name(text: str) -> str:
    """The released spelling of a data set name given in any letter case, with or without '-', '_'
    (cifar-10, CIFAR10, imagenet_lt, iNaturalist2018, ...)."""
    key = text.lower().replace("-", "").replace("_", "").replace(" ", "")
    names = {name.lower().replace("-", ""): name for name in DATASETS}
    if key in names or key in ALIASES:
        return names.get(key) or ALIASES[key]
    raise argparse.ArgumentTypeError(f"unknown data set {text!r}; choose one of {', '.join(DATASETS)}")


TRAINING_ONLY = {"skip_bad_images": False, "allow_empty_classes": False, "split": "released", "data_seed": None}


def add_data_args(parser: argparse.ArgumentParser, training: bool = True) -> None:
    """The data flags; with `training` False (test.py) the flags that only choose or police the training
    images are left out of the command line and keep their defaults."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="cifar10", type=dataset_name, metavar="{" + ",".join(DATASETS) + "}",
                   help="data set, in any letter case, '-' and '_' optional (iNaturalist2018 and inat2018 are "
                        "iNaturelist2018); 'folder' (alias 'nepes') is any tree ROOT/train/<class>/ + "
                        "ROOT/val|valid|test/<class>/")
    g.add_argument("--root", default="data", help="data set root: for CIFAR the folder holding cifar-10-batches-py/ "
                   "or cifar-100-python/ (or that folder itself); for ImageNet-LT and iNat the folder the list "
                   "paths are relative to; for folder data sets the folder holding train/ (default: data)")
    g.add_argument("--dir_train_txt", default=None,
                   help="training image list, 'relative/path label' per line (default: ROOT/data_txt/"
                        "ImageNet_LT_train.txt or iNaturalist18_train.txt)")
    g.add_argument("--dir_test_txt", default=None,
                   help="test image list (default: ROOT/data_txt/ImageNet_LT_test.txt or iNaturalist18_val.txt)")
    g.add_argument("--image_size", type=int, default=None,
                   help="training crop of ImageNet-LT, iNat (224) and folder data sets (112, so that the CIFAR "
                        "ResNet-50's step fits one 80 GB GPU); CIFAR is 32")
    if training:
        g.add_argument("--skip_bad_images", action="store_true",
                       help="skip images that cannot be decoded (counted and reported each epoch) instead of "
                            "stopping")
    g.add_argument("--no_download", action="store_true", help="never download CIFAR when it is missing")
    g.add_argument("--num_classes", type=int, default=None,
                   help="number of classes (default: the data set's); must match the data")
    if training:
        g.add_argument("--allow_empty_classes", action="store_true",
                       help="train although a class has no training image (default: stop, exit 2)")
    g.add_argument("--imbanlance_rate", "--imbalance_rate", dest="imbanlance_rate", type=float, default=0.01,
                   help="n_min / n_max of the long-tailed training set (0.01 is IF 100; 1.0 is balanced)")
    if not training:
        parser.set_defaults(**TRAINING_ONLY)
        return
    g.add_argument("--split", default="released", choices=SPLITS,
                   help="which images the long-tailed set keeps: 'released' (seeded choice without replacement, "
                        "class by class; the 'updated' results), 'cao' (the seed-0 split of Cao et al. 2019 used "
                        "by most papers), or 'replacement' (the first release's draw with replacement; the paper's "
                        "original GLMC column)")
    g.add_argument("--data_seed", type=int, default=None,
                   help="seed that picks the CIFAR-LT images (--split released/replacement); default: --seed, "
                        "as released. Give it to vary the training seed on a fixed training set")


CIFAR_ONLY = {"imbanlance_rate", "split", "data_seed", "no_download", "data_path"}
IMAGE_FILES_ONLY = {"image_size", "skip_bad_images"}
LISTS_ONLY = {"dir_train_txt", "dir_test_txt"}


def data_flag_applies(dest: str, args: argparse.Namespace) -> bool:
    """False for a data flag that this data set ignores (CIFAR's split flags for image files, ...)."""
    cifar = args.dataset in CIFAR_INFO
    return not ((dest in CIFAR_ONLY and not cifar) or (dest in IMAGE_FILES_ONLY and cifar)
                or (dest in LISTS_ONLY and args.dataset not in LIST_DATASETS))


def check_data_args(args: argparse.Namespace) -> None:
    if not 0.0 < args.imbanlance_rate <= 1.0:
        raise UsageError(f"--imbanlance_rate {args.imbanlance_rate} is outside (0, 1]; 0.01 means IF 100")
    if args.image_size is not None and args.image_size < 8:
        raise UsageError(f"--image_size {args.image_size} is too small (at least 8)")
