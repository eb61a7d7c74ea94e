"""`splitinfer netexp` (plug-in of experiments/netexp.py): transfer time on a shaped link vs bytes x 8 / rate.

The network process and the UE process run as separate OS processes in two network namespaces
joined by a veth pair (10.77.0.1 server, 10.77.0.2 UE; the addresses exist only inside these
namespaces); the UE's egress (uplink) is shaped with tc tbf at each rate; the UE runs each split
point on one bundled image. Writes netexp.csv (rate, split, crossing tensors, encoded bytes,
measured and estimated transfer ms, their ratio, a plain-TCP calibration ratio, drops) and
netexp.png. Needs root (namespaces and tc).
"""

NAME = "netexp"
HELP = "transfer time over tbf-shaped veth links between namespaces vs bytes x 8 / rate"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"out": "dir"}

from splitinfer.common.cli.options import add_list_option

DEFAULT_RATES = "20mbit,50mbit,100mbit"
DEFAULT_SPLITS = "9,22,100"


def add_arguments(p):
    from splitinfer.common.cli import options as opt

    add_list_option(p, "--rates", default=DEFAULT_RATES, metavar="RATE",
                    help=f"uplink rates, tc's units (20mbit 1gbit, 10mbps = bytes/s; default {DEFAULT_RATES})")
    add_list_option(p, "--splits", default=DEFAULT_SPLITS, metavar="RANK",
                    help=f"split ranks of the model (default {DEFAULT_SPLITS})")
    p.add_argument("--models", default=None, metavar="DIR", help="model repository (default: the bundled one)")
    p.add_argument("--model-id", default="nanodet", help="model id in the repository (default nanodet)")
    p.add_argument("--image", default=None, help="image the UE sends (default: the first bundled photo)")
    p.add_argument("--codec", default="none", help="codec of the crossing tensors (default none)")
    p.add_argument("--frames", type=opt.POSITIVE_INT, default=3, help="frames per run (default 3)")
    p.add_argument("-o", "--out", default="netexp_out", help="output folder (default netexp_out)")


def run(args) -> int:
    from pathlib import Path

    from splitinfer.experiments import netexp
    from splitinfer.common.core.errors import UserError
    from splitinfer.common.core.rates import parse_rate
    from splitinfer.common.split.cut import parse_cuts

    rates = [parse_rate(r) for r in args.rates]
    splits = parse_cuts(args.splits)
    names = [s for s in splits if not isinstance(s, int)]
    if names:
        raise UserError(f"--splits: expected node ranks, got {', '.join(map(str, names))}")
    if not rates or not splits:
        raise UserError("--rates and --splits need at least one value each")
    if args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    if args.image and not Path(args.image).is_file():
        raise UserError(f"image not found: {args.image}")
    reason = netexp.namespaces_unavailable()
    if reason:
        raise UserError(reason)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = netexp.run_experiment(rates, splits, models=args.models, model_id=args.model_id, image=args.image,
                                 codec=args.codec, frames=args.frames, out_dir=out)
    netexp.write_csv(rows, out / "netexp.csv")
    netexp.plot(rows, out / "netexp.png")
    head = (f"{'Mbit/s':>7} {'split':>5} {'tensors':>7} {'bytes':>10} {'measured ms':>11} "
            f"{'estimate ms':>11} {'ratio':>6} {'TCP ratio':>9} {'drops':>5}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.rate_mbps:7g} {r.split:5d} {r.tensors:7d} {r.encoded_bytes:10.0f} {r.measured_ms:11.1f} "
              f"{r.estimate_ms:11.1f} {r.ratio:6.3f} {r.tcp_ratio:9.3f} {r.drops:5d}")
    print(f"wrote {out / 'netexp.csv'} and {out / 'netexp.png'}")
    return 0
