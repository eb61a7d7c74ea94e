"""Security of the network process: TLS, mutual TLS, the bearer token, model ids that are never paths,
no unpickling, and limits on concurrent streams and idle streams.

Certificates are made per test session in tmp_path by `common.security.make_test_pki` (a throwaway CA,
server and client certificates); a second, unrelated PKI plays the attacker. Servers are real processes.
"""

import ast
import builtins
import os
import queue
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from grpc_helpers import (
    Stubs, cli, env_one_thread, error_counts, infer_status, read_csv, real_frame, setup_msg, setup_pb,
    stream_status, wait_for,
)
from splitinfer.common.transport import wire
from splitinfer.common.codecs import get_codec
from splitinfer.common.transport.proto import splitinfer_pb2 as pb
from splitinfer.common.transport.security import auth_metadata, channel_credentials, make_test_pki

pytestmark = pytest.mark.timeout(300)

TOKEN = "s3cret-token_for.tests"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    return make_test_pki(base / "ours"), make_test_pki(base / "theirs", name="attacker")


def _server(*extra, env=None):
    from splitinfer.experiments.server_process import ServerProcess

    return ServerProcess(threads=1, device="cpu", extra_args=list(extra), env={**env_one_thread(), **(env or {})})


@pytest.fixture(scope="module")
def mtls_server(pki):
    ours, _ = pki
    srv = _server("--tls-cert", str(ours["server_cert"]), "--tls-key", str(ours["server_key"]),
                  "--tls-client-ca", str(ours["ca"]), "--token", TOKEN)
    assert "security mtls+token" in srv.ready_line
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def tls_server(pki):
    ours, _ = pki
    srv = _server("--tls-cert", str(ours["server_cert"]), "--tls-key", str(ours["server_key"]),
                  env={"SPLITINFER_TOKEN": "from-the-environment"})
    assert "security tls+token" in srv.ready_line
    yield srv
    assert srv.stop() == 0


def _list(address, creds, metadata=None):
    stubs = Stubs(address, credentials=creds)
    try:
        return [m.model_id for m in stubs.list(pb.ListModelsRequest(), timeout=10, metadata=metadata).models]
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    finally:
        stubs.close()


