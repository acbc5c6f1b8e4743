//! Property tests: every message encodes to bytes that decode to the same
//! message, frame splitting finds exactly the encoded length, and no input
//! makes the decoders panic.

use pgkeel_wire::backend::{Authentication, FieldDescription};
use pgkeel_wire::frontend::BindTail;
use pgkeel_wire::{
    BackendMessage, ErrorFields, FrontendMessage, MAX_MESSAGE_LEN, StartupPacket, TxStatus,
    split_message, split_startup,
};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,40}"
}

/// Text a client sends in its own encoding: any bytes but NUL, so
/// LATIN1 and invalid UTF-8 too.
fn client_text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1..=u8::MAX, 0..40)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

#[derive(Debug, Clone)]
enum Front {
    Query(Vec<u8>),
    Parse(Vec<u8>, Vec<u8>, Vec<u32>),
    Bind(Vec<u8>, Vec<u8>, Vec<i16>, Vec<Option<Vec<u8>>>, Vec<i16>),
    Describe(bool, Vec<u8>),
    Close(bool, Vec<u8>),
    Execute(Vec<u8>, i32),
    Simple(u8),
    CopyData(Vec<u8>),
    CopyFail(Vec<u8>),
    Password(Vec<u8>),
}

fn front() -> impl Strategy<Value = Front> {
    prop_oneof![
        client_text().prop_map(Front::Query),
        (
            client_text(),
            client_text(),
            proptest::collection::vec(any::<u32>(), 0..8)
        )
            .prop_map(|(a, b, c)| Front::Parse(a, b, c)),
        (
            client_text(),
            client_text(),
            proptest::collection::vec(any::<i16>(), 0..4),
            proptest::collection::vec(proptest::option::of(bytes()), 0..4),
            proptest::collection::vec(any::<i16>(), 0..4)
        )
            .prop_map(|(a, b, c, d, e)| Front::Bind(a, b, c, d, e)),
        (any::<bool>(), client_text()).prop_map(|(k, n)| Front::Describe(k, n)),
        (any::<bool>(), client_text()).prop_map(|(k, n)| Front::Close(k, n)),
        (client_text(), any::<i32>()).prop_map(|(p, n)| Front::Execute(p, n)),
        prop::sample::select(vec![b'S', b'H', b'c', b'X']).prop_map(Front::Simple),
        bytes().prop_map(Front::CopyData),
        client_text().prop_map(Front::CopyFail),
        bytes().prop_map(Front::Password),
    ]
}

fn kind(k: bool) -> u8 {
    if k { b'S' } else { b'P' }
}

