"""service/proto: the generated module is current, and the messages are the protocol's wire
format: every field of ours has the number, type and label of the same field in Triton's and
KServe's own generated modules (each read in a process of its own: the two packages register
the same protobuf names, so they cannot share a process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from google.protobuf.descriptor import Descriptor

from service.proto import generate
from service.proto import open_inference_pb2 as pb

pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed (pip install -e '.[dev]')")

#: Prints {message: {field: [number, type, label]}} of a client package's generated module.
_DUMP = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
def fields(d, prefix=""):
    out = {prefix + d.name: {f.name: [f.number, f.type, f.label] for f in d.fields}}
    for nested in d.nested_types:
        out.update(fields(nested, prefix + d.name + "."))
    return out
found = {}
for d in module.DESCRIPTOR.message_types_by_name.values():
    found.update(fields(d))
methods = {m.name: [m.input_type.full_name, m.output_type.full_name]
           for m in module.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
print(json.dumps({"messages": found, "methods": methods}))
"""


def ours() -> dict[str, dict[str, list[int]]]:
    def fields(d: Descriptor, prefix: str = "") -> dict[str, dict[str, list[int]]]:
        out = {prefix + d.name: {f.name: [f.number, f.type, f.label] for f in d.fields}}
        for nested in d.nested_types:
            out.update(fields(nested, prefix + d.name + "."))
        return out

    found: dict[str, dict[str, list[int]]] = {}
    for d in pb.DESCRIPTOR.message_types_by_name.values():
        found.update(fields(d))
    return found


def test_the_generated_module_is_current() -> None:
    assert generate.main(["--check"]) == 0, "run: python -m service.proto.generate"


@pytest.mark.parametrize(
    ("module", "complete"),
    [
        ("tritonclient.grpc.service_pb2", True),
        # KServe's InferParameter predates double_param and uint64_param: the rest must agree
        ("kserve.protocol.grpc.grpc_predict_v2_pb2", False),
    ],
)
def test_the_messages_match_the_clients(module: str, complete: bool) -> None:
    pytest.importorskip(module.split(".")[0])
    run = subprocess.run([sys.executable, "-c", _DUMP, module], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    theirs = json.loads(run.stdout)
    for message, fields in ours().items():
        if message.endswith("Entry"):  # map entries: compared through their map fields
            continue
        assert message in theirs["messages"], message
        for name, spec in fields.items():
            if complete or name in theirs["messages"][message]:
                assert theirs["messages"][message].get(name) == spec, f"{message}.{name}"
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        assert theirs["methods"][method.name] == [method.input_type.full_name, method.output_type.full_name]