def test_mutual_tls_admits_only_clients_with_our_certificate_and_the_token(mtls_server, pki):
    ours, theirs = pki
    addr = f"localhost:{mtls_server.port}"  # the name in the server certificate
    good = channel_credentials(ours["ca"], ours["client_cert"], ours["client_key"])
    auth = auth_metadata(TOKEN)
    assert _list(addr, good, auth) == ["nanodet"]
    # no TLS at all, a CA that did not sign the server, no client certificate, a certificate of another CA
    for creds in (None, channel_credentials(theirs["ca"], ours["client_cert"], ours["client_key"]),
                  channel_credentials(ours["ca"]),
                  channel_credentials(ours["ca"], theirs["client_cert"], theirs["client_key"])):
        code, details = _list(addr, creds, auth)
        assert code == grpc.StatusCode.UNAVAILABLE, details
    # the right certificate but no token, or a wrong one: UNAUTHENTICATED on every method
    stubs = Stubs(addr, credentials=good)
    try:
        for metadata, why in ((None, "missing bearer token"), (auth_metadata("guess"), "wrong bearer token"),
                              ((("authorization", TOKEN),), "wrong bearer token")):
            with pytest.raises(grpc.RpcError) as info:
                stubs.list(pb.ListModelsRequest(), timeout=10, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and why in info.value.details()
            for status in (stream_status(stubs, [setup_msg(60)], metadata=metadata),
                           infer_status(stubs, pb.InferRequest(setup=setup_pb()).SerializeToString(),
                                        metadata=metadata)):
                assert status[0] == grpc.StatusCode.UNAUTHENTICATED, status
        # health checks need no token (orchestrators probe without the secret)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        reply = health_pb2_grpc.HealthStub(stubs.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # with everything right a frame goes through the encrypted stream
        frame = real_frame(120)
        code, details, replies = stream_status(
            stubs, [setup_msg(120, codec="zstd"), *frame.messages(1, get_codec("zstd"))], metadata=auth)
        assert code == grpc.StatusCode.OK and len(replies[1].result.detections) > 0, details
    finally:
        stubs.close()
    assert error_counts(mtls_server.metrics_port).get("UNAUTHENTICATED", 0) >= 9


def _device(address, out, *extra, env=None, photo="dog.jpg"):
    from splitinfer.common.assets import bundled_images

    src = next(p for p in bundled_images() if p.name == photo)
    args = cli("device", "--server", address, "-s", str(src), "--split", "120", "-encode_algo", "zstd",
               "-no_CPU_anchor", "-no_GPU_anchor", "--no-overlay", "--threads", "1", "-results_dir", str(out), *extra)
    base = {k: v for k, v in env_one_thread().items() if not k.startswith("SPLITINFER_T")}
    return subprocess.run(args, capture_output=True, text=True, timeout=180, env={**base, **(env or {})})


def test_device_command_over_mutual_tls_with_token(mtls_server, pki, tmp_path):
    ours, theirs = pki
    addr = f"localhost:{mtls_server.port}"
    r = _device(addr, tmp_path / "ok", "--tls-ca", str(ours["ca"]), "--tls-cert", str(ours["client_cert"]),
                "--tls-key", str(ours["client_key"]), "--token", TOKEN)
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_csv(tmp_path / "ok" / "results_frames.csv")[0]["Status"] == "ok"
    # each mistake: one line, exit 2, quickly (no 30 s of retrying a refusal)
    cases = [
        (["--tls-ca", str(ours["ca"]), "--tls-cert", str(ours["client_cert"]), "--tls-key", str(ours["client_key"])],
         None, "UNAUTHENTICATED: missing bearer token"),
        (["--tls-ca", str(theirs["ca"]), "--tls-cert", str(ours["client_cert"]), "--tls-key", str(ours["client_key"]),
          "--token", TOKEN], None, "TLS handshake failed"),
        (["--tls-ca", str(ours["ca"]), "--tls-cert", str(ours["client_cert"])], None, "--tls-cert and --tls-key go together"),
        (["--tls-ca", str(tmp_path / "nope.pem")], None, "TLS CA not found"),
        (["--tls-ca", str(REPO / "README.md")], None, "not a PEM file"),
    ]
    for extra, env, text in cases:
        t0 = time.monotonic()
        r = _device(addr, tmp_path / "bad", *extra, env=env)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and text in lines[-1] and "Traceback" not in r.stderr, (extra, r.stderr[-1500:])
        assert time.monotonic() - t0 < 25, extra


def test_tls_without_client_certificates_and_the_token_from_the_environment(tls_server, pki, tmp_path):
    ours, _ = pki
    addr = f"localhost:{tls_server.port}"
    assert _list(addr, channel_credentials(ours["ca"]), auth_metadata("from-the-environment")) == ["nanodet"]
    assert _list(addr, channel_credentials(ours["ca"]))[0] == grpc.StatusCode.UNAUTHENTICATED
    # by IP the certificate still matches (it names 127.0.0.1); the device reads $SPLITINFER_TLS_CA and the token
    r = _device(f"127.0.0.1:{tls_server.port}", tmp_path / "env",
                env={"SPLITINFER_TLS_CA": str(ours["ca"]), "SPLITINFER_TOKEN": "from-the-environment"})
    assert r.returncode == 0, r.stderr[-2000:]


def test_bad_tls_files_stop_the_server_with_one_line(pki, tmp_path):
    ours, _ = pki
    for extra, text in ((["--tls-cert", str(ours["server_cert"])], "--tls-cert and --tls-key go together"),
                        (["--tls-cert", str(tmp_path / "x.pem"), "--tls-key", str(ours["server_key"])],
                         "TLS certificate not found"),
                        (["--tls-client-ca", str(ours["ca"])], "--tls-client-ca needs --tls-cert")):
        r = subprocess.run(cli("serve", "--port", "0", "--metrics-port", "0", *extra), capture_output=True,
                           text=True, timeout=120, env=env_one_thread())
        assert r.returncode == 2 and text in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_token_without_tls_is_accepted_but_warned_about(tmp_path):
    srv = _server("--token", TOKEN)
    try:
        assert _list(srv.address, None, auth_metadata(TOKEN)) == ["nanodet"]
        assert _list(srv.address, None)[0] == grpc.StatusCode.UNAUTHENTICATED
        wait_for(lambda: any("travels in clear" in line for line in srv.stderr_tail), 10, "the warning")
    finally:
        assert srv.stop() == 0


@pytest.fixture(scope="module")
def limited_server():
    srv = _server("--max-streams", "2", "--stream-idle-s", "1.5")
    yield srv
    assert srv.stop() == 0


def test_model_ids_are_never_paths(limited_server, tmp_path):
    """Over the wire: ids that look like paths (relative, absolute, to a real model folder) are unknown ids."""
    from splitinfer.common.assets import MODELS_DIR

    outside = tmp_path / "evil"
    (outside / "nanodet").mkdir(parents=True)
    for name in ("model.onnx", "model.json"):
        (outside / "nanodet" / name).write_bytes((MODELS_DIR / "nanodet" / name).read_bytes())
    stubs = Stubs(limited_server.address)
    try:
        for model_id in ("../nanodet", "../../etc/passwd", "/etc/passwd", str(outside / "nanodet"),
                         str(MODELS_DIR / "nanodet"), "nanodet/../nanodet", "./nanodet", "nanodet/model.onnx",
                         "~/nanodet", "nanodet\x00"):
            code, details, _ = stream_status(stubs, [setup_msg(60, model_id=model_id)])
            assert code == grpc.StatusCode.NOT_FOUND and "no model" in details, (model_id, code, details)
            assert "models: nanodet" in details  # the ids it knows, never a path of the server
        code, _, replies = stream_status(stubs, [setup_msg(60)])
        assert code == grpc.StatusCode.OK
        assert "/" not in replies[0].session.model_id
    finally:
        stubs.close()


def test_the_repository_touches_no_file_for_a_client_id(tmp_path, monkeypatch):
    """In-process: looking up hostile ids opens, stats or lists nothing (the id is only a dictionary key)."""
    from splitinfer.common.assets import MODELS_DIR
    from splitinfer.common.transport.metrics import Metrics
    from splitinfer.server.errors import RequestError
    from splitinfer.server.model_repository import ModelRepository
    from splitinfer.server.service import SplitInferenceService

    repo = ModelRepository(MODELS_DIR, device="cpu", threads=1)
    service = SplitInferenceService(repo, Metrics("server"))
    touched = []

    def spy(fn):
        def wrapper(path, *a, **k):
            touched.append(str(path))
            return fn(path, *a, **k)
        return wrapper

    for mod, name in ((builtins, "open"), (os, "open"), (os, "stat"), (os, "lstat"), (os, "listdir"),
                      (os, "scandir"), (os, "access")):
        monkeypatch.setattr(mod, name, spy(getattr(mod, name)))
    hostile = ["../nanodet", str(tmp_path), "/etc/passwd", str(MODELS_DIR / "nanodet" / "model.onnx")]
    for model_id in hostile:
        with pytest.raises(RequestError) as info:
            service._open(setup_pb(model_id=model_id))
        assert info.value.code == "NOT_FOUND"
    monkeypatch.undo()
    assert touched == [], touched


def test_nothing_is_unpickled():
    """Static check of every module of the package: no pickle-family imports or loads, np.load only with
    allow_pickle=False, torch.load only with weights_only=True."""
    banned_modules = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "joblib", "cloudpickle"}
    problems = []
    files = [p for d in ("common", "server", "device") for p in (REPO / d).rglob("*.py")
             if "proto" not in p.relative_to(REPO).parts]
    assert len(files) > 30
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                problems += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in banned_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
                problems.append(f"{where}: from {node.module} import")
            elif isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
                kw = {k.arg: k.value for k in node.keywords}
                if name == "load" and owner in ("np", "numpy"):
                    v = kw.get("allow_pickle")
                    if not (isinstance(v, ast.Constant) and v.value is False):
                        problems.append(f"{where}: np.load without allow_pickle=False")
                if name == "load" and owner == "torch":
                    v = kw.get("weights_only")
                    if not (isinstance(v, ast.Constant) and v.value is True):
                        problems.append(f"{where}: torch.load without weights_only=True")
                if name in ("loads", "Unpickler") and owner in banned_modules:
                    problems.append(f"{where}: {owner}.{name}")
    assert not problems, problems


