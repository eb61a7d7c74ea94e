"""Studies layer: the questions a user asks of a model, answered over many cuts and codecs.

`analysis` (intermediate sizes, latency per bandwidth), `splitability` (which models of the zoo split),
`sweep` (split x codec grids with mAP), `recommend` (split/codec choice, Pareto front). The models these
studies cut are made in `common/models/`.
"""
