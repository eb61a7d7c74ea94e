"""Sequence codecs: the frames of one stream coded in order, each predicted from the frame before.

Why: the field's inputs are videos, and the features of consecutive frames differ little. A per-frame codec
codes each frame alone; a *sequential* codec keeps state across the frames of one stream (the UE keeps an
encoder per stream, the network process a decoder per session) and sends only what changed.

Defined terms:
- *stream*: the frames of one UE session, coded in the order they are read; each crossing tensor (by name)
  is its own sequence with its own state;
- *keyframe*: a frame coded alone, a random access point: a decoder starts or restarts there;
- *predicted frame*: coded against its *reference*, the previous frame of the same tensor as the decoder
  rebuilt it (closed loop: the encoder predicts from its own reconstruction, so errors do not drift);
- *scene cut*: a frame the previous one does not predict well (a new scene, a camera jump); the encoder
  codes it as a keyframe by itself (`TensorEncoder.encode_choosing`), so it costs no more than a keyframe
  and becomes a random access point;
- *sequence header*: the 12 bytes every payload of a sequential codec starts with: magic `SQ`, version 1,
  flags (bit 0: keyframe), the frame's index in the stream (uint32) and its reference's index (uint32; a
  keyframe names itself). A predicted frame decodes only where the decoder holds exactly that reference:
  otherwise `MissingReference` (FAILED_PRECONDITION), and nothing is decoded from a wrong reference.

The two sides: `SequenceEncoder` (UE) and `SequenceDecoder` (network process), one per stream, made by
`Codec.sequence_encoder()` / `sequence_decoder()`. Per-frame codecs get the plain ones here (a loop over
`encode_many` / `decode`), so the UE and the network process have one code path for every codec.
A sequential codec implements `tensor_encoder(dtype, shape)` / `tensor_decoder(dtype, shape)`: the state of
one tensor's sequence (`TensorEncoder.encode(arr, key)` / `TensorDecoder.decode(body, key)`, the body being
the payload after the sequence header). Its stateless `encode`/`decode` code a lone keyframe, so every
per-frame path (sweep rows batched across workers, benchmarks) still works: intra-only.
After a reconnect, a resend or an error the UE calls `restart()`: its next frame is a keyframe.
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from splitinfer.common.codecs import Codec, CodecError, norm_dtype, norm_shape

MAGIC = b"SQ"
VERSION = 1
KEY = 0x01
HEADER = struct.Struct("<2sBBII")  # magic, version, flags, index, reference index
MAX_TENSORS = 256  # distinct tensor names one decoder keeps state for (a split sends far fewer)
MAX_CODER_THREADS = 8  # threads coding one frame's tensors at once (codecs with `concurrent_tensors`)


class MissingReference(CodecError):
    """A predicted frame whose reference this decoder does not hold (lost, out of order, new session)."""

    code = "FAILED_PRECONDITION"


def pack_header(key: bool, index: int, ref: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, KEY if key else 0, index & 0xFFFFFFFF, ref & 0xFFFFFFFF)


def read_header(payload) -> tuple[bool, int, int, memoryview]:
    """(keyframe, index, reference index, body) of a sequential payload, or CodecError."""
    view = memoryview(payload).cast("B")
    if view.nbytes < HEADER.size:
        raise CodecError(f"sequence payload of {view.nbytes} bytes is shorter than its {HEADER.size}-byte header")
    magic, version, flags, index, ref = HEADER.unpack_from(view)
    if magic != MAGIC or version != VERSION:
        raise CodecError(f"not a sequence payload (magic {bytes(magic)!r}, version {version}; expected "
                         f"{MAGIC!r} version {VERSION})")
    if flags & ~KEY:
        raise CodecError(f"sequence header has unknown flags 0x{flags:02x}")
    key = bool(flags & KEY)
    if key and ref != index:
        raise CodecError(f"keyframe {index} names reference {ref} (a keyframe names itself)")
    if not key and ref != (index - 1) & 0xFFFFFFFF:
        raise CodecError(f"predicted frame {index} names reference {ref}; only the previous frame can be one")
    return key, index, ref, view[HEADER.size:]


class TensorEncoder:
    """One tensor's sequence on the encoding side (a sequential codec subclasses it)."""

    def encode(self, arr: np.ndarray, key: bool) -> bytes:
        raise NotImplementedError

    def encode_choosing(self, arr: np.ndarray, key: bool) -> tuple[bool, bytes]:
        """(whether the body is a keyframe, body). `key` forces a keyframe; otherwise a codec may choose one
        itself where prediction does not pay (a *scene cut*: the scene changed, so the predicted frame would
        cost about as much as, or more than, a keyframe). The default predicts whenever asked to."""
        return key, self.encode(arr, key)

    def close(self) -> None:
        """Free what the state holds (encoder contexts); called on restart and at the end of the stream."""


