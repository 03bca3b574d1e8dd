"""Run one notebook in a fresh kernel and log what happened; started by the grader, one per submission.

``python -m ktlab.grading.runner NOTEBOOK STATUS_FILE --cell-timeout S [--executed OUT.ipynb]``

It runs in its own session inside a temporary copy of the submission's folder. Every event
(kernel pid, cell start, cell error, the end) is appended to ``STATUS_FILE`` as one JSON line
and flushed at once, so the grader can tell what happened even when this process or the kernel
is killed. Errors in cells do not stop the run (later tasks are still graded); a cell that runs
past ``--cell-timeout`` is interrupted and recorded as an error; captured output is capped.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any, Callable, Dict, Optional

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from ktlab.grading.registry import RESULT_MIME

#: Captured output kept per cell and per notebook (characters); the rest is dropped.
CELL_OUTPUT_CAP = 20_000
NOTEBOOK_OUTPUT_CAP = 500_000


class _Log:
    def __init__(self, path: str) -> None:
        self.fh = open(path, "a", encoding="utf-8")

    def __call__(self, event: str, **data: Any) -> None:
        self.fh.write(json.dumps({"event": event, **data}) + "\n")
        self.fh.flush()


class CappedClient(NotebookClient):
    """A NotebookClient that keeps at most ``CELL_OUTPUT_CAP`` characters of output per cell."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._used: Dict[int, int] = {}
        self._total = 0
        self.log_event: Optional[Callable[..., None]] = None

    def output(self, outs, msg, display_id, cell_index):  # type: ignore[override]
        data = msg.get("content", {}).get("data")
        if isinstance(data, dict) and RESULT_MIME in data:  # a check() result: log, do not show
            if self.log_event is not None:
                self.log_event("result", result=data[RESULT_MIME])
            return None
        n_before = len(outs)
        out = super().output(outs, msg, display_id, cell_index)
        if out is None or len(outs) == n_before:
            return out
        size = len(json.dumps(out.get("text") or out.get("data") or out.get("traceback") or ""))
        used = self._used.get(cell_index, 0)
        room = min(CELL_OUTPUT_CAP - used, NOTEBOOK_OUTPUT_CAP - self._total)
        if size > room:
            outs.pop()
            if room > 0 and out.get("output_type") == "stream":
                out["text"] = out["text"][:room] + "\n[... output truncated by ktlab grade ...]\n"
                outs.append(out)
            size = max(room, 0)
            room = 0
            self._used[cell_index] = CELL_OUTPUT_CAP  # nothing more for this cell
        else:
            self._used[cell_index] = used + size
        self._total += size
        return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("notebook")
    p.add_argument("status")
    p.add_argument("--cell-timeout", type=int, default=120)
    p.add_argument("--startup-timeout", type=int, default=60)
    p.add_argument("--executed", default=None)
    args = p.parse_args(argv)
    log = _Log(args.status)
    nb = nbformat.read(args.notebook, as_version=4)
    client = CappedClient(
        nb, timeout=args.cell_timeout, startup_timeout=args.startup_timeout,
        kernel_name="python3", allow_errors=True, record_timing=False,
        interrupt_on_timeout=True, shutdown_kernel="immediate",
        error_on_timeout={"ename": "CellTimeout", "evalue": f"the cell ran longer than "
                          f"{args.cell_timeout} s and was interrupted", "traceback": []},
        resources={"metadata": {"path": "."}})

    def on_start(notebook=None, **_: Any) -> None:
        pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
        log("kernel", pid=pid)

    def on_cell_start(cell=None, cell_index=None, **_: Any) -> None:
        log("cell", index=cell_index)

    def on_cell_error(cell=None, cell_index=None, execute_reply=None, **_: Any) -> None:
        content = (execute_reply or {}).get("content", {})
        log("error", index=cell_index, ename=str(content.get("ename", "Error"))[:100],
            evalue=str(content.get("evalue", ""))[:300])

    client.log_event = log
    client.on_notebook_start = on_start
    client.on_cell_start = on_cell_start
    client.on_cell_error = on_cell_error
    code = 0
    try:
        # the kernel's own stdout/stderr (C-level prints, os.write) go nowhere
        client.execute(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log("done")
    except DeadKernelError as err:
        log("dead", message=str(err)[:300])
        code = 3
    except Exception as err:  # kernel failed to start, nbclient gave up, ...
        log("fail", message=f"{type(err).__name__}: {str(err)[:300]}")
        code = 4
    if args.executed:
        try:
            nbformat.write(nb, args.executed)
        except Exception:
            pass
    return code


if __name__ == "__main__":
    sys.exit(main())
