"""`blosc2[:CODEC[:LEVEL[:FILTER]]]` (id 5CFL): lossless, multi-threaded shuffle + LZ4/Zstd (python-blosc2).

Why: a byte (or bit) shuffle groups the exponent bytes of float activations together, so a fast
LZ codec finds more to squeeze than plain zstd on the raw bytes, and blosc2 splits the buffer into
blocks compressed on several threads.

Spec: CODEC in blosclz, lz4, lz4hc, zstd (default zstd); LEVEL 0..9 (default 1); FILTER noshuffle,
shuffle, bitshuffle (default shuffle). Numeric id = 5000 + 100 * codec + 10 * filter + level with
codec blosclz 0, lz4 1, lz4hc 2, zstd 3 and filter noshuffle 0, shuffle 1, bitshuffle 2
(`blosc2` = `blosc2:zstd:1:shuffle` = 5311). Threads: $SPLITINFER_BLOSC2_THREADS (default min(4, CPUs)).

Integrity: a blosc2 frame (`compress2`) carries no checksum of its own: a payload mutated in transit often
decodes "fine" to wrong values (121 of 200 mutated frames did). Where that matters, add `:crc` (`blosc2:crc`,
`blosc2:lz4::crc`, `blosc2:zstd:1:shuffle:crc`; id with filter digit F + 5, e.g. 5361): the payload is then
the frame followed by the CRC-32 (zlib, 4 bytes little-endian) of the frame, checked before decompressing,
so a mutated payload is a CodecError. zstd frames always carry their own checksum; over TCP/TLS the
transport already guards the bytes, so the option is for payloads stored or relayed outside it.

Bit-exact for every dtype. The blosc2 header carries the uncompressed size: `decode` refuses a frame
whose size is not what dtype x shape need (or, as a chain stage, more than the previous stage can
produce) before allocating anything. As a chain stage (`float16+blosc2`) it compresses the previous
stage's bytes with that stage's element size as the shuffle width.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import Codec, CodecError, from_raw, le_contiguous, norm_dtype, norm_shape, numel
from splitinfer.common.codecs.params import parse_int

NAME = "blosc2"
ORDER = 3  # its place in codec_names() and the help text (codecs/__init__.py)
CODECS = ("blosclz", "lz4", "lz4hc", "zstd")
FILTERS = ("noshuffle", "shuffle", "bitshuffle")
DEFAULT = ("zstd", 1, "shuffle")
ID_BASE = 5000
CRC = "crc"  # the option: a CRC-32 of the frame after it
CRC_FILTER_OFFSET = 5  # id digit F + 5: the same filter, with the CRC-32
HELP = (f"blosc2[:CODEC[:LEVEL[:FILTER[:crc]]]] (id 5CFL; CODEC {'/'.join(CODECS)}, LEVEL 0..9, FILTER "
        f"{'/'.join(FILTERS)}; default {':'.join(map(str, DEFAULT))} = 5311; lossless; no checksum "
        f"unless :crc, F + 5)")
_FILTER_ENUM = {"noshuffle": "NOFILTER", "shuffle": "SHUFFLE", "bitshuffle": "BITSHUFFLE"}
_HEADER_MIN = 32  # BLOSC2_MAX_OVERHEAD: a frame is never shorter than its full header


def _threads() -> int:
    return int(os.environ.get("SPLITINFER_BLOSC2_THREADS") or min(4, os.cpu_count() or 1))


class Blosc2Codec(Codec):
    name = NAME
    lossless = True
    byte_stage = True

    def __init__(self, codec: str = DEFAULT[0], level: int = DEFAULT[1], filt: str = DEFAULT[2],
                 crc: bool = False):
        f = FILTERS.index(filt) + (CRC_FILTER_OFFSET if crc else 0)
        cid = ID_BASE + 100 * CODECS.index(codec) + 10 * f + int(level)
        params = {"codec": codec, "level": int(level), "filter": filt, **({"check": CRC} if crc else {})}
        super().__init__(cid, params)
        self.codec_name, self.level, self.filter, self.crc = codec, int(level), filt, bool(crc)

    def _cparams(self, typesize: int) -> dict:
        import blosc2

        filt = getattr(blosc2.Filter, _FILTER_ENUM[self.filter])
        return dict(codec=getattr(blosc2.Codec, self.codec_name.upper()), clevel=self.level,
                    filters=[filt], typesize=max(1, min(255, typesize)),
                    nthreads=_threads())

    def encode(self, arr) -> bytes:
        x = le_contiguous(arr)
        return self.encode_bytes(x.reshape(-1).view(np.uint8), x.dtype.itemsize)

    def encode_bytes(self, buf, typesize: int = 1) -> bytes:
        import blosc2

        frame = _EMPTY_MARK if memoryview(buf).nbytes == 0 else blosc2.compress2(buf, **self._cparams(typesize))
        if self.crc:
            return bytes(frame) + zlib.crc32(frame).to_bytes(4, "little")
        return frame

    def _checked(self, payload) -> memoryview:
        """The frame of a payload: with `crc`, its CRC-32 checked and cut off (CodecError when it differs)."""
        view = memoryview(payload).cast("B")
        if not self.crc:
            return view
        if view.nbytes < 4:
            raise CodecError(f"{NAME}: payload of {view.nbytes} bytes has no room for its CRC-32")
        frame, want = view[:-4], int.from_bytes(view[-4:], "little")
        got = zlib.crc32(frame)
        if got != want:
            raise CodecError(f"{NAME}: CRC-32 mismatch (payload says {want:08x}, its frame has {got:08x}): "
                             "the payload was changed after encoding")
        return frame

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        need = numel(dims) * dt.itemsize
        raw = self.decode_bytes(payload, need, exact=True, what=f"{dt}{list(dims)}")
        return from_raw(raw, dt, dims, NAME)

    def decode_bytes(self, payload, limit: int, exact: bool = False, what: str = "this stage"):
        """The frame's bytes, refusing a frame that claims more than `limit` (or not exactly it)."""
        import blosc2

        view = self._checked(payload)
        if view.nbytes == len(_EMPTY_MARK) and bytes(view) == _EMPTY_MARK:
            if exact and limit != 0:
                raise CodecError(f"{NAME}: empty frame but {limit} bytes are needed")
            return b""
        if view.nbytes < _HEADER_MIN:
            raise CodecError(f"{NAME}: payload of {view.nbytes} bytes is shorter than a blosc2 header")
        try:
            nbytes, cbytes, _ = blosc2.get_cbuffer_sizes(view)
        except Exception as exc:
            raise CodecError(f"{NAME}: not a blosc2 frame ({exc})") from None
        if cbytes != view.nbytes:
            raise CodecError(f"{NAME}: frame says it is {cbytes} bytes long but the payload has {view.nbytes}")
        if (nbytes != limit) if exact else not 0 < nbytes <= limit:
            raise CodecError(f"{NAME}: frame holds {nbytes} bytes but {'exactly' if exact else 'at most'} "
                             f"{limit} fit {what}")
        out = np.empty(nbytes, np.uint8)
        try:
            blosc2.decompress2(view, dst=out, nthreads=_threads())
        except Exception as exc:
            raise CodecError(f"{NAME}: corrupt payload ({exc})") from None
        return out


