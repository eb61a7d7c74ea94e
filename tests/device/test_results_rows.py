"""results.py: one row per source from FrameRecords, the per-frame log, the CSV's header check."""

import csv

import pytest

from splitinfer.common.core.detections import Detection, format_predictions
from splitinfer.common.core.errors import UserError
from splitinfer.device import results as R
from splitinfer.device.agreement import compare_detections
from splitinfer.device.pipeline import FrameRecord

DOG = Detection("dog", 10.0, 20.0, 110.0, 220.0, 0.9)
CAT = Detection("cat", 200.0, 20.0, 300.0, 120.0, 0.8)


def record(frame_id, dets, *, part1=0.010, ok=True, anchor=None):
    r = FrameRecord("dog", frame_id - 1, frame_id, part1_s=part1, encode_s=0.002, serialize_s=0.001,
                    transfer_s=0.004, end_to_end_s=0.030, server={"part2": 0.020, "decode": 0.001},
                    server_provider="cpu", raw_bytes=1000, encoded_bytes=400 + frame_id, tensors=4, messages=1,
                    detections=dets, attempts=1)
    if anchor is not None:
        r.anchor["cpu"] = (0.025, anchor)
    if not ok:
        r.status, r.error = "failed", "server 127.0.0.1:1 unavailable: gone (3 times)"
    return r


def summarize(records, **kw):
    return R.summarize(records, source="dog", nodes="rank=60;node=x;flag=before", loops=len(records),
                       encoding_algo="zstd", ue_provider="cpu", model="nanodet", rank=60, **kw)


def test_predictions_size_is_bytes_min_avg_max_as_the_tr_means():
    recs = [record(1, [DOG]), record(2, [DOG, CAT]), record(3, [DOG, CAT, CAT])]
    row = summarize(recs)
    sizes = [len(format_predictions(r.detections).encode()) for r in recs]
    assert row["predictions_size"] == f"{min(sizes)},{sum(sizes) / 3:.0f},{max(sizes)}"
    assert sizes[0] > 20  # bytes, not a count of detections
    assert row["predictions"] == "dog 10.00 20.00 110.00 220.00 0.90000;cat 200.00 20.00 300.00 120.00 0.80000;" \
                                 "cat 200.00 20.00 300.00 120.00 0.80000"
    assert row["encoded_intermediate_data_size"] == "401,402,403" and row["intermediate_data_size"] == "1000,1000,1000"


def test_times_are_avg_std_ms_with_a_steady_state_excluding_the_first():
    row = summarize([record(1, [DOG], part1=0.030), record(2, [DOG], part1=0.010), record(3, [DOG], part1=0.010)])
    assert row["UE_inference_time_CPU"] == "16.667;9.428"
    assert row["UE_inference_time_CPU_steady_state"] == "10.000;0.000"
    assert row["Server_inference_time_CPU"] == "20.000;0.000" and row["Server_inference_time_GPU"] == ""
    assert row["nb_inference"] == 3 and row["Frames_failed"] == 0


def test_failed_frames_are_counted_and_left_out_of_the_statistics():
    row = summarize([record(1, [DOG]), record(2, [], ok=False), record(3, [DOG], part1=0.030)])
    assert row["nb_inference"] == 2 and row["Frames_failed"] == 1
    assert row["UE_inference_time_CPU"] == "20.000;10.000"
    all_failed = summarize([record(1, [], ok=False)])
    assert all_failed["nb_inference"] == 0 and all_failed["Frames_failed"] == 1
    assert all_failed["predictions"] == "" and all_failed["UE_inference_time_CPU"] == ""


def test_agreement_columns_come_from_agreement_py():
    moved = Detection("dog", 13.0, 20.0, 113.0, 220.0, 0.9)
    row = summarize([record(1, [DOG], anchor=[DOG]), record(2, [moved], anchor=[DOG])])
    assert row["Equal_to_anchor"] == "close" and row["Anchor_agreement"] == "2/2"
    row = summarize([record(1, [DOG], anchor=[DOG, CAT])])
    assert row["Equal_to_anchor"] == "no" and row["Anchor_agreement"] == "1/2"
    row = summarize([record(1, [DOG])], ref_split="split_node_0060",
                    ref_agreements=[compare_detections([DOG], [DOG])])
    assert row["Ref_split"] == "split_node_0060" and row["Equal_to_ref_split"] == "yes"
    assert row["Equal_to_anchor"] == ""  # no anchor ran


