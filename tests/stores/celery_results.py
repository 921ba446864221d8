"""Write and read results through a real Celery worker (celery.contrib.testing.worker.start_worker,
a real consumer on a real RabbitMQ broker) using the celeryconfig.py the operator renders.

  celery_results.py write CONFIG_DIR BROKER GAP_SECONDS   -> JSON ids of old and fresh results
  celery_results.py read  CONFIG_DIR BROKER IDS_JSON      -> JSON {id: state, ...} and groups

CELERY_BACKEND_CLASS=module:Class selects a backend class for the operator's URI through Celery's
own `class+scheme://` syntax (the gs:// backend's Firestore part cannot run here: GCSBackendBase).
CELERY_NO_GROUPS=1: the backend cannot save groups (Cassandra), so group results are not saved.
"""
import json
import os
import sys
import time

sys.path.insert(0, sys.argv[2])
import celeryconfig  # noqa: E402  (rendered by `celery-backend-operator uri -o config`)
from celery import Celery, group  # noqa: E402
from celery.result import AsyncResult, GroupResult  # noqa: E402

app = Celery("cbo_store_test", broker=sys.argv[3], set_as_current=True)
app.config_from_object(celeryconfig)
if os.environ.get("CELERY_BACKEND_CLASS"):
    app.conf.result_backend = os.environ["CELERY_BACKEND_CLASS"] + "+" + celeryconfig.result_backend
app.conf.task_default_queue = "cbo-" + str(abs(hash(sys.argv[2])) % 10**8)


@app.task(name="cbo.add")
def add(x, y):
    return x + y


# Generous: the suite runs beside JVM servers on two cores, and a slow moment is not a failure.
WAIT = 90


def batch(n):
    tasks = [add.delay(i, i) for i in range(n)]
    for t in tasks:
        assert t.get(timeout=WAIT) is not None
    g = group(add.s(i, 100) for i in range(3)).apply_async()
    assert g.get(timeout=WAIT) == [100, 101, 102]
    if os.environ.get("CELERY_NO_GROUPS"):
        return [t.id for t in tasks] + [c.id for c in g.results], None
    g.save()
    return [t.id for t in tasks] + [c.id for c in g.results], g.id


if sys.argv[1] == "write":
    from celery.contrib.testing.worker import start_worker

    if type(app.backend).__name__ == "CassandraBackend":
        # Only Celery's writers create the Cassandra table, and a client polling a result before
        # the first write gets InvalidRequest (no such table), not PENDING. Create it up front,
        # with Celery's own statement, as its code comments advise.
        app.backend._get_connection(write=True)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        old_tasks, old_group = batch(5)
        time.sleep(float(sys.argv[4]) / 2)
        mark = time.time()  # the cutoff the test uses: after every old result, before every fresh one
        time.sleep(float(sys.argv[4]) / 2)
        fresh_tasks, fresh_group = batch(4)
    print(json.dumps({"old_tasks": old_tasks, "old_group": old_group, "mark": mark,
                      "fresh_tasks": fresh_tasks, "fresh_group": fresh_group}))
else:
    ids = json.loads(sys.argv[4])
    out = {"tasks": {}, "groups": {}}
    for tid in ids["old_tasks"] + ids["fresh_tasks"]:
        r = AsyncResult(tid, app=app)
        out["tasks"][tid] = [r.state, r.result if r.state == "SUCCESS" else None]
    for gid in [g for g in (ids["old_group"], ids["fresh_group"]) if g is not None]:
        g = GroupResult.restore(gid, app=app)
        # KV backends restore a GroupResult; MongoDB restores the list of results itself.
        members = None if g is None else getattr(g, "results", g)
        out["groups"][gid] = None if members is None else [r.id for r in members]
    print(json.dumps(out))
