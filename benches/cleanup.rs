//! Benchmark: result-expiry cleanup on real stores (hack/stores.sh), with baselines from the same run.
//!
//! * PostgreSQL: 1,000,000 expired task results (+10,000 expired groups, +100,000 fresh results),
//!   purged by the operator (batches of 10,000) vs Celery 5.7's own `DatabaseBackend.cleanup()`
//!   on identical data: total time and the longest single statement (lock time).
//! * Redis: 1,000,000 expired TTL-less result keys (+100,000 fresh), purged by the operator
//!   (reads each `date_done`) vs a blunt SCAN+UNLINK of every result key (what a cron script does,
//!   deleting fresh results too): keys per second.
//!
//! Run: `cargo bench --bench cleanup`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use cbo::stores::{PurgeOptions, Store};
use cbo::uri::BackendConfig;
use sqlx::Connection;

const EXPIRED: i64 = 1_000_000;
const FRESH: i64 = 100_000;
const GROUPS: i64 = 10_000;
const PG_PW: &str = "pg p@ss:w/rd#?%";
const REDIS_PW: &str = "r3dis p@ss:w/rd#?%";

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

const CELERY: &str = r#"
import json, sys, time
from celery import Celery
from sqlalchemy import event
from sqlalchemy.engine import Engine
app = Celery("bench", set_as_current=False)
app.conf.result_backend = sys.argv[2]
app.conf.result_expires = 86400
b = app.backend
s = b.ResultSession(); engine = s.get_bind(); s.close()
if sys.argv[1] == "init":
    print("{}"); sys.exit(0)
times = []
@event.listens_for(Engine, "before_cursor_execute")
def before(conn, cursor, statement, params, context, executemany):
    conn.info["t0"] = time.perf_counter()
@event.listens_for(Engine, "after_cursor_execute")
def after(conn, cursor, statement, params, context, executemany):
    times.append(time.perf_counter() - conn.info["t0"])
t = time.perf_counter()
b.cleanup()
print(json.dumps({"total": time.perf_counter() - t, "longest": max(times), "statements": len(times)}))
"#;

fn celery(mode: &str, uri: &str) -> serde_json::Value {
    let o = Command::new(support::python::python())
        .args(["-c", CELERY, mode, uri])
        .output()
        .expect("python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    support::python::last_json_line(&o.stdout)
}

async fn pg_fill(url: &str) -> Duration {
    let t = Instant::now();
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    for q in [
        "TRUNCATE celery_taskmeta, celery_tasksetmeta".to_string(),
        format!("INSERT INTO celery_taskmeta (id, task_id, status, result, date_done) SELECT g, 'old-' || g, 'SUCCESS', '\\x80054b2a2e'::bytea, (now() at time zone 'utc') - interval '2 days' - g * interval '1 millisecond' FROM generate_series(1, {EXPIRED}) g"),
        format!("INSERT INTO celery_taskmeta (id, task_id, status, result, date_done) SELECT g, 'new-' || g, 'SUCCESS', '\\x80054b2a2e'::bytea, (now() at time zone 'utc') - interval '1 hour' FROM generate_series({EXPIRED} + 1, {EXPIRED} + {FRESH}) g"),
        format!("INSERT INTO celery_tasksetmeta (id, taskset_id, result, date_done) SELECT g, 'grp-' || g, '\\x80054b2a2e'::bytea, (now() at time zone 'utc') - interval '2 days' FROM generate_series(1, {GROUPS}) g"),
        "VACUUM ANALYZE celery_taskmeta".to_string(),
        "VACUUM ANALYZE celery_tasksetmeta".to_string(),
    ] {
        sqlx::query(&q).execute(&mut c).await.expect("fill");
    }
    t.elapsed()
}

async fn pg_remaining(url: &str) -> (i64, i64) {
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    let t: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM celery_taskmeta")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let g: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM celery_tasksetmeta")
        .fetch_one(&mut c)
        .await
        .unwrap();
    (t, g)
}

