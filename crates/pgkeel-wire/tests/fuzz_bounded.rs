//! A time-bounded fuzz run on stable Rust, in every test run (CI
//! included): random bytes and mutations of valid messages (bit flips,
//! truncations, overwritten lengths and tags, concatenations) through the
//! same body as the coverage-guided cargo-fuzz target. Seeded from the
//! clock and printed, so a failure can be replayed with
//! `PGKEEL_FUZZ_SEED=<seed>`; `PGKEEL_FUZZ_SECONDS` sets the budget
//! (default 10 s).

use std::time::{Duration, Instant};

use pgkeel_wire::fuzz::decode_everything;

/// xorshift64*: deterministic from the seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid frames of both directions and the startup phase to mutate.
fn corpus() -> Vec<Vec<u8>> {
    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }
    let mut startup = vec![0, 3, 0, 0];
    startup.extend_from_slice(b"user\0app\0database\0app\0\0");
    let mut packet = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    vec![
        packet,
        vec![0, 0, 0, 8, 4, 210, 22, 47],
        vec![0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 7, 0, 0, 0, 9],
        msg(b'Q', b"SELECT 1\0"),
        msg(b'P', b"s1\0SELECT $1::int\0\0\x01\0\0\0\x17"),
        msg(b'B', b"\0s1\0\0\x01\0\0\0\x01\0\0\0\x011\0\0"),
        // Text in another client encoding (LATIN1 'é'), and invalid UTF-8.
        msg(b'P', b"s\xe9\0SELECT 'caf\xe9'\0\0\0"),
        msg(b'B', b"p\xe9\0s\xe9\0\0\0\0\0\0\0"),
        msg(b'Q', b"SELECT '\xff\xfe'\0"),
        msg(b'D', b"P\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
        msg(b'C', b"Ss1\0"),
        msg(b'd', b"1\t2\n"),
        msg(b'c', b""),
        msg(b'f', b"bad row\0"),
        msg(b'X', b""),
        msg(
            b'p',
            b"SCRAM-SHA-256\0\0\0\0\x20n,,n=,r=abcdefghijklmnopqrstuvwx",
        ),
        msg(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"),
        msg(b'R', b"\0\0\0\0"),
        msg(b'K', b"\0\0\0\x07\0\0\0\x09"),
        msg(b'Z', b"I"),
        msg(
            b'T',
            b"\0\x01a\0\0\0\0\0\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
        ),
        msg(b'D', b"\0\x01\0\0\0\x011"),
        msg(b'E', b"SERROR\0C25006\0Mread only\0\0"),
        msg(b'N', b"SNOTICE\0Mhi\0\0"),
        msg(b'A', b"\0\0\0\x01chan\0payload\0"),
        msg(b'S', b"client_encoding\0UTF8\0"),
        msg(b't', b"\0\x01\0\0\0\x17"),
        msg(b'G', b"\0\0\x01\0\0"),
        msg(b'H', b"\0\0\x01\0\0"),
    ]
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data: Vec<u8> = match rng.below(4) {
        0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        _ => {
            let mut d = vec![];
            for _ in 0..=rng.below(4) {
                d.extend_from_slice(&corpus[rng.below(corpus.len())]);
            }
            d
        }
    };
    for _ in 0..rng.below(6) {
        if data.is_empty() {
            break;
        }
        let at = rng.below(data.len());
        match rng.below(6) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data.truncate(at),
            2 => data[at] = [0, 0xff, 0x7f, 0x80, b'\0'][rng.below(5)],
            3 => {
                // Overwrite a 4-byte length with an extreme value.
                let v: u32 = [0, 3, 4, 5, u32::MAX, i32::MAX as u32, 1 << 30][rng.below(7)];
                for (i, b) in v.to_be_bytes().iter().enumerate() {
                    if let Some(slot) = data.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            4 => data.insert(at, rng.next() as u8),
            _ => {
                data.remove(at);
            }
        }
    }
    data
}

#[test]
fn decoders_survive_a_bounded_fuzz_run() {
    let seconds: u64 = std::env::var("PGKEEL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("PGKEEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    eprintln!("fuzz seed {seed} for {seconds} s (replay: PGKEEL_FUZZ_SEED={seed})");
    let corpus = corpus();
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            let input = mutate(&mut rng, &corpus);
            let outcome = std::panic::catch_unwind(|| decode_everything(&input));
            assert!(
                outcome.is_ok(),
                "decoding panicked on {input:?} (seed {seed}, run {runs})"
            );
            runs += 1;
        }
    }
    eprintln!("{runs} inputs decoded without a panic");
    assert!(runs > 0);
}
