"""The `video` codec (codecs/video.py, video_pack.py): tensors tiled into pictures and coded by real encoders
(x265, SVT-AV1, libvpx-vp9 through PyAV) with inter prediction. Sequences round trip within a PSNR that a wrong
quantiser or tiling would miss, keyframes follow the GOP and restarts, and hostile payloads (truncated, flipped,
a layout, bit depth or picture size that disagrees with the tensor, a predicted frame without its reference) are
refused with a CodecError or MissingReference, the picture size being checked before a decoder allocates."""

import numpy as np
import pytest

from splitinfer.common.codecs import CodecError, get_codec
from splitinfer.common.codecs import video_pack as vp
from splitinfer.common.codecs.sequence import HEADER, MissingReference
from splitinfer.common.codecs.video import CRC, KEY_KIND

SHAPE = (1, 13, 20, 28)  # 13 channels: a grid with an empty cell


def smooth_sequence(n=5, shape=SHAPE, step=0.15, seed=0):
    """ReLU of smooth per-channel patterns drifting slowly (a static camera's features), channels distinct."""
    rng = np.random.default_rng(seed)
    c, (h, w) = int(np.prod(shape[:-2])), shape[-2:]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    fy, fx, ph, amp = (rng.uniform(0.1, 0.5, c), rng.uniform(0.1, 0.5, c), rng.uniform(0, 6, c),
                       rng.uniform(0.5, 4, c))
    frames = []
    for k in range(n):
        t = k * step
        f = amp[:, None, None] * np.sin(fy[:, None, None] * y + fx[:, None, None] * x + ph[:, None, None] + t)
        frames.append(np.maximum(f, 0).astype(np.float32).reshape(shape))
    return frames


def psnr(a, b):
    return 10 * np.log10(float(np.max(b)) ** 2 / max(float(np.mean((a.astype(np.float64) - b) ** 2)), 1e-30))


def stream(spec, frames, name="t"):
    codec = get_codec(spec)
    enc, dec = codec.sequence_encoder(), codec.sequence_decoder()
    payloads, keys, outs = [], [], []
    for f in frames:
        (p,) = enc.encode_frame([name], [f])
        payloads.append(p)
        keys.append(enc.last_keyframe)
        outs.append(dec.decode(name, p, f.dtype, f.shape))
    enc.close()
    dec.close()
    return payloads, keys, outs


def test_specs_and_ids_round_trip_and_bad_options_are_refused():
    for spec in ("video", "video:30", "video:22:b12:g30", "video:40:av1", "video:40:av1:p8:b8", "video:35:vp9:p6",
                 "video:30:intra", "video:28:superfast"):
        c = get_codec(spec)
        assert c.sequential and not c.lossless
        assert get_codec(c.codec_id) == c and get_codec(c.spec) == c, spec
    assert get_codec("video").spec == "video:6" and get_codec("video").codec_id == 1_000_000_106
    assert get_codec(1_000_000_130).spec == "video:30"
    assert get_codec("video:g1") == get_codec("video:intra") and get_codec("video:intra").gop == 1
    assert get_codec("video:vp9").bits == 8 and get_codec("video:av1").bits == 10
    for bad in ("video:52", "video:0:av1", "video:30:vp9:b10", "video:30:av1:b12", "video:30:p3", "video:30:av1:fast",
                "video:30:g1000", "video:30:x264", "video:30:31", "video:30:g2:intra", "video:1_0", "video:30:b9"):
        with pytest.raises(Exception):
            get_codec(bad)


def test_tiling_and_quantising_round_trip_without_an_encoder():
    frames = smooth_sequence(1, (2, 7, 5, 9))  # 14 channels of 5x9
    lay = vp.layout_for(frames[0].shape)
    assert (lay.channels, lay.tile_h, lay.tile_w, lay.cell_h, lay.cell_w) == (14, 5, 9, 5, 9)
    assert lay.cols * lay.rows >= 14 and lay.width % 8 == 0 and lay.height % 8 == 0 and min(lay.width, lay.height) >= 64
    lo, hi = vp.choose_range(frames[0])
    assert lo == 0.0 and hi > frames[0].max()  # ReLU: no room below 0, a margin above
    q = vp.quantise(frames[0], 10, lo, hi)
    canvas = vp.tile(q, lay, vp.blank(lay, 10, lo, hi))
    assert np.array_equal(vp.untile(canvas, lay), q.reshape(14, 5, 9))  # every channel back at its place
    back = vp.dequantise(q, 10, lo, hi, np.float32)
    assert np.max(np.abs(back - frames[0])) <= (hi - lo) / 1023 / 2 * 1.001
    wild = np.array([np.nan, np.inf, -np.inf, 1.0, -1.0], np.float32)
    lo, hi = vp.choose_range(wild)
    assert np.isfinite(lo) and np.isfinite(hi) and lo < -1.0 and hi > 1.0
    assert list(vp.quantise(wild, 8, lo, hi)[1:3]) == [255, 0]
    with pytest.raises(CodecError, match="does not fit a picture"):
        vp.layout_for((1, 1, 10, 9000))


