use super::*;

fn usage(n: u64) -> Usage {
    Usage {
        requests: 1,
        input_tokens: n,
        ..Usage::default()
    }
}

fn key_usage(key: &str, n: u64) -> WriteOp {
    WriteOp::AddKeyUsage {
        key_id: key.into(),
        usage: usage(n),
    }
}

fn window(key: &str, count: u32) -> WriteOp {
    WriteOp::SetWindow {
        key_id: key.into(),
        family: ModelFamily::Opus,
        window: Window {
            started_at: 1_700_000_000_000,
            count,
        },
    }
}

fn input_tokens(ops: &[WriteOp]) -> Vec<(String, u64)> {
    ops.iter()
        .filter_map(|op| match op {
            WriteOp::AddKeyUsage { key_id, usage } => {
                Some((key_id.to_string(), usage.input_tokens))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn lines_not_yet_folded_come_back_in_order_and_folded_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let (mut log, unfolded) = CounterLog::open(&db, Some(0)).unwrap();
    assert!(unfolded.counters.is_empty());
    log.append(&[key_usage("a", 1), window("a", 1)]).unwrap();
    log.append(&[key_usage("b", 2)]).unwrap();
    log.append(&[key_usage("a", 3), window("a", 2)]).unwrap();
    assert_eq!(log.unfolded_through(), Some(3));
    drop(log);

    let (_, all) = CounterLog::open(&db, Some(0)).unwrap();
    assert_eq!(all.lines, 3);
    assert_eq!(
        input_tokens(&all.counters),
        [("a".into(), 1), ("b".into(), 2), ("a".into(), 3)]
    );
    assert!(matches!(
        all.counters.last(),
        Some(WriteOp::SetWindow { family: ModelFamily::Opus, window, .. }) if window.count == 2
    ));

    // SQLite holds lines 1 and 2 (a crash between a fold and the truncation).
    let (log, rest) = CounterLog::open(&db, Some(2)).unwrap();
    assert_eq!(rest.lines, 1);
    assert_eq!(input_tokens(&rest.counters), [("a".into(), 3)]);
    assert_eq!(log.unfolded_through(), Some(3));
}

#[test]
fn a_fold_empties_the_file_and_numbering_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let (mut log, _) = CounterLog::open(&db, Some(7)).unwrap();
    log.append(&[key_usage("a", 1)]).unwrap();
    assert_eq!(log.unfolded_through(), Some(8), "after the folded seq");
    log.folded();
    assert_eq!(log.unfolded_through(), None);
    assert_eq!(std::fs::metadata(path_for(&db)).unwrap().len(), 0);
    log.append(&[key_usage("a", 2)]).unwrap();
    assert_eq!(log.unfolded_through(), Some(9));
    drop(log);
    let (_, unfolded) = CounterLog::open(&db, Some(8)).unwrap();
    assert_eq!(input_tokens(&unfolded.counters), [("a".into(), 2)]);
}

#[test]
fn a_torn_line_is_skipped_and_the_rest_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let (mut log, _) = CounterLog::open(&db, Some(0)).unwrap();
    log.append(&[key_usage("a", 1)]).unwrap();
    drop(log);
    // A crash cut the next line short.
    let mut file = OpenOptions::new().append(true).open(path_for(&db)).unwrap();
    file.write_all(br#"{"seq":2,"counters":[{"kind":"key_us"#)
        .unwrap();
    drop(file);
    let (mut log, unfolded) = CounterLog::open(&db, Some(0)).unwrap();
    assert_eq!((unfolded.lines, unfolded.skipped), (1, 1));
    assert_eq!(input_tokens(&unfolded.counters), [("a".into(), 1)]);
    // What is appended next is not glued to the torn bytes.
    log.append(&[key_usage("b", 5)]).unwrap();
    drop(log);
    let (_, again) = CounterLog::open(&db, Some(0)).unwrap();
    assert_eq!(
        input_tokens(&again.counters),
        [("a".into(), 1), ("b".into(), 5)]
    );
}

#[test]
fn a_log_the_database_never_folded_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let (mut log, _) = CounterLog::open(&db, Some(4)).unwrap();
    log.append(&[key_usage("a", 1)]).unwrap();
    drop(log);
    // The database was replaced by one that never had a log.
    let (log, unfolded) = CounterLog::open(&db, None).unwrap();
    assert!(unfolded.counters.is_empty());
    assert_eq!(log.unfolded_through(), None);
    assert_eq!(std::fs::metadata(path_for(&db)).unwrap().len(), 0);
}

#[test]
fn only_counters_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let (mut log, _) = CounterLog::open(&db, Some(0)).unwrap();
    let unbind = WriteOp::Unbind { key_id: "a".into() };
    assert!(!is_counter(&unbind));
    assert!(is_counter(&window("a", 1)));
    log.append(&[unbind, key_usage("a", 1)]).unwrap();
    drop(log);
    let (_, unfolded) = CounterLog::open(&db, Some(0)).unwrap();
    assert_eq!(unfolded.counters.len(), 1);
}

/// Input tokens per key in `ops`, summed.
fn totals(ops: &[WriteOp]) -> std::collections::BTreeMap<String, u64> {
    let mut sums = std::collections::BTreeMap::new();
    for (key, n) in input_tokens(ops) {
        *sums.entry(key).or_default() += n;
    }
    sums
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever prefix of the lines a fold took and wherever a crash cut the last write,
    /// reading the log back gives exactly the whole lines after the fold: nothing counted
    /// twice, nothing lost but the torn line.
    #[test]
    fn a_crash_anywhere_loses_only_the_torn_line_and_counts_nothing_twice(
        batches in proptest::collection::vec(
            proptest::collection::vec((0usize..3, 1u64..1000), 1..4), 1..12),
        folded in 0usize..12,
        cut in proptest::option::of(0usize..10_000),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let (mut log, _) = CounterLog::open(&db, Some(0)).unwrap();
        let as_ops = |batch: &Vec<(usize, u64)>| -> Vec<WriteOp> {
            batch.iter().map(|&(k, n)| key_usage(&format!("k{k}"), n)).collect()
        };
        for batch in &batches {
            log.append(&as_ops(batch)).unwrap();
        }
        drop(log);
        let folded = folded.min(batches.len());
        let mut whole = batches.len();
        if let Some(cut) = cut {
            let bytes = std::fs::read(path_for(&db)).unwrap();
            let last_start = bytes[..bytes.len() - 1]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let last_len = bytes.len() - last_start;
            let keep = bytes.len() - (1 + cut % (last_len - 1));
            OpenOptions::new().write(true).open(path_for(&db)).unwrap()
                .set_len(keep as u64).unwrap();
            whole -= 1;
        }
        let (_, unfolded) = CounterLog::open(&db, Some(folded as u64)).unwrap();
        let want: Vec<WriteOp> = batches[folded.min(whole)..whole].iter().flat_map(as_ops).collect();
        proptest::prop_assert_eq!(totals(&unfolded.counters), totals(&want));
    }
}