def test_concurrent_stream_limit_and_idle_streams(limited_server):
    """--max-streams 2: a third stream is refused while two are open, served once one closes;
    --stream-idle-s: a stream that sends nothing is cancelled and its slot freed."""
    stubs = Stubs(limited_server.address)
    opened = []
    try:
        for _ in range(2):
            q: queue.Queue = queue.Queue()
            q.put(setup_msg(120, codec="zstd"))
            replies = stubs.stream(iter(q.get, None), timeout=60)
            assert next(replies).WhichOneof("kind") == "session"
            opened.append((q, replies))
        code, details, _ = stream_status(stubs, [setup_msg(120, codec="zstd")])
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 2 concurrent streams" in details, details
        # unary calls and listing are not streams: still served
        assert stubs.list(pb.ListModelsRequest(), timeout=10).models
        # the two open streams say nothing: after 1.5 s of silence the server cancels them
        t0 = time.monotonic()
        for q, replies in opened:
            with pytest.raises(grpc.RpcError) as info:
                next(replies)
            assert info.value.code() == grpc.StatusCode.CANCELLED
        assert time.monotonic() - t0 < 10
        frame = real_frame(120)
        code, details, replies = stream_status(stubs, [setup_msg(120, codec="zstd"),
                                                       *frame.messages(1, get_codec("zstd"))])
        assert code == grpc.StatusCode.OK, details  # the slots are free again
        # a stream that keeps sending is never idle, however long it lives
        q = queue.Queue()
        q.put(setup_msg(120, codec="zstd"))
        replies = stubs.stream(iter(q.get, None), timeout=60)
        next(replies)
        for k in range(1, 5):
            time.sleep(0.8)
            for m in frame.messages(k, get_codec("zstd")):
                q.put(m)
            assert next(replies).result.frame_id == k
        q.put(None)
        assert list(replies) == []
    finally:
        for q, _ in opened:
            q.put(None)
        stubs.close()


