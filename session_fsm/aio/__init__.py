"""The asyncio side of session_fsm: async token stores and the async session driver."""
