"""The committed protobuf/gRPC modules are what scripts/gen_proto.sh makes from proto/, line for line but for the
generator's version banner; that banner is the stubs' runtime floor and lies inside the declared ranges."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from declared_deps import lower_bound, pyproject, requirements_file  # noqa: E402

STUBS = {"own": ("common/transport/proto", "splitinfer_pb2"),
         "oip": ("common/transport/oip_proto", "grpc_predict_v2_pb2")}


def gen_proto_check(root: Path, which: str) -> subprocess.CompletedProcess:
    """scripts/gen_proto.sh --check own|oip, with the running interpreter's grpc_tools."""
    return subprocess.run(["bash", str(root / "scripts" / "gen_proto.sh"), "--check", which],
                          env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True, timeout=120)


def test_generated_code_matches_proto():
    proc = gen_proto_check(ROOT, "own")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture()
def repo_copy(tmp_path) -> Path:
    """The generator, the .proto files and the committed stubs, in a folder of their own to edit."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "proto", copy / "proto")
    (copy / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "gen_proto.sh", copy / "scripts")
    for folder, _ in STUBS.values():
        (copy / folder).mkdir(parents=True)
        for f in (ROOT / folder).glob("*_pb2*.py"):
            shutil.copy(f, copy / folder)
    return copy


def _rewrite(path: Path, pattern: str, repl: str) -> None:
    text, n = re.subn(pattern, repl, path.read_text(), flags=re.M)
    assert n, f"{pattern!r} not found in {path.name}"
    path.write_text(text)


def _other_generator_release(copy: Path, folder: str, module: str) -> None:
    """The banner another patch release of grpcio-tools (and of its bundled protoc) would write."""
    grpc_file, pb_file = copy / folder / f"{module}_grpc.py", copy / folder / f"{module}.py"
    _rewrite(grpc_file, r"^GRPC_GENERATED_VERSION = '[^']*'$", "GRPC_GENERATED_VERSION = '1.85.99'")
    _rewrite(pb_file, r"^# Protobuf Python Version: (\d+)\.\S+$", r"# Protobuf Python Version: \1.98.7")
    _rewrite(pb_file, r"(Domain\.PUBLIC,\n\s+\d+,\n\s+)\d+,\n(\s+)\d+,\n(\s+)'[^']*',",
             r"\g<1>98,\n\g<2>7,\n\g<3>'-rc1',")


@pytest.mark.parametrize("which", sorted(STUBS))
def test_check_leaves_out_only_the_generator_banner(repo_copy, which):
    folder, module = STUBS[which]
    _other_generator_release(repo_copy, folder, module)
    proc = gen_proto_check(repo_copy, which)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # any other line is compared: a renamed method is stale, with a diff naming the file
    grpc_file = repo_copy / folder / f"{module}_grpc.py"
    _rewrite(grpc_file, r"^(\s+def )(\w+)\(self, request", r"\1\2Renamed(self, request")
    proc = gen_proto_check(repo_copy, which)
    assert proc.returncode == 1
    assert f"{folder}/{module}_grpc.py is stale" in proc.stderr and "Renamed(self, request" in proc.stdout

    # the protobuf major version is not banner: gencode for protobuf 8 is another generator
    shutil.copy(ROOT / folder / grpc_file.name, grpc_file)
    _rewrite(repo_copy / folder / f"{module}.py", r"(Domain\.PUBLIC,\n\s+)\d+,", r"\g<1>8,")
    proc = gen_proto_check(repo_copy, which)
    assert proc.returncode == 1 and f"{folder}/{module}.py is stale" in proc.stderr


def test_stub_runtime_floors_lie_in_the_declared_ranges():
    """The generated code refuses to import under grpcio < GRPC_GENERATED_VERSION and under a protobuf runtime
    older than its gencode version: every grpcio/protobuf that requirements.txt and pyproject.toml allow must pass."""
    declared = [requirements_file(ROOT / "requirements.txt"), pyproject()]
    for folder, module in STUBS.values():
        grpc_stub = (ROOT / folder / f"{module}_grpc.py").read_text()
        grpc_floor = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'$", grpc_stub, re.M).group(1)
        major, minor, patch = re.search(r"Domain\.PUBLIC,\n\s+(\d+),\n\s+(\d+),\n\s+(\d+),",
                                        (ROOT / folder / f"{module}.py").read_text()).groups()
        for reqs in declared:
            grpcio, protobuf = reqs["grpcio"], reqs["protobuf"]
            assert lower_bound(grpcio) >= Version(grpc_floor), (
                f"{folder}: stubs made by grpcio-tools {grpc_floor} need grpcio>={grpc_floor}, "
                f"the ranges allow {grpcio}")
            gencode = f"{major}.{minor}.{patch}"
            assert lower_bound(protobuf) >= Version(gencode), (
                f"{folder}: gencode {gencode} needs protobuf>={gencode}, the ranges allow {protobuf}")
            assert not protobuf.specifier.contains(f"{int(major) + 1}.0"), f"gencode {major}.x under {protobuf}"


def test_generated_code_imports_inside_the_package():
    from splitinfer.common.transport.proto import splitinfer_pb2, splitinfer_pb2_grpc

    service = splitinfer_pb2.DESCRIPTOR.services_by_name["SplitInference"]
    assert {m.name for m in service.methods} == {"Infer", "Stream", "ListModels"}
    stream = service.methods_by_name["Stream"]
    assert stream.client_streaming and stream.server_streaming
    assert hasattr(splitinfer_pb2_grpc, "SplitInferenceStub")
    # payloads are bytes, never repeated floats
    data = splitinfer_pb2.TensorChunk.DESCRIPTOR.fields_by_name["data"]
    assert data.type == data.TYPE_BYTES
