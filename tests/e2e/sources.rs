//! Model sources end to end (contract §3, issue 6): the real binary started with `HF_MODEL_ID`
//! against the stub Hub, with `--model s3://…` against moto, and with `--model http://…`.
//! `/ping` says 503 while the model is fetched, then the model serves the conformance answer.

use std::path::Path;

use serde_json::Value;

use crate::support::hub_stub::{HubStub, Moto, sha256_hex};
use crate::support::{Server, compare, fixture};

/// The first conformance case of bert-seqcls: request body and expected answer.
fn bert_case() -> (Value, Value) {
    let text = std::fs::read_to_string(crate::support::cases_file("bert-seqcls")).expect("cases");
    let case: Value = serde_json::from_str(text.lines().next().expect("a case")).expect("json");
    let body: Value =
        serde_json::from_str(case["request"]["body"].as_str().expect("body")).expect("json body");
    (body, case["expect"]["json"].clone())
}

fn assert_serves_bert(server: &Server) {
    let (body, expected) = bert_case();
    let answer = server.invoke(&body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    compare::json_close(&answer.json(), &expected, 1e-4).expect("conformance answer");
}

/// A tokio runtime for the stub servers while the test thread speaks blocking HTTP.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn hub_server(stub: &HubStub, hf_home: &Path, extra: &[(&str, &str)]) -> Server {
    let mut builder = Server::builder()
        .env("HF_MODEL_ID", "org/bert")
        .env("HF_ENDPOINT", &stub.endpoint())
        .env("HF_HOME", &hf_home.display().to_string());
    for (k, v) in extra {
        builder = builder.env(k, v);
    }
    builder.start()
}

#[test]
fn hub_model_is_503_while_downloading_then_serves_and_restarts_from_cache() {
    let rt = runtime();
    let stub = rt.block_on(HubStub::start());
    let commit = stub.add_model_dir("org/bert", &fixture("bert-seqcls"));
    let hf_home = tempfile::tempdir().expect("tempdir");
    stub.hold_downloads();

    let server = hub_server(&stub, hf_home.path(), &[]);
    let loading = server.get("/ping");
    let message = loading.expect_error(503, "model_not_ready");
    assert!(message.contains("loading"), "{message}");
    stub.release_downloads();
    let server = server.wait_ready();
    assert_serves_bert(&server);
    let snapshot = hf_home
        .path()
        .join("hub/models--org--bert/snapshots")
        .join(&commit);
    assert!(
        snapshot.join("model.safetensors").is_file(),
        "{}",
        server.logs()
    );
    drop(server);

    // A restart finds everything in the cache and asks the Hub nothing.
    stub.reset_requests();
    let server = hub_server(&stub, hf_home.path(), &[]).wait_ready();
    assert_serves_bert(&server);
    assert_eq!(stub.requests(), []);
    drop(server);

    // Offline, with the Hub gone, the cache still serves.
    drop(stub);
    let server = Server::builder()
        .env("HF_MODEL_ID", "org/bert")
        .env("HF_HOME", &hf_home.path().display().to_string())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HUB_OFFLINE", "1")
        .start()
        .wait_ready();
    assert_serves_bert(&server);
}

#[test]
fn private_hub_model_needs_the_token_and_the_token_is_never_logged() {
    let rt = runtime();
    let stub = rt.block_on(HubStub::start());
    stub.add_model_dir("org/bert", &fixture("bert-seqcls"));
    stub.set_private("org/bert", "hf_e2e_right_token");
    let hf_home = tempfile::tempdir().expect("tempdir");

    let server = hub_server(&stub, hf_home.path(), &[]);
    let message = server.wait_settled().expect_error(503, "model_not_ready");
    assert!(message.contains("HF_TOKEN"), "{message}");

    let server = hub_server(&stub, hf_home.path(), &[("HF_TOKEN", "hf_e2e_wrong_token")]);
    let message = server.wait_settled().expect_error(503, "model_not_ready");
    assert!(message.contains("rejected the token"), "{message}");
    assert!(
        !server.logs().contains("hf_e2e_wrong_token"),
        "{}",
        server.logs()
    );

    let server = hub_server(
        &stub,
        hf_home.path(),
        &[("HF_API_TOKEN", "hf_e2e_right_token")],
    )
    .wait_ready();
    assert_serves_bert(&server);
    assert!(
        !server.logs().contains("hf_e2e_right_token"),
        "{}",
        server.logs()
    );
}

#[test]
fn offline_without_cache_fails_the_load_clearly() {
    let hf_home = tempfile::tempdir().expect("tempdir");
    let server = Server::builder()
        .env("HF_MODEL_ID", "org/bert")
        .env("HF_HOME", &hf_home.path().display().to_string())
        .env("HF_HUB_OFFLINE", "true")
        .start();
    let message = server.wait_settled().expect_error(503, "model_not_ready");
    assert!(
        message.contains("HF_HUB_OFFLINE") && message.contains("org/bert"),
        "{message}"
    );
}

#[test]
fn http_archive_url_is_fetched_unpacked_and_served() {
    // Plain http:// on 127.0.0.1 (the stub Hub's CDN path serves the archive): the server only
    // trusts the system's roots, so https:// over real TLS is tested in `artifact::fetch`'s unit
    // tests, with a self-signed certificate given as an extra root.
    let rt = runtime();
    let stub = rt.block_on(HubStub::start());
    let archive =
        std::fs::read(fixture("bert-seqcls-targz").join("model.tar.gz")).expect("archive");
    let sha = sha256_hex(&archive);
    let mut files = std::collections::BTreeMap::new();
    files.insert("model.tar.gz".to_owned(), bytes::Bytes::from(archive));
    stub.add_commit("org/archive", "main", files);

    let server = Server::builder()
        .model(format!(
            "{}/cdn/{sha}?X-Amz-Signature=e2e_presigned_secret",
            stub.endpoint()
        ))
        .start()
        .wait_ready();
    assert_serves_bert(&server);
    assert!(
        !server.logs().contains("e2e_presigned_secret"),
        "{}",
        server.logs()
    );
}

#[test]
fn s3_archive_url_is_fetched_unpacked_and_served() {
    let rt = runtime();
    let moto = rt.block_on(Moto::start());
    let archive =
        std::fs::read(fixture("bert-seqcls-targz").join("model.tar.gz")).expect("archive");
    rt.block_on(moto.put("models", "prod/model.tar.gz", archive.into()));

    let server = Server::builder()
        .model("s3://models/prod/model.tar.gz")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .start()
        .wait_ready();
    assert_serves_bert(&server);

    let missing = Server::builder()
        .model("s3://models/prod/missing.tar.gz")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .start();
    let message = missing.wait_settled().expect_error(503, "model_not_ready");
    assert!(message.contains("does not exist"), "{message}");
}
