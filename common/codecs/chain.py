"""Codec chains: `STAGE+STAGE+...` (spec-only, id 9), e.g. `float16+zstd:3`, `fq:6+blosc2:lz4`.

Why: a stage that changes values (float16, fq, or none) followed by lossless byte compressors is one
codec to the rest of the system -- one spec string in the set-up, one payload per tensor.

Terms: the *head* is the first stage; it turns the tensor into a payload as it would alone. Each
*byte stage* after it (zstd, blosc2) compresses the previous stage's bytes (blosc2 shuffles with the
head's element size). The payload is the last stage's frame; nothing else is added, because every
byte stage's frame records its own content size.

Decoding is bounded: the head says how many bytes a valid payload of dtype x shape can have at most
(`max_payload_bytes`), each byte stage may hold at most that many (its frame's content size is
checked before anything is allocated; a byte stage's frame may exceed its input by `frame_bound`), so a
chain allocates no more than a small constant times what its head would alone.

Numbering: chains have no numeric id of their own: they travel as spec strings (the wire's
`CodecProfile.spec`), and every tensor of a chain session carries the reserved id 9, which
`get_codec(9)` refuses (spec-only).
"""

from __future__ import annotations

from splitinfer.common.core.errors import UserError
from splitinfer.common.codecs import Codec, CodecError, norm_dtype, norm_shape

CHAIN_ID = 9
HELP = "A+B+... (chain: float16/fq/none then zstd/blosc2 stages, e.g. float16+zstd:3; spec-only, id 9)"


class ChainCodec(Codec):
    name = "chain"

    def __init__(self, stages: list[Codec]):
        super().__init__(CHAIN_ID, {"chain": "+".join(s.spec for s in stages)})
        self.stages = list(stages)
        self.head, self.tail = stages[0], stages[1:]
        self.lossless = all(s.lossless for s in stages)

    @property
    def spec(self) -> str:
        return "+".join(s.spec for s in self.stages)

    def encode(self, arr) -> bytes:
        payload = self.head.encode(arr)
        size = self.head.payload_typesize(arr)
        for stage in self.tail:
            payload = stage.encode_bytes(payload, size)
            size = 1
        return payload

    def decode(self, payload, dtype, shape, *, trusted: bool = False):
        dt, dims = norm_dtype(dtype), norm_shape(shape)
        limits = [self.head.max_payload_bytes(dt, dims)]  # the most bytes each stage's input can have
        for _ in self.tail[:-1]:
            limits.append(frame_bound(limits[-1]))
        for i in range(len(self.tail) - 1, -1, -1):
            stage = self.tail[i]
            try:
                payload = stage.decode_bytes(payload, limits[i], what=f"stage {i + 2} of {self.spec}")
            except CodecError as exc:
                raise CodecError(f"{self.spec}: {exc}") from None
        return self.head.decode(payload, dt, dims, trusted=trusted)

    def warm_up(self) -> None:
        for s in self.stages:
            s.warm_up()


def frame_bound(n: int) -> int:
    """Most bytes a zstd or blosc2 frame of n input bytes can take (both stay within n + n/128 + 1 kB)."""
    return n + n // 128 + 1024


def build(parts: list[Codec], original) -> ChainCodec:
    head, tail = parts[0], parts[1:]
    if getattr(head, "byte_stage", False) or head.codec_id == CHAIN_ID:
        raise UserError(f"chain {original!r}: the first stage must change values (none, float16, fq), "
                        f"not {head.spec}")
    if head.name == "nnc":
        raise UserError(f"chain {original!r}: nnc already entropy-codes its output; chain fq instead")
    if head.sequential:  # a chain codes each frame alone: the head would only ever send keyframes
        raise UserError(f"chain {original!r}: {head.spec} is sequential (frames coded in order) and cannot "
                        f"start a chain; send it alone")
    for s in tail:
        if not getattr(s, "byte_stage", False):
            raise UserError(f"chain {original!r}: stage {s.spec} is not a lossless byte stage (zstd, blosc2)")
    return ChainCodec(parts)
