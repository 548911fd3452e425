"""Code that runs in every emitting process: the queue handler and ``init_worker``."""
