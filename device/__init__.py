"""The UE process: Part I, encoding, the frame stream to the network process, results (entry: device/main.py)."""