_EMPTY_MARK = b"B2E0"  # an empty tensor (blosc2 refuses zero-length buffers)


def _parse(param: str) -> tuple[str, int, str, bool]:
    parts = [p.strip() for p in param.split(":")]
    crc = parts[-1] == CRC  # the option, last: blosc2:crc, blosc2:lz4::crc, blosc2:zstd:1:shuffle:crc
    if crc:
        parts = parts[:-1] or [""]
    if len(parts) > 3:
        raise UserError(f"blosc2 takes at most CODEC:LEVEL:FILTER:crc, got {param!r}")
    codec, level, filt = DEFAULT
    if parts[0]:
        codec = parts[0]
    if codec not in CODECS:
        raise UserError(f"blosc2 codec {codec!r} is not one of {', '.join(CODECS)}")
    if len(parts) > 1 and parts[1]:
        level = parse_int(parts[1], "blosc2 level")
        if not 0 <= level <= 9:
            raise UserError(f"blosc2 level {level} is outside 0..9")
    if len(parts) > 2 and parts[2]:
        filt = parts[2]
    if filt not in FILTERS:
        raise UserError(f"blosc2 filter {filt!r} is not one of {', '.join(FILTERS)}")
    return codec, level, filt, crc


def _available() -> None:
    import importlib.util

    if importlib.util.find_spec("blosc2") is None:
        raise UserError("the blosc2 codec needs the blosc2 package (pip install blosc2)")


def from_id(number: int):
    rest = number - ID_BASE
    if not 0 <= rest < 100 * len(CODECS):
        return None
    c, rest = divmod(rest, 100)
    f, level = divmod(rest, 10)
    crc = f >= CRC_FILTER_OFFSET
    f -= CRC_FILTER_OFFSET if crc else 0
    if f >= len(FILTERS):
        return None
    _available()
    return Blosc2Codec(CODECS[c], level, FILTERS[f], crc)


def from_param(param):
    _available()
    if param in (None, ""):
        return Blosc2Codec(*DEFAULT)
    return Blosc2Codec(*_parse(param))
