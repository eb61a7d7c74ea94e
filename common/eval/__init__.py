"""Evaluation layer: data sets, COCO mAP (pycocotools; absolute and relative to the whole model),
overlays and visualisation. Uses core only; studies and the CLI build on it.
"""
