"""Celery as the oracle for cleanup: write a seeded mix of results through Celery's own backend
code (the celeryconfig.py the operator renders), run Celery's own cleanup(), and list survivors.

  celery_oracle.py write     CONFIG_DIR SEED     -> JSON plan of what was written (ids, ages, states)
  celery_oracle.py cleanup   CONFIG_DIR EXPIRES  -> runs app.backend.cleanup() with result_expires
  celery_oracle.py survivors CONFIG_DIR PLAN     -> JSON {"tasks": [...], "groups": [...]} still stored

Results are stored with `backend.store_result` / `backend.save_group` exactly as a worker stores
them; only the clock is moved back by each result's age (Celery's `app.now()`, and the UTC "now"
Celery's database and MongoDB backends stamp groups with), so ages of hours need no waiting. The
filesystem backend's cleanup reads file times, so its files get their age as mtime. Chord
bookkeeping is left behind as an unfinished chord leaves it (Redis `.j` list and `.t` counter).
"""
import datetime as dt
import json
import os
import random
import sys
import uuid

sys.path.insert(0, sys.argv[2])
import celeryconfig  # noqa: E402  (rendered by `celery-backend-operator uri -o config`)
from celery import Celery, states  # noqa: E402
from celery.result import AsyncResult, GroupResult  # noqa: E402

app = Celery("cbo_oracle", broker="memory://", set_as_current=True)
app.config_from_object(celeryconfig)
if os.environ.get("CELERY_BACKEND_CLASS"):
    app.conf.result_backend = os.environ["CELERY_BACKEND_CLASS"] + "+" + celeryconfig.result_backend
if sys.argv[1] == "cleanup":
    app.conf.result_expires = int(sys.argv[3])

# 1 minute, 50 minutes, 70 minutes, 9 hours, 30 hours: far from a 1 h cutoff either way.
AGES = [60, 3000, 4200, 32400, 108000]
FINISHED = [states.SUCCESS, states.SUCCESS, states.FAILURE]
UNFINISHED = [states.STARTED, states.RETRY]


class Clock:
    """Moves Celery's clock back by `age` seconds while a result is stored."""

    age = 0

    @classmethod
    def utc_now(cls):
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=cls.age)


real_now = app.now
app.now = lambda: real_now() - dt.timedelta(seconds=Clock.age)


def patch_group_clocks(backend):
    name = type(backend).__name__
    if name == "DatabaseBackend":
        init = backend.taskset_cls.__init__

        def taskset_init(self, *a, **kw):
            init(self, *a, **kw)
            self.date_done = Clock.utc_now()  # what the column default _get_utc_now would write

        backend.taskset_cls.__init__ = taskset_init
    if name == "MongoBackend":
        import celery.backends.mongodb as m

        class MovedDatetime(dt.datetime):
            @classmethod
            def now(cls, tz=None):
                return Clock.utc_now().astimezone(tz) if tz else Clock.utc_now().replace(tzinfo=None)

        m.datetime = MovedDatetime


def set_mtime(backend, key_of, ident, age):
    if type(backend).__name__ == "FilesystemBackend":
        t = dt.datetime.now(dt.timezone.utc).timestamp() - age
        os.utime(backend._filename(key_of(ident)), (t, t))


def store(backend, tid, state, age):
    Clock.age = age
    result = {"n": 1} if state == states.SUCCESS else None
    if state == states.FAILURE:
        result = ValueError("boom")
    backend.store_result(tid, result, state)
    set_mtime(backend, lambda i: backend.get_key_for_task(i), tid, age)


def write(seed):
    rng = random.Random(seed)
    new_id = lambda: str(uuid.UUID(int=rng.getrandbits(128)))  # noqa: E731
    backend = app.backend
    patch_group_clocks(backend)
    tasks, groups = {}, {}
    for _ in range(12):
        tid, state, age = new_id(), rng.choice(FINISHED + UNFINISHED), rng.choice(AGES)
        store(backend, tid, state, age)
        tasks[tid] = {"state": state, "age": age, "stored": True}
    # Groups: every member old and finished; one member fresh; one member unfinished; members
    # never stored (tasks still running: the case), each saved at a random age.
    kinds = [("expired", [(states.SUCCESS, 32400), (states.FAILURE, 108000)]),
             ("expired", [(states.SUCCESS, 4200)]),
             ("fresh_member", [(states.SUCCESS, 32400), (states.SUCCESS, 60)]),
             ("unfinished_member", [(states.SUCCESS, 32400), (states.STARTED, 32400)]),
             ("members_missing", [(None, 0), (None, 0)])]
    for kind, members in kinds:
        gid, ids = new_id(), []
        for state, age in members:
            tid = new_id()
            ids.append(tid)
            if state is not None:
                store(backend, tid, state, age)
            tasks[tid] = {"state": state, "age": age, "stored": state is not None}
        age = rng.choice([32400, 108000]) if kind != "fresh_member" else rng.choice(AGES)
        Clock.age = age
        backend.save_group(gid, GroupResult(gid, [AsyncResult(t, app=app) for t in ids], app=app))
        set_mtime(backend, lambda i: backend.get_key_for_group(i), gid, age)
        groups[gid] = {"kind": kind, "members": ids, "age": age}
    Clock.age = 0
    chord_keys = 0
    if type(backend).__name__ == "RedisBackend":
        # An unfinished chord's bookkeeping (a header task never reported back).
        cid = new_id()
        backend.client.rpush(backend.get_key_for_group(cid, ".j"), b'[1, "x", null]')
        backend.client.incr(backend.get_key_for_group(cid, ".t"), 1)
        chord_keys = 2
    return {"tasks": tasks, "groups": groups, "chord_keys": chord_keys}


def survivors(plan):
    backend = app.backend
    out = {"tasks": [], "groups": []}
    for tid in plan["tasks"]:
        if backend._get_task_meta_for(tid).get("status") != states.PENDING:
            out["tasks"].append(tid)
    for gid in plan["groups"]:
        if backend._restore_group(gid) is not None:
            out["groups"].append(gid)
    return out


if sys.argv[1] == "write":
    print(json.dumps(write(int(sys.argv[3]))))
elif sys.argv[1] == "cleanup":
    app.backend.cleanup()
    print(json.dumps({"cleaned": True}))
else:
    with open(sys.argv[3]) as f:
        print(json.dumps(survivors(json.load(f))))
