//! Decoding `pgbackrest verify`: it checks every file of a backup and of
//! the archive against the checksums recorded when they were written, logs
//! each bad one (`invalid checksum '<backup>/pg_data/base/5/2838.zst'`)
//! and still exits 0, so the lines are the result.

/// The repository files `verify`'s output names as damaged or missing.
pub fn damaged_files(output: &str) -> Vec<String> {
    const PROBLEMS: [&str; 4] = [
        "invalid checksum '",
        "invalid size '",
        "file missing '",
        "invalid result '",
    ];
    output
        .lines()
        .filter_map(|line| {
            PROBLEMS.iter().find_map(|p| {
                let (_, rest) = line.split_once(p)?;
                let (file, _) = rest.split_once('\'')?;
                Some(format!("{} ({})", file, p.trim_end_matches(" '")))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_damaged_file_is_named_with_its_problem() {
        let out = "\
2026-12-07 21:15:46.171 P01   INFO: invalid checksum '20261207-211540F/pg_data/base/5/2838.zst'
2026-12-07 21:15:46.172 P02   INFO: file missing '15-1/0000000100000000/000000010000000000000003-ab.zst'
2026-12-07 21:15:46.402 P00   INFO: stanza: pgkeel
                                    status: error
                                      backup: 20261207-211540F, status: invalid, total files checked: 1268, total valid files: 1267";
        assert_eq!(
            damaged_files(out),
            [
                "20261207-211540F/pg_data/base/5/2838.zst (invalid checksum)",
                "15-1/0000000100000000/000000010000000000000003-ab.zst (file missing)",
            ]
        );
        assert!(damaged_files("P00   INFO: stanza: pgkeel\n status: ok").is_empty());
    }
}