class SizeCutEncoder(TensorEncoder):
    """A TensorEncoder that finds scene cuts after coding: a predicted frame larger than the last keyframe is
    coded again as a keyframe. A subclass sets `key_bytes` whenever it codes a keyframe, and says where a body
    asked to be predicted came out coded alone anyway (`coded_alone`)."""

    key_bytes = 0  # size of the last keyframe's body (0: none yet)

    def coded_alone(self, body: bytes) -> bool:
        return False

    def encode_choosing(self, arr: np.ndarray, key: bool) -> tuple[bool, bytes]:
        body = self.encode(arr, key)
        if key or self.coded_alone(body):
            return True, body
        if self.key_bytes and len(body) > self.key_bytes:
            return True, self.encode(arr, True)
        return False, body


class TensorDecoder:
    """One tensor's sequence on the decoding side (a sequential codec subclasses it)."""

    def decode(self, body: memoryview, key: bool) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the state holds (decoder contexts, the reference)."""


class SequentialCodec(Codec):
    """Base of codecs whose frames are coded in order. `gop`: frames from one keyframe to the next
    (0: a keyframe only at the start and after a restart)."""

    sequential = True
    gop = 0
    concurrent_tensors = False  # True where coders release the GIL: a frame's tensors are coded at once

    def tensor_encoder(self, dtype: np.dtype, shape: tuple[int, ...]) -> TensorEncoder:
        raise NotImplementedError

    def tensor_decoder(self, dtype: np.dtype, shape: tuple[int, ...]) -> TensorDecoder:
        raise NotImplementedError

    def sequence_encoder(self) -> "StatefulEncoder":
        return StatefulEncoder(self)

    def sequence_decoder(self) -> "StatefulDecoder":
        return StatefulDecoder(self)

    # per frame: a lone keyframe
    def encode(self, arr) -> bytes:
        arr = np.asarray(arr)
        enc = self.tensor_encoder(arr.dtype, tuple(arr.shape))
        try:
            return pack_header(True, 0, 0) + enc.encode(arr, True)
        finally:
            enc.close()

    def decode(self, payload, dtype, shape, *, trusted: bool = False) -> np.ndarray:
        key, index, ref, body = read_header(payload)
        if not key:
            raise MissingReference(f"{self.name}: predicted frame {index} needs frame {ref} as its reference; "
                                   "a per-frame decode holds none (decode the stream in order)")
        dec = self.tensor_decoder(norm_dtype(dtype), norm_shape(shape))
        try:
            return dec.decode(body, True)
        finally:
            dec.close()


# -- the two sides of a stream ---------------------------------------------------------------------


class SequenceEncoder:
    """The UE side for a per-frame codec: each frame's tensors encoded alone (`Codec.encode_many`)."""

    sequential = False

    def __init__(self, codec: Codec):
        self.codec = codec
        self.last_keyframe = True  # every frame of a per-frame codec is a random access point

    def encode_frame(self, names, arrays) -> list[bytes]:
        return self.codec.encode_many(list(arrays))

    def restart(self) -> None:
        """The next frame is a keyframe (a per-frame codec has nothing to reset)."""

    def close(self) -> None:
        pass


class SequenceDecoder:
    """The network side for a per-frame codec: `bind(name)` gives an object whose `decode` is the codec's."""

    sequential = False

    def __init__(self, codec: Codec):
        self.codec = codec
        self.last_keyframe = True

    def bind(self, name: str):
        return self.codec

    def close(self) -> None:
        pass