@pytest.mark.parametrize("spec,min_psnr", [("video:12", 45), ("video:12:b8", 38), ("video:12:b12", 45),
                                           ("video:16:av1", 32), ("video:8:vp9", 36)])
def test_sequences_round_trip_within_a_psnr_and_predicted_frames_are_smaller(spec, min_psnr):
    frames = smooth_sequence()
    payloads, keys, outs = stream(spec, frames)
    assert keys == [True] + [False] * (len(frames) - 1)
    for f, got in zip(frames, outs):
        assert got.dtype == np.float32 and got.shape == f.shape
        assert psnr(got, f) > min_psnr, (spec, psnr(got, f))
        # each channel is where it was: any other channel is far off
        assert psnr(got[0, 1], f[0, 1]) > psnr(got[0, 1], f[0, 2]) + 10
    assert np.mean([len(p) for p in payloads[1:]]) < len(payloads[0]) / 2, [len(p) for p in payloads]


def test_gop_intra_and_restart_set_the_keyframes_and_a_fresh_decoder_starts_at_any_keyframe():
    frames = smooth_sequence(7)
    _, keys, _ = stream("video:30:g3", frames)
    assert keys == [True, False, False, True, False, False, True]
    payloads, keys, outs = stream("video:20:intra", frames[:3])
    assert keys == [True] * 3 and all(psnr(o, f) > 35 for o, f in zip(outs, frames))
    codec = get_codec("video:20")
    enc = codec.sequence_encoder()
    coded = [enc.encode_frame(["t"], [f])[0] for f in frames[:2]]
    enc.restart()
    coded += [enc.encode_frame(["t"], [f])[0] for f in frames[2:4]]
    assert enc.last_keyframe is False
    dec = codec.sequence_decoder()  # a new session (after a reconnect) starts at the restart's keyframe
    with pytest.raises(MissingReference):
        dec.decode("t", coded[1], np.float32, SHAPE)
    for p, f in zip(coded[2:], frames[2:4]):
        assert psnr(dec.decode("t", p, np.float32, SHAPE), f) > 35
    assert dec.keyframes == 1 and dec.predicted == 1
    # the per-frame path: a lone keyframe
    assert psnr(codec.decode(codec.encode(frames[0]), np.float32, SHAPE), frames[0]) > 35


def test_non_float_and_tiny_tensors_round_trip_exactly_and_float16_keeps_its_dtype():
    ints = [np.arange(24, dtype=np.int64).reshape(2, 3, 4) * k for k in range(3)]
    _, _, outs = stream("video", ints)
    assert all(np.array_equal(o, i) and o.dtype == np.int64 for o, i in zip(outs, ints))
    for small in (np.float32(2.5), np.zeros((0, 4), np.float32), np.linspace(0, 1, 255, dtype=np.float32)):
        payloads, _, outs = stream("video", [small, small])
        assert np.array_equal(outs[1], small) and payloads[1][HEADER.size:HEADER.size + 1] == b"Z"
    halves = [f.astype(np.float16) for f in smooth_sequence(2)]
    _, _, outs = stream("video:20", halves)
    assert outs[1].dtype == np.float16 and psnr(outs[1].astype(np.float32), halves[1].astype(np.float32)) > 35


def _resign(payload, key_info=None, packet=None):
    """The payload with another layout and/or packet, its CRC made right again (a hostile but consistent one)."""
    head, body = payload[:HEADER.size], payload[HEADER.size:]
    info = body[1:1 + vp.KEY_INFO.size] if key_info is None else key_info
    rest = body[1 + vp.KEY_INFO.size:]
    pkt = rest[CRC.size:] if packet is None else packet
    import zlib

    return head + KEY_KIND + info + CRC.pack(zlib.crc32(pkt)) + pkt


