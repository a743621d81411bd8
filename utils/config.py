"""Command-line machinery of the scripts: a parser that records which flags were given, the command line
that repeats a run, the flags every script shares (seed, batch, device), and one clear message per error."""
import argparse
import difflib
import os
import shlex
import signal
import sys
from typing import Callable, Dict, List, Sequence

import torch

from utils.errors import RunStopped, UsageError, tidy_message
from utils.interrupt import EXIT_INTERRUPTED, INTERRUPTED_MESSAGE
from utils.metrics import SHOT_RULES
from utils.progress import plural


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help with each flag's default (unless its help already speaks of it, or there is none);
    the description and epilog keep their line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or "default" in text or text == argparse.SUPPRESS
                or any(action.default is hidden for hidden in (None, False, argparse.SUPPRESS))):
            return text
        return f"{text} (default: {action.default})"


class Parser(argparse.ArgumentParser):
    """The command-line parser of every script here: flags are never abbreviated (`--epoch 3` is an error, not
    `--epochs 3`), and a bad command line gets one usage line and the error, not the whole usage."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"usage: {self.prog} [flags] (--help lists them)\n{self.prog}: error: {message}"
                     + self.did_you_mean(message) + "\n")

    def did_you_mean(self, message: str) -> str:
        """'; did you mean --epochs?' for each unrecognised flag that is close to one of this parser's."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = [o for action in self._actions for o in action.option_strings]
        hints = []
        for token in message.split(":", 1)[1].split():
            flag = token.split("=", 1)[0]
            if flag.startswith("-") and flag not in known:
                close = difflib.get_close_matches(flag, known, n=1, cutoff=0.7)
                if close:
                    hints.append(f"{flag}: did you mean {close[0]}?")
        return ("; " + "; ".join(hints)) if hints else ""


