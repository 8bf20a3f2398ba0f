"""least-loaded, in Python: every eligible node ordered by its load with the model's warmth
counted in, ties broken by measured tokens/s (faster first), then by name. No params.
The same rule as the shipped Rust `least-loaded` (plugins/least-loaded), for its fixtures."""

from switchyard_policy import effective_load, ineligibility, load_delay_ms, no_capacity, route, serve


class LeastLoaded:
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


WitWorld = serve(LeastLoaded)
