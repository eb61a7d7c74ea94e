"""Shared core of splitinfer: graph cutting, codecs, wire format, model families, metrics, evaluation."""
