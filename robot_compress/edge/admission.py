"""Which calls get served: decided from the call's headers, before any message is read.

A call that fails the token check is answered UNAUTHENTICATED at once, without reading its
message. A call that passes must deliver its request message within the receive timeout, or it
ends with DEADLINE_EXCEEDED. Waiting for a message costs the asyncio server a coroutine, not a
thread or a slot of --max-concurrent-rpcs, so clients that open calls and never send anything
cannot lock others out; the per-connection stream limit (a server option) bounds them further.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import inspect
import logging

import grpc

from robot_compress.edge.logfmt import Throttle, clean

log = logging.getLogger("robot_compress.edge")

HEALTH_PREFIX = "/grpc.health.v1.Health/"  # probes (Kubernetes, load balancers) carry no token


class CallAdmission(grpc.aio.ServerInterceptor):
    """Token check (if a token is set) and a receive deadline for every call with a request message."""

    def __init__(self, token: str | None, receive_timeout_s: float, throttle: Throttle):
        self._expected = f"Bearer {token}".encode() if token else None
        self.receive_timeout_s = receive_timeout_s
        self.throttle = throttle
        self.counts: collections.Counter[str] = collections.Counter()  # unauthenticated, receive_timeout

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        if self._expected is not None and not method.startswith(HEALTH_PREFIX) \
                and not self._authenticated(handler_call_details.invocation_metadata):
            self._count("unauthenticated", method)
            return grpc.stream_unary_rpc_method_handler(_deny)
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        return self._with_receive_deadline(handler, method)

    def _authenticated(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value if isinstance(value, bytes) else str(value).encode()
                return hmac.compare_digest(given, self._expected)
        return False

    def _count(self, event: str, method: str) -> None:
        self.counts[event] += 1
        dropped = self.throttle.admit(event)
        if dropped is not None:
            log.warning("event=%s method=%s total=%d dropped_since_last=%d", event, clean(method),
                        self.counts[event], dropped)

    def _with_receive_deadline(self, handler, method: str):
        """The same method, registered as client-streaming so that its one request message is
        read here, with a timeout, instead of by gRPC without one."""
        inner = handler.unary_unary or handler.unary_stream
        timeout = self.receive_timeout_s

        async def receive(context):
            try:
                request = await asyncio.wait_for(context.read(), timeout)
            except asyncio.TimeoutError:
                self._count("receive_timeout", method)
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"no request message within {timeout:g} s of the call's headers")
            if request is grpc.aio.EOF:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
            return request

        if handler.unary_unary is not None:
            async def unary(request_iterator, context):
                return await _call(inner, await receive(context), context)

            return grpc.stream_unary_rpc_method_handler(unary, request_deserializer=handler.request_deserializer,
                                                        response_serializer=handler.response_serializer)

        async def streaming(request_iterator, context):
            result = inner(await receive(context), context)
            if inspect.isasyncgen(result):
                async for response in result:
                    await context.write(response)
            elif inspect.isawaitable(result):
                await result  # writes its responses itself (grpc_health's Watch)

        return grpc.stream_stream_rpc_method_handler(streaming, request_deserializer=handler.request_deserializer,
                                                     response_serializer=handler.response_serializer)


async def _call(behavior, request, context):
    result = behavior(request, context)
    return await result if inspect.isawaitable(result) else result


async def _deny(request_iterator, context):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                        "missing or wrong bearer token (metadata 'authorization: Bearer <token>')")
