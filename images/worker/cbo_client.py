"""A client for the worker image: sends tasks, waits for their results, prints them as JSON.

    python -m cbo_client [--count N] [--timeout SECONDS] [--task add|echo|sleep_then] [ARG ...]

Without a task it sends N `add(i, i)`. Each result is read back through Celery's result backend
(CELERY_RESULT_BACKEND, the URI the operator injects) and checked against the expected value when
there is one. Prints {"ok": ..., "results": [...]} and exits 1 when a task failed, timed out or
returned something else than expected.
"""
import argparse
import json
import sys
import time

from cbo_tasks import add, app, echo, sleep_then


def main(argv=None):
    p = argparse.ArgumentParser(prog="cbo_client")
    p.add_argument("--count", "-n", type=int, default=3)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--task", choices=["add", "echo", "sleep_then"], default="add")
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    if not app.conf.result_backend:
        print(json.dumps({"ok": False, "error": "CELERY_RESULT_BACKEND is not set"}))
        return 1

    sent = []
    for i in range(a.count):
        if a.task == "add":
            x, y = (int(a.args[0]), int(a.args[1])) if len(a.args) == 2 else (i, i)
            sent.append((add.delay(x, y), x + y))
        elif a.task == "echo":
            value = a.args[0] if a.args else f"echo-{i}"
            sent.append((echo.delay(value), value))
        else:
            seconds = float(a.args[0]) if a.args else 1.0
            value = a.args[1] if len(a.args) > 1 else f"slept-{i}"
            sent.append((sleep_then.delay(seconds, value), value))

    deadline = time.monotonic() + a.timeout
    results, ok = [], True
    for res, expected in sent:
        entry = {"id": res.id, "expected": expected}
        try:
            entry["result"] = res.get(timeout=max(0.1, deadline - time.monotonic()))
            entry["state"] = res.state
            entry["ok"] = entry["result"] == expected
        except Exception as e:  # a timeout or the task's own exception
            entry.update(state=res.state, error=f"{type(e).__name__}: {e}", ok=False)
        ok = ok and entry["ok"]
        results.append(entry)
    print(json.dumps({"ok": ok, "task": a.task, "results": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
