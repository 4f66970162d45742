"""The sync driver: performs the core's effects with ``requests`` and ``threading``, and the
public :class:`~session_fsm.sync.session.KSSession` on top of it."""
