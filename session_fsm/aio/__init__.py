"""The asyncio side of session_fsm: drivers that perform, with ``await``, the I/O the shared
decisions ask for. Needs the ``async`` extra (``pip install session_fsm[async]``).

- :mod:`session_fsm.aio.wire`: :class:`~session_fsm.aio.wire.AsyncWire`, the pooled transport.
"""
