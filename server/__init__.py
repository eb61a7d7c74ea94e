"""The network process: decoding, Part II, post-processing, answering the UE (entry: server/main.py)."""
