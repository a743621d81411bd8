"""Writing into run and report folders without ever following a symbolic link.

A run folder can come from elsewhere (copied, downloaded with its checkpoint), so its
entries are not trusted: a `.lock` or `metrics.jsonl` that is a link to another file of
the user would otherwise make a resume write into that file. Every file the project
creates, appends to or replaces in such a folder goes through this module: an existing
entry must be a regular file (a link, folder or device stops with exit 2, naming the
path and what it points to), files are opened with O_NOFOLLOW, and replacements are a
rename over the checked name (a rename never writes through a link either).

Reading is gentler: `link_note` says when a file read from a run folder is a link
that leads out of it, and the reader goes on.
"""
import errno
import os
import stat
import tempfile
from typing import IO, List, Optional

from utils.errors import UsageError, WriteFailed, writing

TEMPORARY_PREFIX = ".tmp_"  # temporary files of an atomic write (a leftover is cleared on resume)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() gives every other file of the run


class LinkRefused(UsageError):
    """An entry of a run or report folder that is not a regular file where the project writes one (exit 2)."""


def _what_it_is(path: str, mode: int) -> str:
    if stat.S_ISLNK(mode):
        try:
            return f"a symbolic link to {os.readlink(path)!r}"
        except OSError:
            return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file (a device, pipe or socket)"


def refusal(path: str, mode: int) -> LinkRefused:
    return LinkRefused(f"{path} is {_what_it_is(path, mode)}; files of run and report folders are written only "
                       "as regular files, never through a link, so nothing was written. Remove it (or replace it "
                       "with a copy of the file it names) and run again")


def check_regular(path: str) -> None:
    """Stop (LinkRefused, exit 2) when `path` exists and is not a regular file; a missing path is fine."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # unreadable parent and the like: the write that follows reports it
    if not stat.S_ISREG(mode):
        raise refusal(path, mode)


def check_folder(path: str) -> None:
    """Stop when `path` exists and is not a real folder (a link to one included)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if not stat.S_ISDIR(mode):
        raise refusal(path, mode)


def open_no_follow(path: str, flags: int, mode: int = 0o644) -> int:
    """`os.open` that never follows a link at `path` and only opens a regular file (LinkRefused otherwise)."""
    check_regular(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as exc:
        if os.path.islink(path):  # planted between the check and the open (ELOOP)
            raise refusal(path, os.lstat(path).st_mode) from None
        raise exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise refusal(path, st.st_mode)
    os.set_blocking(fd, True)
    return fd


def open_append(path: str) -> IO:
    """Open `path` for appending text (created if missing) as a regular file, never through a link."""
    return os.fdopen(open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")


def make_folder(path: str) -> None:
    """`os.makedirs(path, exist_ok=True)`, refusing a `path` that is a link (to a folder or anything else)."""
    check_folder(path)
    os.makedirs(path, exist_ok=True)


def write_atomically(path: str, write) -> None:
    """`write(binary file)` into a new temporary file beside `path` (a unique name, created exclusively),
    flushed to disk, then renamed over `path`. A failure removes the temporary file, leaves a previous
    `path` intact and raises WriteFailed; a `path` that is a link stops (LinkRefused) before anything is
    written."""
    check_regular(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    with writing(path):
        try:
            fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=".pth.tar", dir=folder)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, FILE_MODE)
            check_regular(path)  # again: a link planted while it was written is refused, not renamed over
            os.replace(tmp, path)
        except BaseException:
            if tmp and os.path.lexists(tmp):
                os.remove(tmp)
            raise


def write_text(path: str, text: str) -> None:
    """`text` as the whole content of `path`, written atomically (see `write_atomically`)."""
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def link_note(folder: str, path: str) -> Optional[str]:
    """A note when `path`, read as part of `folder`, is a link that leads out of that folder; else None."""
    if not os.path.islink(path):
        return None
    target = os.path.realpath(path)
    inside = os.path.realpath(folder)
    if target == inside or target.startswith(inside + os.sep):
        return None
    return f"note: {path} is a symbolic link to {target}, outside its folder {folder}; read from there"


def check_writable(folder: str) -> None:
    """Raise WriteFailed now, not after an epoch of training, when `folder` cannot take a new file (deleted,
    moved, read-only, full). Costs one empty file created and removed."""
    if not os.path.isdir(folder):
        raise WriteFailed(folder, FileNotFoundError(errno.ENOENT, "the folder no longer exists (deleted or moved "
                                                                  "while the run was going)"))
    probe = os.path.join(folder, f"{TEMPORARY_PREFIX}probe_{os.getpid()}.pth.tar")  # cleared like a torn write
    with writing(folder):
        with open(probe, "w"):
            pass
        os.remove(probe)


def remove_temporaries(folder: str) -> List[str]:
    """Delete temporary checkpoint files that an interrupted write left behind; returns their names."""
    removed = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(TEMPORARY_PREFIX) and name.endswith(".pth.tar"):
            try:
                os.remove(os.path.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed
