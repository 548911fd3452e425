"""A script with a multiprocessing pool and no initializer: run under ``forklog run`` (issue 24).

``python run_pool_script.py METHOD JOBS RECORDS [STATUS]``: the main process
logs one record, a pool of 3 under the start method ``METHOD`` runs ``JOBS``
jobs of ``RECORDS`` records each (``job J record I``), and the script exits
with ``STATUS``. It configures no logging: its records go to the hub's sinks.
"""

import logging
import multiprocessing
import os
import sys


def job(number: int, records: int) -> int:
    log = logging.getLogger("job")
    for i in range(records):
        log.info("job %d record %d pid %d", number, i, os.getpid())
    return number


if __name__ == "__main__":
    method, jobs, records = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    logging.getLogger("main").warning("main pid %d", os.getpid())
    with multiprocessing.get_context(method).Pool(3) as pool:
        pool.starmap(job, [(n, records) for n in range(jobs)])
    sys.exit(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