def test_message_size_limit_is_the_servers(limited_server):
    """Default 4 MiB: a bigger message is refused by gRPC itself before any parsing."""
    stubs = Stubs(limited_server.address)
    try:
        big = wire.frame_messages(1, [wire.encode_tensor("x", np.zeros(5 << 18, "float32"), get_codec("none"))], max_message_bytes=64 << 20)
        code, details, _ = stream_status(stubs, [setup_msg(60), *big])
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details
    finally:
        stubs.close()


def test_tls_server_name_when_the_certificate_names_another_host(tmp_path):
    """A certificate for `net-host` only: reached by IP, the UE needs --tls-server-name (else the handshake
    fails, quickly and in one line)."""
    other = make_test_pki(tmp_path / "pki", hosts=("net-host",), name="named")
    srv = _server("--tls-cert", str(other["server_cert"]), "--tls-key", str(other["server_key"]))
    try:
        addr = f"127.0.0.1:{srv.port}"
        r = _device(addr, tmp_path / "named", "--tls-ca", str(other["ca"]), "--tls-server-name", "net-host")
        assert r.returncode == 0, r.stderr[-2000:]
        r = _device(addr, tmp_path / "unnamed", "--tls-ca", str(other["ca"]))
        assert r.returncode == 2 and "TLS handshake failed" in r.stderr.strip().splitlines()[-1], r.stderr[-1500:]
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("sent,admitted", [
    (f"Bearer {TOKEN}", True), (f"Bearer {TOKEN}x", False), (f"Bearer {TOKEN}{TOKEN}", False),
    (f"Bearer {TOKEN[:-1]}", False), ("Bearer ", False), ("", False), (TOKEN, False), (f"bearer {TOKEN}", False),
    (f"Bearer {TOKEN}\x00", False),
])
def test_the_token_is_compared_whole(sent, admitted):
    """Not a prefix, not a longer string that starts with it: only the exact `Bearer <token>` passes."""
    from collections import namedtuple

    from splitinfer.common.transport.security import token_interceptor

    Details = namedtuple("Details", "method invocation_metadata")
    handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"")
    refusals = []
    interceptor = token_interceptor(TOKEN, on_refuse=lambda: refusals.append(1))
    metadata = (("authorization", sent),) if sent else ()
    got = interceptor.intercept_service(lambda d: handler, Details("/splitinfer.v1.SplitInference/Infer", metadata))
    assert (got is handler) == admitted and len(refusals) == (0 if admitted else 1)
    health = interceptor.intercept_service(lambda d: handler, Details("/grpc.health.v1.Health/Check", metadata))
    assert health is handler  # health checks never need the token
