"""The URI oracle: hands the operator's output to Celery's own code and reports what Celery parsed.

Input (stdin): a JSON list of cases {"id", "kind", "config_module", "expect": {...}}.
For each case the rendered celeryconfig.py is loaded into a real Celery app, Celery resolves
result_backend to its backend class, the class is instantiated (no network), and the connection
parameters Celery ends up with are compared to "expect". Output (stdout): a JSON list of
{"id", "ok", "mismatches", "error"}.

Values that need the client library itself (e.g. "client_hosts": the nodes the Elasticsearch
client was built with, "client_error": the exception type the client raises, or None) are
computed only when a case expects them: extractors return them as zero-argument callables.
"""
import json
import os
import sys
import tempfile
import types

import celery
from celery import Celery
from celery.app.backends import by_url


class Captured(Exception):
    """Raised by a stand-in client constructor after recording what Celery passed to it."""

    def __init__(self, value):
        super().__init__("captured")
        self.value = value


def make_app(config_module):
    for var in ("CONSUL_HTTP_TOKEN",):
        os.environ.pop(var, None)
    mod = types.ModuleType("celeryconfig")
    exec(compile(config_module, "celeryconfig.py", "exec"), mod.__dict__)
    app = Celery("oracle", set_as_current=False)
    app.config_from_object(mod)
    # Parse only: never create tables at construction time.
    app.conf.database_create_tables_at_setup = False
    return app


def cert_name(v):
    import ssl
    return {ssl.CERT_REQUIRED: "required", ssl.CERT_OPTIONAL: "optional", ssl.CERT_NONE: "none"}.get(v, v)


def redis_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    cp = dict(b.connparams)
    out = {"class": cls.__name__}
    if cls.__name__ == "SentinelBackend":
        out["hosts"] = [{"host": h.get("host"), "port": h.get("port")} for h in cp["hosts"]]
        topts = app.conf.result_backend_transport_options or {}
        out["master_name"] = topts.get("master_name")
        out["sentinel_password"] = (topts.get("sentinel_kwargs") or {}).get("password")
        ssl_conf = app.conf.redis_backend_use_ssl
        if ssl_conf:
            out["ssl_cert_reqs"] = ssl_conf.get("ssl_cert_reqs")
        # How redis-py will reach the Sentinels themselves (built, not connected).
        def sentinel_conn():
            pool = b._get_sentinel_instance(**b.connparams).sentinels[0].connection_pool
            kw = pool.connection_kwargs
            return {"ssl": pool.connection_class.__name__ == "SSLConnection",
                    "ssl_cert_reqs": cert_name(kw.get("ssl_cert_reqs")),
                    "ssl_ca_certs": kw.get("ssl_ca_certs"), "password": kw.get("password")}
        out["sentinel_connection"] = sentinel_conn
    else:
        out["host"] = cp.get("host")
        out["port"] = cp.get("port")
        out["path"] = cp.get("path")
        out["ssl"] = cp.get("connection_class").__name__ == "SSLConnection" if cp.get("connection_class") else False
        if "ssl_cert_reqs" in cp:
            out["ssl_cert_reqs"] = cert_name(cp["ssl_cert_reqs"])
        for k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "socket_timeout", "max_connections"):
            if k in cp:
                out[k] = cp[k]
    out["db"] = cp.get("db")
    out["username"] = cp.get("username")
    out["password"] = cp.get("password")
    topts = app.conf.result_backend_transport_options or {}
    out["global_keyprefix"] = topts.get("global_keyprefix")
    # The prefixes Celery really writes keys under (celery/backends/base.py _add_global_keyprefix).
    out["task_keyprefix"] = b.task_keyprefix.decode() if isinstance(b.task_keyprefix, bytes) else b.task_keyprefix
    out["group_keyprefix"] = b.group_keyprefix.decode() if isinstance(b.group_keyprefix, bytes) else b.group_keyprefix
    return out


def database_params(app, url):
    from sqlalchemy.engine import make_url
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    u = make_url(b.url)
    return {
        "class": cls.__name__,
        "drivername": u.drivername,
        "host": u.host,
        "port": u.port,
        "username": u.username,
        "password": u.password,
        "database": u.database,
        "query": dict(u.query),
        "task_table": b.task_cls.__table__.name,
        "group_table": b.taskset_cls.__table__.name,
        "task_schema": b.task_cls.__table__.schema,
    }


