//! Hub download against the stub Hub (`tests/e2e/support/hub_stub.rs`) over real HTTP on
//! 127.0.0.1: layout, warm cache, token, revisions, resumption, offline mode, every error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::hub_stub::{HubStub, sha256_hex};
use super::*;
use crate::config::Secret;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/conformance/models")
        .join(name)
}

fn fixture_files(name: &str) -> BTreeMap<String, Bytes> {
    std::fs::read_dir(fixture(name))
        .expect("fixture dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, Bytes::from(std::fs::read(&path).expect("read")))
        })
        .collect()
}

fn config(endpoint: &str, cache: &Path, model_id: &str) -> HubConfig {
    HubConfig {
        model_id: model_id.to_owned(),
        revision: "main".to_owned(),
        token: None,
        endpoint: endpoint.to_owned(),
        cache_dir: cache.to_owned(),
        offline: false,
    }
}

async fn fetch(cfg: &HubConfig) -> Result<PathBuf> {
    let retry = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    Download {
        cfg,
        retry,
        progress: Progress::auto(),
    }
    .run()
    .await
}

/// Files of a snapshot, relative, sorted.
fn snapshot_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read snapshot") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(
                    p.strip_prefix(root)
                        .expect("inside")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn cdn_gets(stub: &HubStub) -> Vec<super::hub_stub::Recorded> {
    stub.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/cdn/"))
        .collect()
}

#[tokio::test]
async fn cold_download_fetches_needed_files_in_python_layout() {
    let stub = HubStub::start().await;
    let mut files = fixture_files("bert-seqcls");
    files.insert("README.md".into(), Bytes::from_static(b"# not needed"));
    files.insert(
        "tf_model.h5".into(),
        Bytes::from_static(b"not needed either"),
    );
    files.insert(
        "code/inference.wasm".into(),
        Bytes::from_static(b"\0asm fake component"),
    );
    let weights = files["model.safetensors"].clone();
    let config_json = files["config.json"].clone();
    let commit = stub.add_commit("org/bert", "main", files);
    let cache = tempfile::tempdir().expect("tempdir");

    let dir = fetch(&config(&stub.endpoint(), cache.path(), "org/bert"))
        .await
        .expect("downloads");

    let repo_dir = cache.path().join("models--org--bert");
    assert_eq!(dir, repo_dir.join("snapshots").join(&commit));
    assert_eq!(
        snapshot_files(&dir),
        [
            "code/inference.wasm",
            "config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt"
        ]
    );
    // LFS blobs are named by sha256, regular files by git blob sha1; links are relative.
    let sha = sha256_hex(&weights);
    assert_eq!(
        std::fs::read_link(dir.join("model.safetensors")).expect("link"),
        Path::new("../../blobs").join(&sha)
    );
    assert_eq!(
        std::fs::read(repo_dir.join("blobs").join(&sha)).expect("blob"),
        weights
    );
    let link = std::fs::read_link(dir.join("config.json")).expect("link");
    let git_sha1 = link
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(git_sha1.len(), 40);
    assert_eq!(
        std::fs::read(dir.join("config.json")).expect("config"),
        config_json
    );
    assert_eq!(
        std::fs::read_link(dir.join("code/inference.wasm"))
            .expect("link")
            .parent()
            .expect("parent"),
        Path::new("../../../blobs")
    );
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).expect("ref"),
        commit
    );
    let leftovers: Vec<_> = std::fs::read_dir(repo_dir.join("blobs"))
        .expect("blobs")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .contains('.')
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The big file came through the CDN redirect, once.
    assert_eq!(
        cdn_gets(&stub)
            .iter()
            .filter(|r| r.path.ends_with(&sha))
            .count(),
        1
    );
}

#[tokio::test]
async fn warm_restart_makes_no_requests() {
    let stub = HubStub::start().await;
    let commit = stub.add_model_dir("org/bert", &fixture("bert-seqcls"));
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&stub.endpoint(), cache.path(), "org/bert");
    let first = fetch(&cfg).await.expect("cold");
    assert!(stub.request_count() > 0);
    stub.reset_requests();

    let second = fetch(&cfg).await.expect("warm");
    assert_eq!(first, second);
    let pinned = fetch(&HubConfig {
        revision: commit,
        ..cfg.clone()
    })
    .await
    .expect("warm by commit");
    assert_eq!(first, pinned);
    assert_eq!(stub.requests(), []);
}

