"""Train GLMC (CVPR 2023) on a long-tailed data set.

    python main.py --dataset cifar10 -a resnet32 --num_classes 10 --imbanlance_rate 0.01 --beta 0.5 \
        --lr 0.01 --epochs 200 -b 64 --momentum 0.9 --weight_decay 5e-3 --resample_weighting 0.0 \
        --label_weighting 1.2 --contrast_weight 4

Flags keep the released code's spellings. A method or schedule flag left out takes
the paper's value for --dataset (the table at the end of --help). A run writes into
its own run folder; `--resume <run folder>` continues it with the settings it
started with.
"""
if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they load exits 130 in one line
    from utils.interrupt import exit_on_ctrl_c
    exit_on_ctrl_c()

import argparse
import os
import shlex
import textwrap
import time
from typing import Dict, List, Optional, Tuple

import torch

from datasets import (CIFAR_INFO, DataBundle, build_data, build_loaders, canonical_dataset, class_count_line,
                      data_seed)
from datasets.args import add_data_args, check_data_args, data_flag_applies
from datasets.image_files import preflight
from glmc.args import add_method_args, check_method_args, method_flag_applies
from glmc.losses import LossOptions, cumulative_alpha, evaluation_head, log_class_prior
from glmc.schedule import build_scheduler, lr_per_epoch, summarize_lr
from glmc.train_step import COMPILE_MODES, CEStep, GLMCStep, train_step
from models import build_model, count_parameters
from models.args import add_model_args, check_model_args, model_flag_applies
from models.heads import CLASSIFIERS
from utils.checkpoint import load_weights
from utils.config import (FlagTrackingParser, add_run_args, check_run_args, command_line, configuration_lines,
                          run_cli, select_device)
from utils.distributed import (World, any_rank, broadcast_object, close_world, elastic_job,
                               init_world, main_rank_first)
from utils.errors import RunStopped, UsageError, WriteFailed
from utils.interrupt import StopRequest
from utils.memory import check_fits, estimate_training_memory, memory_verdict, step_images
from utils.metrics import evaluate, format_group
from utils.presets import PRESET_FLAGS, RELEASED_DEFAULTS, apply_paper_presets, mark_preset_flags, preset_table
from utils.progress import DivergenceWatch, EpochProgress, format_duration, plural, remaining_time
from utils.rng import restore_rng_states, seed_everything
from utils.run_checkpoints import RunCheckpoints
from utils.run_log import RunLog, library_versions, write_json
from utils.run_lock import RunLock
from utils.run_names import check_can_create, new_run_folder, run_folder_name, variant_tag
from utils.runs import (adopt_checkpoint_args, adopt_data_root, check_resumable, check_run_folder_files,
                        check_training_set, checkpoint_description, defining_flags, describe_run,
                        keep_numerics_flags, read_resume_checkpoint_file, repair_records, resume_checkpoint_path,
                        resumed_folders)
from utils.safe_files import remove_temporaries
from utils.torchrun_restarts import elastic_run_to_continue, forget_elastic_runs, remember_elastic_run
from utils.speed import grad_scaler, prepare_model, set_threads

PRESETS_EPILOG = "\n\n".join([
    textwrap.fill("A flag whose default reads 'preset per data set' takes, when left out, the paper's value for "
                  "--dataset (the GLMC README's command for that data set); a flag given always wins:", 100),
    preset_table(),
    textwrap.fill("--dataset folder takes the nepes row. For comparison, the released main.py has one set of "
                  "defaults for every data set: " + ", ".join(f"{k} {v}" for k, v in RELEASED_DEFAULTS.items())
                  + ".", 100)])


