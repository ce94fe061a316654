#!/usr/bin/env python3
"""A grpcio (Python) client of tracecheck's own gRPC API, run by
tests/grpc_api.rs against a live daemon: it proves the API works for a
client that knows only the .proto files (stubs generated here, at run time,
with grpc_tools.protoc).

    grpc_api_client.py api ADDR --otlp FILE --models-yaml FILE --watch-count N
    grpc_api_client.py reflection ADDR

`api`: ModelService.List, VerdictService.Evaluate (loaded models and inline
YAML) on an encoded ExportTraceServiceRequest, then Watch(verdicts=[FAIL]):
prints the line WATCHING once the server has answered the call's headers
(the watcher is subscribed), reads N verdicts and prints one JSON object.

`reflection`: gRPC health Check (raw bytes; needs no extra package) and,
when grpcio-reflection is installed, the services listed by reflection.

The last line of stdout is always one JSON object; errors are reported in
it as {"error": ...} with exit code 1.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import grpc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Loopback only: never through an HTTP proxy from the environment.
OPTIONS = [("grpc.enable_http_proxy", 0)]


def generate_stubs():
    out = tempfile.mkdtemp(prefix="tracecheck-py-stubs-")
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        "-I", os.path.join(REPO, "proto"),
        "--python_out=" + out, "--grpc_python_out=" + out,
        "tracecheck/v1/verdicts.proto", "tracecheck/v1/models.proto",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("protoc failed: " + done.stderr)
    sys.path.insert(0, out)
    from tracecheck.v1 import models_pb2, models_pb2_grpc, verdicts_pb2, verdicts_pb2_grpc
    return models_pb2, models_pb2_grpc, verdicts_pb2, verdicts_pb2_grpc


def verdict_json(pb, v):
    return {
        "trace_id": v.trace_id,
        "model": v.model,
        "verdict": pb.VerdictKind.Name(v.verdict),
        "failures": [f.spec for f in v.failures],
        "labels": dict(v.labels),
        "missed_before": v.missed_before,
        "completion_reason": v.completion_reason,
        "skip_reason": v.skip_reason,
    }


def api(args):
    models_pb2, models_grpc, pb, verdicts_grpc = generate_stubs()
    channel = grpc.insecure_channel(args.addr, options=OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=10)
    models = models_grpc.ModelServiceStub(channel)
    verdicts = verdicts_grpc.VerdictServiceStub(channel)
    out = {}

    listed = models.List(models_pb2.ListModelsRequest(), timeout=10)
    out["list"] = [
        {"id": m.id, "name": m.name, "labels": dict(m.labels), "file": m.file,
         "within": m.within}
        for m in listed.models
    ]

    otlp = open(args.otlp, "rb").read()
    loaded = verdicts.Evaluate(pb.EvaluateRequest(otlp_request=otlp), timeout=10)
    out["evaluate_loaded"] = [verdict_json(pb, v) for v in loaded.verdicts]
    yaml = open(args.models_yaml, encoding="utf-8").read()
    inline = verdicts.Evaluate(
        pb.EvaluateRequest(otlp_request=otlp, models_yaml=yaml), timeout=10)
    out["evaluate_inline"] = [verdict_json(pb, v) for v in inline.verdicts]
    try:
        verdicts.Evaluate(pb.EvaluateRequest(otlp_request=b"\xff\xff\xff"), timeout=10)
        out["evaluate_garbage"] = "OK"
    except grpc.RpcError as e:
        out["evaluate_garbage"] = e.code().name

    call = verdicts.Watch(
        pb.WatchRequest(verdicts=[pb.VERDICT_KIND_FAIL]), timeout=args.watch_timeout)
    # Headers come once the server has subscribed this watcher.
    call.initial_metadata()
    print("WATCHING", flush=True)
    watched = []
    try:
        for v in call:
            watched.append(verdict_json(pb, v))
            if len(watched) >= args.watch_count:
                break
    except grpc.RpcError as e:
        out["watch_error"] = e.code().name
    call.cancel()
    out["watch"] = watched
    channel.close()
    return out


def reflection(args):
    channel = grpc.insecure_channel(args.addr, options=OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=10)
    out = {}
    # grpc.health.v1.Health/Check with raw protobuf: HealthCheckRequest{}
    # is empty; HealthCheckResponse{status: SERVING} is 08 01.
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    try:
        answer = check(b"", timeout=10)
        out["health"] = "SERVING" if answer == b"\x08\x01" else "raw:" + answer.hex()
    except grpc.RpcError as e:
        out["health"] = "error:" + e.code().name
    try:
        from google.protobuf.descriptor_pool import DescriptorPool
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )
    except ImportError:
        out["reflection"] = "not installed"
    else:
        try:
            db = ProtoReflectionDescriptorDatabase(channel)
            out["reflection_services"] = sorted(db.get_services())
            pool = DescriptorPool(db)
            svc = pool.FindServiceByName("tracecheck.v1.VerdictService")
            out["reflection_methods"] = sorted(m.name for m in svc.methods)
            out["reflection"] = "ok"
        except grpc.RpcError as e:
            out["reflection"] = "error:" + e.code().name
    channel.close()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["api", "reflection"])
    parser.add_argument("addr")
    parser.add_argument("--otlp")
    parser.add_argument("--models-yaml")
    parser.add_argument("--watch-count", type=int, default=1)
    parser.add_argument("--watch-timeout", type=float, default=20.0)
    args = parser.parse_args()
    started = time.monotonic()
    try:
        out = api(args) if args.mode == "api" else reflection(args)
    except Exception as e:  # reported to the Rust test, which fails on it
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)
        return 1
    out["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
