"""The gRPC server: one in each gunicorn worker, all on ``GRPC_PORT``, serving the worker's own app.

**Process model** (docs/ARCHITECTURE.md). gunicorn's ``post_worker_init`` hook calls ``start``
in every worker after the fork; each worker's server binds ``GRPC_PORT`` with ``SO_REUSEPORT``
(gRPC's default on Linux), and the kernel spreads new connections over the workers as it spreads
nothing for HTTP (there the master's one socket is shared). So the gRPC server is not a second
program with a second loader: it reads the same ``ServiceState`` as the worker's HTTP requests,
which the worker's ``ModelWatcher`` swaps on reload, counts into the same metrics and logs
through the same logger. gunicorn's supervision covers it for free: a crashed worker, gRPC
server included, is restarted by the master; SIGHUP starts new workers (new servers) before the
old ones go; SIGTERM reaches every worker, whose ``worker_exit`` hook calls ``stop``: health
says NOT_SERVING, the port closes to new calls, calls in flight get ``grace`` seconds; when the
last worker has exited, the port is closed. The master never imports gRPC (gRPC must not be
running when a process forks); ``gunicorn.conf.py`` only checks that the port is free.

**Every RPC** of ``inference.GRPCInferenceService`` goes through ``_rpc``, gRPC's counterpart
of ``service.metrics.RequestBookkeeping`` and ``service.auth``: the request id from
``x-request-id`` metadata (or a fresh one; sent back in the trailing metadata), the bearer
token from ``authorization`` metadata for every RPC but the health ones (as over REST), the
adapter's errors as status codes, ``digits_grpc_requests_total`` and
``digits_grpc_request_duration_seconds`` in /metrics, and an access log line (``ACCESS_LOG=1``)
in the same JSON as HTTP's. Messages over ``MAX_REQUEST_BYTES`` are refused by gRPC itself
with RESOURCE_EXHAUSTED before any of this runs.

Also served: ``grpc.health.v1.Health`` (SERVING while the default model is ready and the worker
is not stopping; service names ``""`` and ``inference.GRPCInferenceService``) and server
reflection (``grpcurl list``, ``describe``), both open.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Any

import grpc
from flask import Flask
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service import grpc_v2
from service.auth import bearer_problem, token_digest
from service.errors import APIError
from service.logs import RPC_REQUEST_ID, access_line, dumps
from service.metrics import count_rpc, request_id_from
from service.proto import open_inference_pb2 as pb
from service.settings import Settings
from service.state import state_of

log = logging.getLogger(__name__)
access_log = logging.getLogger("gunicorn.access")

SERVICE = "inference.GRPCInferenceService"
REQUEST_ID_KEY = "x-request-id"
AUTHORIZATION_KEY = "authorization"
#: Threads per worker that run RPCs. The work is CPU-bound under one GIL, so more threads add
#: no throughput; a few let quick calls (health, metadata) pass a long one (an explanation).
#: gRPC reads whole messages in its own C threads first, so a slow client holds none of them.
THREADS = 4
#: HTTP status of a domain error -> its gRPC status (Google's API design guide's table; 413,
#: a body over a limit, as RESOURCE_EXHAUSTED, which gRPC itself uses for messages too large).
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
#: Codes after which the request's model name is one the server knows (a metrics label).
_NAMED = frozenset({grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})


# Reflection answers from the protocol's own descriptor pool (service/proto/generate.py says
# why it is not protobuf's default one), so the standard services' files go in there too.
for _file in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
    pb.POOL.AddSerializedFile(_file.serialized_pb)


class Unauthenticated(APIError):
    status = 401
    code = "unauthorized"


class GrpcServer:
    """The gRPC server of one worker, over the worker's Flask ``app`` (its state and settings)."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.address = f"{_host(settings.host)}:{settings.grpc_port}"
        self._expected = None if settings.token is None else token_digest(settings.token)
        self.health = health.HealthServicer()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.so_reuseport", 1),  # every worker on the one port (the default, said)
            ],
        )
        handlers = {
            method: grpc.unary_unary_rpc_method_handler(
                self._rpc(method, rpc, open_access),
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )
            for method, (rpc, request_type, response_type, open_access) in grpc_v2.RPCS.items()
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server, pool=pb.POOL
        )

    def start(self) -> None:
        """Bind and serve; ``RuntimeError`` naming the address if the port cannot be bound."""
        try:
            self.server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise RuntimeError(f"GRPC_PORT: cannot listen on {self.address} ({exc})") from None
        self.server.start()
        status = health_pb2.HealthCheckResponse.SERVING
        if not state_of(self.app).ready:  # (the default model never goes once loaded)
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE):
            self.health.set(service, status)
        log.info("gRPC listening", extra={"event": "grpc_listening", "address": self.address})

    def stop(self, grace: float) -> None:
        """Health NOT_SERVING, no new calls, ``grace`` seconds for the calls in flight."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def _rpc(self, method: str, rpc: Any, open_access: bool) -> Any:
        """``rpc(state, request)`` as a gRPC handler, with everything every RPC shares."""
        expected = None if open_access else self._expected
        app = self.app
        logging_access = self.settings.access_log
        path = f"/{SERVICE}/{method}"

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            request_id = authorization = None
            for key, value in context.invocation_metadata():
                if key == REQUEST_ID_KEY:
                    request_id = value
                elif key == AUTHORIZATION_KEY:
                    authorization = value
            request_id = request_id_from(request_id)
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            reset = RPC_REQUEST_ID.set(request_id)
            code = grpc.StatusCode.OK
            message = ""
            response = None
            try:
                if expected is not None:
                    problem = bearer_problem(authorization, expected)
                    if problem is not None:
                        raise Unauthenticated(problem)
                response = rpc(state_of(app), request)
                return response
            except APIError as exc:
                code = STATUS_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
                message = exc.message
            except Exception:
                log.exception("unhandled error", extra={"event": "grpc_error", "method": method})
                code = grpc.StatusCode.INTERNAL
                message = f"internal error (request id {request_id}); the server's log has the details"
            finally:
                seconds = time.perf_counter() - started
                name = getattr(request, "model_name", None) or getattr(request, "name", "")
                model = str(name) if code in _NAMED else ""
                count_rpc(method, model, code.name, seconds)
                if logging_access:
                    version = getattr(response, "model_version", None) or None
                    line = access_line(request_id, path, code.name, seconds, model or None, version)
                    line.update(method="gRPC", remote_addr=context.peer())
                    access_log.info(dumps(line))
                RPC_REQUEST_ID.reset(reset)
            context.abort(code, message)

        return handle


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


#: This worker's server (``start`` / ``stop``: gunicorn's hooks).
_server: GrpcServer | None = None


def start(app: Any, settings: Settings) -> None:
    """gunicorn's ``post_worker_init``: serve gRPC in this worker, if ``GRPC_PORT`` is set."""
    global _server
    if not settings.grpc_port or not isinstance(app, Flask):
        return
    server = GrpcServer(app, settings)
    server.start()
    _server = server


def stop(grace: float) -> None:
    """gunicorn's ``worker_exit``: drain and close this worker's gRPC server."""
    global _server
    if _server is not None:
        _server.stop(grace)
        _server = None