proptest! {
    #[test]
    fn frontend_round_trips(f in front()) {
        let mut tail = Vec::new();
        let msg = match &f {
            Front::Query(q) => FrontendMessage::Query(q),
            Front::Parse(n, q, t) => FrontendMessage::Parse { name: n, query: q, param_types: t.clone() },
            Front::Bind(p, s, pf, params, rf) => {
                BindTail {
                    param_formats: pf.clone(),
                    params: params.iter().map(|p| p.as_deref()).collect(),
                    result_formats: rf.clone(),
                }
                .encode(&mut tail);
                FrontendMessage::Bind { portal: p, statement: s, tail: &tail }
            }
            Front::Describe(k, n) => FrontendMessage::Describe { kind: kind(*k), name: n },
            Front::Close(k, n) => FrontendMessage::Close { kind: kind(*k), name: n },
            Front::Execute(p, n) => FrontendMessage::Execute { portal: p, max_rows: *n },
            Front::Simple(b'S') => FrontendMessage::Sync,
            Front::Simple(b'H') => FrontendMessage::Flush,
            Front::Simple(b'c') => FrontendMessage::CopyDone,
            Front::Simple(_) => FrontendMessage::Terminate,
            Front::CopyData(d) => FrontendMessage::CopyData(d),
            Front::CopyFail(r) => FrontendMessage::CopyFail(r),
            Front::Password(p) => FrontendMessage::Password(p),
        };
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        let split = split_message(&buf, MAX_MESSAGE_LEN);
        prop_assert_eq!(split, Ok(Some((msg.tag(), buf.len()))));
        let decoded = FrontendMessage::decode(&buf);
        prop_assert_eq!(&FrontendMessage::decode_again(&buf), &decoded);
        prop_assert_eq!(&decoded, &Ok(msg));
        // Decoding keeps every byte: encoding again gives the same frame.
        if let Ok(decoded) = decoded {
            let mut again = Vec::new();
            decoded.encode(&mut again);
            prop_assert_eq!(again, buf.clone());
        }
        // Any strict prefix is incomplete, never an error or a message.
        for cut in 0..buf.len() {
            prop_assert_eq!(split_message(&buf[..cut], MAX_MESSAGE_LEN), Ok(None));
        }
    }

    #[test]
    fn backend_round_trips(
        s in text(), t in text(), b in bytes(), n in any::<i32>(), m in any::<i32>(),
        cols in proptest::collection::vec(proptest::option::of(bytes()), 0..5),
        fmts in proptest::collection::vec(any::<i16>(), 0..5),
        which in 0usize..20,
    ) {
        let fields = ErrorFields { fields: vec![(b'S', s.as_str()), (b'C', t.as_str()), (b'M', s.as_str())] };
        let msg = match which {
            0 => BackendMessage::Authentication(Authentication::Ok),
            1 => BackendMessage::Authentication(Authentication::Sasl(vec![s.as_str(), t.as_str()].into_iter().filter(|x| !x.is_empty()).collect())),
            2 => BackendMessage::Authentication(Authentication::SaslContinue(&b)),
            3 => BackendMessage::Authentication(Authentication::SaslFinal(&b)),
            4 => BackendMessage::ParameterStatus { name: &s, value: &t },
            5 => BackendMessage::BackendKeyData { pid: n, key: m },
            6 => BackendMessage::ReadyForQuery([TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed][n.unsigned_abs() as usize % 3]),
            7 => BackendMessage::RowDescription(vec![FieldDescription { name: &s, table_oid: n as u32, column: 1, type_oid: m as u32, type_size: -1, type_modifier: n, format: 0 }]),
            8 => BackendMessage::DataRow(cols.iter().map(|c| c.as_deref()).collect()),
            9 => BackendMessage::CommandComplete(&s),
            10 => BackendMessage::ErrorResponse(fields),
            11 => BackendMessage::NoticeResponse(fields),
            12 => BackendMessage::ParameterDescription(vec![n as u32, m as u32]),
            13 => BackendMessage::CopyInResponse { format: 0, columns: fmts.clone() },
            14 => BackendMessage::CopyOutResponse { format: 1, columns: fmts.clone() },
            15 => BackendMessage::CopyData(&b),
            16 => BackendMessage::NotificationResponse { pid: n, channel: &s, payload: &t },
            17 => BackendMessage::Authentication(Authentication::Md5Password([1, 2, 3, 4])),
            18 => BackendMessage::NoData,
            _ => BackendMessage::ParseComplete,
        };
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        prop_assert_eq!(split_message(&buf, MAX_MESSAGE_LEN), Ok(Some((msg.tag(), buf.len()))));
        prop_assert_eq!(BackendMessage::decode(&buf), Ok(msg));
    }

    #[test]
    fn startup_round_trips(params in proptest::collection::vec(("[a-z_]{1,12}", text()), 0..5), pid in any::<i32>(), key in any::<i32>()) {
        let msg = StartupPacket::Startup { minor: 0, params: params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect() };
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        if buf.len() <= pgkeel_wire::MAX_STARTUP_LEN {
            prop_assert_eq!(split_startup(&buf), Ok(Some(buf.len())));
            prop_assert_eq!(StartupPacket::decode(&buf[4..]), Ok(msg));
        }
        let cancel = StartupPacket::Cancel { pid, key };
        let mut buf = Vec::new();
        cancel.encode(&mut buf);
        prop_assert_eq!(StartupPacket::decode(&buf[4..]), Ok(cancel));
    }

    /// The relay's allocation-free check of a Bind accepts exactly what
    /// the full decode accepts, on well-formed tails and on garbage.
    #[test]
    fn bind_check_agrees_with_decode(
        formats in proptest::collection::vec(any::<i16>(), 0..4),
        params in proptest::collection::vec(proptest::option::of(bytes()), 0..4),
        results in proptest::collection::vec(any::<i16>(), 0..4),
        cut in any::<usize>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut tail = Vec::new();
        BindTail { param_formats: formats, params: params.iter().map(|p| p.as_deref()).collect(), result_formats: results }.encode(&mut tail);
        prop_assert!(BindTail::check(&tail).is_ok());
        let cut = &tail[..cut % (tail.len() + 1)];
        prop_assert_eq!(BindTail::check(cut).is_ok(), BindTail::decode(cut).is_ok());
        prop_assert_eq!(BindTail::check(&garbage).is_ok(), BindTail::decode(&garbage).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(Some((_, len))) = split_message(&data, MAX_MESSAGE_LEN) {
            let _ = FrontendMessage::decode(&data[..len]);
            let _ = BackendMessage::decode(&data[..len]);
        }
        if let Ok(Some(len)) = split_startup(&data) {
            let _ = StartupPacket::decode(&data[4..len]);
        }
    }
}