def get_args_parser() -> argparse.ArgumentParser:
    parser = FlagTrackingParser(description="Train GLMC on a long-tailed data set", epilog=PRESETS_EPILOG)
    add_data_args(parser)
    add_model_args(parser)
    add_run_args(parser)
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="training epochs")
    g.add_argument("--start-epoch", dest="start_epoch", type=int, default=0,
                   help="first epoch (0-based); --resume takes it from the checkpoint")
    g.add_argument("--lr", "--learning-rate", dest="lr", type=float, help="initial learning rate")
    g.add_argument("--momentum", type=float, help="SGD momentum")
    g.add_argument("--wd", "--weight_decay", dest="weight_decay", type=float, help="weight decay")
    g.add_argument("--warmup", default="late", choices=["late", "on_time"],
                   help="ImageNet-LT/iNat warm-up: 'late' reproduces the released schedule (the warm-up rule "
                        "applied after each epoch, so epoch 1 runs at --lr and epochs 2-12 at 0.1x..1.1x), "
                        "'on_time' applies it before each epoch")
    add_method_args(parser)
    g = parser.add_argument_group("speed and scale")
    g.add_argument("--data_path", default="tensor", choices=["tensor", "pil"],
                   help="CIFAR only: 'tensor' makes the crops and flips as batched tensor operations on the "
                        "training device (same distributions, much faster); 'pil' uses per-image PIL transforms "
                        "in DataLoader workers as released. Other data sets always use the PIL path")
    g.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                   help="mixed precision for the forward pass (fp16 with a gradient scaler); losses stay fp32")
    g.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=False,
                   help="channels_last memory format (a resume keeps the run's setting unless given)")
    g.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES + ("off",),
                   help="torch.compile the training step (both forward passes and the loss): 'default' when "
                        "given alone, 'reduce-overhead' to replay it as a CUDA graph, 'max-autotune'; "
                        "off when left out (a resume keeps the run's setting unless given; 'off' turns it off)")
    g.add_argument("--sync_bn", action="store_true",
                   help="with torchrun: SyncBatchNorm (default: per-process statistics, as the released DataParallel)")
    g = parser.add_argument_group("run")
    g.add_argument("-p", "--print_freq", type=int, default=50, help="print a progress line every N steps")
    g.add_argument("--root_log", default="runs", help="parent folder of run folders (logs, args.json)")
    g.add_argument("--name", default=None,
                   help="run folder name (default: data set, network, IF, method, seed and start time, with a "
                        "suffix -2, -3, ... when taken); a --name that is taken stops with exit 2")
    g.add_argument("--root_model", default=None,
                   help="parent folder for checkpoints (default: the run folder itself)")
    g.add_argument("--resume", default=None,
                   help="continue a run: its run folder (or its ckpt.pth.tar). The run keeps the settings it "
                        "started with; only operational flags (-j, -p, --gpu, --root, ...) may change")
    g.add_argument("--seeds", default=None,
                   help="comma-separated seeds, e.g. 1,2,3: one run per seed, in sibling run folders; the "
                        "training images follow each seed unless --data_seed fixes them")
    g.add_argument("--dry_run", action="store_true",
                   help="build data, loaders and model, check the listed image files, print the configuration and "
                        "the memory estimate with its verdict, then exit; writes nothing")
    g.add_argument("--no_memory_check", action="store_true",
                   help="start the run even where the memory estimate says it will not fit the device")
    g.add_argument("--no_tensorboard", action="store_true", help="do not write TensorBoard scalars")
    mark_preset_flags(parser, PRESET_FLAGS, "preset per data set, see below")
    return parser


def check_args(args: argparse.Namespace) -> None:
    check_data_args(args)
    check_model_args(args)
    check_run_args(args)
    check_method_args(args)
    if args.compile == "off":
        args.compile = None
    for flag in ("epochs", "lr"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag} {getattr(args, flag)} must be positive")
    for flag in ("weight_decay", "momentum"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag} {getattr(args, flag)} must not be negative")
    if args.print_freq <= 0:
        raise UsageError(f"-p/--print_freq {args.print_freq} must be positive")