class StatefulEncoder(SequenceEncoder):
    """The UE side of a sequential codec: per tensor name a `TensorEncoder`; keyframes at the start, every
    `gop` frames, after `restart()`, and where a tensor's codec finds a scene cut (that tensor only)."""

    sequential = True

    def __init__(self, codec: SequentialCodec):
        super().__init__(codec)
        self._states: dict[str, tuple[tuple, TensorEncoder]] = {}
        self.index = 0  # the next frame's index in the stream
        self._since_key = 0
        self._key_next = True
        self._executor: ThreadPoolExecutor | None = None  # made for the first frame coded concurrently

    def encode_frame(self, names, arrays) -> list[bytes]:
        """One frame's payloads, in order. A tensor new to the stream, or whose dtype/shape changed, is a
        keyframe by itself; `last_keyframe` says whether every tensor of the frame was one. A codec whose
        coders release the GIL (`concurrent_tensors`: dzstd, fqi, video) codes the frame's tensors at once."""
        key = self._key_next or (self.codec.gop > 0 and self._since_key >= self.codec.gop)
        jobs = []
        for name, arr in zip(names, arrays):
            arr = np.asarray(arr)
            enc, fresh = self._state(name, arr)
            jobs.append((enc, arr, key or fresh))
        coded = self._pool(len(jobs)).map(_encode_job, jobs) if self._concurrent(jobs) else map(_encode_job, jobs)
        out, all_key = [], True
        for one_key, body in coded:
            all_key = all_key and one_key
            out.append(pack_header(one_key, self.index, self.index if one_key else self.index - 1) + body)
        self.last_keyframe = all_key
        self._since_key = 1 if all_key else self._since_key + 1
        self._key_next = False
        self.index = (self.index + 1) & 0xFFFFFFFF
        return out

    def _state(self, name: str, arr: np.ndarray) -> tuple[TensorEncoder, bool]:
        """The tensor's encoder state, and whether it is new (then its frame is a keyframe)."""
        layout = (arr.dtype.str, tuple(arr.shape))
        held = self._states.get(name)
        if held is not None and held[0] == layout:
            return held[1], False
        if held is not None:
            held[1].close()
        enc = self.codec.tensor_encoder(arr.dtype, tuple(arr.shape))
        self._states[name] = (layout, enc)
        return enc, True

    def _concurrent(self, jobs) -> bool:
        return self.codec.concurrent_tensors and len(jobs) > 1 and (os.cpu_count() or 1) > 1

    def _pool(self, tensors: int) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=min(tensors, os.cpu_count() or 1, MAX_CODER_THREADS),
                                                thread_name_prefix="tensor-encoder")
        return self._executor

    def restart(self) -> None:
        self._close_states()
        self._key_next = True

    def _close_states(self) -> None:
        for _, enc in self._states.values():
            enc.close()
        self._states.clear()

    def close(self) -> None:
        self._close_states()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _encode_job(job) -> tuple[bool, bytes]:
    enc, arr, key = job
    return enc.encode_choosing(arr, key)


class StatefulDecoder(SequenceDecoder):
    """The network side of a sequential codec: per tensor name a `TensorDecoder` and the index it holds."""

    sequential = True

    def __init__(self, codec: SequentialCodec, max_tensors: int = MAX_TENSORS):
        super().__init__(codec)
        self.max_tensors = int(max_tensors)
        self._states: dict[str, list] = {}  # name -> [layout, TensorDecoder, index held]
        self.keyframes = 0  # tensors decoded as keyframes / predicted, since the start
        self.predicted = 0
        self._frame_index = None  # index of the frame the last tensor belonged to

    def bind(self, name: str):
        return _Bound(self, name)

    def decode(self, name: str, payload, dtype, shape) -> np.ndarray:
        key, index, ref, body = read_header(payload)
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        state = self._state_for(name, key, index, ref, (dt.str, dims))
        try:
            arr = state[1].decode(body, key)
        except BaseException:
            self._drop(name)  # nothing later is decoded against a reference this failure may have spoiled
            raise
        state[2] = index
        # the frame (all tensors of one index) is a keyframe when every one of its tensors was one, as the UE counts
        self.last_keyframe = key if index != self._frame_index else self.last_keyframe and key
        self._frame_index = index
        if key:
            self.keyframes += 1
        else:
            self.predicted += 1
        return arr

    def _state_for(self, name: str, key: bool, index: int, ref: int, layout: tuple) -> list:
        held = self._states.get(name)
        if not key:
            if held is None or held[2] != ref or held[0] != layout:
                have = "no frame" if held is None else f"frame {held[2]} of {held[0][0]}{list(held[0][1])}"
                raise MissingReference(f"tensor {name!r}: predicted frame {index} needs frame {ref} as its "
                                       f"reference, and this session holds {have} (restart at a keyframe)")
            return held
        if held is not None and held[0] == layout:
            return held
        if held is None and len(self._states) >= self.max_tensors:
            raise CodecError(f"tensor {name!r}: a stream may hold state for {self.max_tensors} tensors at most")
        if held is not None:
            held[1].close()
        dec = self.codec.tensor_decoder(np.dtype(layout[0]), layout[1])
        state = [layout, dec, None]
        self._states[name] = state
        return state

    def _drop(self, name: str) -> None:
        held = self._states.pop(name, None)
        if held is not None:
            held[1].close()

    def close(self) -> None:
        for name in list(self._states):
            self._drop(name)


class _Bound:
    """A decoder bound to one tensor name, with a codec's `decode` signature (for wire.decode_tensor)."""

    def __init__(self, dec: StatefulDecoder, name: str):
        self.dec, self.name = dec, name

    def decode(self, payload, dtype, shape, *, trusted: bool = False) -> np.ndarray:
        return self.dec.decode(self.name, payload, dtype, shape)