#[tokio::test]
async fn interrupted_snapshot_is_completed_with_only_missing_files() {
    let stub = HubStub::start().await;
    stub.add_model_dir("org/bert", &fixture("bert-seqcls"));
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&stub.endpoint(), cache.path(), "org/bert");
    let dir = fetch(&cfg).await.expect("cold");
    // As if the process died before the tokenizer arrived: manifest says unfinished, no link,
    // no blob.
    let blob = std::fs::canonicalize(dir.join("tokenizer.json")).expect("blob");
    std::fs::remove_file(dir.join("tokenizer.json")).expect("rm");
    std::fs::remove_file(blob).expect("rm");
    let manifest = cache
        .path()
        .join("models--org--bert/.sagebrush")
        .join(format!(
            "{}.json",
            dir.file_name().expect("commit").to_string_lossy()
        ));
    let text = std::fs::read_to_string(&manifest)
        .expect("manifest")
        .replace("true", "false");
    std::fs::write(&manifest, text).expect("write");
    stub.reset_requests();

    fetch(&cfg).await.expect("completes");
    let paths: Vec<String> = stub.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 3, "{paths:?}"); // listing, HEAD tokenizer.json, GET tokenizer.json
    assert!(
        paths.iter().skip(1).all(|p| p.ends_with("/tokenizer.json")),
        "{paths:?}"
    );
    assert!(dir.join("tokenizer.json").is_file());
}

#[tokio::test]
async fn python_filled_cache_is_reused() {
    let stub = HubStub::start().await;
    let commit = stub.add_model_dir("org/gpt", &fixture("gpt2-gen"));
    let cache = tempfile::tempdir().expect("tempdir");
    // Lay the cache out as huggingface_hub does (no sagebrush manifest).
    let repo = RepoCache::new(cache.path(), "org/gpt");
    std::fs::create_dir_all(cache.path().join("models--org--gpt/blobs")).expect("mkdir");
    for (name, content) in fixture_files("gpt2-gen") {
        let etag = sha256_hex(&content);
        std::fs::write(repo.blob_path(&etag), &content).expect("blob");
        repo.link(&commit, &name, &etag).expect("link");
    }
    repo.write_ref("main", &commit).expect("ref");
    let cfg = config(&stub.endpoint(), cache.path(), "org/gpt");

    let offline = fetch(&HubConfig {
        offline: true,
        ..cfg.clone()
    })
    .await
    .expect("offline uses it");
    assert_eq!(stub.request_count(), 0);
    let online = fetch(&cfg).await.expect("online uses it");
    assert_eq!(offline, online);
    // Online without our manifest: one listing, no file request.
    let paths: Vec<String> = stub.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/api/models/org/gpt/revision/main"]);
}

#[tokio::test]
async fn identical_files_share_one_blob_and_one_download() {
    let stub = HubStub::start().await;
    let files = fixture_files("marian-mt");
    assert_eq!(files["source.spm"], files["target.spm"], "fixture premise");
    let spm_sha = sha256_hex(&files["source.spm"]);
    stub.add_commit("org/marian", "main", files);
    let cache = tempfile::tempdir().expect("tempdir");

    let dir = fetch(&config(&stub.endpoint(), cache.path(), "org/marian"))
        .await
        .expect("downloads");

    assert_eq!(
        std::fs::read_link(dir.join("source.spm")).expect("link"),
        std::fs::read_link(dir.join("target.spm")).expect("link")
    );
    let spm_gets = cdn_gets(&stub)
        .into_iter()
        .filter(|r| r.path.ends_with(&spm_sha))
        .count();
    assert_eq!(spm_gets, 1);
}

#[tokio::test]
async fn private_repo_needs_the_right_token_which_never_leaves_the_hub() {
    let stub = HubStub::start().await;
    stub.add_model_dir("org/private", &fixture("bert-seqcls"));
    stub.set_private("org/private", "hf_right");
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&stub.endpoint(), cache.path(), "org/private");

    let err = fetch(&cfg).await.unwrap_err();
    assert!(
        matches!(err, HubError::TokenRequired { status: 401, .. }),
        "{err:?}"
    );
    let wrong = HubConfig {
        token: Some(Secret::new("hf_wrong")),
        ..cfg.clone()
    };
    let err = fetch(&wrong).await.unwrap_err();
    assert!(
        matches!(err, HubError::TokenRejected { status: 401, .. }),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("hf_wrong"));
    stub.reset_requests();

    let right = HubConfig {
        token: Some(Secret::new("hf_right")),
        ..cfg
    };
    fetch(&right).await.expect("downloads with the token");
    let requests = stub.requests();
    let (cdn, hub): (Vec<_>, Vec<_>) = requests.iter().partition(|r| r.path.starts_with("/cdn/"));
    assert!(!cdn.is_empty() && !hub.is_empty());
    assert!(
        hub.iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_right")),
        "{hub:?}"
    );
    assert!(
        cdn.iter().all(|r| r.authorization.is_none()
            && r.host
                .as_deref()
                .is_some_and(|h| h.starts_with("localhost"))),
        "{cdn:?}"
    );
}

