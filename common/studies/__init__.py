"""Studies layer: the questions a user asks of a model, answered over many cuts and codecs.

`analysis` (intermediate sizes, latency per bandwidth), `splitability` + `zoo` (which models split),
`exporters` (torch exports of reference models), `sweep` (split x codec grids with mAP),
`recommend` (split/codec choice, Pareto front), `netexp` (shaped-link experiments in namespaces).
"""