def test_hostile_payloads_are_refused_and_never_decoded_against_a_wrong_reference():
    frames = smooth_sequence(3)
    payloads, _, _ = stream("video:30", frames)
    codec = get_codec("video:30")
    key, pred = payloads[0], payloads[1]
    n = HEADER.size
    flipped = bytearray(key)
    flipped[-20] ^= 0x10
    bad = {"truncated": key[:-30], "flipped": bytes(flipped), "no packet": key[:n + 1 + vp.KEY_INFO.size],
           "kind": key[:n] + b"v" + key[n + 1:], "empty body": key[:n]}
    for what, p in bad.items():
        with pytest.raises(CodecError):
            codec.sequence_decoder().decode("t", p, np.float32, SHAPE)
    # a layout or bit depth that disagrees with the tensor
    with pytest.raises(CodecError, match="the tensor needs"):
        codec.sequence_decoder().decode("t", key, np.float32, (1, 14, 20, 28))
    with pytest.raises(CodecError, match="announces 10-bit samples; this codec codes 8"):
        get_codec("video:30:b8").sequence_decoder().decode("t", key, np.float32, SHAPE)
    # a predicted frame without its reference; a corrupt predicted frame drops the reference
    with pytest.raises(MissingReference):
        codec.sequence_decoder().decode("t", pred, np.float32, SHAPE)
    dec = codec.sequence_decoder()
    dec.decode("t", key, np.float32, SHAPE)
    with pytest.raises(CodecError, match="CRC"):
        dec.decode("t", pred[:-3] + bytes(3), np.float32, SHAPE)
    with pytest.raises(MissingReference):
        dec.decode("t", pred, np.float32, SHAPE)


def test_a_bitstream_of_a_larger_picture_is_refused_before_the_decoder_allocates_it():
    small = smooth_sequence(1)[0]
    big = smooth_sequence(1, (1, 64, 40, 40))[0]  # a 320x320 picture against the small tensor's
    codec = get_codec("video:30")
    (key_big,) = codec.sequence_encoder().encode_frame(["t"], [big])
    (key_small,) = codec.sequence_encoder().encode_frame(["t"], [small])
    small_info = key_small[HEADER.size + 1:HEADER.size + 1 + vp.KEY_INFO.size]
    big_packet = key_big[HEADER.size + 1 + vp.KEY_INFO.size + CRC.size:]
    # its own header announces the big layout: refused before any decoder is made
    dec = codec.tensor_decoder(np.float32, SHAPE)
    with pytest.raises(CodecError, match="the tensor needs"):
        dec.decode(memoryview(key_big)[HEADER.size:], True)
    assert dec.ctx is None
    # a header that lies (the small layout) over the big bitstream: the decoder's max_pixels refuses it
    hostile = _resign(key_big, key_info=small_info, packet=big_packet)
    with pytest.raises(CodecError, match="refused the packet"):
        codec.sequence_decoder().decode("t", hostile, np.float32, SHAPE)
    lay_small, lay_big = vp.layout_for(SHAPE), vp.layout_for(big.shape)
    assert lay_big.width * lay_big.height > lay_small.max_pixels
    # and a smaller picture than announced is refused after decoding (its size checked exactly)
    (key_tiny,) = codec.sequence_encoder().encode_frame(["t"], [np.ones((1, 4, 8, 8), np.float32)])
    hostile = _resign(key_big, key_info=small_info, packet=key_tiny[HEADER.size + 1 + vp.KEY_INFO.size + CRC.size:])
    with pytest.raises(CodecError, match="decoded a 64x64"):
        codec.sequence_decoder().decode("t", hostile, np.float32, SHAPE)


def test_a_bitstream_whose_bit_depth_disagrees_with_its_header_is_refused():
    f = smooth_sequence(1)[0]
    (key8,) = get_codec("video:20:b8").sequence_encoder().encode_frame(["t"], [f])
    info = bytearray(key8[HEADER.size + 1:HEADER.size + 1 + vp.KEY_INFO.size])
    info[vp.KEY_INFO.size - 9] = 10  # the bits field (before lo and hi)
    hostile = _resign(key8, key_info=bytes(info))
    with pytest.raises(CodecError, match="gray picture; expected .* gray10le"):
        get_codec("video:20").sequence_decoder().decode("t", hostile, np.float32, SHAPE)


