"""Long-running work (RL training, walk-forward training) as jobs: submitted, polled, cancelled.

* :mod:`~quantcrew.ml_server.jobs.context`: what a running job sees (:class:`JobContext`:
  progress reports, the cancel flag) and :class:`JobCancelled`;
* :mod:`~quantcrew.ml_server.jobs.manager`: :class:`JobManager`, the worker threads and the
  calls that submit, read, cancel and wait for jobs;
* :mod:`~quantcrew.ml_server.jobs.store`: the ``jobs`` table of the registry's SQLite file;
* :mod:`~quantcrew.ml_server.jobs.jsonable`: plain JSON out of numpy values, times and NaN.
"""

from quantcrew.ml_server.jobs.context import REPORT_INTERVAL_S, JobCancelled, JobContext, JobFn
from quantcrew.ml_server.jobs.manager import INTERRUPTED_MESSAGE, JobManager

__all__ = ["INTERRUPTED_MESSAGE", "REPORT_INTERVAL_S", "JobCancelled", "JobContext", "JobFn", "JobManager"]
