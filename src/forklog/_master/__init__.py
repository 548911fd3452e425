"""Code that runs in the master (or a pool's parent): the hub, its threads, its reports."""
