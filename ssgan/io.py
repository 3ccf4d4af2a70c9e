"""Files ssgan writes and reads back: all-or-nothing writes on every OS, and damage reported by file name.

Every file ssgan writes goes through `atomic_write`: the bytes go to a temporary file beside the target, are flushed
and fsynced through the handle that wrote them, and the temporary file is renamed over the target with `os.replace`
(atomic on POSIX and on Windows), so a crash or a full disk leaves the old file or the new one, never a mix. The
folder is fsynced too where the OS can open a folder (POSIX; Windows cannot, and NTFS journals the rename itself).

Readers of ssgan's own files (`read_torch_file`, `load_safetensors`, `load_npy`) check what the formats allow them
to check (the zip CRC-32 of `torch.save` files, a SHA-256 that ssgan stores in its safetensors metadata) and turn any
failure into a `DamagedFileError` that names the file, never a traceback from the unpickler or the zip reader.
"""
import contextlib
import errno
import hashlib
import os
import pickle
import shutil
import uuid
import zipfile
from pathlib import Path

import numpy as np
import torch

CHECKSUM_KEY = "sha256"  # safetensors metadata: SHA-256 of the tensors (names, dtypes, shapes and bytes)
# fsync errors that mean "not supported here" rather than "the data did not reach the disk": EINVAL/ENOTSUP from file
# systems without fsync; for folders also EBADF/EACCES, which Windows and some network file systems give.
_FSYNC_UNSUPPORTED = {errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL), getattr(errno, "EOPNOTSUPP", errno.EINVAL)}
_DIRECTORY_FSYNC_UNSUPPORTED = _FSYNC_UNSUPPORTED | {errno.EBADF, errno.EACCES}


class DamagedFileError(ValueError):
    """A file ssgan wrote that cannot be read back: cut short (crash, full disk, incomplete copy) or garbled."""


def damaged(path, what, reason):
    """A DamagedFileError naming the file, what it should be, the likely causes and the reader's complaint."""
    if isinstance(reason, BaseException):
        reason = f"{type(reason).__name__}: {str(reason).splitlines()[0] if str(reason) else 'no details'}"
    return DamagedFileError(f"cannot read {path} as {what}: the file is damaged (cut short by a crash, a full disk or "
                            f"an incomplete copy, or garbled) or is not one ({reason})")  # fmt: skip


# --- writing ------------------------------------------------------------------------------------
def _fsync(fd, unsupported):
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in unsupported:
            raise


def fsync_directory(path):
    """Make a rename inside folder `path` durable, where the OS lets a folder be opened (not on Windows)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except (PermissionError, IsADirectoryError):  # what Windows-like systems raise for a folder
        return
    try:
        _fsync(fd, _DIRECTORY_FSYNC_UNSUPPORTED)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, text=False):
    """Open a temporary file beside `path` for writing (binary, or UTF-8 text with text=True) and yield it; when the
    block ends without error, flush and fsync it through this handle and rename it over `path`. On an error the
    temporary file is removed and `path` keeps its old content. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        # "x": a new file with the default permissions (umask), in binary mode on Windows too
        with open(tmp, "x", encoding="utf-8", newline="") if text else open(tmp, "xb") as f:
            yield f
            f.flush()
            _fsync(f.fileno(), _FSYNC_UNSUPPORTED)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a new temporary folder beside `path` to fill; when the block ends without error, rename it to `path`
    (which must not exist or be an empty folder), so a crash never leaves a half-written folder under that name.
    On an error the temporary folder is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb+") as f:  # Windows fsyncs only handles open for writing
                    _fsync(f.fileno(), _FSYNC_UNSUPPORTED)
        if path.is_dir():
            path.rmdir()  # empty (checked by the caller): replace it
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(path.parent)


def write_bytes(path, data):
    """Write bytes to `path` atomically; returns the path."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def write_text(path, text):
    """Write UTF-8 text to `path` atomically; returns the path."""
    with atomic_write(path, text=True) as f:
        f.write(text)
    return Path(path)


def append_line(path, line):
    """Append one line of text to a log (e.g. a .jsonl file) and fsync it. A last line left unfinished by a crash is
    ended first, so it stays one bad line instead of swallowing this one."""
    with open(path, "ab+") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode("utf-8") + b"\n")
        f.flush()
        _fsync(f.fileno(), _FSYNC_UNSUPPORTED)


def save_image(image, path, **params):
    """Save a PIL image atomically in the format its suffix names (.png, .gif, ...); params go to Image.save."""
    from PIL import Image

    image_format = Image.registered_extensions().get(Path(path).suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: not an image file extension PIL can write")
    with atomic_write(path) as f:
        image.save(f, format=image_format, **params)
    return Path(path)


def torch_save(obj, path):
    """torch.save `obj` to `path` atomically; returns the path."""
    with atomic_write(path) as f:
        torch.save(obj, f)
    return Path(path)


def _tensor_digest(tensors):
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).cpu().numpy())
    return digest.hexdigest()


def save_safetensors(path, tensors, metadata=None):
    """Write tensors (a dict of CPU tensors) and string metadata as safetensors, atomically, with a SHA-256 of the
    tensors in the metadata so that `load_safetensors` notices garbled bytes; returns the path."""
    from safetensors.torch import save

    metadata = dict(metadata or {}) | {CHECKSUM_KEY: _tensor_digest(tensors)}
    return write_bytes(path, save(tensors, metadata=metadata))


def load_safetensors(path, what):
    """(tensors, metadata) of a safetensors file. Raises DamagedFileError naming the file when it is cut short,
    garbled, or its tensors do not match the SHA-256 that `save_safetensors` stored (files without one are trusted)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as e:  # noqa: BLE001 (safetensors raises its own error types for files it cannot parse)
        raise damaged(path, what, e) from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and _tensor_digest(tensors) != expected:
        raise damaged(path, what, "its tensors do not match the SHA-256 stored with them")
    return tensors, metadata


# --- reading ------------------------------------------------------------------------------------
def read_torch_file(path, what):
    """torch.load(path, weights_only=True) on the CPU, after checking the CRC-32 of every record of a zip-format file
    (torch.save's format; torch.load itself does not check them). Raises DamagedFileError naming the file when it is
    cut short or garbled, and ValueError when it is not a torch.save file or holds objects other than tensors and
    containers (which are never unpickled)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise damaged(path, what, "the file is empty")
    checked = head == b"PK\x03\x04"  # a zip archive, whose records carry CRC-32s
    if checked:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise damaged(path, what, e) from None
        if bad is not None:
            raise damaged(path, what, f"record {bad!r} fails its CRC check")
    elif head[0] != 0x80:  # neither a zip archive nor a legacy pickle
        raise ValueError(f"{path} is not a torch.save file, so it cannot be {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if checked and "weights only" in str(e).lower():  # intact, so it is what the pickle asks for
            raise ValueError(f"cannot read {path} as {what}: it holds Python objects other than tensors and "
                             f"containers, which are never unpickled ({str(e).splitlines()[0]})") from None  # fmt: skip
        raise damaged(path, what, e) from None
    except (EOFError, OSError, RuntimeError, ValueError) as e:
        raise damaged(path, what, e) from None


def load_npy(path, what):
    """np.load(path, allow_pickle=False); DamagedFileError naming the file when it is cut short or garbled."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise damaged(path, what, e) from None