#[tokio::test]
async fn revision_pin_selects_that_commit() {
    let stub = HubStub::start().await;
    let main = stub.add_model_dir("org/bert", &fixture("bert-seqcls"));
    let mut v2 = fixture_files("bert-seqcls");
    v2.insert(
        "config.json".into(),
        Bytes::from_static(br#"{"architectures":["BertForMaskedLM"],"v":2}"#),
    );
    let v2_commit = stub.add_commit("org/bert", "v2", v2);
    assert_ne!(main, v2_commit);
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&stub.endpoint(), cache.path(), "org/bert");

    let tagged = fetch(&HubConfig {
        revision: "v2".into(),
        ..cfg.clone()
    })
    .await
    .expect("v2");
    let by_commit = fetch(&HubConfig {
        revision: main.clone(),
        ..cfg.clone()
    })
    .await
    .expect("main by commit");

    assert!(tagged.ends_with(&v2_commit) && by_commit.ends_with(&main));
    assert!(
        std::fs::read_to_string(tagged.join("config.json"))
            .expect("read")
            .contains("\"v\":2")
    );
    assert_eq!(
        std::fs::read(by_commit.join("config.json")).expect("read"),
        std::fs::read(fixture("bert-seqcls").join("config.json")).expect("read")
    );
    let refs = cache.path().join("models--org--bert/refs");
    assert_eq!(
        std::fs::read_to_string(refs.join("v2")).expect("ref"),
        v2_commit
    );
    assert!(!refs.join(&main).exists(), "no ref file for a commit hash");
    // The same blob (model.safetensors) serves both snapshots.
    assert_eq!(
        std::fs::read_link(tagged.join("model.safetensors")).expect("link"),
        std::fs::read_link(by_commit.join("model.safetensors")).expect("link")
    );
}

#[tokio::test]
async fn broken_download_is_resumed_with_a_range_request() {
    let stub = HubStub::start().await;
    let files = fixture_files("bert-seqcls");
    let sha = sha256_hex(&files["model.safetensors"]);
    stub.add_commit("org/bert", "main", files);
    stub.break_downloads(&sha, 100_000, 1);
    let cache = tempfile::tempdir().expect("tempdir");

    let dir = fetch(&config(&stub.endpoint(), cache.path(), "org/bert"))
        .await
        .expect("resumes");

    let ranges: Vec<Option<String>> = cdn_gets(&stub).into_iter().map(|r| r.range).collect();
    assert_eq!(ranges, [None, Some("bytes=100000-".to_owned())]);
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("model.safetensors")).expect("read")),
        sha
    );
}

#[tokio::test]
async fn partial_file_from_a_failed_run_is_resumed_by_the_next() {
    let stub = HubStub::start().await;
    let files = fixture_files("bert-seqcls");
    let sha = sha256_hex(&files["model.safetensors"]);
    stub.add_commit("org/bert", "main", files);
    stub.break_downloads(&sha, 100_000, 3);
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&stub.endpoint(), cache.path(), "org/bert");

    let err = fetch(&cfg).await.unwrap_err();
    assert!(
        matches!(err, HubError::Network { attempts: 3, .. }),
        "{err:?}"
    );
    let part = RepoCache::new(cache.path(), "org/bert").incomplete_path(&sha);
    let kept = std::fs::metadata(&part).expect("partial file kept").len();
    assert_eq!(kept, 300_000);
    stub.reset_requests();

    let dir = fetch(&cfg).await.expect("second run completes");
    let ranges: Vec<Option<String>> = cdn_gets(&stub).into_iter().map(|r| r.range).collect();
    assert_eq!(ranges, [Some(format!("bytes={kept}-"))]);
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("model.safetensors")).expect("read")),
        sha
    );
    assert!(!part.exists());
}