@pytest.mark.parametrize("spec", ["video:20:g2", "video:20:av1:g2", "video:20:vp9:g2"])
def test_each_encoder_s_forced_keyframes_start_a_fresh_decoder(spec):
    frames = smooth_sequence(4)
    payloads, keys, _ = stream(spec, frames)
    assert keys == [True, False, True, False]
    dec = get_codec(spec).sequence_decoder()  # joins at the second keyframe
    for p, f in zip(payloads[2:], frames[2:]):
        assert psnr(dec.decode("t", p, np.float32, SHAPE), f) > 30


@pytest.mark.timeout(300)
def test_a_stream_through_the_real_network_process(tmp_path):
    """`splitinfer device` streams photos in a loop (a still scene) at split 95 with `video:10` to
    `python -m splitinfer.server.main` over real gRPC: every frame answered, a keyframe then predicted frames, and
    the detections agree with the whole model's."""
    import shutil
    import subprocess

    from grpc_helpers import cli, env_one_thread, read_csv, stop_process
    from splitinfer.common.assets import bundled_images
    from splitinfer.experiments.server_process import ServerProcess

    src = tmp_path / "photos"
    src.mkdir()
    shutil.copy(next(p for p in bundled_images() if p.name == "dog.jpg"), src / "dog.jpg")
    out = tmp_path / "out"
    server = ServerProcess(threads=1, device="cpu", env=env_one_thread())
    try:
        ue = subprocess.run(cli("device", "--server", server.address, "-s", str(src), "-loop", "4", "--split", "95",
                                "-encode_algo", "video:10", "--in-flight", "2", "-no_GPU_anchor", "--no-overlay",
                                "--threads", "1", "-results_dir", str(out)),
                            capture_output=True, text=True, env=env_one_thread(), timeout=240)
    finally:
        assert server.stop() == 0, "\n".join(server.stderr_tail)
    assert ue.returncode == 0, ue.stderr[-2000:]
    rows = read_csv(out / "results_frames.csv")
    assert [r["Status"] for r in rows] == ["ok"] * 4
    assert [r["Keyframe"] for r in rows] == ["yes", "no", "no", "no"]
    (result,) = read_csv(out / "results.csv")
    agree, total = result["Anchor_agreement"].split("/")
    assert int(total) > 0 and int(agree) == int(total), result


def test_encoder_threads_come_from_the_environment_and_change_nothing_the_decoder_needs(monkeypatch):
    frames = smooth_sequence(3)
    monkeypatch.setenv("SPLITINFER_VIDEO_THREADS", "2")
    payloads, keys, outs = stream("video:20", frames)  # x265 wavefronts on 2 threads
    assert keys == [True, False, False] and all(psnr(o, f) > 35 for o, f in zip(outs, frames))
    monkeypatch.setenv("SPLITINFER_VIDEO_THREADS", "1")
    dec = get_codec("video:20").sequence_decoder()
    assert all(psnr(dec.decode("t", p, np.float32, SHAPE), f) > 35 for p, f in zip(payloads, frames))
    for bad in ("0", "17", "two", "1_0"):
        monkeypatch.setenv("SPLITINFER_VIDEO_THREADS", bad)
        with pytest.raises(Exception, match="SPLITINFER_VIDEO_THREADS"):
            stream("video:20", frames[:1])



def test_an_encoder_does_not_make_the_process_real_time():
    """SVT-AV1 run as root switches the thread that opens it to SCHED_FIFO 99 and its own threads inherit
    it (v4.1 in PyAV's wheels); the codec sets every thread back, so no thread of this process ends up
    real-time after coding with any encoder (a real-time process on a small machine starves the rest:
    the Docker engine a later test started inherited it and stalled CI's machine)."""
    import glob
    import os

    def realtime_threads() -> list[int]:
        out = []
        for task in glob.glob("/proc/self/task/*"):
            try:
                if os.sched_getscheduler(int(task.rsplit("/", 1)[1])) in (os.SCHED_FIFO, os.SCHED_RR):
                    out.append(int(task.rsplit("/", 1)[1]))
            except OSError:
                pass
        return out

    if not hasattr(os, "sched_getscheduler") or not os.path.isdir("/proc/self/task"):
        pytest.skip("this OS does not tell thread scheduling policies")
    assert realtime_threads() == []
    frames = smooth_sequence(2)
    for spec in ("video:30:av1", "video:30", "video:30:vp9"):
        stream(spec, frames)
        assert os.sched_getscheduler(0) == os.SCHED_OTHER, spec
        assert realtime_threads() == [], spec
