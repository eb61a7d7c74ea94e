"""Codec registry: how crossing tensors are squeezed onto the wire.

One small module per codec (`none`, `float16`, `zstd`, `blosc2`, `fq`, `nnc`, `dzstd`, `fqi`, `video`), found
by the one plug-in registry (core/plugins.py; entry-point group `splitinfer.codecs` for codecs of other
packages); each owns its name, its numeric ids and its parameter syntax. `get_codec(spec)` accepts a name
(`zstd:5`, `fq:6`, `nnc:-38`) or a numeric id compatible with the field's script (`0` none, `1` float16, `8xx` NNC with QP = -xx). Ours:
`2` zstd at level 3, `2LL` zstd at level LL; fq by bit depth, 30000 + 1000 x flags + 10 x BITS
(30040 = `fq:4`, 30035 = `fq:3.5`), and fq by one step per tensor on NNC's QP scale, 50000 + 1000 x flags
- QP (50014 = `fq:-14`, 58014 = `fq:-14:x`); `5CFL` blosc2 with codec C, filter F, level L (5311 = `blosc2`); `9` a chain.

Chains (`chain.py`): `float16+zstd:3`, `fq:6+blosc2` -- a value-changing first stage (none, float16, fq)
then lossless byte stages (zstd, blosc2) -- are one codec with one spec string. They are spec-only:
every chain reports id 9, which names no codec by itself; the wire's set-up carries the spec.

Sequential codecs (`sequence.py`) code the frames of one stream in order, each predicted from the one
before; every codec gives the UE a `sequence_encoder()` and the network process a `sequence_decoder()`
(for a per-frame codec, plain loops over `encode_many`/`decode`), so both processes have one code path.

`encode_many(codec, arrays)` encodes the tensors of one frame together: a loop by default, all at once
where the codec has workers to spread them over (nnc).

Conventions every codec keeps, so the wire metadata (dtype, shape) is all a decoder needs:
- payloads hold little-endian data (the wire's byte order);
- `decode(payload, dtype, shape)` returns exactly that dtype and shape, possibly as a read-only view
  of `payload` (no copy);
- a payload that does not fit the announced dtype x shape, or a corrupt bitstream, raises `CodecError`
  (a `ValueError`; the server answers INVALID_ARGUMENT) and never takes the process down.
"""

from __future__ import annotations

import importlib
import os
import threading

import numpy as np

from splitinfer.common.core.errors import UserError

# Codec plug-ins: this package's modules with `from_param`, and those other distributions declare under this
# entry-point group (core/plugins.py); each module's ORDER is its place in `codec_names()` and the help text.
ENTRY_POINT_GROUP = "splitinfer.codecs"


class CodecError(ValueError):
    """A payload cannot be decoded (wrong size for dtype x shape, corrupt bitstream...)."""


class Codec:
    """Base class: `name`, `codec_id`, `params`, `lossless`, `spec`, `encode`, `decode`."""

    name: str = ""
    lossless: bool = True
    sequential: bool = False  # True: frames of a stream are coded in order (sequence.py)

    def __init__(self, codec_id: int, params: dict | None = None):
        self.codec_id = int(codec_id)
        self.params = dict(params or {})

    @property
    def spec(self) -> str:
        """Canonical spec string: `get_codec(c.spec)` and `get_codec(c.codec_id)` give back an equal codec."""
        if not self.params:
            return self.name
        return self.name + ":" + ":".join(str(v) for v in self.params.values())

    def encode(self, arr: np.ndarray) -> bytes:
        raise NotImplementedError

    def decode(self, payload, dtype, shape, *, trusted: bool = False) -> np.ndarray:
        """Rebuild the tensor. `trusted` marks payloads this process made itself (see the nnc codec)."""
        raise NotImplementedError

    def encode_many(self, arrays) -> list[bytes]:
        """Payloads of several tensors (one frame's), in order: a loop over `encode`. A codec that can code
        tensors concurrently (nnc: its helper processes) overrides it; the payloads stay those of `encode`."""
        return [self.encode(a) for a in arrays]

    def sequence_encoder(self):
        """The UE's coder for one stream (sequence.py); a per-frame codec's encodes each frame alone."""
        from splitinfer.common.codecs.sequence import SequenceEncoder

        return SequenceEncoder(self)

    def sequence_decoder(self):
        """The network process's decoder for one session (sequence.py); `bind(name).decode(...)`."""
        from splitinfer.common.codecs.sequence import SequenceDecoder

        return SequenceDecoder(self)

    def warm_up(self) -> None:
        """Pay one-time start-up costs now (imports, helper processes) instead of on the first frame."""

    # as the first stage of a chain (see chain.py)
    def payload_typesize(self, arr) -> int:
        """Element size of this codec's payload for `arr` (the shuffle width of a following blosc2)."""
        return 1

    def max_payload_bytes(self, dtype: np.dtype, shape: tuple[int, ...]) -> int:
        """The most bytes a payload this codec makes for dtype x shape can have (bounds chain decoding)."""
        raise NotImplementedError(f"{self.name} cannot start a chain")

    def __repr__(self) -> str:
        return f"<codec {self.spec} id={self.codec_id}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Codec) and (self.spec, self.codec_id) == (other.spec, other.codec_id)

    def __hash__(self) -> int:
        return hash((self.spec, self.codec_id))


# -- helpers shared by the codec modules -------------------------------------------------------------


def norm_dtype(dtype) -> np.dtype:
    """The announced dtype as a numpy dtype, or CodecError."""
    try:
        dt = np.dtype(dtype)
    except Exception:
        raise CodecError(f"unknown dtype {dtype!r}") from None
    if dt.hasobject or dt.itemsize == 0:
        raise CodecError(f"dtype {dt} has no fixed-size binary form")
    return dt