def test_write_rows_appends_and_refuses_a_file_with_other_columns(tmp_path):
    path = tmp_path / "r.csv"
    R.write_rows(path, [summarize([record(1, [DOG])])])
    R.write_rows(path, [summarize([record(1, [CAT])])])
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["predictions"].split()[0] for r in rows] == ["dog", "cat"] and list(rows[0]) == R.COLUMNS
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="other.csv: exists with other columns"):
        R.write_rows(other, [summarize([record(1, [DOG])])])


def test_the_frame_log_has_a_line_per_ended_frame(tmp_path):
    path = R.frames_path(tmp_path / "field.csv")
    assert path == tmp_path / "field_frames.csv"
    log = R.FrameLog(path)
    log.write(record(1, [DOG, CAT]))
    unsent = record(2, [], ok=False)
    unsent.attempts, unsent.error = 0, "interrupted (Ctrl-C / SIGTERM) (not sent)"
    log.write(unsent)
    log.close()
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["Frame_id"], r["Status"], r["Attempts"], r["Detections"]) for r in rows] == [
        ("1", "ok", "1", "2"), ("2", "failed", "0", "")]
    assert rows[1]["Error"].endswith("(not sent)") and (log.ok, log.failed) == (1, 1)


def test_anchor_only_rows_hold_each_device_and_prediction_bytes():
    runs = [("cpu", 0.020, [DOG]), ("cpu", 0.010, [DOG, CAT])]
    row = R.anchor_only_row("dog", runs, loops=2, model="nanodet", devices=["cpu"])
    sizes = [len(format_predictions(d).encode()) for _, _, d in runs]
    assert row["predictions_size"] == f"{sizes[0]},{sum(sizes) / 2:.0f},{sizes[1]}"
    assert row["UE_inference_time_CPU"] == "15.000;5.000" and row["nb_inference"] == 2
    assert row["Nodes"] == "whole model" and row["predictions"].startswith("dog")


def test_read_results_gives_back_what_summarize_wrote_typed(tmp_path):
    """netexp reads the UE's CSV through read_results: typed fields, empty cells as None, a foreign file refused."""
    recs = [record(1, [DOG], anchor=[DOG]), record(2, [DOG, CAT], anchor=[DOG, CAT]), record(3, [], ok=False)]
    row = summarize(recs)
    path = R.write_rows(tmp_path / "r.csv", [row])
    (back,) = R.read_results(path)
    assert back.source == "dog" and back.model == "nanodet" and back.encoding_algo == "zstd"
    assert back.split_rank == 60 and back.nb_inference == 2 and back.frames_failed == 1 and back.crossing_tensors == 4
    cell = row["encoded_intermediate_data_size"]
    assert back.encoded_bytes == R.MinAvgMax(*(float(x) for x in cell.split(","))) and back.encoded_bytes.max == 402
    assert back.transfer_ms == R.MinAvgMax(4.0, 4.0, 4.0)
    assert back.end_to_end_ms == R.AvgStd(30.0, 0.0)
    assert back.equal_to_anchor == "yes" and back.predictions == row["predictions"]
    empty = R.read_results(R.write_rows(tmp_path / "f.csv", [summarize([record(1, [], ok=False)])]))[0]
    assert empty.transfer_ms is None and empty.nb_inference == 0
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a results CSV"):
        R.read_results(other)
    bad = tmp_path / "bad.csv"
    bad.write_text(path.read_text().replace(cell, "401;402"))  # a cell of the wrong shape
    with pytest.raises(UserError, match="line 2: column encoded_intermediate_data_size"):
        R.read_results(bad)
