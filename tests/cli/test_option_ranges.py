"""Numbers out of range are refused in one line naming the option (issue 19, section 2).

`serve --port 70000` used to listen on 4464 and `--port -3` on 65533 (the OS keeps the low 16 bits);
`device --in-flight 0`, `--threads -1`, `map --threshold -1` ran on with a meaningless value.
"""

import pytest

from splitinfer.common.cli import main

CASES = [
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--port", "-3"], "--port"),
    (["serve", "--metrics-port", "65536"], "--metrics-port"),
    (["serve", "--threads", "-1"], "--threads"),
    (["serve", "--max-streams", "0"], "--max-streams"),
    (["serve", "--max-message-mb", "0"], "--max-message-mb"),
    (["device", "--in-flight", "0"], "--in-flight"),
    (["device", "--threads", "-1"], "--threads"),
    (["device", "--metrics-port", "99999"], "--metrics-port"),
    (["device", "--max-message-mb", "0"], "--max-message-mb"),
    (["device", "--max-message-mb", "0.001"], "--max-message-mb"),
    (["serve", "--max-message-mb", "4096"], "--max-message-mb"),
    (["device", "--timeout", "nan"], "--timeout"),
    (["device", "-loop", "0"], "-loop"),
    (["map", "p", "--gt", "g", "--threshold", "-1"], "--threshold"),
    (["map", "p", "--gt", "g", "--threshold", "1.5"], "--threshold"),
    (["detect", "x.jpg", "--threshold", "-0.1"], "--threshold"),
    (["detect", "x.jpg", "--threads", "-1"], "--threads"),
    (["sweep", "nanodet", "--workers", "-2"], "--workers"),
    (["study", "nanodet", "--max-images", "0"], "--max-images"),
    (["visualize", "a", "b", "--fps", "0"], "--fps"),
    (["dataset", "frames", "v.mp4", "-o", "x", "--every", "0"], "--every"),
]


@pytest.mark.parametrize("argv,option", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_out_of_range_is_one_line_exit_2(argv, option, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"argument {option}" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir()), "nothing may be written before the refusal"


def test_in_range_values_parse():
    from splitinfer.common.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "0", "--metrics-port", "65535", "--threads", "0"])
    assert (args.port, args.metrics_port, args.threads) == (0, 65535, 0)
    args = build_parser().parse_args(["map", "p", "--gt", "g", "--threshold", "0.05"])
    assert args.threshold == 0.05