class FlagTrackingParser(Parser):
    """An ArgumentParser that also records which flags the command line gave (`args.given_flags`).

    A flag given with its default value counts as given: the run's description and the
    checks against a checkpoint need to know what the user asked for, not what differs
    from a default. --help shows the defaults.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, "given_flags"):
            defaults = [(action, action.default) for action in self._actions]
            parser_defaults, self._defaults = self._defaults, {}  # set_defaults() values are not given either
            try:
                for action, _ in defaults:
                    action.default = argparse.SUPPRESS
                probe, _ = super().parse_known_args(args, argparse.Namespace())
            finally:
                self._defaults = parser_defaults
                for action, default in defaults:
                    action.default = default
            parsed.given_flags = sorted(vars(probe))
        return parsed, extras


def command_line(script: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
                 skip: Sequence[str] = (), extra: Sequence[str] = ()) -> str:
    """`python <script>` with the flags the user gave (their current values), except `skip`, then `extra`."""
    tokens = ["python", script]
    for action in parser._actions:
        if action.dest not in getattr(args, "given_flags", ()) or action.dest in skip or not action.option_strings:
            continue
        option = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        value = getattr(args, action.dest)
        if isinstance(action, argparse.BooleanOptionalAction):
            tokens.append(option if value else "--no-" + option[2:])
        elif action.nargs == 0:  # store_true and the like
            tokens.append(option)
        elif value is None and "off" in (action.choices or ()):  # --compile off, kept as None
            tokens += [option, "off"]
        else:
            tokens += [option, shlex.quote(str(value))]
    return " ".join(tokens + list(extra))


NOT_SHOWN = {"dry_run", "debug", "help", "resume", "start_epoch", "seeds"}


def is_set(value) -> bool:
    """A flag value other than None (not given, no default) or False (a switch left off); 0 is set."""
    return value is not None and value is not False


FlagRule = Callable[[str, argparse.Namespace], bool]


def configuration_lines(parser: argparse.ArgumentParser, args: argparse.Namespace, sources: Dict[str, str],
                        rules: Sequence[FlagRule]) -> List[str]:
    """The configuration grouped as in --help, each value with its source: the flags that are set and that
    every rule (data set, network, method: `rule(dest, args)`) says mean something for this run."""
    lines = [f"configuration (only the flags that apply; '(given)' on the command line, '(preset)' the paper's "
             f"value for {args.dataset}, the rest at their defaults):"]
    for group in parser._action_groups:
        items = [f"{a.dest}={getattr(args, a.dest)}"
                 + (f" ({sources[a.dest]})" if sources.get(a.dest) in ("given", "preset") else "")
                 for a in group._group_actions
                 if a.dest not in NOT_SHOWN and is_set(getattr(args, a.dest, None))
                 and all(rule(a.dest, args) for rule in rules)]
        if items:
            lines.append(f"  {group.title.split(' (')[0]}: " + ", ".join(items))
    return lines


def add_run_args(parser: argparse.ArgumentParser, training: bool = True) -> None:
    """Flags of every script that runs a network: seed, batch, loader workers, device, errors, shot rule;
    without `training` (test.py) no seed and no batch size: evaluation draws nothing at random."""
    g = parser.add_argument_group("seed, batch and device" if training else "device")
    if training:
        g.add_argument("--seed", type=int, default=3407,
                       help="random seed of training (default 3407 as released); also picks the CIFAR-LT images "
                            "unless --data_seed is given")
        g.add_argument("-b", "--batch_size", type=int, default=64, help="batch size")
    else:
        parser.set_defaults(seed=3407, batch_size=64)
    g.add_argument("-j", "--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loading worker processes (default: 4 as released, fewer on a smaller machine)")
    g.add_argument("--gpu", type=int, default=None, help="GPU index (default: GPU 0 if there is one, else CPU)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the network's operations (default: OMP_NUM_THREADS if set, else the cores "
                        "idle at the start: threads that share a core with another busy process make small work "
                        "many times slower)")
    g.add_argument("--debug", action="store_true", help="show the Python traceback on errors")
    g.add_argument("--trust_checkpoint", action="store_true",
                   help="load checkpoints with full unpickling, which RUNS ANY CODE THE FILE HOLDS: only for a file "
                        "you trust that holds objects other than tensors and plain values (default: data only)")
    g.add_argument("--shot_rule", default="released", choices=list(SHOT_RULES),
                   help="many/medium/few rule: " + "; ".join(f"{k}: {v}" for k, v in SHOT_RULES.items()))


def check_run_args(args: argparse.Namespace) -> None:
    if args.batch_size <= 0:
        raise UsageError(f"-b/--batch_size {args.batch_size} must be positive")
    if args.workers < 0:
        raise UsageError(f"-j/--workers {args.workers} must be 0 or more")
    if args.threads is not None and args.threads <= 0:
        raise UsageError(f"--threads {args.threads} must be positive")


def select_device(gpu) -> torch.device:
    """GPU `gpu` if given, else GPU 0 when there is one, else the CPU."""
    if gpu is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count()
    if gpu < 0 or gpu >= count:
        raise UsageError(f"--gpu {gpu} asked for, but this machine has {plural(count, 'GPU')}")
    return torch.device(f"cuda:{gpu}")


def run_cli(entry, parser: argparse.ArgumentParser, argv=None) -> None:
    """Parse and run; a UsageError or RunStopped ends in one clear message and its exit code, Ctrl-C
    outside training (which stops at the next step by itself) in one line and exit code 130."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt: `finally` blocks run
    args = parser.parse_args(argv)
    try:
        entry(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except (UsageError, RunStopped) as exc:
        if args.debug:
            raise
        message = str(exc)
        if "Original Traceback" in message:  # raised in a DataLoader worker: keep the worker's own message
            message = message.strip().splitlines()[-1].split(": ", 1)[-1]
        print(tidy_message(f"error: {message}" if isinstance(exc, UsageError) else message), file=sys.stderr)
        sys.exit(exc.exit_code if isinstance(exc, RunStopped) else 2)
