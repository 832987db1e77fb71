//! `prefix_calm_status` marks from webhooks: one multi-row statement per batch
//! (`WriteTx::mark_prefixes`) leaves exactly what the seed-era statements, one per webhook,
//! left, legacy values included.

use chrono::{Duration, TimeZone, Utc};
use mt_store::PrefixMark;
use proptest::prelude::*;

use crate::common::{TestDb, sqlite3};

const PREFIXES: [&str; 3] = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"];

/// A stored flag as the original suite or an operator may have left it.
fn legacy_flag() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["0", "1", "NULL", "'True'", "'false'"])
}

/// The statement each mark was, one per webhook, before marks were batched: the reference.
fn one_statement(prefix: &str, mark: PrefixMark, at: &str) -> String {
    match mark {
        PrefixMark::UnderAttack => format!(
            "INSERT INTO prefix_calm_status (prefix, advertised, under_attack, calm_since, updated_at) \
             VALUES ('{prefix}', 0, 1, NULL, '{at}') \
             ON CONFLICT(prefix) DO UPDATE SET under_attack = 1, calm_since = NULL;\n"
        ),
        PrefixMark::Advertised => format!(
            "INSERT INTO prefix_calm_status (prefix, advertised, under_attack, calm_since, updated_at) \
             VALUES ('{prefix}', 1, 0, NULL, '{at}') \
             ON CONFLICT(prefix) DO UPDATE SET advertised = 1;\n"
        ),
    }
}

const DUMP: &str = "SELECT prefix, quote(advertised), quote(under_attack), quote(calm_since), \
                    quote(updated_at) FROM prefix_calm_status ORDER BY prefix;";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn batched_marks_leave_what_one_statement_each_left(
        legacy in prop::collection::vec((0..3usize, legacy_flag(), legacy_flag(), any::<bool>()), 0..3),
        marks in prop::collection::vec((0..3usize, any::<bool>()), 1..24),
        cuts in prop::collection::vec(1usize..6, 1..24),
    ) {
        let base = Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap();
        let marks: Vec<_> = marks
            .iter()
            .enumerate()
            .map(|(i, (p, attack))| {
                let mark = if *attack { PrefixMark::UnderAttack } else { PrefixMark::Advertised };
                (PREFIXES[*p], mark, base + Duration::seconds(i as i64))
            })
            .collect();
        let legacy_sql: String = legacy
            .iter()
            .map(|(p, advertised, under_attack, calm)| format!(
                "INSERT OR IGNORE INTO prefix_calm_status (prefix, advertised, under_attack, calm_since, updated_at) \
                 VALUES ('{}', {advertised}, {under_attack}, {}, '2026-01-01 00:00:00');\n",
                PREFIXES[*p],
                if *calm { "'2026-01-01 00:00:00'" } else { "NULL" },
            ))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (reference, batched) = (TestDb::new(), TestDb::new());
            let (reference_store, store) = (reference.open().await, batched.open().await);
            reference_store.close().await;
            if !legacy_sql.is_empty() {
                sqlite3(&reference.path, "list", &legacy_sql);
                sqlite3(&batched.path, "list", &legacy_sql);
            }
            let statements: String = marks
                .iter()
                .map(|(p, m, at)| one_statement(p, *m, &mt_common::timefmt::to_db(*at)))
                .collect();
            sqlite3(&reference.path, "list", &statements);
            let mut rest = marks.as_slice();
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at((*cut).min(rest.len()));
                let mut tx = store.begin().await.unwrap();
                tx.mark_prefixes(batch).await.unwrap();
                tx.commit().await.unwrap();
                rest = tail;
            }
            store.close().await;
            prop_assert_eq!(
                sqlite3(&batched.path, "list", DUMP),
                sqlite3(&reference.path, "list", DUMP)
            );
            Ok(())
        })?;
    }
}