async fn redis_fill(url: &str) -> Duration {
    let t = Instant::now();
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
    let old = "2026-01-01T00:00:00.000000+00:00";
    let new = k8s_openapi::jiff::Timestamp::now().to_string();
    for chunk in 0..((EXPIRED + FRESH) / 10_000) {
        let mut p = redis::pipe();
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            let date = if i < EXPIRED { old } else { new.as_str() };
            p.cmd("SET")
                .arg(format!("celery-task-meta-{i:08}"))
                .arg(format!(r#"{{"status": "SUCCESS", "result": 42, "traceback": null, "children": [], "date_done": "{date}", "task_id": "{i:08}"}}"#))
                .ignore();
        }
        let _: () = p.query_async(&mut c).await.unwrap();
    }
    t.elapsed()
}

async fn redis_count(url: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DBSIZE").query_async(&mut c).await.unwrap()
}

async fn redis_blunt(url: &str) -> Duration {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let t = Instant::now();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("celery-task-meta-*")
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .unwrap();
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    t.elapsed()
}

fn main() {
    support::stores::up(&["postgresql", "redis"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = support::stores::pg_database("celery_bench");
    let celery_uri = format!(
        "db+postgresql+psycopg2://celery:{}@127.0.0.1:15432/{db}",
        enc(PG_PW)
    );
    let sqlx_url = format!("postgres://celery:{}@127.0.0.1:15432/{db}", enc(PG_PW));
    celery("init", &celery_uri);
    let cutoff = k8s_openapi::jiff::Timestamp::now().as_second() - 86400;

    // PostgreSQL: the operator.
    let fill = rt.block_on(pg_fill(&sqlx_url));
    let store = Store::from_config(
        &BackendConfig {
            uri: celery_uri.clone(),
            ..Default::default()
        },
        true,
    );
    let t = Instant::now();
    let ours = rt
        .block_on(store.purge_expired(PurgeOptions {
            cutoff_unix: cutoff,
            batch: 10_000,
            rate: 0,
            dry_run: false,
        }))
        .expect("purge");
    let ours_total = t.elapsed();
    let left_ours = rt.block_on(pg_remaining(&sqlx_url));
    assert_eq!((ours.tasks as i64, ours.groups as i64), (EXPIRED, GROUPS));
    assert_eq!(left_ours, (FRESH, 0));
    // PostgreSQL: Celery, identical data.
    rt.block_on(pg_fill(&sqlx_url));
    let theirs = celery("cleanup", &celery_uri);
    let left_theirs = rt.block_on(pg_remaining(&sqlx_url));
    assert_eq!(
        left_theirs,
        (FRESH, 0),
        "Celery's cleanup must delete the same rows"
    );
    let c_total = theirs["total"].as_f64().unwrap();
    let c_longest = theirs["longest"].as_f64().unwrap();
    support::stores::pg_admin(&format!("DROP DATABASE {db}"));

    println!("PostgreSQL 15: purge {EXPIRED} expired task results + {GROUPS} groups, keep {FRESH} fresh (fill took {:.1} s)", fill.as_secs_f64());
    println!("| cleaner | total s | statements | longest statement s |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| Celery 5.7 `backend.cleanup()` (baseline) | {c_total:.2} | {} | {c_longest:.2} |",
        theirs["statements"]
    );
    println!(
        "| operator, batches of 10,000 | {:.2} | {} | {:.3} |",
        ours_total.as_secs_f64(),
        ours.batches,
        ours.longest_batch.as_secs_f64()
    );
    println!(
        "| ratio operator / Celery | {:.2}x | | {:.3}x |",
        ours_total.as_secs_f64() / c_total,
        ours.longest_batch.as_secs_f64() / c_longest
    );

    // Redis.
    let rurl = format!("redis://:{}@127.0.0.1:16379/9", enc(REDIS_PW));
    let rfill = rt.block_on(redis_fill(&rurl));
    let rstore = Store::from_config(
        &BackendConfig {
            uri: rurl.clone(),
            ..Default::default()
        },
        false,
    );
    let t = Instant::now();
    let r = rt
        .block_on(rstore.purge_expired(PurgeOptions {
            cutoff_unix: cutoff,
            batch: 10_000,
            rate: 0,
            dry_run: false,
        }))
        .expect("redis purge");
    let r_total = t.elapsed();
    assert_eq!(r.tasks as i64, EXPIRED);
    assert_eq!(rt.block_on(redis_count(&rurl)), FRESH);
    rt.block_on(redis_fill(&rurl));
    let blunt = rt.block_on(redis_blunt(&rurl));
    assert_eq!(rt.block_on(redis_count(&rurl)), 0);
    println!();
    println!(
        "Redis 7.0: {EXPIRED} expired TTL-less result keys + {FRESH} fresh (fill took {:.1} s)",
        rfill.as_secs_f64()
    );
    println!("| cleaner | keys deleted | total s | keys/s | longest batch s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| blunt SCAN+UNLINK of every result key (baseline; also deletes fresh ones) | {} | {:.2} | {:.0} | |",
        EXPIRED + FRESH,
        blunt.as_secs_f64(),
        (EXPIRED + FRESH) as f64 / blunt.as_secs_f64()
    );
    println!(
        "| operator (reads each date_done, keeps fresh) | {} | {:.2} | {:.0} | {:.3} |",
        r.tasks,
        r_total.as_secs_f64(),
        r.tasks as f64 / r_total.as_secs_f64(),
        r.longest_batch.as_secs_f64()
    );
    println!(
        "| ratio operator / baseline (keys/s) | | | {:.2}x | |",
        (r.tasks as f64 / r_total.as_secs_f64()) / ((EXPIRED + FRESH) as f64 / blunt.as_secs_f64())
    );
    rt.block_on(async {
        let client = redis::Client::open(rurl.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
    });
}
