"""Helpers for Switchyard routing policies written in Python (componentize-py).

A policy is one class with a `decide(req, candidates)` method (and, if it takes params, a
`configure(params)` method); `serve(PolicyClass)` turns it into the component's exports.
The candidates come as `Candidate` objects: the node, its variant of the requested model,
its live load and how many of the prompt's tokens it is estimated to hold already. The
helpers are the Rust SDK's (`switchyard-policy-sdk`), with the same names and results:
`ineligibility`, `load_ratio`, `load_delay_ms`, `effective_load`, `no_capacity`, `route`.

Contract: switchyard:policy@0.4.0 (`wit/policy.wit`).
"""

import json
import struct
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from componentize_py_types import Err
from wit_world.imports import host, types

# Targets worth returning: the first is the choice, the rest are retries before the first
# byte (the host refuses more than 64).
MAX_TARGETS = 8

# The load delay assumed for a cold model that was never measured.
UNMEASURED_LOAD_MS = 30_000


def f32(x: float) -> float:
    """`x` rounded to a 32-bit float, as the Rust SDK computes loads: orderings and ties come
    out as the Rust policy's exactly."""
    return struct.unpack("f", struct.pack("f", x))[0]


@dataclass
class Candidate:
    """One node that serves the requested model, as one `route` call sees it."""

    index: int
    node: types.Node
    variant: types.ModelVariant
    in_flight: int
    queued: int
    cached_tokens: int

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def max_concurrency(self) -> int:
        return self.node.max_concurrency


def ineligibility(c: Candidate, req: types.Request) -> Optional[str]:
    """Why `c` cannot take `req` at all (`None`: it can)."""
    if not c.node.healthy:
        return "offline"
    if req.max_tokens is not None:
        if req.max_tokens > c.node.max_tokens:
            return "max_tokens above the node's limit"
        if req.prompt_tokens + req.max_tokens > c.variant.context_length:
            return "prompt + max_tokens exceed the context length"
    elif req.prompt_tokens > c.variant.context_length:
        return "prompt exceeds the context length"
    return None


def load_ratio(c: Candidate) -> float:
    """`in-flight + queued` relative to `max-concurrency` (an f32, as in Rust)."""
    return f32(f32(c.in_flight + c.queued) / f32(max(c.node.max_concurrency, 1)))


def load_delay_ms(c: Candidate) -> int:
    """How long the node needs to load the model first (0 when it is resident)."""
    if c.variant.loaded:
        return 0
    return c.variant.load_ms if c.variant.load_ms is not None else UNMEASURED_LOAD_MS


def effective_load(c: Candidate) -> float:
    """`load_ratio` with the model's warmth counted in: a node that must load the model first
    counts a quarter node more, plus a full node per 10 s of estimated load time (an f32)."""
    delay = load_delay_ms(c)
    cold = f32(0.25 + f32(f32(delay) / 10_000.0)) if delay > 0 else 0.0
    return f32(load_ratio(c) + cold)


def route(targets: Sequence[Candidate], reason: str, wait_for_first: bool = False) -> types.Decision:
    """Send the request to `targets` in order (at most `MAX_TARGETS` are kept)."""
    return types.Decision_Route(
        types.Route(
            targets=[c.index for c in list(targets)[:MAX_TARGETS]],
            reason=reason,
            wait_for_first=wait_for_first,
        )
    )


def reject(status: int, message: str) -> types.Decision:
    """Refuse the request with an HTTP status and a message for the client."""
    return types.Decision_Reject(types.Reject(status=status, message=message))


def no_capacity(req: types.Request, candidates: Sequence[Candidate]) -> types.Decision:
    """404 when no node serves the model at all, 503 when some do but none can take it now."""
    if candidates:
        return reject(503, f"no healthy node can serve model '{req.model}' right now")
    return reject(404, f"model '{req.model}' is not served by any node")


def log(message: str) -> None:
    """One line in the controller's log, tagged with the policy."""
    host.log(host.LogLevel.INFO, message)


def decode_params(params: str, known: Sequence[str]) -> dict:
    """The policy's `[params]` as a dict; an unknown key is refused by name."""
    decoded = json.loads(params) if params else {}
    unknown = sorted(set(decoded) - set(known))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; known: {', '.join(known) or 'none'}")
    return decoded


def serve(policy_class: Callable[[], object]):
    """The component's exports (the `WitWorld` class componentize-py looks for) around
    `policy_class`: `configure` builds one policy instance from the params, `set-cluster`
    keeps the cluster, and `route` hands `decide` the candidates as `Candidate` objects."""

    class WitWorld:
        policy = None
        nodes: List[types.Node] = []

        def configure(self, params: str) -> None:
            try:
                policy = policy_class()
                configure = getattr(policy, "configure", None)
                if configure is not None:
                    configure(params)
                elif params not in ("", "{}"):
                    decode_params(params, [])
            except Exception as error:  # the host shows the message to the operator
                raise Err(str(error))
            WitWorld.policy = policy

        def set_cluster(self, version: int, nodes: List[types.Node]) -> None:
            WitWorld.nodes = nodes

        def route(self, req: types.Request, candidates: List[int]) -> types.Decision:
            nodes = WitWorld.nodes
            views = []
            for i in range(len(candidates) // 5):
                n, v, in_flight, queued, cached = candidates[5 * i : 5 * i + 5]
                node = nodes[n]
                views.append(Candidate(i, node, node.models[v], in_flight, queued, cached))
            return WitWorld.policy.decide(req, views)

    return WitWorld