#[tokio::test]
async fn offline_mode_uses_the_cache_or_says_what_is_missing() {
    let stub = HubStub::start().await;
    stub.add_model_dir("org/bert", &fixture("bert-seqcls"));
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&stub.endpoint(), cache.path(), "org/bert");
    let offline = HubConfig {
        offline: true,
        ..cfg.clone()
    };

    let err = fetch(&offline).await.unwrap_err();
    assert!(
        matches!(err, HubError::OfflineNotCached { ref revision, .. } if revision == "main"),
        "{err:?}"
    );
    assert!(err.to_string().contains("HF_HUB_OFFLINE"));
    assert_eq!(stub.request_count(), 0);

    let online = fetch(&cfg).await.expect("online");
    stub.reset_requests();
    assert_eq!(fetch(&offline).await.expect("offline from cache"), online);
    let err = fetch(&HubConfig {
        revision: "v9".into(),
        ..offline
    })
    .await
    .unwrap_err();
    assert!(matches!(err, HubError::OfflineNotCached { .. }), "{err:?}");
    assert_eq!(stub.request_count(), 0);
}

#[tokio::test]
async fn sharded_checkpoint_brings_index_and_every_shard() {
    let stub = HubStub::start().await;
    let mut files = BTreeMap::new();
    files.insert("config.json".to_owned(), Bytes::from_static(b"{}"));
    files.insert(
        "model.safetensors.index.json".to_owned(),
        Bytes::from_static(br#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#),
    );
    files.insert(
        "model-00001-of-00002.safetensors".to_owned(),
        Bytes::from_static(b"shard one"),
    );
    files.insert(
        "model-00002-of-00002.safetensors".to_owned(),
        Bytes::from_static(b"shard two"),
    );
    files.insert(
        "pytorch_model.bin".to_owned(),
        Bytes::from_static(b"not wanted"),
    );
    stub.add_commit("org/sharded", "main", files);
    let cache = tempfile::tempdir().expect("tempdir");

    let dir = fetch(&config(&stub.endpoint(), cache.path(), "org/sharded"))
        .await
        .expect("downloads");
    assert_eq!(
        snapshot_files(&dir),
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json"
        ]
    );
}

