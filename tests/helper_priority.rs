//! The bookkeeping threads (store writer, log flusher) run below the HTTP workers' priority,
//! so waking one next to a request never preempts the worker serving it. What `ps -L -o
//! comm,nice -p <pid>` shows an operator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// (thread name, nice value) of every thread of `pid`.
fn threads_and_nice(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // After the name's closing parenthesis come fields 3.. of proc(5); nice is field 19.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let nice = after_name.split(' ').nth(16).unwrap().parse().unwrap();
        out.push((name.trim().to_string(), nice));
    }
    out
}

#[test]
fn bookkeeping_threads_run_below_the_workers() {
    let (_mock, env) = setup("");
    env.add_account("high", "a1");
    let server = TestServer::start(env);
    let threads = threads_and_nice(server.pid().expect("the server's pid"));
    let nice_of = |name: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, nice)| *nice)
            .collect()
    };
    assert_eq!(nice_of("store-writer"), vec![10], "{threads:?}");
    assert_eq!(nice_of("log-flusher"), vec![10], "{threads:?}");
    let workers: Vec<i64> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("actix-rt|system"))
        .map(|(_, nice)| *nice)
        .collect();
    assert!(!workers.is_empty(), "no worker threads in {threads:?}");
    assert!(workers.iter().all(|&n| n == 0), "{threads:?}");
}
