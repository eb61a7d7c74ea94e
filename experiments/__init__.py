"""What drives both processes: the layer above `device/` (the UE process) and `server/` (the network process).

*Experiments* start the network process as an OS process by module name (`server_process.ServerProcess`,
which reads its ready line through `common/transport/ready.py`) and run the UE, in this process (the demo) or
as another OS process (netexp, reading its results through `device/results.py` `read_results`). They may
import `device` and `common`, never `server`; nothing below imports them (.importlinter, tests/test_layers.py).
Their CLI plug-ins (`demo`, `netexp`) are entry points of the group `splitinfer.commands`.
"""