def mongodb_params(app, url):
    cls, url2 = by_url(url, app.loader)
    if url.startswith("mongodb+srv://"):
        # pymongo resolves SRV records in DNS while Celery builds the backend; no DNS here, so
        # record the seed list pymongo was asked to resolve instead of failing.
        from pymongo import uri_parser
        real = uri_parser.parse_uri

        def parse_without_dns(uri, *a, **kw):
            assert uri.startswith("mongodb+srv://"), uri
            seed = "mongodb://" + uri[len("mongodb+srv://"):]
            res = real(seed, *a, **kw)
            res["srv"] = True
            return res
        uri_parser.parse_uri = parse_without_dns
        try:
            b = cls(app=app, url=url2)
        finally:
            uri_parser.parse_uri = real
        srv = True
    else:
        b = cls(app=app, url=url2)
        srv = False
    opts = {k.lower(): v for k, v in b.options.items()}

    def client_seeds():  # MongoClient connects in the background: building it is enough
        return sorted([list(s) for s in b._get_connection()._topology_settings.seeds])
    return {
        "client_seeds": client_seeds,
        "client_error": client_error(b._get_connection),
        "class": cls.__name__,
        "srv": srv,
        "hosts": b.mongo_host,
        "username": b.user,
        "password": b.password,
        "database": b.database_name,
        "authsource": opts.get("authsource"),
        "replicaset": opts.get("replicaset"),
        "tls": opts.get("tls", opts.get("ssl")),
        "tlsinsecure": opts.get("tlsinsecure"),
        "tlscafile": opts.get("tlscafile"),
        "taskmeta_collection": b.taskmeta_collection,
        "groupmeta_collection": b.groupmeta_collection,
    }


def client_error(make):
    """The exception type name `make()` raises, or None when it builds the client."""
    def run():
        try:
            make()
        except Exception as e:
            return type(e).__name__
        return None
    return run


def elasticsearch_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)

    def client_hosts():
        es = b._get_server()
        return [[n.config.scheme, n.config.host, n.config.port] for n in es.transport.node_pool.all()]
    return {"class": cls.__name__, "scheme": b.scheme, "host": b.host, "port": b.port,
            "username": b.username, "password": b.password, "index": b.index,
            "timeout": b.es_timeout, "max_retries": b.es_max_retries,
            "client_hosts": client_hosts, "client_error": client_error(b._get_server)}


def s3_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    return {"class": cls.__name__, "bucket": b.bucket_name, "base_path": b.base_path,
            "endpoint_url": b.endpoint_url, "region": b.aws_region,
            "access_key_id": b.aws_access_key_id, "secret_access_key": b.aws_secret_access_key}


def gcs_params(app, url):
    from celery.backends import gcs
    cls, url2 = by_url(url, app.loader)
    # GCSBackend.__init__ calls the Firestore Admin API, which nothing here can emulate; its base
    # class holds all the URL and settings parsing, so parse with that.
    assert cls is gcs.GCSBackend, cls
    gcs.GCSBackendBase._is_bucket_lifecycle_rule_exists = lambda self: True
    b = gcs.GCSBackendBase(app=app, url=url2)
    return {"class": cls.__name__, "bucket": b.bucket_name, "project": b.project,
            "base_path": b.base_path, "ttl": b.ttl, "threadpool_maxsize": b._threadpool_maxsize,
            "firestore_project": app.conf.get("firestore_project", b.project)}


def azure_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    return {"class": cls.__name__, "connection_string": b._connection_string,
            "container": b._container_name, "base_path": b.base_path,
            "connection_timeout": b._connection_timeout, "read_timeout": b._read_timeout}


def rpc_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    return {"class": cls.__name__, "persistent": b.persistent}


def cache_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)

    def client_servers():  # the (host, port) pymemcache connects to, per server
        c = b.client
        clients = list(c.clients.values()) if hasattr(c, "clients") else [c]
        return sorted([list(x.server) for x in clients])
    return {"class": cls.__name__, "servers": b.servers, "expires": b.expires,
            "client_servers": client_servers}


def cassandra_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    ap = b.auth_provider
    return {"class": cls.__name__, "servers": b.servers, "port": b.port, "keyspace": b.keyspace,
            "table": b.table, "entry_ttl": app.conf.get("cassandra_entry_ttl"),
            "read_consistency": b.read_consistency, "write_consistency": b.write_consistency,
            "username": getattr(ap, "username", None), "password": getattr(ap, "password", None)}


def dynamodb_params(app, url):
    from celery.backends import dynamodb
    cls, url2 = by_url(url, app.loader)
    kw = {}

    def client(service, **kwargs):  # record what Celery hands to boto3 instead of connecting
        kw.update(kwargs)
        raise Captured(kwargs)
    real = dynamodb.boto3.client
    dynamodb.boto3.client = client
    try:
        b = cls.__new__(cls)
        try:
            cls.__init__(b, app=app, url=url2)  # connects here when the keys are in the URL
        except Captured:
            pass
        if not kw:
            try:
                b._get_client()  # otherwise on first use
            except Captured:
                pass
    finally:
        dynamodb.boto3.client = real
    assert kw, "boto3.client was not called"
    return {"class": cls.__name__, "region": kw.get("region_name"), "endpoint_url": kw.get("endpoint_url"),
            "table": b.table_name, "read": b.read_capacity_units, "write": b.write_capacity_units,
            "ttl_seconds": b.time_to_live_seconds,
            "access_key_id": kw.get("aws_access_key_id"), "secret_access_key": kw.get("aws_secret_access_key")}