def norm_shape(shape) -> tuple[int, ...]:
    """The announced shape as a tuple of non-negative ints, or CodecError."""
    try:
        dims = tuple(int(d) for d in shape)
    except Exception:
        raise CodecError(f"shape {shape!r} is not a sequence of integers") from None
    if any(d < 0 for d in dims):
        raise CodecError(f"shape {list(dims)} has a negative dimension")
    return dims


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def is_float(dt: np.dtype) -> bool:
    """Real floating point (what lossy codecs may touch); ints, bools and complex stay exact."""
    return dt.kind == "f"


def little(dt: np.dtype) -> np.dtype:
    return dt.newbyteorder("<")


def le_contiguous(arr) -> np.ndarray:
    """`arr` as a C-contiguous little-endian array (no copy when it already is one)."""
    arr = np.asarray(arr)
    if arr.dtype.hasobject or arr.dtype.itemsize == 0:
        raise CodecError(f"dtype {arr.dtype} has no fixed-size binary form")
    return np.ascontiguousarray(arr, dtype=little(arr.dtype))


def raw_bytes(arr) -> bytes:
    """The tensor's little-endian bytes in C order (one copy)."""
    return le_contiguous(arr).tobytes()


def from_raw(payload, dtype, shape, what: str) -> np.ndarray:
    """View `payload` as little-endian `dtype` x `shape` (no copy), checking its size first."""
    dt, dims = norm_dtype(dtype), norm_shape(shape)
    need = numel(dims) * dt.itemsize
    have = memoryview(payload).nbytes
    if have != need:
        raise CodecError(f"{what}: payload has {have} bytes but {dt}{list(dims)} needs {need}")
    arr = np.frombuffer(payload, dtype=little(dt), count=numel(dims))
    return arr.astype(dt, copy=False).reshape(dims)


# -- registry ------------------------------------------------------------------------------------------

_lock = threading.Lock()
_loaded: dict[str, object] = {}
_cache: dict[str, Codec] = {}


def _new_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a lock held by another thread at fork time would never be released


os.register_at_fork(after_in_child=_new_lock_after_fork)


def _module(name: str):
    with _lock:
        mod = _loaded.get(name)
        if mod is None:
            mod = importlib.import_module(f"{__name__}.{name}")
            _loaded[name] = mod
    return mod


def _registry() -> dict:
    """Codec name -> its module, in ORDER (found once, see core/plugins.py)."""
    with _lock:
        found = _loaded.get(" registry")
    if found is None:
        from splitinfer.common.core.plugins import plugins

        modules = sorted(plugins(__name__, ENTRY_POINT_GROUP, "from_param"),
                         key=lambda m: (getattr(m, "ORDER", 100), m.NAME))
        found = {m.NAME: m for m in modules}
        with _lock:
            _loaded[" registry"] = found
    return found


def codec_names() -> tuple[str, ...]:
    """Names of the registered codecs."""
    return tuple(_registry())


def codecs_help() -> str:
    """One line listing every codec with its spec syntax and numeric ids (for errors and --help)."""
    return "; ".join([m.HELP for m in _registry().values()] + [_module("chain").HELP])


def get_codec(spec) -> Codec:
    """A codec from a name (`nnc:-38`), a numeric id (838) or id string ('838'); UserError otherwise."""
    if isinstance(spec, Codec):
        return spec
    if isinstance(spec, (bool, np.bool_)) or spec is None:
        raise UserError(f"unknown codec {spec!r}; known codecs: {codecs_help()}")
    if isinstance(spec, (int, np.integer)):
        key = str(int(spec))
    elif isinstance(spec, str):
        key = spec.strip().lower()
    else:
        raise UserError(f"unknown codec {spec!r}; known codecs: {codecs_help()}")
    cached = _cache.get(key)
    if cached is not None:
        return cached
    codec = _parse(key, spec)
    with _lock:
        if len(_cache) < 1024:
            _cache[key] = codec
    return codec


def encode_many(codec, arrays) -> list[bytes]:
    """Encode one frame's tensors with `codec` (a Codec or a spec), in order, concurrently where the codec
    can (see `Codec.encode_many`); each payload decodes with `codec.decode` as if made by `codec.encode`."""
    return get_codec(codec).encode_many(list(arrays))


def _parse(key: str, original) -> Codec:
    if "+" in key.lstrip("+"):
        parts = [p.strip() for p in key.split("+")]
        if len(parts) > 4 or any(not p for p in parts):
            raise UserError(f"codec chain {original!r}: give 2 to 4 non-empty stages joined by '+'; "
                            f"known codecs: {codecs_help()}")
        return _module("chain").build([_parse(p, original) for p in parts], original)
    if not key.isascii() or not key.isprintable():
        raise UserError(f"codec {original!r}: a codec spec is printable ASCII; known codecs: {codecs_help()}")
    if key.lstrip("+-").isdecimal():
        number = int(key)
        if number == 9:
            raise UserError(f"codec id 9 is a chain, which is named by its spec only (e.g. 'float16+zstd'); "
                            f"known codecs: {codecs_help()}")
        for mod in _registry().values():
            codec = mod.from_id(number)
            if codec is not None:
                return codec
        raise UserError(f"unknown codec id {original!r}; known codecs: {codecs_help()}")
    name, sep, param = key.partition(":")
    if name not in _registry():
        raise UserError(f"unknown codec {original!r}; known codecs: {codecs_help()}")
    try:
        return _registry()[name].from_param(param.strip() if sep else None)
    except UserError as exc:
        raise UserError(f"codec {original!r}: {exc}; known codecs: {codecs_help()}") from None