def epoch_alpha(args, epoch: int) -> Optional[float]:
    """The cumulative alpha (1 - (epoch / epochs) ** 2), a fixed value under --fixed_alpha, None for CE."""
    if args.method == "ce":
        return None
    return args.fixed_alpha if args.fixed_alpha is not None else cumulative_alpha(epoch, args.epochs)


def build_step_loss(args, train_counts, image_size: int, device: torch.device):
    """The loss of one training batch for --method: `step_loss(model, batch, step) -> (loss, terms)`."""
    if args.method == "ce":
        return CEStep(device, args.compile)
    opts = LossOptions(args.contrast_weight, args.local_label == "area", args.mix_reduction == "mean",
                       global_mix=not args.no_global_mix, local_mix=not args.no_local_mix,
                       consistency=not args.no_consistency, reweight=not args.no_reweight,
                       log_prior=log_class_prior(train_counts).to(device) if args.balanced_softmax else None)
    return GLMCStep(train_counts, args.label_weighting, opts, lambda epoch: epoch_alpha(args, epoch), image_size,
                    args.seed, args.beta if args.lambda_dist == "beta" else None, device, args.compile)


def train_one_epoch(model, optimizer, train_loader, step_loss, epoch: int, args, log: RunLog,
                    progress: EpochProgress, stop: StopRequest, device: torch.device, world: World = World(),
                    scaler: Optional[torch.amp.GradScaler] = None) -> Dict[str, float]:
    """One pass over the uniform loader (for GLMC each batch paired with a re-sampled one).

    Starts at `progress.step` and returns early, with `progress` up to date, when a stop is requested.
    The host waits for the device only at progress lines (and, under torchrun, for the stop check).
    """
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # gpu_peak_mb is this epoch's
    start, seen_before, steps, first_step = time.time(), progress.seen, len(train_loader), progress.step
    seconds_before = progress.seconds  # of this epoch, before a mid-epoch stop
    watch = DivergenceWatch(device)
    step_loss.begin_epoch(epoch, steps)
    for batch in train_loader.epoch(epoch, skip_batches=progress.step):
        empty = any(part is None for part in batch)  # only undecodable images (--skip_bad_images)
        if args.skip_bad_images and world.enabled:  # every process skips the step, or none: no collective waits
            (empty,) = any_rank(world, [empty], device)
        if empty:
            progress.step += 1
            continue
        loss, terms = train_step(model, optimizer, step_loss, batch, progress.step, args.amp, args.compile, device,
                                 scaler)
        watch.update(progress.step, loss, terms)
        n = min(len(part[1]) for part in batch)
        for k, v in terms.items():
            progress.sums[k] = progress.sums.get(k, 0.0) + v * n
        progress.seen += n
        progress.step += 1
        progress_line = (progress.step - 1) % args.print_freq == 0 or progress.step == steps
        if progress_line:
            watch.check(epoch, world, device)
            elapsed = time.time() - start
            rate = (progress.seen - seen_before) * world.size / elapsed
            epoch_left, run_left = remaining_time(elapsed, progress.step - first_step, steps - progress.step, steps,
                                                  args.epochs - epoch - 1)
            log.print(f"epoch {epoch + 1}/{args.epochs} step {progress.step}/{steps} "
                      + " ".join(f"{k} {v:.4f}" for k, v in progress.means().items())
                      + f" lr {optimizer.param_groups[0]['lr']:.5f} {rate:.0f} img/s; {format_duration(elapsed)} "
                      f"elapsed, epoch {format_duration(epoch_left)} left, run about {format_duration(run_left)} left")
        # under torchrun the stop request is exchanged at progress lines only (a collective is a host sync)
        if (progress_line or not world.enabled) and any_rank(world, [stop.signum is not None], device)[0]:
            break
    watch.check(epoch, world, device)
    elapsed = time.time() - start
    progress.seconds = seconds_before + elapsed
    stats = {**progress.means(), "alpha": epoch_alpha(args, epoch), "seconds": progress.seconds,
             "images_per_s": (progress.seen - seen_before) * world.size / max(elapsed, 1e-9)}
    if device.type == "cuda":
        stats["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    skipped = getattr(train_loader.dataset, "take_skipped", lambda: 0)()
    if args.skip_bad_images:
        stats["skipped_images"] = skipped
        log.print(f"epoch {epoch + 1}: {skipped} undecodable training images skipped")
    return stats


def epoch_record(epoch: int, lr: float, train_stats: Dict, result: Dict, best_acc1: float) -> Dict:
    """The epoch's line of metrics.jsonl (also stored in the checkpoint that ends the epoch)."""
    tested = {k: result[k] for k in ("top1", "top5", "many", "medium", "few", "test_images")}
    tested.update({k: v for k, v in result.items() if k.startswith("top1_")})  # each classifier's top-1
    return {"epoch": epoch + 1, "lr": lr, **train_stats, **tested, "best_acc1": best_acc1}


def log_epoch(log: RunLog, epochs: int, record: Dict, shot_rule: str) -> None:
    """The epoch's test line and its TensorBoard scalars."""
    groups = ("many", "medium", "few")
    heads = {k[len("top1_"):]: v for k, v in record.items() if k.startswith("top1_")}
    log.print(f"epoch {record['epoch']}/{epochs} test top-1 {record['top1']:.2f} top-5 {record['top5']:.2f} "
              + " ".join(f"{g} {format_group(record[g])}" for g in groups)
              + f" ({shot_rule} rule) best {record['best_acc1']:.2f} [{record['seconds']:.1f} s train]"
              + ("; top-1 by classifier: " + ", ".join(f"{h} {v:.2f}" for h, v in heads.items()) if heads else ""))
    log.scalars({f"train/{k}": record.get(k) for k in ("loss", "balance", "rebalance", "consistency", "lr", "alpha")}
                | {f"test/{k}": record[k] for k in ("top1", "top5", *groups)}
                | {f"test/top1_{h}": v for h, v in heads.items()}, record["epoch"])


def eval_head(args) -> str:
    """The classifier every evaluation of the run uses (see `evaluation_head`)."""
    return evaluation_head(args.method, args.fixed_alpha, args.epochs)[0]


def other_heads(args) -> Tuple[str, ...]:
    """The classifiers scored beside the evaluation head in every epoch's record (top-1 only)."""
    return tuple(h for h in CLASSIFIERS if h != eval_head(args))


def start_lines(args, data: DataBundle, n_params: int, sources: Dict[str, str], lrs: List[float]) -> List[str]:
    """What a run prints before training: the configuration, the data, the schedule, the evaluated classifier."""
    head, why = evaluation_head(args.method, args.fixed_alpha, args.epochs)
    return (configuration_lines(get_args_parser(), args, sources,
                                (data_flag_applies, model_flag_applies, method_flag_applies))
            + [class_count_line(data.train_counts, data.class_names),
               f"test images: {len(data.test)}; parameters: {n_params:,}",
               f"learning rate per epoch: {summarize_lr(lrs)}"
               + ("" if args.dry_run else " (every epoch in args.json)"),
               f"evaluated with {head} ({why}); every epoch's record also holds the top-1 of "
               + ", ".join(other_heads(args))])


def read_resume_checkpoint(args: argparse.Namespace, world: World) -> Optional[Dict]:
    """The checkpoint `--resume` names, with the run's settings applied to `args` (None for a new run).

    Nothing is written: a bad checkpoint, a contradicting flag or another number of processes stops
    before the run folder is touched.
    """
    if not args.resume:
        return None
    args.resume = resume_checkpoint_path(args.resume)
    checkpoint = read_resume_checkpoint_file(args.resume, args.trust_checkpoint)
    check_resumable(checkpoint, args.resume)
    description = checkpoint_description(checkpoint)
    if description:
        adopt_checkpoint_args(args, description["args"], defining_flags(args),
                              f"checkpoint {args.resume!r}",
                              "A resumed run keeps the settings it started with (a cosine schedule cannot be "
                              "stretched and the training set cannot change): leave the flag out, or start a new "
                              "run to change it",
                              canonical={"dataset": canonical_dataset})
        for note in keep_numerics_flags(args, description["args"]):
            if world.is_main:
                print(note)
        adopt_data_root(args, description, f"checkpoint {args.resume!r}",
                        say=print if world.is_main else lambda message: None)
        trained_with = description.get("world_size", world.size)
        if trained_with != world.size:
            trainers = plural(trained_with, "process", "processes")
            raise UsageError(f"checkpoint {args.resume!r} was trained by {trainers} "
                             f"and this resume has {world.size}: the per-process batches, data shards and BatchNorm "
                             "statistics would change. Resume with the same number of processes, or start a new run")
    return checkpoint


def open_run_folder(args, checkpoint: Optional[Dict], world: World):
    """(run folder, checkpoint folder, lock): a new folder made by rank 0 or the resumed run's, shared
    with every rank; rank 0 holds the folder's lock and clears what an interrupted process left."""
    if checkpoint:
        run_dir, ckpt_dir = resumed_folders(args.resume, checkpoint.get("run_dir"))
        check_run_folder_files(run_dir, ckpt_dir)
    else:
        run_dir = broadcast_object(world, new_run_folder(args.root_log, run_folder_name(args, args.dataset in
                                                                                        CIFAR_INFO),
                                                         exact=bool(args.name))
                                   if world.is_main else None)
        if world.is_main and elastic_job():
            remember_elastic_run(args.root_log, elastic_job(), args.seed, run_dir)
        ckpt_dir = os.path.join(args.root_model, os.path.basename(run_dir)) if args.root_model else run_dir
    lock = RunLock(run_dir)
    if world.is_main:
        lock.acquire()
        try:
            os.makedirs(ckpt_dir, exist_ok=True)
        except OSError as exc:
            lock.release()
            raise UsageError(f"cannot create checkpoint folder {ckpt_dir!r}: {exc.strerror}") from exc
    return run_dir, ckpt_dir, lock


def tidy_run_folder(run_dir: str, ckpt_dir: str, checkpoint: Optional[Dict], checkpoint_path: str, say) -> None:
    """Clear what an interrupted process left: temporary files, and end-of-epoch records it did not finish."""
    for name in remove_temporaries(ckpt_dir):
        say(f"removed {name}, left by an interrupted checkpoint write")
    if checkpoint:
        for note in repair_records(run_dir, checkpoint_path, checkpoint):
            say(note)


def close_finished_run(args: argparse.Namespace, checkpoint: Dict) -> None:
    """Resuming a finished run: tidy its folder and say so."""
    run_dir, ckpt_dir = resumed_folders(args.resume, checkpoint.get("run_dir"))
    check_run_folder_files(run_dir, ckpt_dir)
    lock = RunLock(run_dir).acquire()
    try:
        tidy_run_folder(run_dir, ckpt_dir, checkpoint, args.resume, print)
    finally:
        lock.release()
    print(f"run {run_dir} is finished ({checkpoint['epoch']}/{args.epochs} epochs, best top-1 "
          f"{checkpoint['best_acc1']:.2f}); nothing to resume")


def main(args: argparse.Namespace, world: Optional[World] = None) -> Optional[Dict]:
    """One run; `world` is the process group when the caller holds it (several seeds under torchrun)."""
    sources = apply_paper_presets(args)  # a resumed run then takes every setting from its checkpoint
    check_args(args)
    if world is not None:
        return train(args, world, sources)
    world = init_world()
    try:
        return train(args, world, sources)
    finally:
        close_world(world)


def continue_after_restart(args: argparse.Namespace, world: World) -> None:
    """Under `torchrun --max_restarts N`: a restarted worker group continues the run folder the first
    group started for this seed (from its last checkpoint), with no --resume on the command line. Rank 0
    alone decides, from the note an earlier group of this job left: the agents' restart counts can differ
    (an agent whose own workers were healthy restarts them for a lost node without counting a failure)."""
    job = elastic_job()
    if not world.enabled or job is None or args.resume:
        return
    folder = broadcast_object(world, elastic_run_to_continue(args.root_log, job, args.seed) if world.is_main else None)
    if folder:
        args.resume = folder
        if world.is_main:
            print(f"torchrun restart: continuing {folder} from its last checkpoint")


def memory_advice(args: argparse.Namespace, memory, image_files: bool) -> str:
    """What to lower when the estimate does not fit: the network when its weights are most of it, else the batch."""
    if memory.weights > memory.total / 2:
        return (f"The weights, their gradients and momentum alone take {memory.weights / 1e9:.1f} GB: use a smaller "
                + ("--width" if args.arch == "resnet32" else "network (-a)"))
    return ("Lower -b" + (" or --image_size" if image_files else "")
            + (", or use --amp bf16" if args.amp == "off" else ""))


def train(args: argparse.Namespace, world: World, sources: Dict[str, str]) -> Optional[Dict]:
    if args.batch_size % world.size:
        raise UsageError(f"-b/--batch_size {args.batch_size} (the global batch) is not divisible by the "
                         f"{world.size} processes")
    continue_after_restart(args, world)
    checkpoint = read_resume_checkpoint(args, world)
    resumed = (checkpoint_description(checkpoint) or {}) if checkpoint else {}  # the run being continued
    if checkpoint:
        sources = resumed.get("flag_sources", {})
    args.data_seed = data_seed(args)
    if checkpoint and checkpoint["epoch"] >= args.epochs and not checkpoint.get("in_epoch"):
        if world.is_main:
            close_finished_run(args, checkpoint)
        return None
    seed_everything(args.seed)
    device = select_device(world.local_rank if world.enabled and torch.cuda.is_available() else args.gpu)
    threads = set_threads(args.threads, resumed.get("cpu_threads"))
    if device.type == "cpu" and not checkpoint:
        threads += "; the CPU's figures depend on the thread count, so a resume keeps it"
    data = main_rank_first(world, lambda: build_data(args, views=1 if args.method == "ce" else 2),
                           "reading (or downloading) the data")
    args.num_classes = data.num_classes
    description = describe_run(args, data.train_counts, data.class_names, data.fingerprint, variant_tag(args),
                               evaluation_head(args.method, args.fixed_alpha, args.epochs), world.size, sources,
                               resumed.get("run_id"), torch.get_num_threads(), data.source_fingerprint)
    if checkpoint:
        check_training_set(resumed, data.fingerprint, args.root, args.resume)
    preflight_note = None
    if data.files:  # a broken data setup is reported in seconds, before anything is written
        start = time.time()
        preflight_note = preflight(data.files) + f" ({time.time() - start:.1f} s)"
    train_images = sum(data.train_counts)
    images = step_images(args.batch_size, world.size, train_images)
    memory = estimate_training_memory(lambda: build_model(args.arch, data.num_classes, args.width), data.image_size,
                                      images, args.method != "ce", args.amp)
    if not (args.dry_run or args.no_memory_check):  # a dry run informs and goes on with its other checks
        check_fits(memory, device, memory_advice(args, memory, data.files))
    model = build_model(args.arch, data.num_classes, args.width)
    n_params = count_parameters(model)
    if checkpoint:
        load_weights(model, checkpoint["state_dict"], args.resume)

    capped = (f" (-b {args.batch_size} is more than the {train_images} training images, so a step holds "
              f"{images} per process)" if images < args.batch_size // world.size else "")
    notes = [threads, f"{memory.describe()}{capped}: {memory_verdict(memory, device)[1]}"
             + ("; --no_memory_check" if args.no_memory_check else "")] + ([preflight_note] if preflight_note else [])
    if args.dry_run:
        return dry_run(args, world, device, data, n_params, description, notes)
    run_dir, ckpt_dir, lock = open_run_folder(args, checkpoint, world)
    log = None
    try:
        log = RunLog(run_dir if world.is_main else None, tensorboard=not args.no_tensorboard, echo=world.is_main)
        return run(args, world, device, data, model, n_params, checkpoint, description, run_dir, ckpt_dir, log, notes)
    except (UsageError, RunStopped) as exc:
        if log:
            log.last_words(f"error: {exc}" if isinstance(exc, UsageError) else str(exc))
        raise
    finally:
        if log:
            log.close()
        lock.release()


def run_metadata(args, description: Dict, n_params: int, ckpt_dir: Optional[str], lrs: List[float]) -> Dict:
    """What a run's args.json holds."""
    return {**description, "parameters": n_params, "versions": library_versions(), "checkpoint_dir": ckpt_dir,
            "command": command_line("main.py", get_args_parser(), args), "lr_per_epoch": lrs}


def dry_run(args, world: World, device: torch.device, data: DataBundle, n_params: int, description: Dict,
            notes: List[str]) -> Dict:
    """What a run checks and prints before its first step, with nothing written (no run folder is made).
    Returns what the run's args.json would hold."""
    check_can_create(args.root_log)
    say = print if world.is_main else (lambda *_: None)
    lrs = lr_per_epoch(args.dataset, args.epochs, args.lr, late_warmup=args.warmup == "late")
    for line in start_lines(args, data, n_params, description.get("flag_sources", {}), lrs) + notes:
        say(line)
    steps = len(build_loaders(data, args, device, world.rank, world.size)[0])
    where = args.resume or os.path.join(args.root_log, run_folder_name(args, args.dataset in CIFAR_INFO))
    say(f"dry run: {plural(steps, 'step')} per epoch; data, loaders and model built. Nothing was written; the run "
        f"would go into {where}")
    return run_metadata(args, description, n_params, None, lrs)


def run(args, world: World, device: torch.device, data: DataBundle, model, n_params: int, checkpoint: Optional[Dict],
        description: Dict, run_dir: str, ckpt_dir: str, log: RunLog, notes: List[str]) -> Optional[Dict]:
    """The epochs of a run whose folder is open and locked."""
    log.print(f"run folder: {run_dir}; device: {device}" + (f"; {world.size} processes" if world.enabled else ""))
    if world.is_main:
        tidy_run_folder(run_dir, ckpt_dir, checkpoint, args.resume, log.print)
    lrs = lr_per_epoch(args.dataset, args.epochs, args.lr, late_warmup=args.warmup == "late")
    for line in start_lines(args, data, n_params, description.get("flag_sources", {}), lrs):
        log.print(line)
    if not checkpoint and world.is_main:
        write_json(os.path.join(run_dir, "args.json"), run_metadata(args, description, n_params, ckpt_dir, lrs))
    train_loader, test_loader = build_loaders(data, args, device, world.rank, world.size)
    for note in notes:  # the memory estimate, the image check
        log.print(note)

    model = prepare_model(model, device, world, args.channels_last, args.sync_bn,
                          find_unused=args.method == "ce" or args.no_consistency)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = build_scheduler(optimizer, args.dataset, args.epochs, late_warmup=args.warmup == "late")
    scaler = grad_scaler(args.amp, device)
    step_loss = build_step_loss(args, data.train_counts, data.image_size, device)
    best_acc1, best_epoch, start_epoch, progress = 0.0, None, args.start_epoch, EpochProgress()
    if checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_states(checkpoint["rng"], device)
        best_acc1, start_epoch = checkpoint["best_acc1"], checkpoint["epoch"]
        best_epoch = checkpoint.get("best_epoch", start_epoch if start_epoch else None)
        progress = EpochProgress(**checkpoint.get("in_epoch") or {})
        where = f"epoch {start_epoch + 1}, step {progress.step + 1}" if progress.step else f"epoch {start_epoch + 1}"
        so_far = f"best top-1 so far {best_acc1:.2f}" if best_epoch else "no epoch finished yet"
        log.print(f"resumed from {args.resume}: continuing at {where} ({so_far})")
    else:
        for _ in range(start_epoch):
            scheduler.step()
    again = command_line("main.py", get_args_parser(), args, skip=("resume", "seeds", "name", "root_log"),
                         extra=["--resume", shlex.quote(run_dir)])
    checkpoints = RunCheckpoints(run_dir, ckpt_dir, description, world, device, args.arch, model, optimizer,
                                 scheduler, scaler)
    result = None
    with StopRequest(also=log.to_file) as stop:
        try:
            for epoch in range(start_epoch, args.epochs):
                checkpoints.check_folders()  # a folder gone read-only or deleted is found before the epoch trains
                lr = optimizer.param_groups[0]["lr"]
                train_stats = train_one_epoch(model, optimizer, train_loader, step_loss, epoch, args, log,
                                              progress, stop, device, world, scaler)
                if progress.step < len(train_loader):  # stopped by a signal mid-epoch
                    checkpoints.save(epoch, best_acc1, best_epoch, False, in_epoch=progress)
                    raise RunStopped(f"stopped by {stop.name or 'a signal to another process'} at epoch {epoch + 1}, "
                                     f"step {progress.step}/{len(train_loader)}; the run resumes mid-epoch at step "
                                     f"{progress.step + 1}:\n  {again}", stop.exit_code)
                progress = EpochProgress()
                train_end = time.time()
                scheduler.step()
                result = evaluate(model, test_loader, device, data.train_counts, args.shot_rule, eval_head(args),
                                  world, also=other_heads(args),
                                  memory_format=torch.channels_last if args.channels_last else torch.contiguous_format)
                is_best = best_epoch is None or result["top1"] > best_acc1
                if is_best:
                    best_acc1, best_epoch = result["top1"], epoch + 1
                record = epoch_record(epoch, lr, train_stats, result, best_acc1)
                record["eval_seconds"] = time.time() - train_end
                checkpoints.save(epoch + 1, best_acc1, best_epoch, is_best, record)  # then its metrics line
                log_epoch(log, args.epochs, record, args.shot_rule)
                (stopping,) = any_rank(world, [stop.signum is not None], device)
                if stopping and epoch + 1 < args.epochs:
                    checkpoints.wait()
                    raise RunStopped(f"stopped by {stop.name or 'a signal to another process'} after epoch "
                                     f"{epoch + 1}; the run resumes at the epoch boundary (epoch {epoch + 2}):\n"
                                     f"  {again}", stop.exit_code)
            checkpoints.wait()
            if result is not None:
                log.print(f"done: best top-1 {best_acc1:.2f} (epoch {best_epoch}), last top-1 {result['top1']:.2f}")
        except WriteFailed as exc:
            raise checkpoints.write_failed(exc, again) from exc
        finally:
            checkpoints.join()  # whatever stops the run, the checkpoint being written is finished first
    return result


def main_seeds(args: argparse.Namespace) -> None:
    """`--seeds 1,2,3`: the same configuration once per seed, into sibling run folders. Under torchrun
    the process group is set up once for all seeds."""
    if not args.seeds:
        seeds = [args.seed]
    else:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. 1,2,3") from None
        if args.resume:
            raise UsageError("--seeds cannot be combined with --resume; resume each run folder on its own")
    world = init_world()
    try:
        for seed in seeds:  # the data seed follows each seed unless --data_seed fixed it
            main(argparse.Namespace(**{**vars(args), "seed": seed}), world)
        if world.is_main and elastic_job():
            forget_elastic_runs(args.root_log, elastic_job(), seeds)
    finally:
        close_world(world)


if __name__ == "__main__":
    run_cli(main_seeds, get_args_parser())
