"""A hostile Python policy, for the tests that prove the sandbox contains interpreted
policies as it contains compiled ones. `[stage.params] mode` picks the misbehaviour
(`raise`, `spin`, `allocate`, `print`); it happens only on requests tagged
`hostile = "go"`. Every other request goes to the first eligible candidate."""

import json

from switchyard_policy import ineligibility, no_capacity, route, serve


class Hostile:
    mode = "raise"

    def configure(self, params: str) -> None:
        mode = json.loads(params or "{}").get("mode", "raise")
        if mode not in ("raise", "spin", "allocate", "print"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode

    def decide(self, req, candidates):
        if ("hostile", "go") in req.tags:
            self.misbehave()
        eligible = [c for c in candidates if ineligibility(c, req) is None]
        if not eligible:
            return no_capacity(req, candidates)
        return route(eligible[:1], f"hostile ({self.mode}) behaving: {eligible[0].name}")

    def misbehave(self):
        if self.mode == "raise":
            raise RuntimeError("a Python policy that raises")
        if self.mode == "spin":
            while True:
                pass
        if self.mode == "allocate":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if self.mode == "print":
            while True:
                print("a Python policy that prints without end")


WitWorld = serve(Hostile)