def couchdb_params(app, url):
    import pycouchdb
    from celery.backends import couchdb
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)

    class Recorder:
        def __init__(self, base_url, **kw):
            raise Captured(pycouchdb.utils.extract_credentials(base_url))
    real = couchdb.pycouchdb.Server
    couchdb.pycouchdb.Server = Recorder
    try:
        b._get_connection()
        raise AssertionError("pycouchdb.Server was not called")
    except Captured as c:
        server_url, creds = c.value
    finally:
        couchdb.pycouchdb.Server = real
    user, password = creds if creds else (None, None)
    return {"class": cls.__name__, "host": b.host, "port": b.port, "database": b.container,
            "server_url": server_url, "username": user, "password": password}


def couchbase_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    return {"class": cls.__name__, "host": b.host, "port": b.port, "bucket": b.bucket,
            "username": b.username, "password": b.password}


def arangodb_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    import requests

    def basic_auth():  # pyArango hands (username, password) to requests' Basic auth
        requests.Request("GET", b.arangodb_url, auth=(b.username, b.password)).prepare()
    return {"class": cls.__name__, "host": b.host, "port": b.port, "database": b.database,
            "collection": b.collection, "username": b.username, "password": b.password,
            "http_protocol": b.http_protocol, "verify": b.verify,
            "client_error": client_error(basic_auth)}


def consul_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    client = b.client()

    def request_error():  # what requests says about the first KV URL python-consul2 would use
        import requests
        return client_error(lambda: requests.Request("GET", client.http.base_uri + "/v1/kv/x").prepare())()
    def token_error():  # the header python-consul2 sends with every request
        import requests
        return client_error(lambda: requests.Request("GET", "http://consul:8500/v1/kv/x",
                                                     headers={"X-Consul-Token": client.token}).prepare())()
    return {"class": cls.__name__, "host": b.hostname, "port": b.port, "path": b.path,
            "one_client": b.one_client is not None, "token": client.token,
            "base_uri": client.http.base_uri, "client_error": request_error,
            "token_error": token_error}


def cosmos_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    import base64

    def signing_key():  # pydocumentdb/auth.py signs every request with b64decode(master_key)
        base64.b64decode(b._key)
    return {"class": cls.__name__, "endpoint": b._endpoint, "key": b._key,
            "client_error": client_error(signing_key),
            "database": b._database_name, "collection": b._collection_name,
            "consistency_level": b._consistency_level}


def filesystem_params(app, url):
    cls, url2 = by_url(url, app.loader)
    b = cls(app=app, url=url2)
    return {"class": cls.__name__, "path": b.path.decode()}


def ironcache_params(app, url):
    try:
        by_url(url, app.loader)
    except Exception as e:  # Celery 5 must refuse it: that is what the operator reports
        return {"loadable": False, "error": type(e).__name__}
    return {"loadable": True}


EXTRACT = {
    "redis": redis_params, "database": database_params, "mongodb": mongodb_params,
    "elasticsearch": elasticsearch_params, "s3": s3_params, "gcs": gcs_params,
    "azureBlockBlob": azure_params, "rpc": rpc_params, "cache": cache_params,
    "cassandra": cassandra_params, "dynamodb": dynamodb_params, "couchdb": couchdb_params,
    "couchbase": couchbase_params, "arangodb": arangodb_params, "consul": consul_params,
    "cosmosDbSql": cosmos_params, "filesystem": filesystem_params, "ironCache": ironcache_params,
}


def run(case):
    app = make_app(case["config_module"])
    url = app.conf.result_backend
    try:
        actual = EXTRACT[case["kind"]](app, url)
        actual["construct_error"] = None
    except Exception as e:  # a case may expect Celery to refuse the URI outright
        if "construct_error" not in case["expect"]:
            raise
        actual = {"construct_error": type(e).__name__}
    actual = {k: (v() if callable(v) and k in case["expect"] else v) for k, v in actual.items()}
    # "conf.<setting>": what Celery's configuration holds; "backend.<attr>": what Celery's own
    # backend object took from it (BaseBackend reads the result_* settings in __init__).
    for k in case["expect"]:
        if k.startswith("conf."):
            actual[k] = app.conf.get(k[len("conf."):])
        elif k.startswith("backend."):
            actual[k] = getattr(app.backend, k[len("backend."):], "<absent>")
    if "result_expires" in case["expect"]:
        exp = app.conf.result_expires
        actual["result_expires"] = exp.total_seconds() if hasattr(exp, "total_seconds") else exp
    mismatches = {k: {"expected": v, "actual": actual.get(k, "<absent>")}
                  for k, v in case["expect"].items() if actual.get(k, "<absent>") != v}
    return mismatches


def main():
    cases = json.load(sys.stdin)
    results = []
    for case in cases:
        try:
            mm = run(case)
            results.append({"id": case["id"], "ok": not mm, "mismatches": mm, "error": None})
        except Exception as e:  # report, keep going: one failing case must not hide the others
            results.append({"id": case["id"], "ok": False, "mismatches": {},
                            "error": f"{type(e).__name__}: {e}"})
    json.dump({"celery": celery.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