#[tokio::test]
async fn missing_things_are_named() {
    let stub = HubStub::start().await;
    stub.add_model_dir("org/bert", &fixture("bert-seqcls"));
    let mut no_weights = BTreeMap::new();
    no_weights.insert("config.json".to_owned(), Bytes::from_static(b"{}"));
    no_weights.insert("tf_model.h5".to_owned(), Bytes::from_static(b"h5"));
    stub.add_commit("org/tf-only", "main", no_weights);
    let mut lost_shard = BTreeMap::new();
    lost_shard.insert(
        "model.safetensors.index.json".to_owned(),
        Bytes::from_static(br#"{"weight_map":{"a":"model-00001-of-00001.safetensors"}}"#),
    );
    stub.add_commit("org/lost-shard", "main", lost_shard);
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = |id: &str| config(&stub.endpoint(), cache.path(), id);

    let err = fetch(&cfg("org/nope")).await.unwrap_err();
    assert!(
        matches!(err, HubError::RepoNotFound { ref model_id, .. } if model_id == "org/nope"),
        "{err:?}"
    );
    let err = fetch(&HubConfig {
        revision: "v404".into(),
        ..cfg("org/bert")
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, HubError::RevisionNotFound { ref revision, .. } if revision == "v404"),
        "{err:?}"
    );
    let err = fetch(&cfg("org/tf-only")).await.unwrap_err();
    assert!(
        matches!(err, HubError::NoWeights { ref files, .. } if files.contains(&"tf_model.h5".to_owned())),
        "{err:?}"
    );
    let err = fetch(&cfg("org/lost-shard")).await.unwrap_err();
    assert!(
        matches!(err, HubError::FileNotFound { ref file, .. } if file == "model-00001-of-00001.safetensors"),
        "{err:?}"
    );
}

#[tokio::test]
async fn corrupt_bytes_fail_the_checksum_and_are_deleted() {
    let stub = HubStub::start().await;
    let files = fixture_files("bert-seqcls");
    let sha = sha256_hex(&files["model.safetensors"]);
    stub.add_commit("org/bert", "main", files);
    stub.corrupt_downloads(&sha);
    let cache = tempfile::tempdir().expect("tempdir");

    let err = fetch(&config(&stub.endpoint(), cache.path(), "org/bert"))
        .await
        .unwrap_err();

    assert!(
        matches!(err, HubError::ChecksumMismatch { ref file, ref expected, algorithm: "sha256", .. } if file == "model.safetensors" && *expected == sha),
        "{err:?}"
    );
    let repo = RepoCache::new(cache.path(), "org/bert");
    assert!(!repo.incomplete_path(&sha).exists() && !repo.blob_path(&sha).exists());
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let stub = HubStub::start().await;
    stub.add_model_dir("org/bert", &fixture("bert-seqcls"));
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&stub.endpoint(), cache.path(), "org/bert");

    stub.fail_next(3);
    let err = fetch(&cfg).await.unwrap_err();
    assert!(
        matches!(
            err,
            HubError::ServerError {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    stub.fail_next(2);
    fetch(&cfg).await.expect("third try succeeds");
}

#[tokio::test]
async fn unreachable_hub_is_a_network_error_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let cache = tempfile::tempdir().expect("tempdir");

    let err = fetch(&config(&endpoint, cache.path(), "org/bert"))
        .await
        .unwrap_err();

    assert!(
        matches!(err, HubError::Network { attempts: 3, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn unusable_endpoint_or_token_fail_before_any_request() {
    let cache = tempfile::tempdir().expect("tempdir");
    let err = fetch(&config("not a url", cache.path(), "org/bert"))
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::BadEndpoint { .. }), "{err:?}");

    let stub = HubStub::start().await;
    let cfg = HubConfig {
        token: Some(Secret::new("hf_bad\ntoken")),
        ..config(&stub.endpoint(), cache.path(), "org/bert")
    };
    let err = fetch(&cfg).await.unwrap_err();
    assert!(matches!(err, HubError::MalformedToken), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hf_bad"));
    assert_eq!(stub.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_another_process_is_fetching_is_waited_for_not_fetched_twice() {
    let stub = HubStub::start().await;
    let files = fixture_files("bert-seqcls");
    let weights = files["model.safetensors"].clone();
    let sha = sha256_hex(&weights);
    stub.add_commit("org/bert", "main", files);
    let cache = tempfile::tempdir().expect("tempdir");
    let repo = RepoCache::new(cache.path(), "org/bert");
    // Another process (Python's filelock takes the same flock) is fetching the weights.
    let lock_path = repo.lock_path(&sha);
    std::fs::create_dir_all(lock_path.parent().expect("parent")).expect("mkdir");
    let held = std::fs::File::create(&lock_path).expect("lock file");
    held.lock().expect("flock");
    let cfg = config(&stub.endpoint(), cache.path(), "org/bert");
    let task = tokio::spawn(async move { fetch(&cfg).await });
    while !stub
        .requests()
        .iter()
        .any(|r| r.method == "HEAD" && r.path.ends_with("/model.safetensors"))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The other process finishes: the blob is in place, the lock is released.
    std::fs::create_dir_all(repo.blob_path(&sha).parent().expect("parent")).expect("mkdir");
    std::fs::write(repo.blob_path(&sha), &weights).expect("blob");
    drop(held);
    let dir = task.await.expect("joins").expect("downloads");

    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).expect("read"),
        weights
    );
    assert!(
        cdn_gets(&stub).iter().all(|r| !r.path.ends_with(&sha)),
        "{:?}",
        stub.requests()
    );
}

/// An `io::Write` into a shared buffer, for capturing log lines.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn progress_is_logged_per_file_and_the_token_never_is() {
    let stub = HubStub::start().await;
    stub.add_model_dir("org/private", &fixture("bert-seqcls"));
    stub.set_private("org/private", "hf_log_secret");
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = HubConfig {
        token: Some(Secret::new("hf_log_secret")),
        ..config(&stub.endpoint(), cache.path(), "org/private")
    };
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests run the same download code at the same time on threads without this subscriber:
    // a callsite whose interest one of them cached while this one was being registered would stay
    // silent here. Recompute every callsite's interest with this subscriber in place.
    tracing::callsite::rebuild_interest_cache();
    let retry = RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    };
    stub.fail_next(1); // one retry warning, which names the URL

    Download {
        cfg: &cfg,
        retry,
        progress: Progress::lines(),
    }
    .run()
    .await
    .expect("downloads");

    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf-8");
    for file in ["config.json", "model.safetensors", "vocab.txt"] {
        assert!(
            text.lines()
                .any(|l| l.contains("downloaded") && l.contains(&format!("file={file}"))),
            "{text}"
        );
    }
    assert!(text.contains("retrying"), "{text}");
    assert!(!text.contains("hf_log_secret"), "{text}");
}
