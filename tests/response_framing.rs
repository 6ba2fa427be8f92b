//! A JSON answer keeps Claude's framing: the client gets its content-length, not chunks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[actix_rt::test]
async fn a_sized_answer_keeps_its_content_length() {
    let (_mock, server) = start_with_accounts("", &[("high", "h1")]);
    let (key, _) = server.keygen("high", &[]);
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.header("content-length"),
        Some(res.body.len().to_string().as_str()),
        "headers: {:?}",
        res.headers
    );
    assert_eq!(res.header("transfer-encoding"), None);
}
