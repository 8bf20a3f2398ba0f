"""{{name}}: every eligible node, least loaded first (the model's warmth counted in), ties
broken by measured tokens/s, then by name. Change `decide`; the helpers are in
switchyard_policy.py (the same ones the Rust SDK has)."""

from switchyard_policy import effective_load, ineligibility, load_delay_ms, no_capacity, route, serve


class Policy:
    def configure(self, params: str) -> None:
        """The policy file's [stage.params], as JSON; raise to refuse them."""
        if params not in ("", "{}"):
            raise ValueError(f"this policy takes no params, got {params}")

    def decide(self, req, candidates):
        eligible = [c for c in candidates if ineligibility(c, req) is None]
        if not eligible:
            return no_capacity(req, candidates)
        eligible.sort(key=lambda c: (effective_load(c), -(c.node.tokens_per_sec or 0.0), c.name))
        best = eligible[0]
        delay = load_delay_ms(best)
        warmth = f", must load the model first (about {delay / 1000:.1f} s)" if delay else ""
        reason = f"least loaded: {best.name} at {best.in_flight + best.queued}/{best.max_concurrency}{warmth}"
        return route(eligible, reason)


WitWorld = serve(Policy)
