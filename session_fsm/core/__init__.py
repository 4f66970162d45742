"""The sans-IO core of a session: every decision, no I/O.

It reads the transition table (:mod:`session_fsm.table`, the one statement of the states,
edges and guards, which the diagrams, error hints, docs and the tests' oracle read too).

- :mod:`~session_fsm.core.snapshot`: the one immutable value that is the session's state;
- :mod:`~session_fsm.core.calls`: the four session calls and their answers, as data;
- :mod:`~session_fsm.core.effects`: what a flow asks its driver to do;
- :mod:`~session_fsm.core.machine`: the ``transitions`` machine and the guards;
- :mod:`~session_fsm.core.engine`: the session's core object and the flow of one edge;
- :mod:`~session_fsm.core.edges`: each edge's call, as a flow;
- :mod:`~session_fsm.core.connect`: the walk to Authenticated, the public triggers;
- :mod:`~session_fsm.core.gateway`: the Bearer token's refresh (single flight);
- :mod:`~session_fsm.core.relogin`: readiness, renewal, the proactive refresh, a request's
  rejection and replay.

No module here imports ``requests``, ``urllib3``, ``threading`` or ``asyncio``, or any driver.
"""
