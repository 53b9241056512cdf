"""IPython kernel configuration for the book's environment (make copies it to .venv/etc/ipython).

Every kernel started from the environment's Python reads it: the chapters' kernels during
``make book``, the Colab-like runs of ``make test`` and JupyterLab's (``make lab``).

The kernels run on this machine, reached over the loopback interface, where ipykernel logs
"Kernel is running over TCP without encryption" once per kernel (nine times per build). That
one notice is dropped; every other message of the kernel is kept.
"""

import logging


class _DropPlainTcpNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "running over TCP without encryption" not in record.getMessage()


logging.getLogger("IPKernelApp").addFilter(_DropPlainTcpNotice())
