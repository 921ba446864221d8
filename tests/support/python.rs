//! Locates the oracle's Python (a virtualenv with the pinned Celery) and runs scripts with it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The virtualenv's python: $CBO_PYTHON, or the one hack/python-env.sh creates.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CBO_PYTHON") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(format!("{}/hack/python-env.sh", super::cluster::root()))
        .arg("--print")
        .output()
        .expect("cannot run hack/python-env.sh");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    assert!(
        p.exists(),
        "the oracle's Python is missing ({}): run `hack/python-env.sh` (the test command does) to create the Celery virtualenv",
        p.display()
    );
    p
}

/// Run `script` with stdin `input`; panic with its stderr on failure.
pub fn run_json(script: &str, input: &serde_json::Value) -> serde_json::Value {
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the oracle's python");
    let data = serde_json::to_vec(input).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The last non-empty line of a script's stdout, parsed as JSON (scripts may log before it).
pub fn last_json_line(stdout: &[u8]) -> serde_json::Value {
    let line = stdout
        .rsplit(|b| *b == b'\n')
        .find(|l| !l.is_empty())
        .expect("the script printed nothing");
    serde_json::from_slice(line).expect("the script's last line is JSON")
}
