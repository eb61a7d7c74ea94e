"""Run by the OIP tests and bench/bench_oip.py with .venv-oip/bin/python: the real `tritonclient` (gRPC)
against an Open Inference Protocol server. Not a test module (no test_ prefix).

Usage: tritonclient_infer.py ADDRESS MODEL_NAME INPUTS.npz META.json OUT.json [--half] [--repeat N]
Asks liveness, readiness, server and model metadata, then ModelInfer (N times, timed), and writes what it
got as JSON: {"live", "ready", "server", "metadata", "detections": [[label, x1, y1, x2, y2, score]...],
"seconds": [...]}. The inputs file is an .npz read without pickle.
"""

import json
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient


def main(argv):
    address, name, npz, meta_path, out_path = argv[:5]
    half = "--half" in argv
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 1
    client = grpcclient.InferenceServerClient(url=address)
    result = {"live": client.is_server_live(), "ready": client.is_server_ready(),
              "model_ready": client.is_model_ready(name), "server": client.get_server_metadata(as_json=True),
              "metadata": client.get_model_metadata(name, as_json=True)}
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    order = [i["name"] for i in result["metadata"]["inputs"]]
    inputs = []
    for tname in order:
        arr = arrays[tname].astype(np.float16) if half and arrays[tname].dtype == np.float32 else arrays[tname]
        inp = grpcclient.InferInput(tname, list(arr.shape), "FP16" if arr.dtype == np.float16 else "FP32")
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    outputs = [grpcclient.InferRequestedOutput("detections"), grpcclient.InferRequestedOutput("labels")]
    with open(meta_path) as f:
        meta = f.read()
    seconds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = client.infer(name, inputs, outputs=outputs, parameters={"meta": meta})
        boxes, labels = res.as_numpy("detections"), res.as_numpy("labels")
        seconds.append(time.perf_counter() - t0)
    result["detections"] = [[lab.decode() if isinstance(lab, bytes) else str(lab), *map(float, row)]
                            for row, lab in zip(boxes.reshape(-1, 5).tolist(), labels.reshape(-1).tolist())]
    result["seconds"] = seconds
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
