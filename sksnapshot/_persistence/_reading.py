"""Reading the two files of a saved ensemble without trusting them.

Each file is opened once (never blocking: a FIFO or device is refused), checked
with ``fstat`` on that open descriptor, and read from it, capped: nothing is
looked up by name twice, so a file swapped in a directory someone else can
write is either what was checked or not read at all. ``metadata.json`` is
parsed with limits on its size, its number of containers and their depth;
``weights.safetensors`` is parsed from the bytes read, its header first.
"""

import json
import os
import stat

import safetensors.torch
from safetensors import SafetensorError

from ._format import METADATA_MAX_BYTES, METADATA_MAX_CONTAINERS, METADATA_MAX_DEPTH, refuse

_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
          | getattr(os, "O_BINARY", 0))


_NOT_REGULAR = ("is not a regular file (a directory, FIFO, socket or device, or a link to "
                "one); refused unread.")


def _is_special(path):
    """Whether ``path`` names something other than a regular file (for a message only)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_regular_file(path, cap=None):
    """The bytes of the regular file at ``path`` (links followed), at most ``cap`` of them.

    Opened without blocking, checked with ``fstat`` on the descriptor (a
    directory, FIFO, socket or device, or a link to one, is refused unread),
    then read from that same descriptor.
    """
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if _is_special(path):  # a socket cannot be opened at all: say what it is
            raise refuse(path, None, _NOT_REGULAR) from None
        raise refuse(path, None, f"cannot be read ({exc.strerror or exc}).") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise refuse(path, None, _NOT_REGULAR)
        if cap is not None and info.st_size > cap:
            raise refuse(path, None, f"is larger than {cap} bytes; refused unread.")
        chunks, size = [], 0
        while True:  # the file may have grown since fstat: read to its end, within the cap
            chunk = os.read(fd, 1 << 24 if cap is None else min(1 << 24, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if cap is not None and size > cap:
                raise refuse(path, None, f"is larger than {cap} bytes; refused.")
    except OSError as exc:
        raise refuse(path, None, f"cannot be read ({exc.strerror or exc}).") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        seen = set()
        twice = next(key for key in keys if key in seen or seen.add(key))
        raise _DuplicateKey(f"the key {twice!r} appears twice in one object")
    return dict(pairs)


def _depth(value):
    """Nesting depth of a parsed JSON value (iteratively: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > METADATA_MAX_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def read_metadata(path):
    """``metadata.json`` parsed, within the caps; no field checked yet."""
    raw = read_regular_file(path, METADATA_MAX_BYTES)
    if raw.count(b"{") + raw.count(b"[") > METADATA_MAX_CONTAINERS:  # counted in strings too
        raise refuse(path, None, f"holds more than {METADATA_MAX_CONTAINERS} JSON objects and "
                                 "arrays; refused unparsed.")
    try:
        metadata = json.loads(raw, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise refuse(path, None, "is nested too deeply to be read; refused.") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, _DuplicateKey
        raise refuse(path, None, f"is not valid JSON: {exc}") from None
    if _depth(metadata) > METADATA_MAX_DEPTH:
        raise refuse(path, None, f"nests objects and arrays deeper than {METADATA_MAX_DEPTH} "
                                 "levels; refused.")
    return metadata


class SavedWeights:
    """The bytes of ``weights.safetensors``: its header now, its tensors on demand.

    ``header`` maps each tensor's name to ``(shape, safetensors dtype)``, read
    from the header alone; ``tensors()`` has safetensors parse (and check) the
    whole of the same bytes.
    """

    def __init__(self, path):
        self.path = path
        self._raw = read_regular_file(path)
        self.size = len(self._raw)
        self.header = self._parse_header()

    def _invalid(self, problem):
        return refuse(self.path, None, f"is not a valid safetensors file: {problem}")

    def _parse_header(self):
        raw = self._raw
        n = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else -1
        if not 0 < n <= len(raw) - 8:
            raise self._invalid("the header's length does not fit the file.")
        try:
            header = json.loads(raw[8:8 + n], object_pairs_hook=_no_duplicates)
        except (RecursionError, ValueError) as exc:
            raise self._invalid(f"the header is not valid JSON ({exc}).") from None
        if not isinstance(header, dict):
            raise self._invalid("the header is not a JSON object.")
        out = {}
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            shape = entry.get("shape") if isinstance(entry, dict) else None
            dtype = entry.get("dtype") if isinstance(entry, dict) else None
            if (type(shape) is not list or any(type(s) is not int or s < 0 for s in shape)
                    or type(dtype) is not str):
                raise self._invalid(f"the header's entry for {key!r} has no shape and dtype.")
            out[key] = (tuple(shape), dtype)
        return out

    def tensors(self):
        """Every tensor, as a CPU tensor by name; the bytes are let go."""
        raw, self._raw = self._raw, None
        try:
            return safetensors.torch.load(raw)
        except (SafetensorError, ValueError, TypeError) as exc:
            raise self._invalid(str(exc)) from None
