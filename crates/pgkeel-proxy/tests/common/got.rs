//! The answers of a raw session as the sequence-value reviews compare
//! them: every DataRow's first column, SQLSTATEs, the transaction status.

use pgkeel_wire::FrontendMessage;
use pgkeel_wire::backend::error_code;

use super::{Env, Raw, TestResult, first_column, raw_login};

/// What a raw client got up to the next ReadyForQuery: tags, every
/// DataRow's first column, SQLSTATEs, the transaction status.
#[derive(Debug, Default)]
pub struct Got {
    pub tags: String,
    pub values: Vec<Option<String>>,
    pub errors: Vec<String>,
    pub status: Option<char>,
}

pub async fn until_ready(raw: &mut Raw) -> TestResult<Got> {
    let mut g = Got::default();
    loop {
        let (tag, frame) = raw.next().await?;
        g.tags.push(char::from(tag));
        match tag {
            b'D' => g.values.push(first_column(&frame)),
            b'E' => g
                .errors
                .push(error_code(&frame[5..]).unwrap_or("?").to_string()),
            b'Z' => {
                g.status = frame.get(5).copied().map(char::from);
                return Ok(g);
            }
            _ => {}
        }
    }
}

pub async fn run(raw: &mut Raw, sql: &str) -> TestResult<Got> {
    raw.send(&[FrontendMessage::Query(sql.as_bytes())]).await?;
    until_ready(raw).await
}

/// Runs `sql`, which must succeed.
pub async fn ok(raw: &mut Raw, sql: &str) -> TestResult<Got> {
    let g = run(raw, sql).await?;
    if !g.errors.is_empty() {
        return Err(format!("{sql}: {g:?}").into());
    }
    Ok(g)
}

/// Runs `sql`, which must succeed and return one value.
pub async fn one(raw: &mut Raw, sql: &str) -> TestResult<String> {
    let g = ok(raw, sql).await?;
    Ok(g.values.first().cloned().flatten().ok_or("no value")?)
}

/// A raw session straight to the primary (no proxy), to compare.
pub async fn direct(env: &Env) -> TestResult<Raw> {
    let s = raw_login(
        env.node_port("primary")?,
        &env.user,
        &env.password,
        &env.database,
    )
    .await?;
    Ok(Raw {
        s,
        buf: Default::default(),
    })
}
