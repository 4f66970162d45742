"""The asyncio side of session_fsm: drivers that perform, with ``await``, the I/O the shared
decisions ask for. Needs the ``async`` extra (``pip install session_fsm[async]``).

- :mod:`session_fsm.aio.wire`: :class:`~session_fsm.aio.wire.AsyncWire`, the pooled transport;
- :mod:`session_fsm.aio.stores` and :mod:`session_fsm.aio.redis_store`: the async token stores
  (memory, file, Redis), sharing records, keys and locks with the sync stores.
"""
