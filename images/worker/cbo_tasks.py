"""Tasks of the Celery worker image that the node tests and the quick start run.

The broker comes from CELERY_BROKER_URL; the result backend from CELERY_RESULT_BACKEND, which the
operator injects by reference to its URI Secret. When the operator also mounts its
`celeryconfig.py` (injection.configModule), CELERY_CONFIG_MODULE names it and its settings apply.
"""
import os
import time

from celery import Celery

app = Celery(
    "cbo_tasks",
    broker=os.environ.get("CELERY_BROKER_URL"),
    backend=os.environ.get("CELERY_RESULT_BACKEND"),
)
if os.environ.get("CELERY_CONFIG_MODULE"):
    app.config_from_envvar("CELERY_CONFIG_MODULE")
app.conf.broker_connection_retry_on_startup = True


@app.task
def add(x, y):
    return x + y


@app.task
def echo(value):
    return value


@app.task
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value
